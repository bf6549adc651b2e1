package main

// The child side of the harness: one process runs one contender (our
// plugin, Telegraf's inputs.http_response, or the plain net/http loop) for
// a few gathers against the loopback target, measures each gather's wall
// time and CPU time (getrusage RUSAGE_SELF deltas, so the target's CPU is
// never counted: it is another process), samples the heap, and writes a
// childResult as JSON on stdout. The parent reads the child's max RSS from
// its rusage when it exits.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
	tgconfig "github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/inputs/http_response"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
	slconfig "github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

// Contender names.
const (
	Ours = "service_latency"
	// OursKeepAlive is our plugin with keep_alive = true: each service's
	// connection is reused from gather to gather (not a like-for-like
	// comparison: neither http_response nor the plain loop can).
	OursKeepAlive = "service_latency keep_alive"
	HTTPResponse  = "http_response"
	Plain         = "plain_loop"
)

// roleEnv makes the harness binary (or its test binary) run as a child.
const roleEnv = "LATENCY_BENCH_ROLE"

// spec is what a child runs; the parent writes it as JSON on the child's
// stdin (10,000 URLs do not fit in an environment variable).
type spec struct {
	Contender   string
	URLs        []string
	Concurrency int // ignored by http_response, which is sequential
	Timeout     time.Duration
	Warmup      int // gathers run before the measured ones
	Gathers     int // measured gathers
	Latencies   bool
	// Spread is our plugin's spread setting ("auto", "0s", ...); empty:
	// not set (the plugin's default, "auto").
	Spread string
	// Cadence, when positive, is the time from one gather's start to the
	// next's (warm-ups included), as Telegraf's agent calls Gather every
	// interval; a gather that overruns it is followed at once. Zero:
	// gathers back to back.
	Cadence time.Duration
	// CPUProfile, when set, is where the child writes a CPU profile of its
	// measured gathers.
	CPUProfile string
	// MemProfile, when set, is where the child writes a heap profile
	// taken after its gathers (what it retains).
	MemProfile string
}

// gatherSample is one measured gather.
type gatherSample struct {
	// Start and End are the wall-clock times around Gather (the parent
	// matches the target's request arrivals to the gather with them).
	Start, End time.Time
	Wall       time.Duration
	CPU        time.Duration // user + system time of the whole child process
	Metrics    int           // metrics of the main measurement (or responses of the plain loop)
	OK         int           // successful probes
	// AllocBytes and Allocs are what the gather allocated on the heap
	// (runtime/metrics /gc/heap/allocs:bytes and :objects deltas).
	AllocBytes, Allocs uint64
}

// childResult is what a child reports.
type childResult struct {
	Gathers []gatherSample
	// Latencies are the reported latencies (seconds) of the successful
	// probes of the measured gathers, when the spec asked for them.
	Latencies []float64
	// PeakHeap is the largest heap (live + not yet swept objects, i.e.
	// HeapAlloc) seen by a 1 ms sampler during the measured gathers.
	PeakHeap uint64
	// RetainedHeap is the heap still in use after the gathers and a GC,
	// with the contender alive, less the heap before it was built: what
	// the contender keeps between gathers (targets, probers, state).
	RetainedHeap int64
	// Errors counts errors reported through the accumulator (or by the
	// plain loop); FirstError is the first of them.
	Errors     int
	FirstError string
}

// contender is one prober under test.
type contender interface {
	gather(acc *benchAcc) error
	close()
}

func childMain() int {
	var sp spec
	if err := json.NewDecoder(os.Stdin).Decode(&sp); err != nil {
		fmt.Fprintf(os.Stderr, "latency_bench child: reading the spec: %v\n", err)
		return 2
	}
	res, err := runChild(&sp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "latency_bench child: %s: %v\n", sp.Contender, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "latency_bench child: %v\n", err)
		return 1
	}
	return 0
}

func runChild(sp *spec) (*childResult, error) {
	if _, err := loopback.RaiseNoFile(); err != nil {
		return nil, err
	}
	if sp.MemProfile != "" {
		runtime.MemProfileRate = 512
	}
	base := heapAfterGC()
	c, err := newContender(sp)
	if err != nil {
		return nil, err
	}
	defer c.close()

	res := &childResult{}
	acc := &benchAcc{}
	// pace waits for the k-th gather's turn when the spec has a cadence.
	var first time.Time
	k := 0
	pace := func() {
		if sp.Cadence > 0 {
			if k == 0 {
				first = time.Now()
			} else if d := time.Until(first.Add(time.Duration(k) * sp.Cadence)); d > 0 {
				time.Sleep(d)
			}
		}
		k++
	}
	for range sp.Warmup {
		pace()
		if err := c.gather(acc); err != nil {
			return nil, err
		}
		acc.reset()
	}
	acc.keepLatencies = sp.Latencies
	allocSamples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	stopSampler := startHeapSampler(&res.PeakHeap)
	if sp.CPUProfile != "" {
		f, err := os.Create(sp.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	for range sp.Gathers {
		pace()
		acc.metrics, acc.ok = 0, 0
		b0, o0 := heapAllocs(allocSamples)
		cpu0 := cpuTime()
		t0 := time.Now()
		if err := c.gather(acc); err != nil {
			stopSampler()
			return nil, err
		}
		t1 := time.Now()
		wall := t1.Sub(t0)
		cpu := cpuTime() - cpu0
		b1, o1 := heapAllocs(allocSamples)
		res.Gathers = append(res.Gathers, gatherSample{Start: t0, End: t1, Wall: wall, CPU: cpu, Metrics: acc.metrics, OK: acc.ok, AllocBytes: b1 - b0, Allocs: o1 - o0})
	}
	stopSampler()
	res.Latencies = acc.latencies
	res.Errors, res.FirstError = acc.errors, acc.firstErr
	res.RetainedHeap = int64(heapAfterGC()) - int64(base)
	if sp.MemProfile != "" {
		f, err := os.Create(sp.MemProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return nil, err
		}
	}
	runtime.KeepAlive(c)
	return res, nil
}

func newContender(sp *spec) (contender, error) {
	switch sp.Contender {
	case Ours, OursKeepAlive:
		return newOurs(sp)
	case HTTPResponse:
		return newHTTPResponse(sp)
	case Plain:
		return newPlain(sp), nil
	}
	return nil, fmt.Errorf("unknown contender %q", sp.Contender)
}

// ---- our plugin

type ours struct {
	p *service_latency.ServiceLatency
}

// oursConfig is the plugin's own config file for the URLs: built through
// ParseConfig exactly as the binary builds it.
func oursConfig(sp *spec) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "[[inputs.service_latency]]\n  timeout = %q\n  max_concurrency = %d\n", sp.Timeout, sp.Concurrency)
	if sp.Contender == OursKeepAlive {
		b.WriteString("  keep_alive = true\n")
	}
	if sp.Spread != "" {
		fmt.Fprintf(&b, "  spread = %q\n", sp.Spread)
	}
	for _, u := range sp.URLs {
		fmt.Fprintf(&b, "  [[inputs.service_latency.service]]\n    url = %q\n", u)
	}
	return []byte(b.String())
}

func newOurs(sp *spec) (*ours, error) {
	f, err := slconfig.Parse(oursConfig(sp))
	if err != nil {
		return nil, err
	}
	p := service_latency.New()
	p.Config = f.Config
	p.Log = store.NopLogger{}
	if err := p.Init(); err != nil {
		return nil, f.Locate(err)
	}
	return &ours{p: p}, nil
}

func (o *ours) gather(acc *benchAcc) error { return o.p.Gather(acc) }
func (o *ours) close()                     { o.p.Stop() }

// ---- Telegraf's inputs.http_response, the library of the telegraf
// module version in go.mod (so the same version by construction).

type httpResp struct{ h *http_response.HTTPResponse }

func newHTTPResponse(sp *spec) (*httpResp, error) {
	h := &http_response.HTTPResponse{
		URLs:            sp.URLs,
		ResponseTimeout: tgconfig.Duration(sp.Timeout),
		Log:             store.NopLogger{},
	}
	if err := h.Init(); err != nil {
		return nil, err
	}
	return &httpResp{h: h}, nil
}

func (h *httpResp) gather(acc *benchAcc) error { return h.h.Gather(acc) }
func (*httpResp) close()                       {}

// ---- the plain net/http loop: the ceiling. Same concurrency as our
// max_concurrency, one shared transport without keep-alive (a fresh
// connection per request), GET, read the body, close.

type plain struct {
	client *http.Client
	tr     *http.Transport
	urls   []string
	conc   int
}

func newPlain(sp *spec) *plain {
	tr := &http.Transport{
		DialContext:       (&net.Dialer{Timeout: sp.Timeout, KeepAlive: -1}).DialContext,
		DisableKeepAlives: true,
	}
	return &plain{client: &http.Client{Transport: tr, Timeout: sp.Timeout}, tr: tr, urls: sp.URLs, conc: sp.Concurrency}
}

func (p *plain) gather(acc *benchAcc) error {
	lat := make([]time.Duration, len(p.urls))
	errs := make([]error, len(p.urls))
	loopback.Each(len(p.urls), p.conc, func(i int) { lat[i], errs[i] = p.get(p.urls[i]) })
	for i := range p.urls {
		acc.metrics++
		if errs[i] != nil {
			acc.AddError(errs[i])
			continue
		}
		acc.ok++
		if acc.keepLatencies {
			acc.latencies = append(acc.latencies, lat[i].Seconds())
		}
	}
	return nil
}

func (p *plain) get(u string) (time.Duration, error) { return loopback.TimedGet(p.client, u) }

func (p *plain) close() { p.tr.CloseIdleConnections() }

// ---- the accumulator: it builds a telegraf.Metric from every call, as
// Telegraf's agent does, and keeps only counts (and latencies on demand),
// so all contenders pay the same per-metric cost.

type benchAcc struct {
	metrics, ok   int
	errors        int
	firstErr      string
	keepLatencies bool
	latencies     []float64
}

func (a *benchAcc) reset() {
	a.metrics, a.ok, a.errors, a.firstErr = 0, 0, 0, ""
	a.latencies = a.latencies[:0]
}

func (a *benchAcc) add(name string, fields map[string]interface{}, tags map[string]string, t []time.Time) {
	tm := time.Now()
	if len(t) > 0 {
		tm = t[0]
	}
	m := metric.New(name, tags, fields, tm)
	var key string
	switch name {
	case service_latency.Measurement:
		key = "latency"
	case "http_response":
		key = "response_time"
	default:
		return
	}
	a.metrics++
	if r, _ := m.GetTag("result"); r != "success" {
		return
	}
	a.ok++
	if a.keepLatencies {
		if v, ok := m.GetField(key); ok {
			if f, ok := v.(float64); ok {
				a.latencies = append(a.latencies, f)
			}
		}
	}
}

func (a *benchAcc) AddFields(name string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(name, f, tags, t)
}

func (a *benchAcc) AddGauge(name string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(name, f, tags, t)
}

func (a *benchAcc) AddCounter(name string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(name, f, tags, t)
}

func (a *benchAcc) AddSummary(name string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(name, f, tags, t)
}

func (a *benchAcc) AddHistogram(name string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(name, f, tags, t)
}

func (a *benchAcc) AddMetric(m telegraf.Metric) {
	a.add(m.Name(), m.Fields(), m.Tags(), []time.Time{m.Time()})
}

func (*benchAcc) SetPrecision(time.Duration) {}

func (a *benchAcc) AddError(err error) {
	if err == nil {
		return
	}
	a.errors++
	if a.firstErr == "" {
		a.firstErr = err.Error()
	}
}

func (*benchAcc) WithTracking(int) telegraf.TrackingAccumulator {
	panic("latency_bench: tracking accumulator not supported")
}

// ---- measurements

// cpuTime is the user + system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const heapMetric = "/memory/classes/heap/objects:bytes"

func heapObjects(s []metrics.Sample) uint64 {
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// startHeapSampler records the largest heap seen every millisecond in
// *peak until the returned function is called.
func startHeapSampler(peak *uint64) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: heapMetric}}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			if v := heapObjects(s); v > *peak {
				*peak = v
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// heapAllocs returns the cumulative bytes and objects allocated on the
// heap so far.
func heapAllocs(s []metrics.Sample) (bytes, objects uint64) {
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	return heapObjects([]metrics.Sample{{Name: heapMetric}})
}
