package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// hostile is a service name that is markup, an entity, quotes, a path and
// an escape at once.
const hostile = `<img src=x onerror="alert(1)">&amp;'/../a%2Fb?c#d`

func get(t testing.TB, u string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// pageReport is a report of n services at start: every 10th down, every
// 7th with a smoke band, each with a full history.
func pageReport(n int, start time.Time, gen int) *gather.Report {
	r := &gather.Report{Start: start, End: start.Add(200 * time.Millisecond)}
	r.Services = make([]gather.Service, n)
	for i := range r.Services {
		name := fmt.Sprintf("svc-%05d", i)
		if i == 3 {
			name = hostile
		}
		down := i%10 == 1
		lat := 0.001 * float64(1+(i*7+gen)%90)
		f := map[string]any{
			"result_code": int64(0), "probes": int64(gen + 1), "failures": int64(0),
			"latency_count": int64(gen + 1), "consecutive_failures": int64(0),
			"latency_avg": lat * 1.1, "latency_p95": lat * 1.5, "availability": 1.0,
			"latency_min": lat / 2, "latency_max": lat * 2, "latency_ewma": lat,
		}
		sv := gather.Service{Name: name, At: start,
			Tags: map[string]string{"service": name, "probe": "http", "server": "127.0.0.1", "team": []string{"core", "edge", "data"}[i%3]}}
		if down {
			f["result_code"] = int64(3)
			f["consecutive_failures"] = int64(gen + 1)
			f["availability"] = 0.5
			sv.Error = "connection_failed: dial tcp 127.0.0.1:9: connect: connection refused"
			sv.LastFailure = start
			sv.Tags["result"] = "connection_failed"
		} else {
			f["latency"] = lat
			if i%7 == 0 {
				f["round_min"], f["round_max"] = lat*0.8, lat*1.4
			}
			sv.LastSuccess = start
			sv.Tags["result"] = "success"
		}
		if i%2 == 0 {
			f["tcp_connect"], f["time_to_first_byte"], f["body_transfer"] = lat*0.2, lat*0.7, lat*0.1
		}
		sv.Fields = f
		sv.History = make([]gather.HistoryEntry, gather.HistoryLen)
		for j := range sv.History {
			h := gather.HistoryEntry{At: start.Add(-time.Duration(j) * 10 * time.Second), Result: "success", Latency: lat * (1 + 0.05*float64(j%5))}
			if down && j < gen+1 || (i+j)%13 == 0 {
				h = gather.HistoryEntry{At: h.At, Result: "timeout", Error: "timeout: no answer in 5s"}
			}
			sv.History[j] = h
		}
		if down {
			sv.History[0] = gather.HistoryEntry{At: start, Result: "connection_failed", Error: sv.Error}
		} else {
			sv.History[0] = gather.HistoryEntry{At: start, Result: "success", Latency: lat}
		}
		r.Services[i] = sv
	}
	return r
}

type pageJSON struct {
	Gathers  int64          `json:"gathers"`
	Debug    bool           `json:"debug"`
	End      string         `json:"end"`
	Total    int            `json:"total"`
	Matched  int            `json:"matched"`
	Page     int            `json:"page"`
	Size     int            `json:"size"`
	Counts   map[string]int `json:"counts"`
	Services []pageRow      `json:"services"`
}

type pageRow = struct {
	N  string            `json:"n"`
	T  map[string]string `json:"t"`
	S  int               `json:"s"`
	D  int               `json:"d"`
	L  *float64          `json:"l"`
	F  *float64          `json:"f"`
	E  string            `json:"e"`
	EA string            `json:"ea"`
	H  []any             `json:"h"`
}

func (p *pageJSON) byName() map[string]*pageRow {
	m := map[string]*pageRow{}
	for i := range p.Services {
		m[p.Services[i].N] = &p.Services[i]
	}
	return m
}

func (p *pageJSON) names() []string {
	var n []string
	for _, r := range p.Services {
		n = append(n, r.N)
	}
	return n
}

func pageGet(t testing.TB, base, query string) pageJSON {
	t.Helper()
	resp, body := get(t, base+"/api/services?"+query)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var pj pageJSON
	require.NoError(t, json.Unmarshal([]byte(body), &pj), body)
	return pj
}

func TestPageEndpoints(t *testing.T) {
	s, _ := startServer(t, Settings{})
	base := "http://" + s.Addr()
	s.Publish(pageReport(20, t0, 0))

	// / : the one-line index for curl and scripts, the page for a browser
	resp, body := get(t, base+"/")
	require.Equal(t, "service_latency: GET /status, GET /healthz\n", body)
	require.Equal(t, "Accept", resp.Header.Get("Vary"))
	resp, body = get(t, base+"/", "Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Contains(t, body, `<script src="/ui/app.js" defer></script>`)
	require.NotContains(t, body, "svc-", "the HTML carries no data")
	for _, a := range []string{"app.js", "app.css", "icon.svg"} {
		resp, _ = get(t, base+"/ui/"+a)
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
		etag := resp.Header.Get("ETag")
		resp, _ = get(t, base+"/ui/"+a, "If-None-Match", etag)
		require.Equal(t, http.StatusNotModified, resp.StatusCode, a)
	}
	resp, _ = get(t, base+"/ui/index.html")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = get(t, base+"/ui/nope.js")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	t.Logf("the page's embedded files: %d bytes", PageSize())
	require.Less(t, PageSize(), 64<<10)

	// /api/services: valid JSON, one entry per service, an ETag
	resp, body = get(t, base+"/api/services")
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var pj pageJSON
	require.NoError(t, json.Unmarshal([]byte(body), &pj), body)
	require.Len(t, pj.Services, 20)
	require.Equal(t, 20, pj.Total)
	require.Equal(t, 20, pj.Matched)
	require.Equal(t, map[string]int{"down": 2, "degraded": 0, "unknown": 0, "up": 18}, pj.Counts)
	require.Equal(t, []string{"svc-00001", "svc-00011"}, pj.names()[:2], "worst first: down (the same consecutive failures, no latency: by name)")
	m := pj.byName()
	require.Equal(t, map[string]string{"probe": "http", "server": "127.0.0.1", "team": "core"}, m[hostile].T)
	require.Equal(t, codeDown, m["svc-00001"].S)
	require.Equal(t, 1, m["svc-00001"].D, "derived: no status field")
	require.Equal(t, "connection_failed", m["svc-00001"].H[0])
	require.Contains(t, m["svc-00001"].E, "connection refused")
	require.Equal(t, codeUp, m["svc-00000"].S)
	require.Len(t, m["svc-00000"].H, gather.HistoryLen)
	require.Equal(t, []any{1.0, 0.8, 1.4}, m["svc-00000"].H[0], "the smoke of the last round, in ms")

	// filter, sort, page
	pj = pageGet(t, base, "q=TEAM%3Dedge+status%3Dup&sort=n&dir=desc&size=3&page=1")
	require.Equal(t, 20, pj.Total)
	require.Equal(t, 6, pj.Matched) // 1,4,7,10,13,16,19 less 1 (down)
	require.Equal(t, []string{"svc-00010", "svc-00007", "svc-00004"}, pj.names())
	pj = pageGet(t, base, "q=onerror")
	require.Equal(t, []string{hostile}, pj.names())
	pj = pageGet(t, base, "sort=l&dir=desc&size=2")
	require.Equal(t, 2, pj.Size)
	require.Equal(t, []string{"svc-00012", "svc-00010"}, pj.names(), "the largest latencies; the down ones (none) last")
	pj = pageGet(t, base, "sort=l&dir=asc&size=20")
	require.Equal(t, []string{"svc-00001", "svc-00011"}, pj.names()[18:], "no latency: last either way")
	pj = pageGet(t, base, "size=5&page=99")
	require.Equal(t, 3, pj.Page, "clamped to the last page")
	pj = pageGet(t, base, "sort=ea&dir=desc&size=2")
	require.Equal(t, []string{"svc-00001", "svc-00011"}, pj.names())
	require.NotContains(t, body, "<img", "JSON escapes markup")
	etag := resp.Header.Get("ETag")
	require.NotEmpty(t, etag)
	resp, _ = get(t, base+"/api/services", "If-None-Match", etag)
	require.Equal(t, http.StatusNotModified, resp.StatusCode)
	s.Publish(pageReport(20, t0.Add(10*time.Second), 1))
	resp, _ = get(t, base+"/api/services", "If-None-Match", etag)
	require.Equal(t, http.StatusOK, resp.StatusCode, "a new gather, a new document")

	// /api/service/NAME: the /status entry byte for byte, any name
	_, st := get(t, base+"/status")
	var doc struct {
		Services []json.RawMessage `json:"services"`
	}
	require.NoError(t, json.Unmarshal([]byte(st), &doc))
	for _, i := range []int{0, 1, 3} {
		var want struct {
			Name string `json:"name"`
		}
		require.NoError(t, json.Unmarshal(doc.Services[i], &want))
		resp, body = get(t, base+"/api/service/"+url.PathEscape(want.Name))
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		var d struct {
			Status  int             `json:"status"`
			Smoke   []any           `json:"smoke"`
			Service json.RawMessage `json:"service"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &d))
		var a, b any
		require.NoError(t, json.Unmarshal(d.Service, &a))
		require.NoError(t, json.Unmarshal(doc.Services[i], &b))
		require.Equal(t, b, a, want.Name)
		require.Len(t, d.Smoke, gather.HistoryLen)
	}
	resp, _ = get(t, base+"/api/service/"+url.PathEscape("no such"))
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, body = get(t, base+"/service/"+url.PathEscape(hostile), "Accept", "text/html")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, body, "onerror")
	require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))

	// /probe is off without status_debug
	resp, body = get(t, base+"/probe/svc-00000")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, "status_debug = true")
	s.SetProber(func(context.Context, string, io.Writer) int { panic("off") })
	resp, _ = get(t, base+"/probe/svc-00000")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// the other routes still answer as before
	resp, _ = get(t, base+"/nope")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = get(t, base+"/service/")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestPageDebugProbe(t *testing.T) {
	err := Settings{Debug: true}.Validate()
	var ke *keyerr.Error
	require.True(t, errors.As(err, &ke))
	require.Equal(t, "status_debug", ke.Key)
	require.NoError(t, Settings{Listen: "127.0.0.1:0", Debug: true}.Validate())

	s, _ := startServer(t, Settings{Debug: true})
	base := "http://" + s.Addr()
	s.Publish(pageReport(5, t0, 0))
	resp, body := get(t, base+"/probe/svc-00000")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "not wired")
	require.Contains(t, body, "not available")

	var mu sync.Mutex
	var asked []string
	s.SetProber(func(ctx context.Context, name string, w io.Writer) int {
		mu.Lock()
		asked = append(asked, name)
		mu.Unlock()
		if _, ok := ctx.Deadline(); !ok {
			panic("no deadline")
		}
		if name == "nope" {
			fmt.Fprintf(w, "no service named %q\n", name)
			return 2
		}
		fmt.Fprintf(w, "service %q\n  GET http://bob:hunter2@127.0.0.1/x\n", name)
		return 1
	})
	resp, body = get(t, base+"/probe/"+url.PathEscape(hostile))
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "1", resp.Header.Get("X-Probe-Exit-Status"))
	require.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Contains(t, body, "service ")
	require.NotContains(t, body, "hunter2", "the trace is redacted")
	resp, _ = get(t, base+"/probe/svc-00000")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "one per second")
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	time.Sleep(ProbeEvery + 50*time.Millisecond)
	resp, _ = get(t, base+"/probe/nope")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, []string{hostile, "nope"}, asked)

	req, _ := http.NewRequest(http.MethodHead, base+"/probe/x", nil)
	hr, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	hr.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, hr.StatusCode, "HEAD does not probe")
	_, body = get(t, base+"/api/service/svc-00000")
	require.Contains(t, body, `"debug":true,"prober":true`)
}

// The smoke of rounds the page rendered is remembered (a history entry
// has the median only).
func TestPageSmokeMemory(t *testing.T) {
	s, _ := startServer(t, Settings{})
	base := "http://" + s.Addr()
	at := t0
	for g := range 3 {
		r := pageReport(8, at, g)
		// each round: its time, its latency in the history, its smoke in
		// the fields
		for i := range r.Services {
			sv := &r.Services[i]
			sv.History[0] = gather.HistoryEntry{At: at, Result: "success", Latency: 0.010}
			sv.Fields["round_min"], sv.Fields["round_max"] = 0.005+0.001*float64(g), 0.020
		}
		s.Publish(r)
		get(t, base+"/api/services") // the page looked
		at = at.Add(10 * time.Second)
	}
	// a report whose history holds the three rounds above
	r := pageReport(8, at, 3)
	for i := range r.Services {
		sv := &r.Services[i]
		for j := range 3 {
			sv.History[1+j] = gather.HistoryEntry{At: at.Add(-time.Duration(j+1) * 10 * time.Second), Result: "success", Latency: 0.010}
		}
		delete(sv.Fields, "round_min")
		delete(sv.Fields, "round_max")
	}
	s.Publish(r)
	_, body := get(t, base+"/api/services")
	var pj pageJSON
	require.NoError(t, json.Unmarshal([]byte(body), &pj))
	svc := pj.Services[0]
	require.Equal(t, []any{10.0, 7.0, 20.0}, svc.H[1], "the last gather's round")
	require.Equal(t, []any{10.0, 6.0, 20.0}, svc.H[2])
	require.Equal(t, []any{10.0, 5.0, 20.0}, svc.H[3])
	_, body = get(t, base+"/api/service/svc-00000")
	var d struct {
		Smoke [][]float64 `json:"smoke"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &d))
	require.Equal(t, []float64{0.007, 0.02}, d.Smoke[1])
	require.Nil(t, d.Smoke[0], "the latest round had no round_min")

	// a service no longer reported is forgotten
	s.Publish(pageReport(2, at.Add(10*time.Second), 4))
	get(t, base+"/api/services")
	s.smoke.mu.Lock()
	defer s.smoke.mu.Unlock()
	for k := range s.smoke.m {
		require.Contains(t, []string{"svc-00000", "svc-00001"}, k)
	}
}

// statusOf prefers the status fields and derives the status without them.
func TestPageStatusOf(t *testing.T) {
	for _, c := range []struct {
		f       map[string]any
		code    int
		derived bool
	}{
		{map[string]any{"status_code": int64(2), "status": "down"}, codeDegraded, false},
		{map[string]any{"status": "down"}, codeDown, false},
		{map[string]any{"status": "unknown", "consecutive_failures": int64(4)}, codeUnknown, false},
		{map[string]any{"status_code": int64(9), "status": "up"}, codeUp, false},
		{map[string]any{}, codeUnknown, true},
		{nil, codeUnknown, true},
		{map[string]any{"result_code": int64(0), "probes": int64(1), "consecutive_failures": int64(0)}, codeUp, true},
		{map[string]any{"result_code": int64(2), "probes": int64(1), "consecutive_failures": int64(1)}, codeDown, true},
	} {
		code, derived := statusOf(c.f)
		require.Equal(t, c.code, code, "%v", c.f)
		require.Equal(t, c.derived, derived, "%v", c.f)
	}
}

// Many page requests after a gather: one render; the page JSON of 10,000
// services is small enough and quick.
func TestPageRenderOnce(t *testing.T) {
	s, _ := startServer(t, Settings{})
	base := "http://" + s.Addr()
	s.Publish(pageReport(10_000, t0, 0))
	before := s.renders.Load()
	var wg sync.WaitGroup
	var size int
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				resp, err := c.Get(base + "/api/services")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				size = len(b)
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(1), s.renders.Load()-before)
	t.Logf("/api/services of 10,000 services, the first page: %d bytes", size)
	require.Less(t, size, 64<<10)
	start := time.Now()
	sn := s.cur.Load()
	sn2 := &snapshot{gathers: sn.gathers, report: sn.report, services: sn.services, errs: sn.errs}
	doc := sn2.renderPage(s)
	t.Logf("render of 10,000 services: %s", time.Since(start).Round(time.Millisecond))
	for _, q := range []string{"", "sort=l&dir=desc", "q=team%3Dedge&sort=n", "size=1000&page=3"} {
		v, _ := url.ParseQuery(q)
		start = time.Now()
		body := doc.page(v)
		t.Logf("a page of 10,000 services (%q): %s, %d bytes", q, time.Since(start).Round(time.Microsecond), len(body))
		require.True(t, strings.HasSuffix(string(body), "]}\n"))
	}
}

// appendMS writes the bytes of the float formatter, for every value the
// page shows (round and not, tiny, negative, huge, not finite).
func TestAppendMSMatchesFloatFormat(t *testing.T) {
	vals := []float64{0, math.Copysign(0, -1), 1e-7, 4e-7, 5e-7, 1e-6, 1.5e-6, 0.001, 0.0012, 0.00125, 0.001234, 0.0117, 0.012, 0.1, 1, 1.5, 59.999999, 60, 3600.0000004,
		-0.001, -1.2345, 999999.9999995, 1e6 - 1e-7, 1e6, 1e9, 1e12, 1e15, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1), math.NaN()}
	r := rand.New(rand.NewPCG(17, 17))
	for range 200_000 {
		vals = append(vals, r.Float64()*math.Pow(10, float64(r.IntN(14)-7)))
	}
	for _, v := range vals {
		require.Equal(t, string(appendMSFloat(nil, v)), string(appendMS(nil, v)), "%v", v)
	}
}

// BenchmarkAppendMS: the history's latencies, 2.3 million in a render of
// /api/services at 100,000 services.
func BenchmarkAppendMS(b *testing.B) {
	b.Run("digits", func(b *testing.B) {
		buf := make([]byte, 0, 64)
		for b.Loop() {
			buf = appendMS(buf[:0], 0.0123456)
		}
	})
	b.Run("float", func(b *testing.B) {
		buf := make([]byte, 0, 64)
		for b.Loop() {
			buf = appendMSFloat(buf[:0], 0.0123456)
		}
	})
}
