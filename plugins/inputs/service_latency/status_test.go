package service_latency

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	engine "github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// startPlugin parses conf, starts the plugin (as the shim does) and stops
// it at cleanup.
func startPlugin(t *testing.T, conf string) (*ServiceLatency, *testutil.CaptureLogger) {
	t.Helper()
	p, log := newPlugin(t, conf)
	require.NoError(t, p.Start(&testutil.Accumulator{}))
	return p, log
}

func TestStatusListenValidation(t *testing.T) {
	cases := []struct {
		keys string
		err  string // "" when valid
	}{
		{`status_listen = "127.0.0.1:9115"`, ""},
		{`status_listen = "127.0.0.1:0"`, ""},
		{`status_listen = "[::1]:9115"`, ""},
		{`status_listen = "localhost:9115"`, ""},
		{`status_listen = "127.0.0.2:9115"`, ""},
		{"status_listen = \"127.0.0.1:0\"\npprof = true", ""},
		{"status_listen = \"0.0.0.0:9115\"\nstatus_allow_remote = true", ""},
		{"status_listen = \":9115\"\nstatus_allow_remote = true", ""},
		{`status_listen = "0.0.0.0:9115"`, "2: status_listen: 0.0.0.0 is not a loopback address"},
		{`status_listen = "192.0.2.1:9115"`, "2: status_listen: 192.0.2.1 is not a loopback address"},
		{`status_listen = ":9115"`, `2: status_listen: ":9115" listens on every interface`},
		{`status_listen = "[::]:9115"`, "2: status_listen: :: is not a loopback address"},
		{`status_listen = "monitor.example.com:9115"`, `2: status_listen: host "monitor.example.com" cannot be checked to be a loopback address`},
		{`status_listen = "127.0.0.1"`, "2: status_listen: want host:port"},
		{`status_listen = "127.0.0.1:http"`, `2: status_listen: invalid port "http"`},
		{`status_listen = "127.0.0.1:70000"`, `2: status_listen: invalid port "70000"`},
		{`pprof = true`, "2: pprof: needs status_listen"},
	}
	for _, c := range cases {
		t.Run(c.keys, func(t *testing.T) {
			p, err := ParseConfig([]byte(conf(c.keys + "\n[[inputs.service_latency.service]]\n  url = \"tcp://127.0.0.1:9\"\n")))
			if c.err == "" {
				require.NoError(t, err)
				p.Stop()
				return
			}
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), c.err), "got %q, want it to start with %q", err, c.err)
		})
	}
}

type statusJSON struct {
	Build struct {
		Version   string    `json:"version"`
		Commit    string    `json:"commit"`
		GoVersion string    `json:"go_version"`
		StartTime time.Time `json:"start_time"`
	} `json:"build"`
	Healthy    bool   `json:"healthy"`
	Health     string `json:"health"`
	Gathers    int64  `json:"gathers"`
	LastGather *struct {
		Start           time.Time `json:"start"`
		End             time.Time `json:"end"`
		DurationSeconds float64   `json:"duration_seconds"`
		Error           string    `json:"error"`
	} `json:"last_gather"`
	Internal map[string]any `json:"internal"`
	Services []struct {
		Name        string            `json:"name"`
		Tags        map[string]string `json:"tags"`
		Fields      map[string]any    `json:"fields"`
		Histogram   map[string]int64  `json:"histogram"`
		LastSuccess *time.Time        `json:"last_success"`
		LastFailure *time.Time        `json:"last_failure"`
		LastError   string            `json:"last_error"`
		LastErrorAt *time.Time        `json:"last_error_at"`
	} `json:"services"`
}

func getStatus(t *testing.T, p *ServiceLatency) statusJSON {
	t.Helper()
	code, body := httpGet(t, "http://"+p.StatusAddr()+"/status")
	require.Equal(t, http.StatusOK, code, body)
	var doc statusJSON
	require.NoError(t, json.Unmarshal([]byte(body), &doc), body)
	return doc
}

// TestStatusEndpoint: GET /status holds, per service, every tag and field
// of its last metric plus its last success/failure and last error, and the
// build; GET /healthz is 503 before the first gather and 200 after.
func TestStatusEndpoint(t *testing.T) {
	srv := newDelayServer(t, 0)
	SetBuildInfo("v9.9.9-test", "abc1234")
	t.Cleanup(func() { SetBuildInfo("dev", "") })

	p, _ := startPlugin(t, conf(`
status_listen = "127.0.0.1:0"
histogram_buckets = [0.5]
[[inputs.service_latency.service]]
  name = "up"
  url = "`+srv.URL+`/up"
  tags = { team = "a" }
[[inputs.service_latency.service]]
  name = "down"
  url = "tcp://`+refusedAddr(t)+`"
`))
	addr := p.StatusAddr()
	require.NotEmpty(t, addr)

	code, body := httpGet(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code, "no gather yet")
	require.Contains(t, body, "no gather has completed yet")
	doc := getStatus(t, p)
	require.False(t, doc.Healthy)
	require.Empty(t, doc.Services)
	require.Nil(t, doc.LastGather)

	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	require.NoError(t, p.Gather(&acc))
	last := map[string]map[string]any{} // the last metric of each service
	lastTags := map[string]map[string]string{}
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == Measurement {
			last[m.Tags()["service"]] = m.Fields()
			lastTags[m.Tags()["service"]] = m.Tags()
		}
	}

	code, body = httpGet(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.HasPrefix(body, "ok: "), body)

	doc = getStatus(t, p)
	require.True(t, doc.Healthy)
	require.Equal(t, int64(2), doc.Gathers)
	require.Equal(t, "v9.9.9-test", doc.Build.Version)
	require.Equal(t, "abc1234", doc.Build.Commit)
	require.True(t, strings.HasPrefix(doc.Build.GoVersion, "go"), doc.Build.GoVersion)
	require.False(t, doc.Build.StartTime.IsZero())
	require.NotNil(t, doc.LastGather)
	require.Greater(t, doc.LastGather.DurationSeconds, 0.0)
	require.Len(t, doc.Services, 2)
	for _, s := range doc.Services {
		require.Equal(t, lastTags[s.Name], s.Tags, s.Name)
		want := last[s.Name]
		require.Len(t, s.Fields, len(want), "%s: %v", s.Name, s.Fields)
		for k, v := range want {
			got, ok := s.Fields[k]
			require.True(t, ok, "%s: field %s missing from /status", s.Name, k)
			switch v := v.(type) {
			case int64:
				require.EqualValues(t, v, got, k)
			case float64:
				require.InDelta(t, v, got, 1e-12, k)
			default:
				require.Equal(t, v, got, k)
			}
		}
	}
	up, down := doc.Services[0], doc.Services[1]
	require.Equal(t, "up", up.Name)
	require.NotNil(t, up.LastSuccess)
	require.Nil(t, up.LastFailure)
	require.Empty(t, up.LastError)
	require.Equal(t, map[string]int64{"0.5": 2, "+Inf": 2}, up.Histogram)
	require.Equal(t, "a", up.Tags["team"])
	require.Equal(t, "down", down.Name)
	require.Nil(t, down.LastSuccess)
	require.NotNil(t, down.LastFailure)
	require.True(t, strings.HasPrefix(down.LastError, "connection_failed: "), down.LastError)
	require.NotNil(t, down.LastErrorAt)

	// the last error stays after a recovery, with its time
	srv.status.Store(http.StatusInternalServerError)
	require.NoError(t, p.Gather(&acc))
	srv.status.Store(http.StatusOK)
	require.NoError(t, p.Gather(&acc))
	doc = getStatus(t, p)
	up = doc.Services[0]
	require.Equal(t, "success", up.Tags["result"])
	require.True(t, strings.HasPrefix(up.LastError, "response_status_code_mismatch: status 500"), up.LastError)
	require.NotNil(t, up.LastFailure)
	require.True(t, up.LastSuccess.After(*up.LastFailure))

	// only GET and HEAD; no pprof unless asked; unknown paths are 404
	resp, err := http.Post("http://"+addr+"/status", "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	code, _ = httpGet(t, "http://"+addr+"/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = httpGet(t, "http://"+addr+"/nope")
	require.Equal(t, http.StatusNotFound, code)

	// Stop closes the listener
	p.Stop()
	require.Empty(t, p.StatusAddr())
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the status server still listens after Stop")
}

func TestStatusPprof(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := startPlugin(t, conf(`
status_listen = "127.0.0.1:0"
pprof = true
[[inputs.service_latency.service]]
  url = "`+srv.URL+`"
`))
	code, body := httpGet(t, "http://"+p.StatusAddr()+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	code, body = httpGet(t, "http://"+p.StatusAddr()+"/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine profile")
}

// A port that is taken makes Start fail, with the key in the error.
func TestStatusBindFailureIsStartError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	p, _ := newPlugin(t, conf(`
status_listen = "`+ln.Addr().String()+`"
[[inputs.service_latency.service]]
  url = "tcp://127.0.0.1:9"
`))
	err = p.Start(&testutil.Accumulator{})
	require.Error(t, err)
	require.Contains(t, err.Error(), "status_listen")
	require.Contains(t, err.Error(), "address already in use")
}

// TestCollectInternal: one service_latency_internal metric per gather with
// the gather's own signals.
func TestCollectInternal(t *testing.T) {
	srv := newDelayServer(t, 0)
	slow := newDelayServer(t, 5*time.Second)
	p, _ := newPlugin(t, conf(`
collect_internal = true
max_concurrency = 2
[[inputs.service_latency.service]]
  name = "ok"
  url = "`+srv.URL+`"
[[inputs.service_latency.service]]
  name = "slow"
  url = "`+slow.URL+`"
  timeout = "200ms"
[[inputs.service_latency.service]]
  name = "refused"
  url = "tcp://`+refusedAddr(t)+`"
`))
	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	var internal []map[string]any
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == InternalMeasurement {
			require.Empty(t, m.Tags())
			internal = append(internal, m.Fields())
		}
	}
	require.Len(t, internal, 1)
	f := internal[0]
	require.Len(t, f, 12, "%v", f)
	require.Equal(t, int64(0), f["store_dropped"])
	require.Equal(t, int64(0), f["members_seen"], "no fleet")
	require.Equal(t, int64(3), f["owned_services"], "every service")
	require.Equal(t, int64(0), f["ownership_changes"])
	require.Equal(t, int64(0), f["store_slow_writes"])
	require.Equal(t, false, f["store_unreachable"])
	require.GreaterOrEqual(t, f["gather_time"].(float64), 0.2)
	require.Less(t, f["gather_time"].(float64), 1.0)
	require.Equal(t, int64(3), f["services"])
	require.Equal(t, int64(2), f["probes_in_flight_max"])
	require.Equal(t, int64(1), f["timeouts"])
	require.Equal(t, int64(0), f["store_errors"])
	require.Equal(t, int64(0), f["replay_queue"])

	// off by default, and a reload switches it
	require.NoError(t, p.Reconfigure(decodeConfig(t, conf(`
[[inputs.service_latency.service]]
  name = "ok"
  url = "`+srv.URL+`"
`))))
	acc.ClearMetrics()
	require.NoError(t, p.Gather(&acc))
	for _, m := range acc.GetTelegrafMetrics() {
		require.NotEqual(t, InternalMeasurement, m.Name())
	}
}

// failingStore fails every Update and exposes the optional counters.
type failingStore struct{ store.Store }

func (failingStore) Update(context.Context, time.Time, []store.Observation) ([]store.Entry, error) {
	return nil, errors.New("store down")
}
func (failingStore) Health() store.Health { return store.Health{WriteErrors: 5, QueueLen: 42} }

func TestCollectInternalStoreCounters(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := startPlugin(t, conf(`
collect_internal = true
status_listen = "127.0.0.1:0"
[[inputs.service_latency.service]]
  url = "`+srv.URL+`"
`))
	require.NoError(t, p.Gather(&testutil.Accumulator{}))
	targets := p.targets()
	p.engine = engine.New(failingStore{p.store}, p.Log)
	p.engine.SetTargets(targets, engine.Settings{MaxConcurrency: 1})
	for i := int64(1); i <= 2; i++ {
		var acc testutil.Accumulator
		require.ErrorContains(t, p.Gather(&acc), "store down")
		ms := acc.GetTelegrafMetrics()
		require.Len(t, ms, 1)
		require.Equal(t, InternalMeasurement, ms[0].Name())
		require.Equal(t, 5+i, ms[0].Fields()["store_errors"])
		require.Equal(t, int64(42), ms[0].Fields()["replay_queue"])
	}
	doc := getStatus(t, p)
	require.Len(t, doc.Services, 1, "the last known state stays")
	require.Equal(t, "store down", doc.LastGather.Error)
	require.EqualValues(t, 7, doc.Internal["store_errors"])
}

// The README's Metrics section lists service_latency_internal and its
// fields.
func TestReadmeListsInternalFields(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	sec := string(readme)
	sec = sec[strings.Index(sec, "## Metrics"):]
	if end := strings.Index(sec[3:], "\n## "); end >= 0 {
		sec = sec[:end+3]
	}
	in := engine.Internal{}
	names := []string{InternalMeasurement}
	for k := range in.Fields() {
		names = append(names, k)
	}
	for _, n := range names {
		require.Regexp(t, `(?m)(^|[\s(,`+"`"+`])`+regexp.QuoteMeta(n)+`([\s),:`+"`"+`]|$)`, sec, "README Metrics section does not list %q", n)
	}
}

// With real stores: failed state-file saves and an unreachable Redis show
// in store_errors, the Redis replay queue in replay_queue.
func TestCollectInternalRealStores(t *testing.T) {
	srv := newDelayServer(t, 0)
	svcs := `
[[inputs.service_latency.service]]
  name = "a"
  url = "` + srv.URL + `/a"
[[inputs.service_latency.service]]
  name = "b"
  url = "` + srv.URL + `/b"
`
	internal := func(p *ServiceLatency) map[string]any {
		var acc testutil.Accumulator
		require.NoError(t, p.Gather(&acc))
		for _, m := range acc.GetTelegrafMetrics() {
			if m.Name() == InternalMeasurement {
				return m.Fields()
			}
		}
		t.Fatal("no service_latency_internal metric")
		return nil
	}
	t.Run("state file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "vanishing")
		require.NoError(t, os.Mkdir(dir, 0o700))
		p, _ := newPlugin(t, conf(`
collect_internal = true
state_file = "`+dir+`/state.json"
state_save_interval = "0s" # a save after every gather
`+svcs))
		require.NoError(t, os.Remove(dir)) // saves fail from now on
		for i := int64(1); i <= 2; i++ {
			f := internal(p)
			require.Equal(t, i, f["store_errors"], "failed saves")
			require.Equal(t, int64(0), f["replay_queue"])
		}
	})
	t.Run("redis down", func(t *testing.T) {
		p, _ := newPlugin(t, conf(`
collect_internal = true
state = "redis"
[inputs.service_latency.redis]
  address = "`+refusedAddr(t)+`"
  timeout = "100ms"
`+svcs))
		for i := int64(1); i <= 2; i++ {
			f := internal(p)
			require.Equal(t, i, f["store_errors"], "failed Redis writes")
			require.Equal(t, 2*i, f["replay_queue"], "two observations queued per gather")
		}
	})
}

// The handlers read while gathers write (run with -race).
func TestStatusServedDuringGathers(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := startPlugin(t, conf(`
status_listen = "127.0.0.1:0"
collect_internal = true
histogram_buckets = [0.1]
[[inputs.service_latency.service]]
  name = "a"
  url = "`+srv.URL+`/a"
[[inputs.service_latency.service]]
  name = "b"
  url = "tcp://`+refusedAddr(t)+`"
`))
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		c := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-done:
				return
			default:
			}
			for _, path := range []string{"/status", "/healthz"} {
				resp, err := c.Get("http://" + p.StatusAddr() + path)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	for range 30 {
		require.NoError(t, p.Gather(&testutil.NopAccumulator{}))
	}
	close(done)
	require.NoError(t, <-errs)
	doc := getStatus(t, p)
	require.Equal(t, int64(30), doc.Gathers)
	require.EqualValues(t, 30, doc.Services[0].Fields["latency_count"])
}

// status_debug = true wires GET /probe/NAME to a debug probe of the
// service as the config stands; it is off by default.
func TestStatusDebugProbe(t *testing.T) {
	srv := newDelayServer(t, 0)
	svc := `
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `/x"
  bearer_token = "SECRETBT"
`
	off, _ := startPlugin(t, conf(`status_listen = "127.0.0.1:0"`+svc))
	code, _ := httpGet(t, "http://"+off.StatusAddr()+"/probe/api")
	require.Equal(t, http.StatusNotFound, code, "off by default")

	p, _ := startPlugin(t, conf("status_listen = \"127.0.0.1:0\"\nstatus_debug = true"+svc))
	hits := srv.hits.Load()
	code, body := httpGet(t, "http://"+p.StatusAddr()+"/probe/api")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, "outcome:")
	require.Contains(t, body, "success")
	require.NotContains(t, body, "SECRETBT")
	require.Equal(t, hits+1, srv.hits.Load(), "it probed the service once")
	// rate-limited: one a second
	code, _ = httpGet(t, "http://"+p.StatusAddr()+"/probe/nope")
	require.Equal(t, http.StatusTooManyRequests, code)
	require.Eventually(t, func() bool {
		code, _ = httpGet(t, "http://"+p.StatusAddr()+"/probe/nope")
		return code != http.StatusTooManyRequests
	}, 5*time.Second, 100*time.Millisecond)
	require.Equal(t, http.StatusNotFound, code, "no such service")
}
