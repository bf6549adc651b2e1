package status

// Issue 12.12: serving /status must not cost the prober.

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// discardWriter is a ResponseWriter that keeps nothing but the headers.
type discardWriter struct {
	h      http.Header
	code   int
	n      int
	writes int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(c int)   { w.code = c }
func (w *discardWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	w.writes++
	return len(p), nil
}

// One render per report, however many requests; none for a report no one
// reads.
func TestRenderedOncePerReport(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.SetClock(func() time.Time { return t0 }) // "health" is the same for all
	s.Publish(report(t0, synthServices(2000, t0)...))
	require.Zero(t, s.renders.Load(), "lazy: nothing rendered before a request")

	var wg sync.WaitGroup
	bodies := make([]string, 20)
	for i := range bodies {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				resp, err := c.Get("http://" + s.Addr() + "/status")
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					bodies[i] = string(b)
					return
				}
				time.Sleep(10 * time.Millisecond) // 503: busy
			}
		})
	}
	wg.Wait()
	for i := range bodies {
		require.Greater(t, len(bodies[i]), 1<<20)
		require.True(t, bodies[0] == bodies[i], "not the same bytes")
	}
	require.Equal(t, int64(1), s.renders.Load())
	for range 10 {
		httpGet(t, "http://"+s.Addr()+"/status")
	}
	require.Equal(t, int64(1), s.renders.Load())

	s.Publish(report(t0.Add(10*time.Second), synthServices(2000, t0)...))
	s.Publish(report(t0.Add(20*time.Second), synthServices(2000, t0)...))
	require.Equal(t, int64(1), s.renders.Load(), "unread reports are not rendered")
	doc := getStatus(t, s)
	require.Equal(t, int64(3), doc.Gathers)
	httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, int64(2), s.renders.Load())
	// /healthz renders nothing
	s.Publish(report(t0.Add(30*time.Second), synthServices(2000, t0)...))
	httpGet(t, "http://"+s.Addr()+"/healthz")
	require.Equal(t, int64(2), s.renders.Load())
}

// Past the first render, a /status request allocates a few hundred bytes
// whatever the number of services (today's handler allocated several
// times the ~2 MB body on every request).
func TestHandlerAllocations(t *testing.T) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	now := time.Now()
	// a fixed clock: "health" says how long ago the gather ended, and a
	// body one digit longer would fail the comparison below
	s.SetClock(func() time.Time { return now.Add(time.Second) })
	s.Publish(report(now, synthServices(2000, now)...))
	req := httptest.NewRequest(http.MethodGet, "/status", nil)
	w := &discardWriter{h: http.Header{}}
	s.handleStatus(w, req) // the render
	require.Zero(t, w.code)
	body := w.n
	require.Greater(t, body, 1<<20, "the first page of 2,000 services (DefaultLimit of them) is over 1 MB")

	allocs := testing.AllocsPerRun(200, func() {
		w.n = 0
		s.handleStatus(w, req)
	})
	require.Equal(t, body, w.n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 200
	for range n {
		s.handleStatus(w, req)
	}
	runtime.ReadMemStats(&after)
	perReq := float64(after.TotalAlloc-before.TotalAlloc) / n
	t.Logf("body %d bytes; per request %.0f allocs, %.0f bytes", body, allocs, perReq)
	require.LessOrEqual(t, allocs, 16.0)
	require.Less(t, perReq, 2048.0)
	require.Equal(t, int64(1), s.renders.Load())
}

// 200 requests, 50 at a time, over loopback against 2,000 services: one
// render, and the rest of the allocation is the HTTP machinery's, not
// the document's. The requests beyond MaxConcurrent get 503 at once.
func TestLoadOverLoopback(t *testing.T) {
	s, _ := startServer(t, Settings{})
	now := time.Now()
	s.SetClock(func() time.Time { return now }) // every body the same size
	s.Publish(report(now, synthServices(2000, now)...))
	tr := &http.Transport{MaxIdleConnsPerHost: 50}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	url := "http://" + s.Addr() + "/status"

	var before, mid, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// the first request renders
	resp, err := c.Get(url)
	require.NoError(t, err)
	first, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	runtime.ReadMemStats(&mid)

	var ok, busy, other atomic.Int64
	var bytesRead atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	const workers, each = 50, 4
	for range workers {
		wg.Go(func() {
			for range each {
				resp, err := c.Get(url)
				if err != nil {
					t.Error(err)
					return
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK && n == int64(len(first)):
					ok.Add(1)
					bytesRead.Add(n)
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "1":
					busy.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	render := mid.TotalAlloc - before.TotalAlloc
	perReq := float64(after.TotalAlloc-mid.TotalAlloc) / (workers * each)
	t.Logf("body %d bytes; first request (render) %d bytes allocated; then 200 requests in %s: %d × 200, %d × 503; %.0f bytes allocated per request (client and server); renders %d",
		len(first), render, took, ok.Load(), busy.Load(), perReq, s.renders.Load())
	require.Zero(t, other.Load())
	require.Equal(t, int64(workers*each), ok.Load()+busy.Load())
	require.NotZero(t, ok.Load())
	require.Equal(t, int64(1), s.renders.Load())
	// HTTP/1.1 per request: headers, a response struct, a few small
	// buffers; a body's worth (1.7 MB) per request would be far above.
	require.Less(t, perReq, 32.0*1024)
}

// With MaxConcurrent requests in progress, the next gets 503 and
// Retry-After: 1 at once; /healthz is not held up; a freed slot serves.
func TestConcurrencyBound(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	entered := make(chan struct{}, MaxConcurrent+1)
	release := make(chan struct{})
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	s.onServe = func() {
		if hold.Load() {
			entered <- struct{}{}
			<-release
		}
	}
	require.NoError(t, s.Start())
	t.Cleanup(s.Stop)
	s.Publish(report(time.Now(), synthServices(10, time.Now())...))

	codes := make(chan int, MaxConcurrent)
	for range MaxConcurrent {
		go func() {
			code, _ := httpGet(t, "http://"+s.Addr()+"/status")
			codes <- code
		}()
	}
	for range MaxConcurrent {
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the requests did not reach the handler")
		}
	}
	start := time.Now()
	resp, err := http.Get("http://" + s.Addr() + "/status")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Less(t, time.Since(start), time.Second, "503 at once, not queued")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, string(body))
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "busy")
	require.Len(t, entered, 0, "the refused request did not enter")

	code, body2 := httpGet(t, "http://"+s.Addr()+"/healthz")
	require.Equal(t, http.StatusOK, code, "a busy /status does not fail the health check: %s", body2)

	hold.Store(false)
	close(release)
	for range MaxConcurrent {
		require.Equal(t, http.StatusOK, <-codes)
	}
	code, _ = httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, http.StatusOK, code)
}

// Publish never waits for a render, and stays fast while requests are in
// flight: a render held in progress does not block it, and the held
// request gets the report it began with.
func TestPublishWhileServing(t *testing.T) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	var held atomic.Bool
	rendering := make(chan struct{})
	release := make(chan struct{})
	s.onRender = func() {
		if held.CompareAndSwap(false, true) {
			close(rendering)
			<-release
		}
	}
	require.NoError(t, s.Start())
	t.Cleanup(s.Stop)
	now := time.Now()
	// reports share two service lists (a Report is read-only)
	lists := [2][]gather.Service{synthServices(2000, now), synthServices(2000, now)}
	const reports = 100
	rs := make([]*gather.Report, reports)
	for i := range rs {
		rs[i] = report(now.Add(time.Duration(i+1)*time.Second), lists[i%2]...)
	}
	s.Publish(report(now, lists[0]...))

	heldDoc := make(chan statusJSON, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second}
		resp, err := c.Get("http://" + s.Addr() + "/status")
		if err != nil {
			t.Error(err)
			close(heldDoc)
			return
		}
		defer resp.Body.Close()
		var doc statusJSON
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Error(err)
		}
		heldDoc <- doc
	}()
	<-rendering
	// the held render does not hold Publish up
	next := report(now.Add(time.Second/2), lists[1]...)
	published := make(chan struct{})
	go func() { s.Publish(next); close(published) }()
	select {
	case <-published:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish waited for the render in progress")
	}

	// background load on the new reports: other requests render and
	// write them (requests for the held report would wait for its render)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 8 {
		wg.Go(func() {
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://" + s.Addr() + "/status")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					served.Add(1)
				}
			}
		})
	}

	// the same reports, published without load: the baseline
	base := New(Settings{Listen: "127.0.0.1:0"}, nil)
	quiet := publishTimes(base, rs)
	var loaded []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		loaded = publishTimes(s, rs)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Publish waited for the render in progress")
	}
	close(stop)
	wg.Wait()
	close(release)
	doc := <-heldDoc
	t.Logf("Publish of 2,000 services (200 failing), %d /status requests served meanwhile: p50 %s, p90 %s, max %s; without requests: p50 %s, p90 %s, max %s",
		served.Load(), loaded[len(loaded)/2], loaded[len(loaded)*9/10], loaded[len(loaded)-1],
		quiet[len(quiet)/2], quiet[len(quiet)*9/10], quiet[len(quiet)-1])
	require.Equal(t, int64(1), doc.Gathers, "the held request serves the report it began with")
	require.Len(t, doc.Services, DefaultLimit)
	require.Equal(t, 2000, doc.ServicesTotal)
	require.Equal(t, int64(reports+2), getStatus(t, s).Gathers)
	require.NotZero(t, served.Load(), "requests were served meanwhile")
	// Publish takes no lock a handler holds: under load it is only as
	// slow as the CPU it gets (the machine may have two), far below a
	// render (see BenchmarkRender) let alone a request's write.
	require.Less(t, loaded[len(loaded)/2], 5*time.Millisecond)
	require.Less(t, loaded[len(loaded)*9/10], 50*time.Millisecond)
}

// publishTimes publishes rs, 2 ms apart, and returns how long each
// Publish took, sorted.
func publishTimes(s *Server, rs []*gather.Report) []time.Duration {
	ds := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		start := time.Now()
		s.Publish(r)
		ds = append(ds, time.Since(start))
		time.Sleep(2 * time.Millisecond)
	}
	slices.Sort(ds)
	return ds
}

// BenchmarkPublish: 2,000 services, a tenth failing (the last-error
// bookkeeping at work).
func BenchmarkPublish(b *testing.B) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	now := time.Now()
	r := report(now, synthServices(2000, now)...)
	b.ReportAllocs()
	for b.Loop() {
		s.Publish(r)
	}
}

// BenchmarkPublishNoErrors: 2,000 services, none ever failed.
func BenchmarkPublishNoErrors(b *testing.B) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	now := time.Now()
	svcs := synthServices(2000, now)
	for i := range svcs {
		svcs[i].Error = ""
	}
	r := report(now, svcs...)
	b.ReportAllocs()
	for b.Loop() {
		s.Publish(r)
	}
}

// BenchmarkRender: one render of the first page (DefaultLimit services,
// once per report read) of 2,000 services.
func BenchmarkRender(b *testing.B) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	now := time.Now()
	s.Publish(report(now, synthServices(2000, now)...))
	sn := s.cur.Load()
	budget := s.listBudget(sn.framed())
	b.ReportAllocs()
	for b.Loop() {
		if l := sn.renderListing(0, DefaultLimit, budget, true); l.err != nil {
			b.Fatal(l.err)
		}
	}
}

// BenchmarkServeCached: a /status request past the render.
func BenchmarkServeCached(b *testing.B) {
	s := New(Settings{Listen: "127.0.0.1:0"}, nil)
	now := time.Now()
	s.Publish(report(now, synthServices(2000, now)...))
	req := httptest.NewRequest(http.MethodGet, "/status", nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		s.handleStatus(w, req)
	}
}
