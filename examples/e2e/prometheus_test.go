package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The Prometheus path, end to end: our binary under a real Telegraf
// (examples/prometheus/telegraf.conf, outputs.prometheus_client), scraped
// by a real Prometheus (examples/prometheus/prometheus.yml) that evaluates
// examples/prometheus/alerts.yml. Every PromQL query of
// examples/prometheus/grafana/service_latency.json and every alert
// expression runs against it.

const (
	promScrape   = 500 * time.Millisecond // twice per Telegraf interval: no value is missed
	promDelay    = 70 * time.Millisecond  // the healthy target's delay, inside the (0.05, 0.1] bucket
	promFor      = "2s"                   // the test copy's for: (the shipped ones are minutes)
	flapDown     = 8 * time.Second
	flapRecovery = 20 * time.Second
)

// promEnv is the running Prometheus pipeline.
type promEnv struct {
	dir         string
	telegraf    *proc
	prom        *proc
	promURL     string
	plugin      string
	pluginConf  string
	services    []string // every service the test configures (gone included)
	flappy      *flapListener
	shippedExpr map[string]bool // alert names of the shipped alerts.yml
	target      string          // Telegraf's prometheus_client, host:port
	stopOnce    sync.Once
}

// selfSignedTLS serves HTTPS with a certificate (its own CA) that expires
// after validFor, and writes the certificate to caFile.
func selfSignedTLS(t *testing.T, validFor time.Duration, caFile string) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "service_latency e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// flapListener is a TCP service the test takes down and brings back on
// the same address.
type flapListener struct {
	addr string
	mu   sync.Mutex
	l    net.Listener
}

func newFlapListener(t *testing.T) *flapListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &flapListener{addr: l.Addr().String()}
	f.serve(l)
	t.Cleanup(f.down)
	return f
}

func (f *flapListener) serve(l net.Listener) {
	f.mu.Lock()
	f.l = l
	f.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}

func (f *flapListener) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.l != nil {
		_ = f.l.Close()
		f.l = nil
	}
}

func (f *flapListener) up(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", f.addr)
	require.NoError(t, err, "listening again on %s", f.addr)
	f.serve(l)
}

// pluginHead is examples/prometheus/service_latency.conf up to its first
// service table: the plugin-level settings the example recommends.
func pluginHead(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "examples", "prometheus", "service_latency.conf"))
	require.NoError(t, err)
	s := string(b)
	i := strings.Index(s, "[[inputs.service_latency.service]]")
	require.Greater(t, i, 0, "examples/prometheus/service_latency.conf has no service table")
	head := s[:i]
	for _, want := range []string{"result_tag = false", "string_fields = false", "collect_internal = true", "histogram_buckets = [0.005, 0.01, 0.025,"} {
		require.Contains(t, head, want, "examples/prometheus/service_latency.conf changed: the e2e relies on %s", want)
	}
	// the example's 5s timeout is for a 10s interval; the test gathers every second
	require.Contains(t, head, `timeout = "5s"`)
	return strings.Replace(head, `timeout = "5s"`, `timeout = "800ms"`, 1)
}

func startPromEnv(t *testing.T) *promEnv {
	t.Helper()
	root := repoRoot(t)
	tgBin := telegrafBinary(t)
	promBin := debianBinary(t, "prometheus", "prometheus")

	dir := newRunDir(t)
	e := &promEnv{dir: dir}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			if e.telegraf != nil {
				t.Logf("Telegraf's log:\n%s", tail(e.telegraf.out.String(), 6000))
			}
			if e.prom != nil {
				t.Logf("Prometheus's log:\n%s", tail(e.prom.out.String(), 3000))
			}
		}
		_ = os.RemoveAll(dir)
	})

	e.plugin = buildPlugin(t, root, dir)

	// Targets.
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(promDelay)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(healthy.Close)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(40 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(slow.Close)
	warnCA, critCA := filepath.Join(dir, "warn-ca.pem"), filepath.Join(dir, "crit-ca.pem")
	certWarn := selfSignedTLS(t, 10*24*time.Hour, warnCA)
	certCrit := selfSignedTLS(t, 2*24*time.Hour, critCA)
	e.flappy = newFlapListener(t)
	refused := "127.0.0.1:" + strconv.Itoa(freePort(t))

	services := fmt.Sprintf(`
  [[inputs.service_latency.service]]
    name = "healthy"
    url = %[1]q

  [[inputs.service_latency.service]]
    name = "slow"
    url = %[2]q
    degraded_latency = "20ms"

  [[inputs.service_latency.service]]
    name = "cert-warn"
    url = %[3]q
    tls_ca = %[4]q

  [[inputs.service_latency.service]]
    name = "cert-crit"
    url = %[5]q
    tls_ca = %[6]q

  [[inputs.service_latency.service]]
    name = "refused"
    url = "tcp://%[7]s"

  [[inputs.service_latency.service]]
    name = "flappy"
    url = "tcp://%[8]s"
`, "http://localhost:"+strconv.Itoa(healthy.Listener.Addr().(*net.TCPAddr).Port)+"/health", slow.URL+"/slow", certWarn.URL+"/", warnCA, certCrit.URL+"/", critCA, refused, e.flappy.addr)
	gone := fmt.Sprintf(`
  [[inputs.service_latency.service]]
    name = "gone"
    url = %q
`, healthy.URL+"/gone")
	head := pluginHead(t, root)
	e.pluginConf = filepath.Join(dir, "service_latency.conf")
	require.NoError(t, os.WriteFile(e.pluginConf, []byte(head+services+gone), 0o600))
	// What a SIGHUP loads later: the same without "gone".
	require.NoError(t, os.WriteFile(e.pluginConf+".next", []byte(head+services), 0o600))

	// A second prober with a Redis store that cannot be reached: its
	// store_errors rise and its replay queue grows.
	redisConf := filepath.Join(dir, "service_latency_redis.conf")
	require.NoError(t, os.WriteFile(redisConf, []byte(fmt.Sprintf(`[[inputs.service_latency]]
  timeout = "800ms"
  result_tag = false
  string_fields = false
  collect_internal = true
  state = "redis"

  [inputs.service_latency.redis]
    address = "127.0.0.1:%d"
    timeout = "100ms"

  [[inputs.service_latency.service]]
    name = "queued"
    url = %q
`, freePort(t), healthy.URL+"/queued")), 0o600))
	e.services = []string{"cert-crit", "cert-warn", "flappy", "gone", "healthy", "queued", "refused", "slow"}

	// Telegraf runs examples/prometheus/telegraf.conf with its paths, port
	// and intervals replaced, plus the Redis prober.
	tgPort := freePort(t)
	e.target = "127.0.0.1:" + strconv.Itoa(tgPort)
	example, err := os.ReadFile(filepath.Join(root, "examples", "prometheus", "telegraf.conf"))
	require.NoError(t, err)
	conf := string(example)
	for _, r := range []struct{ old, new string }{
		{`"/usr/local/bin/service_latency"`, strconv.Quote(e.plugin)},
		{`"/etc/telegraf/service_latency.conf"`, strconv.Quote(e.pluginConf)},
		{`listen = "127.0.0.1:9273"`, fmt.Sprintf(`listen = "127.0.0.1:%d"`, tgPort)},
		{`interval = "10s"`, `interval = "1s"`}, // agent interval, flush_interval, the execd block's interval
	} {
		require.Contains(t, conf, r.old, "examples/prometheus/telegraf.conf changed: the e2e test replaces %s", r.old)
		conf = strings.ReplaceAll(conf, r.old, r.new)
	}
	conf += fmt.Sprintf(`
[[inputs.execd]]
  command = [%q, "-config", %q, "-poll_interval_disabled"]
  signal = "STDIN"
  interval = "1s"
  data_format = "influx"
  [inputs.execd.tags]
    prober = "redis"
`, e.plugin, redisConf)
	tgConf := filepath.Join(dir, "telegraf.conf")
	require.NoError(t, os.WriteFile(tgConf, []byte(conf), 0o600))

	// Prometheus runs examples/prometheus/prometheus.yml with the target,
	// the intervals and the rule file replaced; the rule file is
	// alerts.yml with every for: shortened, expressions untouched.
	rules, err := os.ReadFile(filepath.Join(root, "examples", "prometheus", "alerts.yml"))
	require.NoError(t, err)
	e.shippedExpr = map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\w+)\s*$`).FindAllStringSubmatch(string(rules), -1) {
		e.shippedExpr[m[1]] = true
	}
	forLine := regexp.MustCompile(`(?m)^(\s+for: )\S+\s*$`)
	require.Len(t, forLine.FindAllString(string(rules), -1), len(e.shippedExpr), "every rule of alerts.yml has a for:")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "alerts.test.yml"), forLine.ReplaceAll(rules, []byte("${1}"+promFor)), 0o600))
	promExample, err := os.ReadFile(filepath.Join(root, "examples", "prometheus", "prometheus.yml"))
	require.NoError(t, err)
	pconf := string(promExample)
	for _, r := range []struct{ old, new string }{
		{"scrape_interval: 10s", "scrape_interval: " + promScrape.String()},
		{"evaluation_interval: 10s", "evaluation_interval: 1s"},
		{"- alerts.yml", "- alerts.test.yml"},
		{`targets: ["127.0.0.1:9273"]`, fmt.Sprintf(`targets: ["127.0.0.1:%d"]`, tgPort)},
	} {
		require.Contains(t, pconf, r.old, "examples/prometheus/prometheus.yml changed: the e2e test replaces %s", r.old)
		pconf = strings.ReplaceAll(pconf, r.old, r.new)
	}
	promConf := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(promConf, []byte(pconf), 0o600))

	e.telegraf = startProc(t, "telegraf", tgBin, "--config", tgConf)
	e.startPrometheus(t, promBin, promConf)
	return e
}

// startPrometheus runs prometheus on a free loopback port with its TSDB in
// e.dir and waits until it is ready; a port taken meanwhile: again.
func (e *promEnv) startPrometheus(t *testing.T, bin, conf string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		data := filepath.Join(e.dir, "prometheus")
		require.NoError(t, os.RemoveAll(data))
		port := freePort(t)
		e.promURL = "http://127.0.0.1:" + strconv.Itoa(port)
		e.prom = startProc(t, "prometheus", bin,
			"--config.file="+conf,
			"--storage.tsdb.path="+data,
			"--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
			"--log.level=warn")
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) && !e.prom.exited() {
			if resp, err := http.Get(e.promURL + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.prom.stop(syscall.SIGKILL, time.Second)
		require.Less(t, attempt, 3, "prometheus did not become ready:\n%s", tail(e.prom.out.String(), 3000))
	}
}

func (e *promEnv) stop() {
	e.stopOnce.Do(func() {
		if e.telegraf != nil {
			e.telegraf.stop(syscall.SIGTERM, 20*time.Second)
		}
		if e.prom != nil {
			e.prom.stop(syscall.SIGTERM, 10*time.Second)
		}
	})
}

// promSample is one series of a vector, or of a matrix (Values).
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

func sampleValue(t *testing.T, v [2]any) float64 {
	t.Helper()
	s, ok := v[1].(string)
	require.True(t, ok, "sample value %#v", v)
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return f
}

func sampleTime(t *testing.T, v [2]any) time.Time {
	t.Helper()
	f, ok := v[0].(float64)
	require.True(t, ok, "sample time %#v", v)
	return time.UnixMilli(int64(math.Round(f * 1000)))
}

// api calls a Prometheus HTTP API endpoint and decodes its data.
func (e *promEnv) api(path string, params url.Values, data any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.promURL+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status   string          `json:"status"`
		Data     json.RawMessage `json:"data"`
		Error    string          `json:"error"`
		Warnings []string        `json:"warnings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body.Error)
	}
	if len(body.Warnings) > 0 {
		return fmt.Errorf("warnings: %v", body.Warnings)
	}
	return json.Unmarshal(body.Data, data)
}

type promResult struct {
	ResultType string       `json:"resultType"`
	Result     []promSample `json:"result"`
}

// instant runs an instant query now.
func (e *promEnv) instant(t *testing.T, q string) promResult {
	t.Helper()
	var r promResult
	require.NoError(t, e.api("/api/v1/query", url.Values{"query": {q}}, &r), q)
	return r
}

// vector runs an instant query that must give a vector.
func (e *promEnv) vector(t *testing.T, q string) []promSample {
	t.Helper()
	r := e.instant(t, q)
	require.Equal(t, "vector", r.ResultType, q)
	return r.Result
}

// byLabel maps a vector's series by one label's value ("" when absent).
func byLabel(t *testing.T, v []promSample, label string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, s := range v {
		k := s.Metric[label]
		require.NotContains(t, m, k, "two series with %s=%q: %v", label, k, v)
		m[k] = sampleValue(t, s.Value)
	}
	return m
}

func keys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// firing lists the firing alerts (ALERTS) as "alertname/who", who being
// the service label, else the prober tag ("main" when absent) for the
// prober's alerts, else the instance.
func (e *promEnv) firing(t *testing.T, alertname string) []string {
	t.Helper()
	sel := `alertstate="firing"`
	if alertname != "" {
		sel += `,alertname="` + alertname + `"`
	}
	var out []string
	for _, s := range e.vector(t, `ALERTS{`+sel+`}`) {
		out = append(out, s.Metric["alertname"]+"/"+who(s.Metric))
	}
	sort.Strings(out)
	return out
}

func who(m map[string]string) string {
	switch {
	case m["service"] != "":
		return m["service"]
	case m["host"] != "":
		if m["prober"] != "" {
			return m["prober"]
		}
		return "main"
	}
	return m["instance"]
}

// waitFor polls cond every 250ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// findPlugin returns the pid of our binary running the main plugin config.
func (e *promEnv) findPlugin(t *testing.T) int {
	t.Helper()
	left := procsMentioning(e.pluginConf)
	var pids []int
	for _, l := range left {
		if !strings.Contains(l, e.plugin+" ") {
			continue // Telegraf itself does not name this file
		}
		pid, err := strconv.Atoi(l[:strings.Index(l, ":")])
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	require.Len(t, pids, 1, "our binary with %s: %v", e.pluginConf, left)
	return pids[0]
}

// TestTelegrafPrometheusPipeline: our binary under a real Telegraf
// (outputs.prometheus_client), a real Prometheus scraping it every 500ms
// and evaluating the shipped alert expressions every second.
func TestTelegrafPrometheusPipeline(t *testing.T) {
	started := time.Now()
	e := startPromEnv(t)
	t.Logf("Telegraf and Prometheus started in %s", time.Since(started).Round(time.Millisecond))

	// Warm-up: every service has a verdict, the slow one is degraded.
	require.True(t, waitFor(40*time.Second, func() bool {
		require.False(t, e.telegraf.exited(), "Telegraf exited:\n%s", e.telegraf.out.String())
		st := byLabel(t, e.vector(t, `service_latency_status_code`), "service")
		return len(st) == len(e.services) && st["healthy"] == 1 && st["flappy"] == 1 && st["slow"] == 2 && st["refused"] == 3
	}), "services' status_code after 40s: %v", e.vector(t, `service_latency_status_code`))
	t.Logf("every service has its status after %s", time.Since(started).Round(time.Millisecond))

	t.Run("one series per service and field, the labels of the README", func(t *testing.T) {
		v := e.vector(t, `service_latency_result_code`)
		require.Len(t, v, len(e.services))
		for _, s := range v {
			var names []string
			for k := range s.Metric {
				names = append(names, k)
			}
			sort.Strings(names)
			want := []string{"__name__", "host", "instance", "job", "probe", "server", "service"}
			if s.Metric["service"] == "queued" {
				want = []string{"__name__", "host", "instance", "job", "probe", "prober", "server", "service"}
			}
			require.Equal(t, want, names, "labels of %v", s.Metric)
			require.Equal(t, "service_latency", s.Metric["job"])
		}
		// nothing but service_latency's own metrics (collectors_exclude), no string field as a label
		var names []string
		require.NoError(t, e.api("/api/v1/label/__name__/values", url.Values{"match[]": {`{job="service_latency"}`}}, &names))
		for _, n := range names {
			require.Regexp(t, `^(service_latency_|up$|scrape_|ALERTS$|ALERTS_FOR_STATE$)`, n) // ALERTS carry the job label too
		}
		require.Contains(t, names, "service_latency_status_code")
		require.Contains(t, names, "service_latency_latency_avg")
		require.Contains(t, names, "service_latency_histogram_count")
		require.Contains(t, names, "service_latency_internal_gather_time")
		require.NotContains(t, names, "service_latency_status", "a string field (string_fields = false)")
	})

	// "gone" leaves the config (SIGHUP): the plugin no longer emits it and
	// prometheus_client keeps its last values, frozen.
	pid := e.findPlugin(t)
	require.NoError(t, os.Rename(e.pluginConf+".next", e.pluginConf))
	require.NoError(t, syscall.Kill(pid, syscall.SIGHUP))
	goneAt := time.Now()

	t.Run("a service down for 8s then back: its down alert fires, and 20s after recovery it is gone", func(t *testing.T) {
		flapDownAlert := func() []string { return e.firing(t, "ServiceLatencyServiceDown") }
		require.NotContains(t, flapDownAlert(), "ServiceLatencyServiceDown/flappy")
		e.flappy.down()
		downAt := time.Now()
		fired := waitFor(flapDown, func() bool {
			return contains(flapDownAlert(), "ServiceLatencyServiceDown/flappy")
		})
		require.True(t, fired, "flappy's down alert did not fire within %s of going down: %v", flapDown, flapDownAlert())
		t.Logf("flappy's down alert fired %s after it went down", time.Since(downAt).Round(time.Millisecond))
		time.Sleep(time.Until(downAt.Add(flapDown)))
		e.flappy.up(t)
		upAt := time.Now()
		require.True(t, waitFor(flapRecovery, func() bool {
			return len(e.vector(t, `ALERTS{alertname="ServiceLatencyServiceDown",service="flappy"}`)) == 0
		}), "flappy's down alert still there %s after recovery", flapRecovery)
		t.Logf("flappy's down alert resolved %s after recovery", time.Since(upAt).Round(time.Millisecond))
		time.Sleep(time.Until(upAt.Add(flapRecovery)))
		require.Empty(t, e.vector(t, `ALERTS{alertname="ServiceLatencyServiceDown",service="flappy"}`), "%s after recovery", flapRecovery)
		// only availability, whose window still holds the failed rounds
		var others []string
		for _, s := range e.vector(t, `ALERTS{service="flappy"}`) {
			others = append(others, s.Metric["alertname"])
		}
		require.Subset(t, []string{"ServiceLatencyAvailabilityLow"}, others, "alerts on flappy %s after recovery", flapRecovery)
		// one series, back at up: nothing stale left beside it
		require.Equal(t, map[string]float64{"flappy": 1}, byLabel(t, e.vector(t, `service_latency_status_code{service="flappy"}`), "service"))
		require.Len(t, e.vector(t, `{__name__=~"service_latency_(status_code|result_code|availability)",service="flappy"}`), 3)

		e.flappy.down()
		downAt = time.Now()
		require.True(t, waitFor(15*time.Second, func() bool {
			return contains(flapDownAlert(), "ServiceLatencyServiceDown/flappy")
		}), "flappy down for good: no alert after 15s")
		t.Logf("flappy down for good: alert fired after %s", time.Since(downAt).Round(time.Millisecond))
	})

	// Every alert expression of the shipped file, as Prometheus loaded it,
	// against what it must find now.
	want := map[string][]string{
		"ServiceLatencyServiceDown":               {"flappy", "refused"},
		"ServiceLatencyServiceDegraded":           {"slow"},
		"ServiceLatencyAvailabilityLow":           {"flappy", "refused"},
		"ServiceLatencyCertificateExpiring":       {"cert-warn"},
		"ServiceLatencyCertificateExpiryCritical": {"cert-crit"},
		"ServiceLatencyNoData":                    {"gone"},
		"ServiceLatencyExporterDown":              nil,
		"ServiceLatencyProberSlow":                nil,
		"ServiceLatencyStoreErrors":               {"redis"},
		"ServiceLatencyReplayQueueGrowing":        {"redis"},
	}
	var wantFiring []string
	for name, whos := range want {
		for _, w := range whos {
			wantFiring = append(wantFiring, name+"/"+w)
		}
	}
	sort.Strings(wantFiring)
	// NoData needs 3 intervals of the shipped expression (30s) and the for:
	time.Sleep(time.Until(goneAt.Add(30 * time.Second)))
	waitFor(20*time.Second, func() bool { return strings.Join(e.firing(t, ""), " ") == strings.Join(wantFiring, " ") })

	t.Run("every alert expression of alerts.yml finds what it must, and those alerts fire", func(t *testing.T) {
		var rules struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string  `json:"name"`
					Query     string  `json:"query"`
					Type      string  `json:"type"`
					Health    string  `json:"health"`
					LastError string  `json:"lastError"`
					Duration  float64 `json:"duration"`
				} `json:"rules"`
			} `json:"groups"`
		}
		require.NoError(t, e.api("/api/v1/rules", nil, &rules))
		seen := map[string]bool{}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				require.Equal(t, "alerting", r.Type, r.Name)
				require.Equal(t, "ok", r.Health, "rule %s: %s", r.Name, r.LastError)
				require.Contains(t, want, r.Name, "a rule the test does not know: add what it must find")
				seen[r.Name] = true
				var got []string
				for _, s := range e.vector(t, r.Query) {
					got = append(got, who(s.Metric))
				}
				sort.Strings(got)
				require.Equal(t, want[r.Name], got, "rule %s: %s", r.Name, r.Query)
			}
		}
		require.Equal(t, len(e.shippedExpr), len(seen), "rules loaded: %v, in alerts.yml: %v", seen, e.shippedExpr)
		for name := range e.shippedExpr {
			require.True(t, seen[name], "%s of alerts.yml not loaded", name)
		}
		require.Equal(t, wantFiring, e.firing(t, ""), "firing alerts (ALERTS)")
	})

	t.Run("status codes: up, degraded, down", func(t *testing.T) {
		st := byLabel(t, e.vector(t, `service_latency_status_code`), "service")
		require.Equal(t, map[string]float64{"healthy": 1, "slow": 2, "cert-warn": 1, "cert-crit": 1, "refused": 3, "flappy": 3, "gone": 1, "queued": 1}, st)
	})

	t.Run("healthy: latency_count rises by one per interval", func(t *testing.T) {
		r := e.instant(t, `service_latency_latency_count{service="healthy"}[15s]`)
		require.Equal(t, "matrix", r.ResultType)
		require.Len(t, r.Result, 1)
		vals := r.Result[0].Values
		require.GreaterOrEqual(t, len(vals), 20, "samples of 15s scraped every %s", promScrape)
		var distinct []float64
		for _, v := range vals {
			f := sampleValue(t, v)
			if len(distinct) == 0 || f != distinct[len(distinct)-1] {
				distinct = append(distinct, f)
			}
		}
		// Each gather adds exactly one; a scrape every 500 ms of a 1 s
		// interval can still miss one value when Telegraf's flush and the
		// scrape drift past each other (a step of 2), never lose or repeat
		// a count: the rate below holds it to one per interval.
		skipped := 0
		for i := 1; i < len(distinct); i++ {
			step := distinct[i] - distinct[i-1]
			require.Contains(t, []float64{1, 2}, step, "latency_count went %v -> %v (%v)", distinct[i-1], distinct[i], distinct)
			if step == 2 {
				skipped++
			}
		}
		require.LessOrEqual(t, skipped, 2, "scrapes that missed a gather's value: %v", distinct)
		span := sampleTime(t, vals[len(vals)-1]).Sub(sampleTime(t, vals[0])).Seconds()
		rate := (distinct[len(distinct)-1] - distinct[0]) / span
		require.InDelta(t, 1.0, rate, 0.2, "latency_count per second over %.1fs: %v", span, distinct)
	})

	t.Run("histogram_quantile is within the bucket of the injected delay", func(t *testing.T) {
		v := e.vector(t, `histogram_quantile(0.95, sum by (le) (rate(service_latency_histogram_count{service="healthy"}[10s])))`)
		require.Len(t, v, 1)
		q := sampleValue(t, v[0].Value)
		maxL := byLabel(t, e.vector(t, `max by (service) (max_over_time(service_latency_latency{service="healthy"}[10s]))`), "service")["healthy"]
		// delay 70ms: every sample in (0.05, 0.1]
		require.True(t, q > 0.05 && q <= 0.1, "p95 from the histogram = %v, want in (0.05, 0.1] (delay %s; slowest sample of the 10s: %v)", q, promDelay, maxL)
		avg := byLabel(t, e.vector(t, `service_latency_latency_avg{service="healthy"}`), "service")["healthy"]
		require.True(t, avg >= promDelay.Seconds() && avg <= 0.1, "latency_avg %v", avg)
	})

	t.Run("every dashboard query runs and returns data", func(t *testing.T) {
		checkPromDashboard(t, e)
	})

	// The whole prober gone: ExporterDown fires.
	require.Equal(t, 0, e.telegraf.stop(syscall.SIGTERM, 20*time.Second), "Telegraf's exit status on SIGTERM")
	t.Run("Telegraf stopped: up is 0 and ServiceLatencyExporterDown fires", func(t *testing.T) {
		require.True(t, waitFor(10*time.Second, func() bool {
			return contains(e.firing(t, "ServiceLatencyExporterDown"), "ServiceLatencyExporterDown/"+e.target)
		}), "ServiceLatencyExporterDown: %v", e.firing(t, "ServiceLatencyExporterDown"))
	})

	e.stop()
	require.Empty(t, procsMentioning(e.dir), "processes left behind")
	require.NoError(t, os.RemoveAll(e.dir))
	_, err := os.Stat(e.dir)
	require.True(t, os.IsNotExist(err), "temp dir %s left behind", e.dir)
	t.Logf("whole test after the Telegraf build: %s", time.Since(started).Round(time.Millisecond))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
