package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// 12.4: SIGTERM, SIGINT and stdin EOF cancel the probes in flight: 12
// hanging services, timeout 5 s, max_concurrency 4 used to take 14.6 s
// (the shim stops only after the gather); now the process exits within
// about a second, with its state saved.
func TestBinaryShutdownCancelsProbesInFlight(t *testing.T) {
	var hang atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			<-r.Context().Done()
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	for _, how := range []string{"SIGTERM", "SIGINT", "stdin EOF"} {
		t.Run(how, func(t *testing.T) {
			hang.Store(false)
			state := filepath.Join(t.TempDir(), "sl.state")
			var b strings.Builder
			fmt.Fprintf(&b, "[[inputs.service_latency]]\n  timeout = \"5s\"\n  max_concurrency = 4\n  state_file = %q\n", state)
			for i := range 12 {
				fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"hang%d\"\n  url = \"%s/%d\"\n", i, srv.URL, i)
			}
			p := start(t, "-config", writeConf(t, b.String()), "-poll_interval_disabled")
			_, err := io.WriteString(p.stdin, "\n")
			require.NoError(t, err)
			for range 12 {
				p.metric() // a first gather completes
			}
			hang.Store(true)
			_, err = io.WriteString(p.stdin, "\n")
			require.NoError(t, err)
			time.Sleep(300 * time.Millisecond) // the second is in flight
			begin := time.Now()
			switch how {
			case "SIGTERM":
				require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			case "SIGINT":
				require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
			default:
				require.NoError(t, p.stdin.Close())
			}
			require.Equal(t, 0, p.wait(), p.stderr.String())
			require.Less(t, time.Since(begin), 1500*time.Millisecond, "exit soon after %s", how)
			// the state holds the completed gather, and only it: the
			// probes cut short were not counted
			data, err := os.ReadFile(state)
			require.NoError(t, err)
			var dump struct {
				Services map[string]struct {
					Count int64 `json:"count"`
				} `json:"services"`
			}
			require.NoError(t, json.Unmarshal(data, &dump))
			require.Len(t, dump.Services, 12)
			for name, e := range dump.Services {
				require.Equal(t, int64(1), e.Count, name)
			}
		})
	}
}

// 12.6: a non-positive -poll_interval is refused before anything starts
// (it used to panic after the status port opened, or never gather).
func TestBinaryRefusesNonPositivePollInterval(t *testing.T) {
	srv := target(t)
	path := writeConf(t, "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  url = \""+srv.URL+"\"\n")
	for _, v := range []string{"-1s", "0"} {
		out, err := exec.Command(binPath, "-config", path, "-poll_interval", v).CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%s", out)
		require.Equal(t, 2, ee.ExitCode())
		require.Contains(t, string(out), "E! -poll_interval")
		require.NotContains(t, string(out), "panic")
	}
}

// 12.7: a SIGHUP during start-up (a large config still loading) must not
// kill the process.
func TestBinarySIGHUPDuringStartup(t *testing.T) {
	srv := target(t)
	var b strings.Builder
	b.WriteString("[[inputs.service_latency]]\n")
	for i := range 5_000 {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"s%d\"\n  url = \"%s/%d\"\n", i, srv.URL, i)
	}
	p := start(t, "-config", writeConf(t, b.String()), "-poll_interval_disabled", "-debug")
	// signal while the config loads (before package main initializes the
	// runtime's default still applies: that cannot be helped)
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "D! loading") }, 30*time.Second, time.Millisecond)
	for range 5 {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP), p.stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "I! SIGHUP") }, 120*time.Second, 50*time.Millisecond, p.stderr.String())
	select {
	case err := <-p.done:
		t.Fatalf("the process died: %v; stderr: %s", err, p.stderr.String())
	default:
	}
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait())
}

// 12.2: a stderr that nobody reads (Telegraf's execd reader died on a line
// over 64 KiB) can never stop a gather, and no line we write is that long.
func TestBinaryBlockedStderrNeverStopsGathers(t *testing.T) {
	var b strings.Builder
	b.WriteString("[[inputs.service_latency]]\n  timeout = \"200ms\"\n")
	refused := refusedAddr(t)
	for i := range 200 {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"down%d-%s\"\n  url = \"http://%s/%s\"\n", i, strings.Repeat("x", 900), refused, strings.Repeat("p", 3000))
	}
	path := writeConf(t, b.String())
	cmd := exec.Command(binPath, "-config", path, "-poll_interval_disabled", "-debug")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	// a pipe we never read: it fills after 64 KiB
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	cmd.Stderr = w
	require.NoError(t, cmd.Start())
	w.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 10_000)
	go func() {
		buf := make([]byte, 1<<20)
		var acc string
		for {
			n, err := stdout.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	// Each gather writes ~200 debug lines of ~4 KiB: the pipe is full
	// after the first. Ten gathers must still each emit every service.
	for g := 1; g <= 10; g++ {
		_, err := io.WriteString(stdin, "\n")
		require.NoError(t, err)
		for range 200 {
			select {
			case _, ok := <-lines:
				require.True(t, ok)
			case <-time.After(10 * time.Second):
				t.Fatalf("gather %d stalled behind a blocked stderr", g)
			}
		}
	}
	// and what reached stderr has no line near execd's 64 KiB limit
	stdin.Close()
	buf, _ := io.ReadAll(r)
	for _, l := range strings.Split(string(buf), "\n") {
		require.LessOrEqual(t, len(l), maxLogLine)
	}
}

func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestCutLine(t *testing.T) {
	require.Equal(t, "short", cutLine("short"))
	long := strings.Repeat("é", maxLogLine)
	got := cutLine(long)
	require.LessOrEqual(t, len(got), maxLogLine)
	require.True(t, strings.HasSuffix(got, "[cut]"))
	require.True(t, strings.HasPrefix(got, "é"))
}

// 12.3: a credential in a config error is never shown, on SIGHUP either.
func TestBinarySecretsNeverInConfigErrors(t *testing.T) {
	srv := target(t)
	bad := "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  url = \"redis://u:SECRETR5@[::1:1/0\"\n[[inputs.service_latency.service]]\n  url = \"" + srv.URL + "\"\n"
	out, err := exec.Command(binPath, "-config", writeConf(t, bad), "-once").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "redis.url")
	require.NotContains(t, string(out), "SECRETR5")

	good := "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:1\"\n[[inputs.service_latency.service]]\n  url = \"" + srv.URL + "\"\n"
	path := writeConf(t, good)
	p := start(t, "-config", path, "-poll_interval_disabled")
	_, err = io.WriteString(p.stdin, "\n")
	require.NoError(t, err)
	p.metric() // running (Redis down: local state)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(good, `address = "127.0.0.1:1"`, `address = "u:SECRETA1@127.0.0.1:16379"`, 1)), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "E! SIGHUP") }, 10*time.Second, 20*time.Millisecond, p.stderr.String())
	require.NotContains(t, p.stderr.String(), "SECRETA1")
	require.Contains(t, p.stderr.String(), "redis.address")
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait())
}
