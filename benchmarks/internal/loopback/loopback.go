// Package loopback starts the benchmarks' target processes
// (cmd/latency_target), one per loopback address 127.0.0.1, .2, ..., and
// holds what both harnesses (bin/latency_bench and bin/latency_scale) do
// with them: N fresh connections a gather spread over several destinations
// (4-tuples, TIME_WAITs) instead of one's ephemeral ports.
package loopback

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Targets are running target processes.
type Targets struct {
	Procs []*exec.Cmd
	Hosts []string // host:port, in the order of the addresses
}

// Options of Start.
type Options struct {
	// Args follow "-listen host:port" on each target's command line.
	Args []string
	// Env is added to each target's environment.
	Env []string
	// Output, when set, gets each target's stdout and stderr (and an
	// error of Start quotes it); nil: the harness's stderr.
	Output func(i int) *bytes.Buffer
}

// Start runs bin n times, the i-th on 127.0.0.(i+1) at a free port, and
// waits until each listens.
func Start(bin string, n int, o Options) (*Targets, error) {
	t := &Targets{}
	for i := range n {
		ip := "127.0.0." + strconv.Itoa(i+1)
		port, err := FreePort(ip)
		if err != nil {
			t.Stop()
			return nil, err
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		cmd := exec.Command(bin, append([]string{"-listen", addr}, o.Args...)...)
		if len(o.Env) > 0 {
			cmd.Env = append(os.Environ(), o.Env...)
		}
		var out *bytes.Buffer
		if o.Output != nil {
			out = o.Output(i)
			cmd.Stdout, cmd.Stderr = out, out
		} else {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Stop()
			return nil, fmt.Errorf("starting the target %s: %w", bin, err)
		}
		t.Procs = append(t.Procs, cmd)
		t.Hosts = append(t.Hosts, addr)
		if err := WaitListening(addr, 10*time.Second); err != nil {
			t.Stop()
			if out != nil {
				return nil, fmt.Errorf("target %s: %w (output: %s)", addr, err, out.String())
			}
			return nil, fmt.Errorf("target %s: %w", addr, err)
		}
	}
	return t, nil
}

// Stop ends the targets: SIGTERM, then SIGKILL for one that has not
// exited within 5 s.
func (t *Targets) Stop() {
	for _, c := range t.Procs {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range t.Procs {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
	t.Procs = nil
}

// FreePort is a TCP port free on ip now.
func FreePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitListening waits until addr accepts a connection, at most within.
func WaitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is service i's URL on the targets at hosts: /svc/i on
// hosts[i%len(hosts)], asking for the delay (?delay=).
func URL(hosts []string, i int, delay time.Duration) string {
	return fmt.Sprintf("http://%s/svc/%d?delay=%s", hosts[i%len(hosts)], i, delay)
}

// TimedGet is one GET of u by client, timed from before the request to
// the body read and closed (what the plugin's latency spans); a status
// other than 200 is an error.
func TimedGet(client *http.Client, u string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: status %d", u, resp.StatusCode)
	}
	return d, err
}

// Overshoot is how late the target at host answers beyond a requested
// delay on its own: n sequential requests over one kept connection (no
// connect, nothing else in flight from here) with the delay and with none;
// median(delay) − median(0) − delay. It is part of any prober's error
// against the injected delay, whatever the prober.
func Overshoot(host string, delay time.Duration, n int) (time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	median := func(d time.Duration) (time.Duration, error) {
		u := fmt.Sprintf("http://%s/calibrate?delay=%s", host, d)
		xs := make([]time.Duration, 0, n)
		for i := range n + 5 {
			took, err := TimedGet(c, u)
			if err != nil {
				return 0, err
			}
			if i >= 5 { // the first ones warm the connection up
				xs = append(xs, took)
			}
		}
		slices.Sort(xs)
		return xs[len(xs)/2], nil
	}
	zero, err := median(0)
	if err != nil {
		return 0, err
	}
	with, err := median(delay)
	if err != nil {
		return 0, err
	}
	return with - zero - delay, nil
}

// RaiseNoFile lifts the soft limit of open files to the hard one (the
// children inherit it) and returns it: 1,000 probes in flight, or 10,000
// keep-alive connections, need more than the usual 1,024.
func RaiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
		}
	}
	return lim.Cur, nil
}

// Each runs f(0) ... f(n−1), in order of i, at most conc at once, and
// returns once all have returned: the plain loop's worker pool.
func Each(n, conc int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
