package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/stretchr/testify/require"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "service_latency_bin")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "service_latency")
	build := exec.Command("go", "build", "-race", "-o", binPath, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is the built binary driven over stdin like Telegraf's execd does.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &proc{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 100), stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	return p
}

func (p *proc) metric() telegraf.Metric {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		require.True(p.t, ok, "stdout closed; stderr: %s", p.stderr.String())
		parser := &influx.Parser{}
		require.NoError(p.t, parser.Init())
		m, err := parser.ParseLine(line)
		require.NoError(p.t, err, line)
		return m
	case <-time.After(10 * time.Second):
		p.t.Fatalf("no metric within 10s; stderr: %s", p.stderr.String())
	}
	return nil
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case err := <-p.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		require.NoError(p.t, err)
		return 0
	case <-time.After(10 * time.Second):
		p.t.Fatalf("process did not exit; stderr: %s", p.stderr.String())
	}
	return -1
}

func writeConf(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "service_latency.conf")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func target(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestBinaryDrivenOverStdinLikeExecd(t *testing.T) {
	srv := target(t)
	path := writeConf(t, "[[inputs.service_latency]]\n  timeout = \"2s\"\n[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \""+srv.URL+"\"\n")
	p := start(t, "-config", path, "-poll_interval_disabled")

	for i := 1; i <= 3; i++ {
		_, err := io.WriteString(p.stdin, "\n")
		require.NoError(t, err)
		m := p.metric()
		require.Equal(t, "service_latency", m.Name())
		require.Equal(t, "api", m.Tags()["service"])
		c, _ := m.GetField("latency_count")
		require.Equal(t, int64(i), c, "gather %d", i)
		if i == 2 {
			// SIGHUP in between changes nothing: same process, same state
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
			require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "I! SIGHUP") }, 5*time.Second, 20*time.Millisecond)
		}
	}
	// no unprompted gathers: poll interval is disabled
	select {
	case line := <-p.lines:
		t.Fatalf("unexpected output without a prompt: %s", line)
	case <-time.After(1500 * time.Millisecond):
	}
	require.NoError(t, p.stdin.Close()) // stdin EOF ends the shim
	require.Equal(t, 0, p.wait(), p.stderr.String())
	for _, line := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		if line == "" {
			continue
		}
		require.Regexp(t, `^[EWID]! `, line, "every stderr line carries a level prefix and no timestamp")
	}
}

func TestBinarySIGTERMExitsZero(t *testing.T) {
	srv := target(t)
	path := writeConf(t, "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  url = \""+srv.URL+"\"\n")
	p := start(t, "-config", path, "-poll_interval", "100ms")
	p.metric()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait())
}

func TestBinaryConfigErrorExitsBeforeAnyProbe(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	defer srv.Close()
	path := writeConf(t, "[[inputs.service_latency]]\n  timeout = \"1s\"\n  bogus = 1\n[[inputs.service_latency.service]]\n  url = \""+srv.URL+"\"\n")
	p := start(t, "-config", path, "-poll_interval", "10ms")
	require.Equal(t, 1, p.wait())
	out := strings.TrimSpace(p.stderr.String())
	require.Equal(t, 1, strings.Count(out, "\n")+1, "one line: %q", out)
	require.True(t, strings.HasPrefix(out, "E! "), out)
	require.Contains(t, out, path+":3:")
	require.Contains(t, out, `"bogus"`)
	require.Equal(t, 0, hits)
}

func TestBinaryOnceAndVersion(t *testing.T) {
	srv := target(t)
	path := writeConf(t, "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"a\"\n  url = \""+srv.URL+"\"\n[[inputs.service_latency.service]]\n  name = \"b\"\n  url = \""+srv.URL+"/b\"\n")
	out, err := exec.Command(binPath, "-config", path, "-once").Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, 2)
	for _, l := range lines {
		require.True(t, strings.HasPrefix(l, "service_latency,"), l)
		require.Contains(t, l, "latency_count=1i")
	}
	out, err = exec.Command(binPath, "-version").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "go1.")
}

func TestLevelLogger(t *testing.T) {
	var b bytes.Buffer
	l := newLevelLogger(&b, telegraf.Info)
	l.Debugf("hidden %d", 1)
	l.Infof("info %d", 2)
	l.Warn("warn", 3)
	l.Errorf("multi\nline")
	require.Equal(t, "I! info 2\nW! warn3\nE! multi | line\n", b.String())
}
