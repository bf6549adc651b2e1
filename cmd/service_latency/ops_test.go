package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/stretchr/testify/require"
)

// gather prompts one gather over stdin and returns its n metrics by
// service.
func (p *proc) gather(n int) map[string]telegraf.Metric {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, "\n")
	require.NoError(p.t, err)
	out := make(map[string]telegraf.Metric, n)
	for range n {
		m := p.metric()
		require.Equal(p.t, "service_latency", m.Name())
		out[m.Tags()["service"]] = m
	}
	return out
}

func (p *proc) waitStderr(substr string) {
	p.t.Helper()
	require.Eventually(p.t, func() bool { return strings.Contains(p.stderr.String(), substr) },
		10*time.Second, 20*time.Millisecond, "waiting for %q in stderr: %s", substr, p.stderr.String())
}

func count(t *testing.T, m telegraf.Metric) int64 {
	t.Helper()
	require.NotNil(t, m)
	v, ok := m.GetField("latency_count")
	require.True(t, ok, "%v %v", m.Tags(), m.Fields())
	return v.(int64)
}

// TestBinarySIGHUPReloadsTheConfig: a valid new file replaces the config
// and keeps the state of every service whose name remains (latency_count
// continues), drops the removed ones and starts the new ones; an invalid
// file is refused with an E! line naming file:line, and the old config
// keeps gathering.
func TestBinarySIGHUPReloadsTheConfig(t *testing.T) {
	srv := target(t)
	path := writeConf(t, `[[inputs.service_latency]]
  timeout = "2s"
[[inputs.service_latency.service]]
  name = "keep"
  url = "`+srv.URL+`/a"
[[inputs.service_latency.service]]
  name = "drop"
  url = "`+srv.URL+`/b"
`)
	p := start(t, "-config", path, "-poll_interval_disabled")
	for i := int64(1); i <= 2; i++ {
		ms := p.gather(2)
		require.Equal(t, i, count(t, ms["keep"]))
		require.Equal(t, i, count(t, ms["drop"]))
	}

	// a valid change: keep moves, drop goes, new comes
	require.NoError(t, os.WriteFile(path, []byte(`[[inputs.service_latency]]
  timeout = "2s"
[[inputs.service_latency.service]]
  name = "keep"
  url = "`+srv.URL+`/moved"
[[inputs.service_latency.service]]
  name = "new"
  url = "`+srv.URL+`/c"
`), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitStderr("I! SIGHUP: config reloaded from " + path + ": 2 services")
	ms := p.gather(2)
	require.Equal(t, int64(3), count(t, ms["keep"]), "the state of a remaining service is kept")
	require.Equal(t, srv.URL+"/moved", ms["keep"].Tags()["server"])
	require.Equal(t, int64(1), count(t, ms["new"]))
	require.NotContains(t, ms, "drop")

	// an invalid file: refused, and the running config goes on
	require.NoError(t, os.WriteFile(path, []byte(`[[inputs.service_latency]]
  timeout = "2s"
[[inputs.service_latency.service]]
  name = "keep"
  url = "ftp://`+strings.TrimPrefix(srv.URL, "http://")+`/"
`), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitStderr("E! SIGHUP: config not reloaded")
	errLine := regexp.MustCompile(`(?m)^E! SIGHUP: config not reloaded, the previous one keeps running: (.*)$`).FindStringSubmatch(p.stderr.String())
	require.NotNil(t, errLine, p.stderr.String())
	require.Contains(t, errLine[1], path+":5: ", "the error names file:line")
	require.Contains(t, errLine[1], `unsupported scheme "ftp"`)
	for i := int64(4); i <= 5; i++ {
		ms = p.gather(2)
		require.Equal(t, i, count(t, ms["keep"]))
		require.Equal(t, i-2, count(t, ms["new"]))
		require.Equal(t, "success", ms["keep"].Tags()["result"])
	}

	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
}

var listeningRE = regexp.MustCompile(`I! status endpoint listening on http://([^/]+)/status`)

// TestBinaryStatusEndpoint: with status_listen the binary serves /status
// (build info from main, every service) and /healthz from Start to the end,
// and no secret reaches its stdout, its stderr (debug included) or the
// endpoint.
func TestBinaryStatusEndpoint(t *testing.T) {
	const secret = "pw-S3CRET-binary"
	srv := target(t)
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refusedAddr := refused.Addr().String()
	require.NoError(t, refused.Close())
	path := writeConf(t, `[[inputs.service_latency]]
  timeout = "2s"
  status_listen = "127.0.0.1:0"
  collect_internal = true
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
  username = "bob"
  password = "`+secret+`"
[[inputs.service_latency.service]]
  url = "http://alice:`+secret+`@`+refusedAddr+`/down"
`)
	p := start(t, "-config", path, "-poll_interval_disabled", "-debug")
	p.waitStderr("I! status endpoint listening on")
	addr := listeningRE.FindStringSubmatch(p.stderr.String())[1]
	get := func(path string) (int, string) {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code, "before the first gather")

	var stdout strings.Builder
	for range 2 {
		_, err := io.WriteString(p.stdin, "\n")
		require.NoError(t, err)
		for range 3 { // two services and service_latency_internal
			m := p.metric()
			fmt.Fprintf(&stdout, "%s %v %v\n", m.Name(), m.Tags(), m.Fields())
		}
	}
	require.Contains(t, stdout.String(), "service_latency_internal")
	code, body := get("/healthz")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get("/status")
	require.Equal(t, http.StatusOK, code)
	var doc struct {
		Build struct {
			Version, Commit, GoVersion string
		} `json:"build"`
		Services []struct {
			Name   string         `json:"name"`
			Fields map[string]any `json:"fields"`
		} `json:"services"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Equal(t, version, doc.Build.Version)
	require.NotEmpty(t, doc.Build.Commit)
	require.Contains(t, body, `"go_version": "`+runtime.Version()+`"`)
	require.Len(t, doc.Services, 2)
	require.Equal(t, "api", doc.Services[0].Name)
	require.EqualValues(t, 2, doc.Services[0].Fields["latency_count"])

	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the status server is gone with the process")

	require.Contains(t, p.stderr.String(), "D! ", "debug lines were logged")
	for where, s := range map[string]string{"stdout": stdout.String(), "stderr": p.stderr.String(), "/status": body} {
		require.NotContains(t, s, secret, where)
	}
}

// A status port that is taken makes the binary exit 1 with one E! line,
// before any probe.
func TestBinaryStatusBindFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	srv := target(t)
	path := writeConf(t, "[[inputs.service_latency]]\n  status_listen = \""+ln.Addr().String()+"\"\n[[inputs.service_latency.service]]\n  url = \""+srv.URL+"\"\n")
	p := start(t, "-config", path, "-poll_interval", "50ms")
	require.Equal(t, 1, p.wait())
	out := p.stderr.String()
	require.Regexp(t, `(?m)^E! .*status_listen: .*address already in use`, out)
	select {
	case line, ok := <-p.lines:
		require.False(t, ok, "no metric may be written: %s", line)
	default:
	}
}

// A status_listen that is not loopback is refused at load time.
func TestBinaryRefusesRemoteStatusListen(t *testing.T) {
	path := writeConf(t, "[[inputs.service_latency]]\n  status_listen = \"0.0.0.0:9115\"\n[[inputs.service_latency.service]]\n  url = \"tcp://127.0.0.1:9\"\n")
	p := start(t, "-config", path)
	require.Equal(t, 1, p.wait())
	require.Contains(t, p.stderr.String(), "E! config: "+path+":2: status_listen: 0.0.0.0 is not a loopback address")
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// The binary's logger writes each line and keeps nothing: 200,000 lines
// (half of them filtered debug lines) leave the heap where it was.
func TestLevelLoggerKeepsNothing(t *testing.T) {
	var written countingWriter
	l := newLevelLogger(&written, telegraf.Info)
	for i := range 1000 { // warm up
		l.Infof("warm %d", i)
	}
	requireHeapFlat(t, 1<<20, func() {
		for i := range 100_000 {
			l.Debugf("probe %d: %s", i, "connection refused")
			l.Warnf("service %q failing: %d", "api", i)
		}
	})
	require.Greater(t, written.n, int64(100_000*20), "the lines were written")
}

// requireHeapFlat runs work and requires the in-use heap after it to be
// within limit of before. Other goroutines of the test process (readers of
// earlier tests' killed processes) can allocate during one run, so it tries
// up to three times: a real leak grows the heap on every run and fails all
// three.
func requireHeapFlat(t *testing.T, limit uint64, work func()) {
	t.Helper()
	var before, after uint64
	for range 3 {
		before = heapInUse()
		work()
		after = heapInUse()
		if after < before+limit {
			return
		}
	}
	t.Fatalf("the heap grew from %d to %d bytes (limit +%d) on three runs", before, after, limit)
}

// Telegraf's own loggers (the shim's, and any Telegraf package's) keep
// nothing either once logging is set up the way main does it: without
// logger.SetupLogging every line, even a filtered debug line, is kept in
// memory forever.
func TestTelegrafLoggingKeepsNothingOnceSetUp(t *testing.T) {
	require.NoError(t, logger.SetupLogging(&logger.Config{Debug: false}))
	l := logger.New("inputs", "service_latency", "")
	for i := range 1000 {
		l.Debugf("warm %d", i)
	}
	requireHeapFlat(t, 2<<20, func() {
		for i := range 100_000 {
			l.Debugf("filtered debug line %d with some payload to make it count", i)
		}
	})
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}
