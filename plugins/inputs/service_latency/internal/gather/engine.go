package gather

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// Engine runs gathers over a set of targets against one store. Gather and
// SetTargets may be called from different goroutines; a gather in
// progress finishes on the targets it started with.
type Engine struct {
	store store.Store
	log   telegraf.Logger

	mu             sync.Mutex // serializes gathers and target swaps
	targets        []*Target
	maxConcurrency int
	storeErrors    int64 // failed Updates, over the engine's life

	// Probes in flight now and the most at once in this gather (written
	// by the probe workers).
	inFlight, inFlightMax atomic.Int64

	// Reused from gather to gather.
	results []probe.Result
	obs     []store.Observation
	snap    stats.Snapshot
}

// New returns an engine that keeps its state in st and logs to log.
func New(st store.Store, log telegraf.Logger) *Engine {
	return &Engine{store: st, log: log}
}

// SetTargets replaces the targets (a reload): the store keeps the state of
// every service whose name remains and drops the others. It returns the
// targets replaced, whose probers the caller closes. It waits for a gather
// in progress to end.
func (e *Engine) SetTargets(targets []*Target, maxConcurrency int) (old []*Target) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old, e.targets, e.maxConcurrency = e.targets, targets, maxConcurrency
	if old != nil {
		keep := make(map[string]bool, len(targets))
		for _, t := range targets {
			keep[t.Name] = true
		}
		e.store.Retain(func(name string) bool { return keep[name] })
	}
	return old
}

// Close waits for a gather in progress to end and closes every target's
// prober. The store is the caller's to close.
func (e *Engine) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.targets {
		t.Prober.Close()
	}
	e.targets = nil
}

// Targets returns the current targets (read-only).
func (e *Engine) Targets() []*Target {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.targets
}

// Gather probes every target, updates the store and returns the Report,
// or nil when ctx was canceled (shutting down: nothing is emitted and the
// store is not updated with probes cut short).
func (e *Engine) Gather(ctx context.Context, now time.Time) *Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	targets := e.targets
	e.probeAll(ctx, targets)
	if ctx.Err() != nil {
		return nil
	}
	e.obs = e.obs[:0]
	for i, t := range targets {
		r := &e.results[i]
		e.obs = append(e.obs, store.Observation{
			Service: t.Name,
			Params:  t.Params,
			OK:      r.Outcome == probe.Success,
			Latency: r.Latency.Seconds(),
		})
	}
	rep := &Report{Start: now}
	entries, err := e.store.Update(ctx, now, e.obs)
	if err != nil {
		e.storeErrors++
		rep.Err = err
	} else {
		rep.Services = make([]Service, len(targets))
		for i, t := range targets {
			if w := entries[i].Warning; w != nil {
				e.log.Warn(w.Error())
			}
			e.logTransition(t, &e.results[i])
			e.service(&rep.Services[i], t, &e.results[i], entries[i].State)
		}
	}
	rep.End = time.Now()
	rep.Internal = e.internal(targets, rep.End.Sub(rep.Start))
	return rep
}

// service fills one service's part of the report.
func (e *Engine) service(s *Service, t *Target, r *probe.Result, st *stats.State) {
	st.Snapshot(t.Percentiles, &e.snap)
	s.Name = t.Name
	s.Tags, s.Fields = fieldsOf(t, r, &e.snap)
	s.Histogram, s.HistogramTags = histogram(t, &e.snap)
	s.LastSuccess = unixTime(st.LastSuccess)
	s.LastFailure = unixTime(st.LastFailure)
	if r.Outcome != probe.Success {
		msg := r.Outcome.String()
		if r.Err != nil {
			msg += ": " + r.Err.Error()
		}
		s.Error = redact.Text(msg)
	}
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// internal are the gather's own signals; the store's health is added.
func (e *Engine) internal(targets []*Target, took time.Duration) Internal {
	h := e.store.Health()
	in := Internal{
		GatherTime:        took,
		Services:          len(targets),
		ProbesInFlightMax: e.inFlightMax.Swap(0),
		StoreErrors:       e.storeErrors + h.WriteErrors,
		StoreSlowWrites:   h.SlowWrites,
		StoreUnreachable:  h.Unreachable,
		ReplayQueue:       int64(h.QueueLen),
		StoreDropped:      h.Dropped,
	}
	for i := range e.results[:len(targets)] {
		if e.results[i].Outcome == probe.Timeout {
			in.Timeouts++
		}
	}
	return in
}

// logTransition logs a service going down (one warning on its first
// failure) and coming back (one info line), not every failed probe.
func (e *Engine) logTransition(t *Target, r *probe.Result) {
	if r.Outcome != probe.Success {
		t.failedRun++
		if !t.down {
			t.down = true
			e.log.Warnf("service %q (%s) failing: %s: %s", t.Name, t.Server, r.Outcome, errText(r.Err))
		} else {
			e.log.Debugf("service %q: %s: %s", t.Name, r.Outcome, errText(r.Err))
		}
		return
	}
	if t.down {
		t.down = false
		e.log.Infof("service %q recovered after %d failed probes", t.Name, t.failedRun)
	}
	t.failedRun = 0
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return redact.Text(err.Error())
}

// probeAll runs every target's probe, at most maxConcurrency at once, and
// leaves the results in e.results (same order as targets).
func (e *Engine) probeAll(ctx context.Context, targets []*Target) {
	if cap(e.results) < len(targets) {
		e.results = make([]probe.Result, len(targets))
	}
	e.results = e.results[:len(targets)]
	workers := min(e.maxConcurrency, len(targets))
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(targets) {
					return
				}
				e.results[i] = e.trackProbe(ctx, targets[i].Prober)
			}
		}()
	}
	wg.Wait()
}

// trackProbe runs one probe and keeps count of the probes in flight.
func (e *Engine) trackProbe(ctx context.Context, pr probe.Prober) probe.Result {
	n := e.inFlight.Add(1)
	for {
		m := e.inFlightMax.Load()
		if n <= m || e.inFlightMax.CompareAndSwap(m, n) {
			break
		}
	}
	r := runProbe(ctx, pr)
	e.inFlight.Add(-1)
	return r
}

// runProbe runs one probe and turns a panic in it into a failed result, so
// one bad target can never take the agent down.
func runProbe(ctx context.Context, pr probe.Prober) (r probe.Result) {
	defer func() {
		if v := recover(); v != nil {
			buf := make([]byte, 4096)
			buf = buf[:runtime.Stack(buf, false)]
			r = probe.Result{Outcome: probe.ConnectionFailed, Err: fmt.Errorf("probe panicked: %v\n%s", v, buf)}
		}
	}()
	return pr.Probe(ctx)
}
