package main

// The child side of the keeping-up part: one process runs one prober (our
// plugin, or the plain net/http loop) for one N on a ticker and reports
// each gather. The child is its own process so that getrusage counts that
// prober alone (the targets are other processes, the parent is idle).

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

// keepupEnv makes the binary a keeping-up child; the spec comes on stdin.
const keepupEnv = "LATENCY_SCALE_KEEPUP"

// Probers of the keeping-up part.
const (
	proberOurs  = "service_latency"
	proberPlain = "plain net/http"
)

// keepupSpec is what one keeping-up child runs.
type keepupSpec struct {
	N      int
	Prober string
	// Hosts are the targets' host:port, one per loopback address; service
	// i probes Hosts[i%len(Hosts)].
	Hosts []string
	// Cadence is the ticker's period; Gathers the counted gathers, after
	// the first one (a burst, reported but not counted).
	Cadence time.Duration
	Gathers int
	// Delay is the delay every URL asks of the target (?delay=).
	Delay time.Duration
	// Timeout is both probers' (with SetTimeout false it is the plugin's
	// default and ours's file does not set it); Concurrency the plain
	// loop's (ours takes the plugin's default, which the parent passes).
	Timeout     time.Duration
	SetTimeout  bool
	Concurrency int
	// CPUProfile, when set, is where the child writes a CPU profile of
	// its counted gathers (the first one, a burst, left out).
	CPUProfile string
}

// keepupGather is one gather of a keeping-up child.
type keepupGather struct {
	// Late is the gather's start less the tick it answers (a tick that
	// came during the previous gather waits for it).
	Late time.Duration
	Wall time.Duration
	// Slack is the next tick less the gather's end: negative when the
	// round ran into the next one.
	Slack time.Duration
	// FirstStart and LastStart are the first and last probe (round)
	// starts after the gather's start: the spread actually applied.
	FirstStart, LastStart time.Duration
	OK, Failed            int
	// CPU is the child's user + system time from this gather's start to
	// the next one's (the idle rest of the interval included).
	CPU time.Duration
	// ErrP50 and ErrP99 are percentiles of the reported latency less the
	// injected delay, over the gather's successful probes.
	ErrP50, ErrP99 time.Duration
	// TimeWait is /proc/net/sockstat's "tw" at the gather's end (the
	// whole machine); MaxTimeWait and MaxFDs the most seen by a 1 s
	// sampler during the gather (MaxFDs: this process's open files).
	TimeWait, MaxTimeWait, MaxFDs int
}

// keepupResult is what a keeping-up child reports; the parent adds the
// fields after Gathers.
type keepupResult struct {
	N      int
	Prober string
	// Gathers[0] is the first gather (a burst), the rest are counted.
	Gathers []keepupGather
	// CPUPerProbe is the counted gathers' CPU over their probes;
	// ErrP50 and ErrP99 are over every successful probe of them.
	CPUPerProbe    time.Duration
	ErrP50, ErrP99 time.Duration
	// StartUp is the time from the child's start to its first gather
	// (ours: config.Load + Init of the N-service file).
	StartUp    time.Duration
	HWM        int64 // peak RSS, bytes
	FirstError string
	// Filled by the parent: the machine's TIME_WAIT when the child
	// started, the most open files of all targets together, and the
	// targets' CPU time over the child's whole run (every gather).
	TimeWaitBefore int
	TargetFDsMax   int
	TargetCPU      time.Duration
}

// allProbes are the probes of every gather, the burst included.
func (r *keepupResult) allProbes() int {
	n := 0
	for _, g := range r.Gathers {
		n += g.OK + g.Failed
	}
	return n
}

// keepupChild is the child's main.
func keepupChild() int {
	var sp keepupSpec
	if err := json.NewDecoder(os.Stdin).Decode(&sp); err != nil {
		fmt.Fprintln(os.Stderr, "keepup child: reading the spec:", err)
		return 2
	}
	res, err := runKeepupProber(&sp)
	if err != nil {
		fmt.Fprintf(os.Stderr, "keepup child (%s, N=%d): %v\n", sp.Prober, sp.N, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "keepup child:", err)
		return 1
	}
	return 0
}

// gatherFunc runs one gather into acc; first is true for the first one.
type gatherFunc func(acc *keepAcc, first bool) error

func runKeepupProber(sp *keepupSpec) (*keepupResult, error) {
	if sp.N <= 0 || len(sp.Hosts) == 0 || sp.Cadence <= 0 || sp.Gathers < 1 {
		return nil, fmt.Errorf("bad spec: N %d, %d hosts, cadence %s, %d gathers", sp.N, len(sp.Hosts), sp.Cadence, sp.Gathers)
	}
	if _, err := loopback.RaiseNoFile(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	var gather gatherFunc
	switch sp.Prober {
	case proberOurs:
		p, cleanup, err := startOurs(sp)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		gather = func(acc *keepAcc, _ bool) error { return p.Gather(acc) }
	case proberPlain:
		pl := newPacedPlain(sp)
		defer pl.close()
		window := plainWindow(sp.Cadence, sp.Timeout)
		gather = func(acc *keepAcc, first bool) error {
			if first {
				pl.gather(acc, 0) // as ours: the first gather is a burst
			} else {
				pl.gather(acc, window)
			}
			return nil
		}
	default:
		return nil, fmt.Errorf("unknown prober %q", sp.Prober)
	}
	res := &keepupResult{N: sp.N, Prober: sp.Prober, StartUp: time.Since(t0)}
	if err := onTicker(sp, gather, res); err != nil {
		return nil, err
	}
	res.HWM = procStatus("VmHWM:")
	return res, nil
}

// plainWindow is the window over which the plain loop spreads its
// requests: the spread that ours takes with "auto" at this cadence (0.9 ×
// cadence − the timeout, see the plugin's sample.conf).
func plainWindow(cadence, timeout time.Duration) time.Duration {
	return max(0, time.Duration(0.9*float64(cadence))-timeout)
}

// startOurs writes the N-service config (the defaults except spread =
// "auto", stated although it is the default) and starts the plugin as
// the binary does: config.Load, Init, Start.
func startOurs(sp *keepupSpec) (*service_latency.ServiceLatency, func(), error) {
	dir, err := os.MkdirTemp("", "latency_keepup")
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, "keepup.conf")
	if err := os.WriteFile(path, keepupConfig(sp), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	p, err := startup(path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	if err := p.Start(nil); err != nil {
		p.Stop()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return p, func() { p.Stop(); os.RemoveAll(dir) }, nil
}

// keepupConfig is the plugin's file for sp.N services spread over the
// hosts, each URL asking the target for the delay. Nothing but spread
// (and the timeout when one is given) is set: max_concurrency and
// keep_alive are the defaults.
func keepupConfig(sp *keepupSpec) []byte {
	var b strings.Builder
	b.Grow(sp.N * 100)
	b.WriteString("[[inputs.service_latency]]\n  spread = \"auto\"\n")
	if sp.SetTimeout {
		fmt.Fprintf(&b, "  timeout = %q\n", sp.Timeout)
	}
	for i := range sp.N {
		fmt.Fprintf(&b, "  [[inputs.service_latency.service]]\n    name = \"svc-%d\"\n    url = %q\n", i, loopback.URL(sp.Hosts, i, sp.Delay))
	}
	return []byte(b.String())
}

// onTicker runs 1 + sp.Gathers gathers on a ticker of sp.Cadence, as
// Telegraf's execd shim calls Gather: a tick that comes while a gather
// runs is kept (one at most) and the next gather starts as soon as it
// ends. After the last gather it waits for one more tick, so that the
// last CPU figure also spans a whole interval.
func onTicker(sp *keepupSpec, gather gatherFunc, res *keepupResult) error {
	smp := startSampler()
	defer smp.stop()
	acc := &keepAcc{delay: sp.Delay}
	var pooled []float64
	var counted keepupGather // sums over the counted gathers
	ticker := time.NewTicker(sp.Cadence)
	defer ticker.Stop()
	tick := time.Now()
	cpuStart := cpuTime()
	stopProfile := func() {}
	defer func() { stopProfile() }()
	for g := 0; g <= sp.Gathers; g++ {
		if g > 0 {
			tick = <-ticker.C
			cpuNow := cpuTime()
			res.Gathers[g-1].CPU = cpuNow - cpuStart
			cpuStart = cpuNow
		}
		if g == 1 && sp.CPUProfile != "" {
			stop, err := startCPUProfile(sp.CPUProfile)
			if err != nil {
				return err
			}
			stopProfile = stop
		}
		acc.reset()
		smp.reset()
		start := time.Now()
		if err := gather(acc, g == 0); err != nil && res.FirstError == "" {
			res.FirstError = err.Error()
		}
		end := time.Now()
		rec := acc.record(start)
		rec.Late, rec.Wall, rec.Slack = start.Sub(tick), end.Sub(start), tick.Add(sp.Cadence).Sub(end)
		rec.TimeWait = timeWait()
		rec.MaxTimeWait, rec.MaxFDs = smp.max()
		res.Gathers = append(res.Gathers, rec)
		if res.FirstError == "" {
			res.FirstError = acc.firstErr
		}
		if g > 0 {
			pooled = append(pooled, acc.errs...)
			counted.OK += rec.OK
			counted.Failed += rec.Failed
		}
	}
	<-ticker.C
	res.Gathers[sp.Gathers].CPU = cpuTime() - cpuStart
	for _, g := range res.Gathers[1:] {
		counted.CPU += g.CPU
	}
	if probes := counted.OK + counted.Failed; probes > 0 {
		res.CPUPerProbe = counted.CPU / time.Duration(probes)
	}
	res.ErrP50, res.ErrP99 = errPercentiles(pooled)
	return nil
}

// startCPUProfile starts a CPU profile into path; the function returned
// stops it and closes the file.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// errPercentiles are the median and the 99th percentile (nearest rank)
// of errs, in seconds, as durations; zero when there are none.
func errPercentiles(errs []float64) (p50, p99 time.Duration) {
	if len(errs) == 0 {
		return 0, 0
	}
	s := slices.Clone(errs)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return time.Duration(math.Round(s[min(max(i, 0), len(s)-1)] * 1e9))
	}
	return rank(0.50), rank(0.99)
}

// keepAcc is the accumulator of a keeping-up child. It builds a
// telegraf.Metric from every call, as Telegraf's accumulator does (part
// of what a gather costs in production), and keeps of the service_latency
// measurement the counts, the latency errors and the round starts. Ours
// calls it from Gather's goroutine only; the plain loop after its
// requests.
type keepAcc struct {
	delay                 time.Duration
	ok, failed            int
	errs                  []float64 // latency − delay, seconds
	firstStart, lastStart time.Time
	firstErr              string
}

func (a *keepAcc) reset() {
	a.ok, a.failed, a.errs = 0, 0, a.errs[:0]
	a.firstStart, a.lastStart = time.Time{}, time.Time{}
}

// observe counts one probe that started at start; ok with its latency.
func (a *keepAcc) observe(start time.Time, ok bool, latency float64) {
	if a.firstStart.IsZero() || start.Before(a.firstStart) {
		a.firstStart = start
	}
	if start.After(a.lastStart) {
		a.lastStart = start
	}
	if !ok {
		a.failed++
		return
	}
	a.ok++
	a.errs = append(a.errs, latency-a.delay.Seconds())
}

// record is the gather's figures so far (counts, round starts, errors).
func (a *keepAcc) record(start time.Time) keepupGather {
	g := keepupGather{OK: a.ok, Failed: a.failed}
	if !a.firstStart.IsZero() {
		g.FirstStart, g.LastStart = a.firstStart.Sub(start), a.lastStart.Sub(start)
	}
	g.ErrP50, g.ErrP99 = errPercentiles(a.errs)
	return g
}

func (a *keepAcc) AddFields(name string, fields map[string]interface{}, tags map[string]string, t ...time.Time) {
	tm := time.Now()
	if len(t) > 0 {
		tm = t[0]
	}
	m := metric.New(name, tags, fields, tm)
	if name != service_latency.Measurement {
		return
	}
	r, _ := m.GetTag("result")
	v, _ := m.GetField("latency")
	lat, isFloat := v.(float64)
	a.observe(m.Time(), r == "success" && isFloat, lat)
}

func (a *keepAcc) AddGauge(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *keepAcc) AddCounter(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *keepAcc) AddSummary(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *keepAcc) AddHistogram(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *keepAcc) AddMetric(m telegraf.Metric) {
	a.AddFields(m.Name(), m.Fields(), m.Tags(), m.Time())
}
func (*keepAcc) SetPrecision(time.Duration) {}
func (a *keepAcc) AddError(err error) {
	if err != nil && a.firstErr == "" {
		a.firstErr = err.Error()
	}
}
func (*keepAcc) WithTracking(int) telegraf.TrackingAccumulator {
	panic("latency_scale: tracking accumulator not supported")
}

// sampler notes, every second, the machine's TIME_WAIT count and this
// process's open files, keeping the most of each since its last reset.
type sampler struct {
	tw, fds atomic.Int64
	done    chan struct{}
	stopped chan struct{}
}

func startSampler() *sampler {
	s := &sampler{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	raiseTo(&s.tw, int64(timeWait()))
	raiseTo(&s.fds, int64(openFiles("self")))
}

func raiseTo(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

func (s *sampler) reset() { s.tw.Store(0); s.fds.Store(0); s.sample() }
func (s *sampler) max() (tw, fds int) {
	s.sample()
	return int(s.tw.Load()), int(s.fds.Load())
}
func (s *sampler) stop() { close(s.done); <-s.stopped }

// timeWait is the "tw" count of /proc/net/sockstat's TCP line (sockets in
// TIME_WAIT on the whole machine, this network namespace), -1 unread.
func timeWait() int {
	data, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(data)) {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				n, err := strconv.Atoi(f[i+1])
				if err != nil {
					return -1
				}
				return n
			}
		}
	}
	return -1
}

// openFiles is the number of open file descriptors of a process ("self"
// or a pid), -1 unread.
func openFiles(pid string) int {
	d, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return -1
	}
	return len(d)
}
