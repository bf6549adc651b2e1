package gather

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// arrivals is a loopback HTTP server that records when each path was
// requested; fail makes every other request fail with a 500.
type arrivals struct {
	*httptest.Server
	mu   sync.Mutex
	at   map[string][]time.Time
	fail atomic.Bool
	n    atomic.Int64
}

func newArrivals(t *testing.T) *arrivals {
	a := &arrivals{at: map[string][]time.Time{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		a.mu.Lock()
		a.at[r.URL.Path] = append(a.at[r.URL.Path], now)
		a.mu.Unlock()
		if a.fail.Load() && a.n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *arrivals) times(path string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at[path]...)
}

var testParams = stats.Params{Window: 50, HalfLife: time.Minute}

// targets builds n targets probing srv at /0, /1, ...
func targets(t *testing.T, srv *arrivals, n int, sched Schedule) []*Target {
	var out []*Target
	for i := range n {
		u := fmt.Sprintf("%s/%d", srv.URL, i)
		pr, err := probe.New(u, sched.Timeout, probe.Options{})
		require.NoError(t, err)
		t.Cleanup(pr.Close)
		tg := NewTarget(fmt.Sprintf("s%d", i), u, pr, testParams, []float64{50}, nil)
		tg.Schedule = sched
		out = append(out, tg)
	}
	return out
}

type nopLog = store.NopLogger

func gatherAll(t *testing.T, e *Engine, now time.Time) (*Report, []*Service) {
	t.Helper()
	var got []*Service
	rep := e.Gather(context.Background(), now, func(s *Service) { got = append(got, s) })
	require.NotNil(t, rep)
	require.NoError(t, rep.Err)
	return rep, got
}

// Offsets are stable across gathers and across a restart for the same
// seed, and different for another seed.
func TestOffsetsStableAndSeeded(t *testing.T) {
	const spread = 10 * time.Second
	names := make([]string, 200)
	for i := range names {
		names[i] = fmt.Sprintf("service-%d", i)
	}
	off := func(seed, name string) time.Duration {
		tg := &Target{hash: offsetHash(seed, name)}
		return tg.offset(spread)
	}
	differ := 0
	for _, n := range names {
		a := off("agent-a", n)
		require.Equal(t, a, off("agent-a", n), "stable")
		require.GreaterOrEqual(t, a, time.Duration(0))
		require.Less(t, a, spread)
		if a != off("agent-b", n) {
			differ++
		}
	}
	require.Greater(t, differ, 190, "another seed, other offsets")

	// the engine applies them: a new engine with the same seed places each
	// service at the same offset
	srv := newArrivals(t)
	sched := Schedule{Timeout: time.Second, Samples: 1}
	offsets := func() map[string]time.Duration {
		e := New(store.NewMemory(), nopLog{})
		e.SetTargets(targets(t, srv, 20, sched), Settings{MaxConcurrency: 8, Spread: 400 * time.Millisecond, Seed: "x"})
		start := time.Now()
		_, got := gatherAll(t, e, start)
		require.Len(t, got, 20)
		out := map[string]time.Duration{}
		for _, s := range got {
			out[s.Name] = s.At.Sub(start)
		}
		return out
	}
	first, second := offsets(), offsets()
	for name, o := range first {
		require.InDelta(t, float64(o), float64(second[name]), float64(40*time.Millisecond), name)
		tg := &Target{hash: offsetHash("x", name)}
		require.InDelta(t, float64(tg.offset(400*time.Millisecond)), float64(o), float64(40*time.Millisecond), name)
	}
}

// Over a 10 s spread, 1,000 services start evenly: no 100 ms slice holds
// more than a small multiple of the mean (10).
func TestSpreadHasNoBurst(t *testing.T) {
	const spread = 9 * time.Second
	slices := make(map[int]int)
	for i := range 1000 {
		tg := &Target{hash: offsetHash("seed", fmt.Sprintf("svc-%d.example", i))}
		slices[int(tg.offset(spread)/(100*time.Millisecond))]++
	}
	mean := 1000.0 / 90
	for s, n := range slices {
		require.LessOrEqual(t, float64(n), 3*mean, "slice %d holds %d starts", s, n)
	}
}

// With spread = "auto", the gathers of a known cadence spread their
// rounds, and a gather never outlasts the cadence.
func TestAutoSpreadKeepsTheCadence(t *testing.T) {
	srv := newArrivals(t)
	const cadence = 2 * time.Second
	sched := Schedule{Timeout: 300 * time.Millisecond, Samples: 1}
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(targets(t, srv, 100, sched), Settings{MaxConcurrency: 64, SpreadAuto: true, Seed: "s"})
	begin := time.Now()
	var spans []time.Duration
	for g := range 4 {
		at := begin.Add(time.Duration(g) * cadence)
		time.Sleep(time.Until(at))
		rep, got := gatherAll(t, e, at)
		require.Len(t, got, 100)
		// by design the last round starts at 0.9 × cadence − timeout and
		// ends by 0.9 × cadence; the slack is for a loaded test machine
		took := rep.End.Sub(rep.Start)
		require.Less(t, took, cadence+time.Second, "gather %d took %s", g, took)
		for _, tg := range e.Targets() {
			require.Less(t, tg.offset(e.spread(cadence, e.Targets())), time.Duration(0.9*float64(cadence))-sched.Timeout)
		}
		first, last := got[0].At, got[0].At
		for _, s := range got {
			first, last = minT(first, s.At), maxT(last, s.At)
		}
		spans = append(spans, last.Sub(first))
	}
	require.Less(t, spans[0], 600*time.Millisecond, "the first gather (cadence unknown) is a burst")
	// auto: 0.9 × 2 s − 0.3 s = 1.5 s
	for _, s := range spans[1:] {
		require.Greater(t, s, 1000*time.Millisecond, "later gathers spread their starts")
	}
}

func minT(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxT(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// interval = "3s" on a 1 s cadence probes on every third gather; the
// others emit nothing for it, but the report keeps its last round.
func TestIntervalLongerThanTheCadence(t *testing.T) {
	srv := newArrivals(t)
	every := targets(t, srv, 1, Schedule{Timeout: time.Second, Samples: 1})
	slow := targets(t, srv, 2, Schedule{Timeout: time.Second, Samples: 1, Interval: 3 * time.Second})[1:]
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(append(every, slow...), Settings{MaxConcurrency: 4, Seed: "s"})
	base := time.Now()
	var probed []int
	for g := range 7 {
		rep, got := gatherAll(t, e, base.Add(time.Duration(g)*time.Second))
		require.Len(t, rep.Services, 2, "the report keeps every service")
		for _, s := range got {
			if s.Name == "s1" {
				probed = append(probed, g)
			}
		}
	}
	require.Equal(t, []int{0, 3, 6}, probed)
	require.Len(t, srv.times("/1"), 3)
	require.Len(t, srv.times("/0"), 7)
}

// A round of 5 samples against a target that fails every other request:
// round_loss is 0.4 or 0.6 and every sample is counted into the state.
func TestRoundOfSamples(t *testing.T) {
	srv := newArrivals(t)
	srv.fail.Store(true)
	sched := Schedule{Timeout: 2 * time.Second, Samples: 5, SampleInterval: 50 * time.Millisecond}
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(targets(t, srv, 1, sched), Settings{MaxConcurrency: 1, Seed: "s"})
	var probes, failures int64
	for g := range 3 {
		_, got := gatherAll(t, e, time.Now())
		require.Len(t, got, 1)
		f := got[0].Fields
		loss := f["round_loss"].(float64)
		require.Contains(t, []float64{0.4, 0.6}, loss, "gather %d", g)
		require.Equal(t, int64(5), f["round_samples"])
		fails := f["round_failures"].(int64)
		require.Equal(t, loss, float64(fails)/5)
		probes += 5
		failures += fails
		require.Equal(t, probes, f["probes"], "every sample is a probe of the state")
		require.Equal(t, failures, f["failures"])
		require.Equal(t, probes-failures, f["latency_count"])
		require.Equal(t, "success", got[0].Tags["result"], "at least one sample succeeded")
		require.LessOrEqual(t, f["round_min"].(float64), f["latency"].(float64))
		require.LessOrEqual(t, f["latency"].(float64), f["round_max"].(float64))
	}
	// the samples were sample_interval apart
	ts := srv.times("/0")
	require.Len(t, ts, 15)
	for i := 1; i < 5; i++ {
		gap := ts[i].Sub(ts[i-1])
		require.InDelta(t, float64(50*time.Millisecond), float64(gap), float64(25*time.Millisecond), "gap %d", i)
	}
}

// With samples = 1 a metric has no round fields: the output is what it
// was before rounds.
func TestSingleSampleHasNoRoundFields(t *testing.T) {
	srv := newArrivals(t)
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(targets(t, srv, 1, Schedule{Timeout: time.Second, Samples: 1}), Settings{MaxConcurrency: 1})
	_, got := gatherAll(t, e, time.Now())
	for k := range got[0].Fields {
		require.False(t, strings.HasPrefix(k, "round_"), k)
	}
}

// max_concurrency still bounds the probes in flight, with a spread too.
func TestConcurrencyBoundWithSpread(t *testing.T) {
	var cur, peak atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
		cur.Add(-1)
	}))
	defer srv.Close()
	a := &arrivals{Server: srv}
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(targets(t, a, 40, Schedule{Timeout: time.Second, Samples: 1}), Settings{MaxConcurrency: 3, Spread: 100 * time.Millisecond})
	_, got := gatherAll(t, e, time.Now())
	require.Len(t, got, 40)
	require.LessOrEqual(t, peak.Load(), int64(3))
}

// result_tag = false and string_fields = false: no `result` tag, no
// string field; result_code still says what happened.
func TestShapeForPrometheus(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	var o probe.Options
	o.InsecureSkipVerify = true
	pr, err := probe.New(srv.URL, time.Second, o)
	require.NoError(t, err)
	defer pr.Close()
	tg := NewTarget("tls", srv.URL, pr, testParams, []float64{50}, nil)
	tg.Schedule = Schedule{Timeout: time.Second, Samples: 1}
	for _, shape := range []Shape{{}, {NoResultTag: true, NoStringFields: true}} {
		e := New(store.NewMemory(), nopLog{})
		e.SetTargets([]*Target{NewTarget(tg.Name, tg.Server, tg.Prober, tg.Params, tg.Percentiles, nil)}, Settings{MaxConcurrency: 1, Shape: shape})
		e.Targets()[0].Schedule = tg.Schedule
		_, got := gatherAll(t, e, time.Now())
		s := got[0]
		_, hasResult := s.Tags["result"]
		require.Equal(t, !shape.NoResultTag, hasResult)
		require.Contains(t, s.Fields, "result_code")
		strings := 0
		for _, v := range s.Fields {
			if _, ok := v.(string); ok {
				strings++
			}
		}
		if shape.NoStringFields {
			require.Zero(t, strings, "%v", s.Fields)
		} else {
			require.NotZero(t, strings, "tls_version is a string field: %v", s.Fields)
		}
	}
}

// History reaches the Service only when a status server reads it.
func TestHistoryOnlyWhenAsked(t *testing.T) {
	srv := newArrivals(t)
	for _, want := range []bool{false, true} {
		e := New(store.NewMemory(), nopLog{})
		e.SetTargets(targets(t, srv, 1, Schedule{Timeout: time.Second, Samples: 1}), Settings{MaxConcurrency: 1, History: want})
		gatherAll(t, e, time.Now())
		_, got := gatherAll(t, e, time.Now())
		if want {
			require.Len(t, got[0].History, 2)
		} else {
			require.Nil(t, got[0].History)
		}
	}
}
