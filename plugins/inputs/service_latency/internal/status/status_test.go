package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.FixedZone("CEST", 2*3600))

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// startServer starts a loopback server and stops it at cleanup.
func startServer(t testing.TB, set Settings) (*Server, *testutil.CaptureLogger) {
	t.Helper()
	if set.Listen == "" {
		set.Listen = "127.0.0.1:0"
	}
	require.NoError(t, set.Validate())
	log := &testutil.CaptureLogger{}
	s := New(set, log)
	require.NoError(t, s.Start())
	t.Cleanup(s.Stop)
	return s, log
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
	Internal          map[string]any `json:"internal"`
	ServicesTruncated bool           `json:"services_truncated"`
	ServicesTotal     int            `json:"services_total"`
	NextAfter         *string        `json:"next_after"`
	Services          []struct {
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

func getStatus(t testing.TB, s *Server) statusJSON {
	t.Helper()
	code, body := httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, http.StatusOK, code, body)
	var doc statusJSON
	require.NoError(t, json.Unmarshal([]byte(body), &doc), body)
	return doc
}

func svc(name string, ok bool, at time.Time) gather.Service {
	result, code := "success", int64(0)
	s := gather.Service{
		Name:          name,
		Tags:          map[string]string{"service": name, "probe": "http", "server": "127.0.0.1", "result": result},
		Fields:        map[string]any{"result_code": code, "latency_count": int64(3), "latency_p50": 0.0125},
		Histogram:     []gather.Bucket{{LE: "0.5", Count: 2}, {LE: "+Inf", Count: 3}},
		HistogramTags: map[string]string{"service": name},
	}
	if ok {
		s.Fields["latency"] = 0.012
		s.LastSuccess = at
	} else {
		s.Tags["result"] = "connection_failed"
		s.Fields["result_code"] = int64(3)
		s.LastFailure = at
		s.Error = "connection_failed: dial tcp 127.0.0.1:9: connect: connection refused"
	}
	return s
}

func report(start time.Time, svcs ...gather.Service) *gather.Report {
	return &gather.Report{
		Start:    start,
		End:      start.Add(250 * time.Millisecond),
		Services: svcs,
		Internal: gather.Internal{GatherTime: 250 * time.Millisecond, Services: len(svcs), ProbesInFlightMax: int64(len(svcs))},
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		set Settings
		key string // "" when valid
		err string // the start of the message
	}{
		{Settings{Listen: "127.0.0.1:9115"}, "", ""},
		{Settings{Listen: "127.0.0.1:0"}, "", ""},
		{Settings{Listen: "[::1]:9115"}, "", ""},
		{Settings{Listen: "localhost:9115"}, "", ""},
		{Settings{Listen: "127.0.0.2:9115"}, "", ""},
		{Settings{Listen: "127.0.0.1:0", Pprof: true}, "", ""},
		{Settings{Listen: "0.0.0.0:9115", AllowRemote: true}, "", ""},
		{Settings{Listen: ":9115", AllowRemote: true}, "", ""},
		{Settings{}, "", ""},
		{Settings{Listen: "0.0.0.0:9115"}, "status_listen", "status_listen: 0.0.0.0 is not a loopback address"},
		{Settings{Listen: "192.0.2.1:9115"}, "status_listen", "status_listen: 192.0.2.1 is not a loopback address"},
		{Settings{Listen: ":9115"}, "status_listen", `status_listen: ":9115" listens on every interface`},
		{Settings{Listen: "[::]:9115"}, "status_listen", "status_listen: :: is not a loopback address"},
		{Settings{Listen: "monitor.example.com:9115"}, "status_listen", `status_listen: host "monitor.example.com" cannot be checked to be a loopback address`},
		{Settings{Listen: "127.0.0.1"}, "status_listen", "status_listen: want host:port"},
		{Settings{Listen: "127.0.0.1:http"}, "status_listen", `status_listen: invalid port "http"`},
		{Settings{Listen: "127.0.0.1:70000"}, "status_listen", `status_listen: invalid port "70000"`},
		{Settings{Pprof: true}, "pprof", "pprof: needs status_listen"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%+v", c.set), func(t *testing.T) {
			err := c.set.Validate()
			if c.key == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			var ke *keyerr.Error
			require.ErrorAs(t, err, &ke)
			require.Equal(t, c.key, ke.Key)
			require.True(t, strings.HasPrefix(err.Error(), c.err), "got %q, want it to start with %q", err, c.err)
		})
	}
}

// The address a listener bound to is checked again (localhost may
// resolve to anything).
func TestBoundAddressChecked(t *testing.T) {
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 9115}
	err := Settings{Listen: "localhost:9115"}.checkBound(remote)
	require.ErrorContains(t, err, `status_listen: "localhost:9115" bound to 192.0.2.7:9115, which is not a loopback address`)
	require.NoError(t, Settings{Listen: "localhost:9115", AllowRemote: true}.checkBound(remote))
	require.NoError(t, Settings{Listen: "localhost:9115"}.checkBound(&net.TCPAddr{IP: net.IPv6loopback, Port: 1}))
}

// TestStatusEndpoint: GET /status holds, per service, every tag and field
// of its last report plus its last success/failure and last error, and the
// build; GET /healthz is 503 before the first gather and 200 after.
func TestStatusEndpoint(t *testing.T) {
	oldV, oldC := Version, Commit
	Version, Commit = "v9.9.9-test", "abc1234"
	t.Cleanup(func() { Version, Commit = oldV, oldC })

	s, log := startServer(t, Settings{})
	addr := s.Addr()
	require.NotEmpty(t, addr)
	require.Contains(t, log.Messages()[0].Text, "status endpoint listening on http://"+addr+"/status (/healthz)")

	code, body := httpGet(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusServiceUnavailable, code, "no gather yet")
	require.Contains(t, body, "no gather has completed yet")
	doc := getStatus(t, s)
	require.False(t, doc.Healthy)
	require.Equal(t, "no gather has completed yet", doc.Health)
	require.NotNil(t, doc.Services)
	require.Empty(t, doc.Services)
	require.Nil(t, doc.LastGather)
	require.Nil(t, doc.Internal)

	now := time.Now()
	s.Publish(report(now.Add(-20*time.Second), svc("up", true, now.Add(-20*time.Second)), svc("down", false, now.Add(-20*time.Second))))
	r2 := report(now.Add(-10*time.Second), svc("up", true, now.Add(-10*time.Second)), svc("down", false, now.Add(-10*time.Second)))
	r2.Services[0].Tags["team"] = "a"
	s.Publish(r2)

	code, body = httpGet(t, "http://"+addr+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.HasPrefix(body, "ok: "), body)

	doc = getStatus(t, s)
	require.True(t, doc.Healthy)
	require.True(t, strings.HasPrefix(doc.Health, "ok: the last gather ended "), doc.Health)
	require.Equal(t, int64(2), doc.Gathers)
	require.Equal(t, "v9.9.9-test", doc.Build.Version)
	require.Equal(t, "abc1234", doc.Build.Commit)
	require.True(t, strings.HasPrefix(doc.Build.GoVersion, "go"), doc.Build.GoVersion)
	require.Equal(t, processStart.UTC(), doc.Build.StartTime)
	require.NotNil(t, doc.LastGather)
	require.True(t, r2.Start.Equal(doc.LastGather.Start))
	require.Equal(t, time.UTC, doc.LastGather.Start.Location())
	require.True(t, r2.End.Equal(doc.LastGather.End))
	require.InDelta(t, 0.25, doc.LastGather.DurationSeconds, 1e-9)
	require.Empty(t, doc.LastGather.Error)
	require.Len(t, doc.Internal, len(r2.Internal.Fields()))
	require.EqualValues(t, 2, doc.Internal["services"])
	require.InDelta(t, 0.25, doc.Internal["gather_time"], 1e-9)
	require.Len(t, doc.Services, 2)
	for i, s := range doc.Services {
		want := r2.Services[i]
		require.Equal(t, want.Name, s.Name)
		require.Equal(t, want.Tags, s.Tags, s.Name)
		require.Len(t, s.Fields, len(want.Fields))
		for k, v := range want.Fields {
			require.EqualValues(t, v, s.Fields[k], "%s: %s", s.Name, k)
		}
	}
	up, down := doc.Services[0], doc.Services[1]
	require.Equal(t, "up", up.Name)
	require.NotNil(t, up.LastSuccess)
	require.True(t, r2.Start.Equal(*up.LastSuccess))
	require.Nil(t, up.LastFailure)
	require.Empty(t, up.LastError)
	require.Nil(t, up.LastErrorAt)
	require.Equal(t, map[string]int64{"0.5": 2, "+Inf": 3}, up.Histogram)
	require.Equal(t, "a", up.Tags["team"])
	require.Equal(t, "down", down.Name)
	require.Nil(t, down.LastSuccess)
	require.NotNil(t, down.LastFailure)
	require.True(t, strings.HasPrefix(down.LastError, "connection_failed: "), down.LastError)
	require.NotNil(t, down.LastErrorAt)
	require.True(t, r2.Start.Equal(*down.LastErrorAt), "the error of the last gather")

	// only GET and HEAD; no pprof unless asked; unknown paths are 404
	resp, err := http.Post("http://"+addr+"/status", "text/plain", strings.NewReader("x"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
	code, _ = httpGet(t, "http://"+addr+"/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = httpGet(t, "http://"+addr+"/nope")
	require.Equal(t, http.StatusNotFound, code)
	code, body = httpGet(t, "http://"+addr+"/")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "service_latency: GET /status, GET /healthz\n", body)

	// HEAD: the headers of GET, no body
	resp, err = http.Head("http://" + addr + "/status")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	require.Greater(t, resp.ContentLength, int64(1000))
	require.Empty(t, b)

	// Stop closes the listener
	s.Stop()
	require.Empty(t, s.Addr())
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the status server still listens after Stop")
}

// The last error stays after a recovery, with its time, until the service
// fails again; a service that leaves the report forgets it.
func TestLastErrorPersists(t *testing.T) {
	s, _ := startServer(t, Settings{})
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Second) }
	s.Publish(report(at(0), svc("a", false, at(0)), svc("b", true, at(0))))
	ok1 := svc("a", true, at(1))
	ok1.LastFailure = at(0)
	s.Publish(report(at(1), ok1, svc("b", true, at(1))))
	doc := getStatus(t, s)
	a := doc.Services[0]
	require.Equal(t, "success", a.Tags["result"])
	require.True(t, strings.HasPrefix(a.LastError, "connection_failed: dial tcp"), a.LastError)
	require.True(t, at(0).Equal(*a.LastErrorAt))
	require.True(t, a.LastSuccess.After(*a.LastFailure))
	require.Empty(t, doc.Services[1].LastError)

	// a new error replaces it
	f := svc("a", false, at(2))
	f.Error = "timeout: no answer within 1s"
	s.Publish(report(at(2), f, svc("b", true, at(2))))
	a = getStatus(t, s).Services[0]
	require.Equal(t, "timeout: no answer within 1s", a.LastError)
	require.True(t, at(2).Equal(*a.LastErrorAt))

	// a leaves the config, and comes back: its old error is gone
	s.Publish(report(at(3), svc("b", true, at(3))))
	require.Len(t, getStatus(t, s).Services, 1)
	require.Empty(t, s.lastErr, "the bookkeeping forgets services no longer reported")
	s.Publish(report(at(4), svc("a", true, at(4)), svc("b", true, at(4))))
	doc = getStatus(t, s)
	require.Empty(t, doc.Services[0].LastError)
	require.Nil(t, doc.Services[0].LastErrorAt)
}

// A failed gather without metrics keeps the last known services (with
// their last errors), and counts as a gather.
func TestFailedGatherKeepsServices(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.Publish(report(t0, svc("a", false, t0), svc("b", true, t0)))
	r := report(t0.Add(10 * time.Second))
	r.Err = errors.New(`updating the state store: dial redis://probe:s3cret@redis:6379: refused`)
	r.Internal.StoreErrors = 7
	s.Publish(r)
	doc := getStatus(t, s)
	require.Equal(t, int64(2), doc.Gathers)
	require.Len(t, doc.Services, 2, "the last known state stays")
	require.True(t, strings.HasPrefix(doc.Services[0].LastError, "connection_failed: "))
	require.Equal(t, "updating the state store: dial redis://probe@redis:6379: refused", doc.LastGather.Error, "redacted")
	require.NotContains(t, doc.LastGather.Error, "s3cret")
	require.True(t, r.Start.Equal(doc.LastGather.Start))
	require.EqualValues(t, 7, doc.Internal["store_errors"])

	// the next good gather replaces them
	s.Publish(report(t0.Add(20*time.Second), svc("c", true, t0)))
	doc = getStatus(t, s)
	require.Len(t, doc.Services, 1)
	require.Equal(t, "c", doc.Services[0].Name)
	require.Empty(t, doc.LastGather.Error)
}

// Errors are served redacted, and non-finite floats are null.
func TestServedValues(t *testing.T) {
	s, _ := startServer(t, Settings{})
	a := svc("a", false, t0)
	a.Error = "connection_failed: redis://u:hunter2@db:6379 refused"
	a.Fields["latency_stddev"] = math.NaN()
	a.Fields["latency_max"] = math.Inf(1)
	a.Histogram = nil
	b := svc("b", true, t0)
	s.Publish(report(t0, a, b))
	code, body := httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, http.StatusOK, code, body)
	require.NotContains(t, body, "hunter2")
	require.NotContains(t, body, `"histogram": null`)
	var doc statusJSON
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	require.Equal(t, "connection_failed: redis://u@db:6379 refused", doc.Services[0].LastError)
	f := doc.Services[0].Fields
	require.Contains(t, f, "latency_stddev")
	require.Nil(t, f["latency_stddev"])
	require.Nil(t, f["latency_max"])
	require.EqualValues(t, 3, f["result_code"])
	require.Nil(t, doc.Services[0].Histogram, "omitted when empty")
	require.Len(t, doc.Services[1].Histogram, 2)
	// the report's own map is not touched
	require.True(t, math.IsNaN(a.Fields["latency_stddev"].(float64)))
}

func TestStatusPprof(t *testing.T) {
	s, log := startServer(t, Settings{Pprof: true})
	require.Contains(t, log.Messages()[0].Text, "(/healthz, /debug/pprof/)")
	code, body := httpGet(t, "http://"+s.Addr()+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	code, body = httpGet(t, "http://"+s.Addr()+"/debug/pprof/goroutine?debug=1")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine profile")
	code, _ = httpGet(t, "http://"+s.Addr()+"/debug/pprof/cmdline")
	require.Equal(t, http.StatusOK, code)
}

// A port that is taken makes Start fail, with the key in the error.
func TestBindFailureIsStartError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	s := New(Settings{Listen: ln.Addr().String()}, nil)
	err = s.Start()
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), "status_listen: "), err.Error())
	require.Contains(t, err.Error(), "address already in use")
	require.Empty(t, s.Addr())
	s.Stop() // safe: never started
}

// Start and Stop are idempotent; without status_listen nothing listens
// and Publish does nothing.
func TestLifecycle(t *testing.T) {
	off := New(Settings{}, nil)
	require.NoError(t, off.Start())
	require.Empty(t, off.Addr())
	off.Publish(report(t0, svc("a", false, t0)))
	require.Zero(t, off.cur.Load().gathers)
	off.Stop()
	off.Stop()

	never := New(Settings{Listen: "127.0.0.1:0"}, nil)
	never.Stop() // never started

	s := New(Settings{Listen: "127.0.0.1:0"}, &testutil.CaptureLogger{})
	require.NoError(t, s.Start())
	addr := s.Addr()
	require.NoError(t, s.Start(), "a second Start is a no-op")
	require.Equal(t, addr, s.Addr())
	code, _ := httpGet(t, "http://"+addr+"/")
	require.Equal(t, http.StatusOK, code)
	s.Stop()
	s.Stop()
	require.Empty(t, s.Addr())
	// Start after Stop listens again, and keeps what was published
	s.Publish(report(t0, svc("a", true, t0)))
	require.NoError(t, s.Start())
	t.Cleanup(s.Stop)
	require.Len(t, getStatus(t, s).Services, 1)
}

// Publish with status_listen unset costs next to nothing.
func TestPublishWithoutListenIsFree(t *testing.T) {
	s := New(Settings{}, nil)
	r := report(t0, synthServices(2000, t0)...)
	allocs := testing.AllocsPerRun(100, func() { s.Publish(r) })
	require.Zero(t, allocs)
}

// Stop returns within the shutdown timeout even when a client holds a
// request open.
func TestStopBounded(t *testing.T) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s.onServe = func() { entered <- struct{}{}; <-release }
	require.NoError(t, s.Start())
	defer close(release)
	go func() {
		resp, err := http.Get("http://" + s.Addr() + "/status")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	start := time.Now()
	s.Stop()
	took := time.Since(start)
	require.GreaterOrEqual(t, took, shutdownTimeout-100*time.Millisecond, "Stop waits for the request")
	require.Less(t, took, shutdownTimeout+time.Second)
	require.Empty(t, s.Addr())
}

// /healthz turns 503 once the last gather is older than twice the
// gather interval (one minute until two gathers have run).
func TestHealthzLate(t *testing.T) {
	s, _ := startServer(t, Settings{})
	var skew atomic.Int64
	s.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	healthz := func() (int, string) { return httpGet(t, "http://"+s.Addr()+"/healthz") }

	s.Publish(report(time.Now(), svc("a", true, t0)))
	code, body := healthz()
	require.Equal(t, http.StatusOK, code, body)
	skew.Store(int64(119 * time.Second))
	code, body = healthz()
	require.Equal(t, http.StatusOK, code, body)
	skew.Store(int64(121 * time.Second))
	code, body = healthz()
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Regexp(t, `^late: the last gather ended 2m0.* ago, more than 2 × the gather interval \(1m0s\)`, body)
	// /status says the same, per request (its body is cached)
	doc := getStatus(t, s)
	require.False(t, doc.Healthy)
	require.True(t, strings.HasPrefix(doc.Health, "late: "), doc.Health)
	require.Equal(t, int64(1), s.renders.Load())
	// a gather heals it
	skew.Store(0)
	s.Publish(report(time.Now(), svc("a", true, t0)))
	code, body = healthz()
	require.Equal(t, http.StatusOK, code, body)
	// SetClock(nil) restores time.Now
	skew.Store(int64(time.Hour))
	s.SetClock(nil)
	code, _ = healthz()
	require.Equal(t, http.StatusOK, code)
}

// The reference interval is the largest of the last five intervals between
// gathers, at least one second.
func TestHealthRule(t *testing.T) {
	p := New(Settings{Listen: "127.0.0.1:0"}, nil)
	gatherAt := func(s *Server, start time.Time) {
		s.Publish(&gather.Report{Start: start, End: start.Add(300 * time.Millisecond)})
	}
	ok := func(s *Server, at time.Time) bool {
		ok, _ := s.cur.Load().health(at)
		return ok
	}
	require.False(t, ok(p, t0), "before the first gather")
	for i := range 3 {
		gatherAt(p, t0.Add(time.Duration(i)*10*time.Second))
	}
	end := t0.Add(20*time.Second + 300*time.Millisecond)
	require.True(t, ok(p, end.Add(19*time.Second)))
	require.False(t, ok(p, end.Add(21*time.Second)))
	// a double-triggered gather does not shrink the reference
	gatherAt(p, t0.Add(20*time.Second+500*time.Millisecond))
	end = t0.Add(20*time.Second + 800*time.Millisecond)
	require.True(t, ok(p, end.Add(19*time.Second)))
	// only the last five intervals count
	for i := range 5 {
		gatherAt(p, t0.Add(20*time.Second+500*time.Millisecond+time.Duration(i+1)*2*time.Second))
	}
	end = t0.Add(30*time.Second + 800*time.Millisecond)
	require.True(t, ok(p, end.Add(3900*time.Millisecond)))
	require.False(t, ok(p, end.Add(4100*time.Millisecond)))
	// back-to-back gathers only: the reference is at least one second
	q := New(Settings{Listen: "127.0.0.1:0"}, nil)
	for i := range 6 {
		start := t0.Add(time.Duration(i) * time.Millisecond)
		q.Publish(&gather.Report{Start: start, End: start})
	}
	last := t0.Add(5 * time.Millisecond)
	require.True(t, ok(q, last.Add(1900*time.Millisecond)))
	require.False(t, ok(q, last.Add(2100*time.Millisecond)))
}

// The handlers read while Publish writes (run with -race).
func TestServedDuringPublish(t *testing.T) {
	s, _ := startServer(t, Settings{})
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
				resp, err := c.Get("http://" + s.Addr() + path)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	for i := range 30 {
		at := time.Now()
		a := svc("a", true, at)
		a.Fields["latency_count"] = int64(i + 1)
		s.Publish(report(at, a, svc("b", i%2 == 0, at)))
		time.Sleep(time.Millisecond)
	}
	close(done)
	require.NoError(t, <-errs)
	doc := getStatus(t, s)
	require.Equal(t, int64(30), doc.Gathers)
	require.EqualValues(t, 30, doc.Services[0].Fields["latency_count"])
}

// /status keeps per service its last rounds (history), newest first.
func TestStatusHistory(t *testing.T) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	require.NoError(t, s.Start())
	defer s.Stop()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Publish(&gather.Report{Start: at, End: at, Services: []gather.Service{{
		Name: "api", Tags: map[string]string{}, Fields: map[string]any{},
		History: []gather.HistoryEntry{
			{At: at, Result: "timeout", Error: "timeout: i/o timeout"},
			{At: at.Add(-time.Second), Result: "success", Latency: 0.012},
		},
	}}})
	resp, err := http.Get("http://" + s.Addr() + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var doc struct {
		Services []struct {
			History []struct {
				Time    time.Time `json:"time"`
				Result  string    `json:"result"`
				Latency float64   `json:"latency"`
				Error   string    `json:"error"`
			} `json:"history"`
		} `json:"services"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	h := doc.Services[0].History
	require.Len(t, h, 2)
	require.Equal(t, "timeout", h[0].Result)
	require.Equal(t, "timeout: i/o timeout", h[0].Error)
	require.True(t, at.Equal(h[0].Time))
	require.Equal(t, "success", h[1].Result)
	require.Equal(t, 0.012, h[1].Latency)
}
