// Package e2e proves the whole pipeline with the real programs: our execd
// binary under a real Telegraf (built from the telegraf version in go.mod),
// writing to a real InfluxDB 1.x, queried the way the Grafana dashboard in
// examples/grafana queries it. Everything runs on loopback in a temporary
// directory and is stopped and removed when the test ends, failed or not.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	database = "telegraf" // the database examples/telegraf.conf writes to
	// healthyDelay is how long the healthy target waits before answering:
	// every latency sample of it must be at least this long.
	healthyDelay = 20 * time.Millisecond
	// minGathers is how many gathers of every service must be stored before
	// the assertions run (the first one plus at least five intervals).
	minGathers = 6
)

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "go.mod"))
	return root
}

// telegrafBinary builds (or finds cached) the custom Telegraf through the
// same script `make e2e` uses, so `go test ./...` never needs a prior step.
func telegrafBinary(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("bash", "build-telegraf.sh")
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr // the build's progress, the first time
	require.NoError(t, cmd.Run(), "building Telegraf with examples/e2e/build-telegraf.sh")
	bin := strings.TrimSpace(out.String())
	require.FileExists(t, bin)
	return bin
}

// debianBinary returns the path of bin, installing Debian's package pkg
// when it is missing (as `make deps` does).
func debianBinary(t *testing.T, bin, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	t.Logf("%s not found: installing Debian's %s package", bin, pkg)
	sudo := ""
	if os.Geteuid() != 0 {
		sudo = "sudo "
	}
	out, err := exec.Command("sh", "-c", sudo+"apt-get update -qq && DEBIAN_FRONTEND=noninteractive "+sudo+"apt-get install -y -qq "+pkg).CombinedOutput()
	require.NoError(t, err, "apt-get install %s: %s", pkg, out)
	p, err := exec.LookPath(bin)
	require.NoError(t, err, "%s still missing after installing %s", bin, pkg)
	return p
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	return port
}

// syncBuffer collects a process's output while it runs.
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

// proc is a started program in its own process group (so its children go
// with it) that dies with the test process (Pdeathsig) even if the test
// binary is killed by a timeout before any cleanup runs.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, p.cmd.Start(), "starting %s", name)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process group, waits up to grace, then kills the
// group. It returns the process's exit code (-1 when it had to be killed).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) int {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			return -1
		}
	}
	// whatever is left of the group (a grandchild that outlived its parent)
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// env is the running pipeline: loopback targets, InfluxDB, Telegraf running
// our binary.
type env struct {
	dir          string // everything of this run: binaries, configs, InfluxDB's data
	influx       *proc
	influxURL    string
	telegraf     *proc
	metricsOut   string // Telegraf's outputs.file
	plugin       string // our binary's path
	telegrafConf string

	refusedAddr  string
	certNotAfter time.Time

	stopOnce sync.Once
}

// services are the names the e2e plugin config gives its targets.
var services = []string{"healthy", "refused", "secure"}

func startEnv(t *testing.T) *env {
	t.Helper()
	root := repoRoot(t)
	tgBin := telegrafBinary(t)
	influxdBin := debianBinary(t, "influxd", "influxdb") // InfluxDB 1.x's server

	dir := newRunDir(t)
	e := &env{dir: dir}
	// Registered first, so it runs last: after the targets are closed.
	t.Cleanup(func() {
		e.stop(t)
		if t.Failed() {
			if e.telegraf != nil {
				t.Logf("Telegraf's log:\n%s", tail(e.telegraf.out.String(), 6000))
			}
			if e.influx != nil {
				t.Logf("InfluxDB's log:\n%s", tail(e.influx.out.String(), 3000))
			}
		}
		_ = os.RemoveAll(dir)
	})

	e.plugin = buildPlugin(t, root, dir)

	// Targets: a healthy HTTP service with a known delay (by host name, so
	// the DNS phase is measured), an HTTPS one verified with its CA, and a
	// TCP port that refuses.
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(healthyDelay)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(healthy.Close)
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "secure ok")
	}))
	t.Cleanup(secure.Close)
	e.certNotAfter = secure.Certificate().NotAfter
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o600))
	e.refusedAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	healthyURL := "http://localhost:" + strconv.Itoa(healthy.Listener.Addr().(*net.TCPAddr).Port) + "/health"

	pluginConf := filepath.Join(dir, "service_latency.conf")
	require.NoError(t, os.WriteFile(pluginConf, []byte(fmt.Sprintf(`[[inputs.service_latency]]
  timeout = "800ms"
  window = 100

  [[inputs.service_latency.service]]
    name = "healthy"
    url = %q

  [[inputs.service_latency.service]]
    name = "secure"
    url = %q
    tls_ca = %q

  [[inputs.service_latency.service]]
    name = "refused"
    url = "tcp://%s"
`, healthyURL, secure.URL+"/", ca, e.refusedAddr)), 0o600))

	e.startInfluxDB(t, influxdBin)
	e.query(t, "CREATE DATABASE "+database)

	// Telegraf runs examples/telegraf.conf itself, with only its paths, URL
	// and intervals replaced, plus an outputs.file to compare against.
	example, err := os.ReadFile(filepath.Join(root, "examples", "telegraf.conf"))
	require.NoError(t, err)
	conf := string(example)
	for _, r := range []struct{ old, new string }{
		{`"/usr/local/bin/service_latency"`, strconv.Quote(e.plugin)},
		{`"/etc/telegraf/service_latency.conf"`, strconv.Quote(pluginConf)},
		{`urls = ["http://127.0.0.1:8086"]`, `urls = [` + strconv.Quote(e.influxURL) + `]`},
		{`interval = "10s"`, `interval = "1s"`}, // agent interval, flush_interval, the execd block's interval
	} {
		require.Contains(t, conf, r.old, "examples/telegraf.conf changed: the e2e test replaces %s", r.old)
		conf = strings.ReplaceAll(conf, r.old, r.new)
	}
	require.Contains(t, conf, `signal = "STDIN"`)
	require.Contains(t, conf, `"-poll_interval_disabled"`)
	e.metricsOut = filepath.Join(dir, "metrics.out")
	conf += fmt.Sprintf("\n[[outputs.file]]\n  files = [%q]\n  data_format = \"influx\"\n", e.metricsOut)
	tgConf := filepath.Join(dir, "telegraf.conf")
	e.telegrafConf = tgConf
	require.NoError(t, os.WriteFile(tgConf, []byte(conf), 0o600))

	e.telegraf = startProc(t, "telegraf", tgBin, "--config", tgConf)
	return e
}

const tempPrefix = "service_latency_e2e_"

// newRunDir sweeps earlier runs' dirs and makes this run's, marked with
// this process's id (owner.pid, what sweepStaleDirs reads).
func newRunDir(t *testing.T) string {
	t.Helper()
	sweepStaleDirs(t)
	dir, err := os.MkdirTemp("", tempPrefix)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600))
	return dir
}

// buildPlugin builds our binary into dir as `make build` does (no -race:
// it is the product) and returns its path; root is the repository's.
func buildPlugin(t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "service_latency")
	build := exec.Command("go", "build", "-o", bin, "./cmd/service_latency")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/service_latency: %s", out)
	return bin
}

// sweepStaleDirs removes the temp dirs of earlier runs whose test process is
// gone. t.Cleanup removes a run's dir, failed or not; only a run killed
// outright (go test's -timeout panics without cleanups) leaves one, and its
// processes died with it (Pdeathsig, stdin EOF for our binary).
func sweepStaleDirs(t *testing.T) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue // not ours, or being created right now
		}
		if _, err := os.Stat(filepath.Join("/proc", strings.TrimSpace(string(b)))); os.IsNotExist(err) {
			t.Logf("removing %s, left by a killed run", d)
			_ = os.RemoveAll(d)
		}
	}
}

// startInfluxDB runs influxd with a generated config on free loopback ports
// and its data in e.dir, and waits for /ping. A port taken between choosing
// and binding makes influxd exit: then it tries again with new ports.
func (e *env) startInfluxDB(t *testing.T, bin string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		data := filepath.Join(e.dir, "influxdb")
		require.NoError(t, os.RemoveAll(data))
		httpPort := freePort(t)
		conf := filepath.Join(e.dir, "influxdb.conf")
		require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"

[meta]
  dir = %q
  logging-enabled = false

[data]
  dir = %q
  wal-dir = %q
  index-version = "inmem"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:%d"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
`, freePort(t), filepath.Join(data, "meta"), filepath.Join(data, "data"), filepath.Join(data, "wal"), httpPort)), 0o600))
		e.influx = startProc(t, "influxd", bin, "run", "-config", conf)
		e.influxURL = "http://127.0.0.1:" + strconv.Itoa(httpPort)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !e.influx.exited() {
			if resp, err := http.Get(e.influxURL + "/ping"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusNoContent {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.influx.stop(syscall.SIGKILL, time.Second)
		require.Less(t, attempt, 3, "influxd did not answer /ping:\n%s", tail(e.influx.out.String(), 3000))
	}
}

// stop ends Telegraf (and with it our binary) and InfluxDB; it is safe to
// call more than once and runs from t.Cleanup whatever happened.
func (e *env) stop(t *testing.T) {
	e.stopOnce.Do(func() {
		if e.telegraf != nil {
			e.telegraf.stop(syscall.SIGTERM, 20*time.Second)
		}
		if e.influx != nil {
			e.influx.stop(syscall.SIGTERM, 10*time.Second)
		}
	})
}

// leftovers lists the processes whose command line mentions what (e.dir
// by default): our binary, Telegraf (its --config) and influxd (its
// -config) all live in e.dir.
func (e *env) leftovers(what ...string) []string {
	if len(what) == 0 {
		what = []string{e.dir}
	}
	return procsMentioning(what...)
}

// procsMentioning lists the processes, this one aside, whose command line
// mentions any of what ("pid: command line").
func procsMentioning(what ...string) []string {
	var left []string
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, w := range what {
			if bytes.Contains(cmdline, []byte(w)) {
				left = append(left, fmt.Sprintf("%d: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
				break
			}
		}
	}
	return left
}

// series is one series of an InfluxQL answer.
type series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// rows returns the series' rows as column → value maps.
func (s series) rows() []map[string]any {
	out := make([]map[string]any, len(s.Values))
	for i, v := range s.Values {
		m := make(map[string]any, len(s.Columns))
		for j, c := range s.Columns {
			if j < len(v) {
				m[c] = v[j]
			}
		}
		out[i] = m
	}
	return out
}

// queryErr runs one InfluxQL statement over InfluxDB's HTTP API (GET
// /query, epoch=ns) and returns its series, or the error InfluxDB reported.
func (e *env) queryErr(q string) ([]series, error) { return e.queryDB(database, q) }

// queryDB is queryErr in database db.
func (e *env) queryDB(db, q string) ([]series, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := e.influxURL + "/query?" + url.Values{"db": {db}, "epoch": {"ns"}, "q": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("HTTP %d: decoding the answer: %w", resp.StatusCode, err)
	}
	if body.Error != "" {
		return nil, errors.New(body.Error)
	}
	if len(body.Results) != 1 {
		return nil, fmt.Errorf("want 1 result, got %d", len(body.Results))
	}
	if body.Results[0].Error != "" {
		return nil, errors.New(body.Results[0].Error)
	}
	return body.Results[0].Series, nil
}

func (e *env) query(t *testing.T, q string) []series {
	t.Helper()
	s, err := e.queryErr(q)
	require.NoError(t, err, q)
	return s
}

// gathersPerService counts the stored metrics of each service.
func (e *env) gathersPerService(t *testing.T) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for _, s := range e.query(t, `SELECT count("result_code") FROM "service_latency" GROUP BY "service"`) {
		for _, r := range s.rows() {
			got[s.Tags["service"]] += integer(t, r["count"])
		}
	}
	return got
}

// waitGathers waits until every service has at least n metrics stored.
func (e *env) waitGathers(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got map[string]int64
	for time.Now().Before(deadline) {
		require.False(t, e.telegraf.exited(), "Telegraf exited:\n%s", e.telegraf.out.String())
		got = e.gathersPerService(t)
		enough := true
		for _, s := range services {
			if got[s] < n {
				enough = false
			}
		}
		if enough {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("after %s: stored metrics per service %v, want %d each", timeout, got, n)
}

// number and integer read a JSON number of an answer.
func number(t *testing.T, v any) float64 {
	t.Helper()
	n, ok := v.(json.Number)
	require.True(t, ok, "not a number: %#v", v)
	f, err := n.Float64()
	require.NoError(t, err)
	return f
}

func integer(t *testing.T, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	require.True(t, ok, "not a number: %#v", v)
	i, err := n.Int64()
	require.NoError(t, err, "not an integer: %s", n)
	return i
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
