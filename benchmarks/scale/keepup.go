package main

// The keeping-up part of make bench-scale (issue 17: "100,000 services at
// a 60 s cadence with spread = "auto": every round completes before the
// next, CPU per probe ≤ the plain net/http loop's, and the reported
// latency error at 1 ms injected delay no worse than at 1,000"). For each
// N, after the start-up / memory / state-file part: one child process runs
// the plugin on a ticker, then another runs the plain loop on the same
// ticker against the same targets (keepup_child.go, keepup_plain.go).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

// keepupOptions are the keeping-up part's flags.
type keepupOptions struct {
	Ns      []int
	Cadence time.Duration
	Gathers int
	// Timeout is the plugin's timeout (and the plain loop's); 0: the
	// plugin's default, not written in its file.
	Timeout time.Duration
	Targets int // target processes, one per loopback address 127.0.0.1, .2, ...
	// Lean: the targets run latency_target -lean instead of net/http's
	// server. At 100,000 services a minute net/http's targets took ~0.5 ms
	// a probe, more than the prober; -lean took ~20 % less at 10,000 (the
	// rest is the kernel's TCP work), so it is not the default.
	Lean   bool
	Delay  time.Duration
	Target string // the latency_target binary
	// DrainWait is how long to wait at most, before each child, for the
	// machine's TIME_WAITs to fall below drainTimeWait.
	DrainWait time.Duration
	// ProfileDir, when set, gets a CPU profile of each child's counted
	// gathers: keepup-<prober>-<N>.pprof.
	ProfileDir string
}

// timeout is the timeout in force (the plugin's default when unset).
func (o keepupOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return config.DefaultTimeout
}

// keepupRun is everything the keeping-up table shows.
type keepupRun struct {
	Opt  keepupOptions
	Rows []keepupResult
	// Overshoot[N] is the target's own lateness at the delay, measured
	// before that N's children (see overshoot).
	Overshoot map[int]time.Duration
	NoFile    uint64
}

// drainTimeWait: before each child the parent waits (at most
// keepupOptions.DrainWait, by default drainTimeWaitMax: a TIME_WAIT
// lasts 60 s) until the machine's TIME_WAIT count is below this, so that
// one child's sockets do not count against the next.
const (
	drainTimeWait    = 2000
	drainTimeWaitMax = 70 * time.Second
)

func runKeepup(opt keepupOptions) (*keepupRun, error) {
	run := &keepupRun{Opt: opt, Overshoot: map[int]time.Duration{}}
	lim, err := loopback.RaiseNoFile()
	if err != nil {
		return nil, err
	}
	run.NoFile = lim
	tg, err := startKeepupTargets(opt.Target, opt.Targets, opt.Delay, opt.Lean)
	if err != nil {
		return nil, err
	}
	defer tg.Stop()
	for _, n := range opt.Ns {
		over, err := loopback.Overshoot(tg.Hosts[0], opt.Delay, 200)
		if err != nil {
			return nil, fmt.Errorf("the target's overshoot: %w", err)
		}
		run.Overshoot[n] = over
		for _, prober := range []string{proberOurs, proberPlain} {
			waitTimeWaitBelow(drainTimeWait, opt.DrainWait)
			sp := &keepupSpec{N: n, Prober: prober, Hosts: tg.Hosts, Cadence: opt.Cadence, Gathers: opt.Gathers,
				Delay: opt.Delay, Timeout: opt.timeout(), SetTimeout: opt.Timeout > 0, Concurrency: config.DefaultMaxConcurrency}
			if opt.ProfileDir != "" {
				sp.CPUProfile = filepath.Join(opt.ProfileDir, fmt.Sprintf("keepup-%s-%d.pprof", fileLabel(prober), n))
			}
			r, err := runKeepupChild(sp, tg)
			if err != nil {
				return nil, fmt.Errorf("keeping up, %s, N=%d: %w", prober, n, err)
			}
			fmt.Fprintf(os.Stderr, "keep-up N=%d %s done: CPU/probe %s, error p50 %s p99 %s\n", n, prober, r.CPUPerProbe, r.ErrP50, r.ErrP99)
			run.Rows = append(run.Rows, *r)
		}
	}
	return run, nil
}

// fileLabel is a prober's name as a part of a file name
// ("plain_net_http").
func fileLabel(prober string) string {
	return strings.NewReplacer(" ", "_", "/", "_").Replace(prober)
}

// runKeepupChild runs one keeping-up child (this binary, keepupEnv set,
// the spec on its stdin) and samples the targets' open files meanwhile.
func runKeepupChild(sp *keepupSpec, tg *keepupTargets) (*keepupResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	twBefore := timeWait()
	c := exec.Command(self)
	c.Env = append(os.Environ(), keepupEnv+"=1")
	c.Stdin = bytes.NewReader(in)
	c.Stderr = os.Stderr
	cpu0, err := tg.cpu()
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var fdsMax int
	var wg sync.WaitGroup
	wg.Go(func() { fdsMax = tg.sampleOpenFiles(stop) })
	out, err := c.Output()
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	cpu1, err := tg.cpu()
	if err != nil {
		return nil, err
	}
	var r keepupResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, err
	}
	r.TimeWaitBefore, r.TargetFDsMax, r.TargetCPU = twBefore, fdsMax, cpu1-cpu0
	return &r, nil
}

// waitTimeWaitBelow waits until fewer than n sockets are in TIME_WAIT,
// for at most limit.
func waitTimeWaitBelow(n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for timeWait() >= n && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
}

// keepupTargets are latency_target processes, one per loopback address
// 127.0.0.1, 127.0.0.2, ... on a free port each: their CPU is not the
// prober's, and N fresh connections a gather spread over that many
// destinations (4-tuples, TIME_WAITs).
type keepupTargets struct {
	*loopback.Targets
}

func startKeepupTargets(bin string, n int, delay time.Duration, lean bool) (*keepupTargets, error) {
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("-keepup-targets %d: want 1 to 254 (one per address 127.0.0.1 ...)", n)
	}
	args := []string{"-delay", delay.String()}
	if lean {
		args = append(args, "-lean")
	}
	lt, err := loopback.Start(bin, n, loopback.Options{Args: args})
	if err != nil {
		return nil, err
	}
	return &keepupTargets{lt}, nil
}

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// Linux whatever the kernel's HZ).
const clockTick = 10 * time.Millisecond

// cpu is the user + system time of all targets so far, from
// /proc/<pid>/stat (fields 14 and 15, after the command's parentheses).
func (tg *keepupTargets) cpu() (time.Duration, error) {
	var sum time.Duration
	for _, c := range tg.Procs {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/stat")
		if err != nil {
			return 0, err
		}
		i := bytes.LastIndexByte(data, ')')
		var f []string
		if i >= 0 {
			f = strings.Fields(string(data[i+1:]))
		}
		if len(f) < 13 {
			return 0, fmt.Errorf("target %d: unreadable /proc stat %q", c.Process.Pid, data)
		}
		// after ")": state is f[0], so utime (field 14) is f[11], stime f[12]
		for _, v := range f[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("target %d: /proc stat: %w", c.Process.Pid, err)
			}
			sum += time.Duration(n) * clockTick
		}
	}
	return sum, nil
}

// sampleOpenFiles returns the most open files of all targets together,
// sampled every second until stop is closed.
func (tg *keepupTargets) sampleOpenFiles(stop <-chan struct{}) int {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	most := 0
	for {
		sum := 0
		for _, c := range tg.Procs {
			sum += max(0, openFiles(strconv.Itoa(c.Process.Pid)))
		}
		most = max(most, sum)
		select {
		case <-stop:
			return most
		case <-t.C:
		}
	}
}
