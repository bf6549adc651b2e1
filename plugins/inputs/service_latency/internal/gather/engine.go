package gather

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
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

	mu          sync.Mutex // serializes gathers and target swaps
	targets     []*Target
	settings    Settings
	storeErrors int64         // failed Updates, over the engine's life
	starts      []gatherStart // of the last gathers, for the cadence
	lastEnd     time.Time     // when the last gather ended (a queued start follows it at once)

	// Probes in flight now and the most at once in this gather (written
	// by the probe workers).
	inFlight, inFlightMax atomic.Int64

	// owner shares the services among agents (probe_replicas); nil:
	// this agent probes every service. ownershipChanges counts the
	// services this agent gained or lost, members the live members of
	// the last gather (0 without a fleet or when it could not be seen).
	owner            Ownership
	ownershipChanges int64

	// Reused from gather to gather.
	obs  []store.Observation
	snap stats.Snapshot
}

// Ownership decides, at the start of every gather, which services this
// agent probes (store.Fleet). interval is the longest of the last gaps
// between gathers (0: not known yet), which the agent advertises in its
// lease: the longest, so that a late gather does not let the lease lapse.
type Ownership interface {
	Renew(ctx context.Context, interval time.Duration) *store.Share
}

// SetOwnership makes the engine probe and emit only the services o says
// this agent owns, from the next gather on (nil: every service). It
// outlives reloads (SetTargets).
func (e *Engine) SetOwnership(o Ownership) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.owner = o
}

// Batching of state updates: the rounds that finish are applied to the
// store (one Update: one Redis round trip per chunk of services) once
// batchMax of them are waiting or, with a spread, the oldest has waited
// batchWait, and at the end of the gather. Their metrics go out right
// after. Without a spread (a burst) that is one Update per gather.
const (
	batchMax  = 500
	batchWait = 100 * time.Millisecond
)

// New returns an engine that keeps its state in st and logs to log.
func New(st store.Store, log telegraf.Logger) *Engine {
	return &Engine{store: st, log: log}
}

// SetTargets replaces the targets and settings (a reload): the store keeps
// the state of every service whose name remains and drops the others; a
// target whose name remains keeps its schedule's bookkeeping (when it was
// last probed, its last round, the status it last saw). It returns the
// targets replaced, whose probers the caller closes. It waits for a
// gather in progress to end.
func (e *Engine) SetTargets(targets []*Target, s Settings) (old []*Target) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := make(map[string]*Target, len(e.targets))
	for _, t := range e.targets {
		prev[t.Name] = t
	}
	for _, t := range targets {
		t.hash = offsetHash(s.Seed, t.Name)
		if p := prev[t.Name]; p != nil {
			t.kept = p.kept
		}
	}
	old, e.targets, e.settings = e.targets, targets, s
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

// Gather runs the rounds of every target due, each starting at its
// offset within the spread, at most MaxConcurrency probes at once. Each
// finished round goes to the store in a batch, and emit is called with
// each service's entry (on Gather's goroutine) as soon as its batch is
// applied. It returns the Report once the last is out, or nil when ctx
// was canceled (shutting down: rounds cut short are neither applied nor
// emitted).
func (e *Engine) Gather(ctx context.Context, now time.Time, emit func(*Service)) *Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	cadence := e.noteStart(now)
	var share *store.Share // nil: every service
	if e.owner != nil {
		share = e.owner.Renew(ctx, e.longestGap())
	}
	due := make([]*Target, 0, len(e.targets))
	owned := 0
	for _, t := range e.targets {
		own := share.Owns(t.Name)
		if t.ownSeen && own != t.owned {
			e.ownershipChanges++
		}
		t.owned, t.ownSeen = own, true
		if !own {
			continue // another agent probes and emits it
		}
		owned++
		if t.due(now, cadence) {
			due = append(due, t)
		}
	}
	spread := e.spread(cadence, due)
	slices.SortStableFunc(due, func(a, b *Target) int { return cmp.Compare(a.offset(spread), b.offset(spread)) })

	rep := &Report{Start: now}
	rounds := make(chan round, min(len(due), 4*batchMax))
	go e.runRounds(ctx, now, spread, due, rounds)
	var batch []round
	var timeouts int64
	flush := func() {
		if len(batch) > 0 && ctx.Err() == nil {
			e.apply(ctx, rep, batch, emit)
		}
		batch = batch[:0]
	}
	var wait <-chan time.Time
	for open := true; open; {
		select {
		case rd, ok := <-rounds:
			if !ok {
				open = false
				break
			}
			if rd.result.Outcome == probe.Timeout {
				timeouts++
			}
			if len(batch) == 0 && spread > 0 {
				// in a burst every round ends at about the same time: one
				// Update at the end, as without spread
				wait = time.After(batchWait)
			}
			batch = append(batch, rd)
			if len(batch) >= batchMax {
				flush()
			}
		case <-wait:
			flush()
		}
	}
	flush()
	if ctx.Err() != nil {
		return nil
	}
	rep.Services = make([]Service, 0, owned)
	for _, t := range e.targets {
		if !t.owned {
			t.fresh = nil
			continue
		}
		switch {
		case t.fresh != nil:
			rep.Services = append(rep.Services, *t.fresh)
			t.fresh = nil
		case t.last != nil:
			rep.Services = append(rep.Services, *t.last)
		}
	}
	rep.End = time.Now()
	e.lastEnd = rep.End
	rep.Internal = e.internal(len(e.targets), rep.End.Sub(rep.Start), timeouts)
	rep.Internal.OwnedServices = int64(owned)
	rep.Internal.OwnershipChanges = e.ownershipChanges
	if share != nil {
		rep.Internal.MembersSeen = int64(len(share.Members))
	}
	return rep
}

// runRounds starts the due targets' rounds at their offsets, workers at
// a time, sends each finished round on out and closes it at the end.
func (e *Engine) runRounds(ctx context.Context, now time.Time, spread time.Duration, due []*Target, out chan<- round) {
	defer close(out)
	workers := min(e.settings.MaxConcurrency, len(due))
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(due) {
					return
				}
				t := due[i]
				at := now.Add(t.offset(spread))
				if !sleepUntil(ctx, at) {
					return
				}
				rd := e.runRound(ctx, t, time.Now())
				rd.scheduled = at
				out <- rd
			}
		}()
	}
	wg.Wait()
}

// apply hands a batch of rounds to the store and emits each service.
func (e *Engine) apply(ctx context.Context, rep *Report, batch []round, emit func(*Service)) {
	e.obs = e.obs[:0]
	for i := range batch {
		rd := &batch[i]
		for j, s := range rd.samples {
			e.obs = append(e.obs, store.Observation{
				Service: rd.target.Name,
				Params:  rd.target.Params,
				OK:      s.ok,
				Latency: s.latency.Seconds(),
				At:      s.at,
				// the verdict advances once per round, after its samples
				EndsRound: j == len(rd.samples)-1,
				RoundOK:   rd.result.Outcome == probe.Success,
			})
		}
	}
	entries, err := e.store.Update(ctx, rep.Start, e.obs)
	if err != nil {
		e.storeErrors++
		rep.Err = err
		return
	}
	k := 0
	for i := range batch {
		rd := &batch[i]
		k += len(rd.samples)
		entry := entries[k-1] // the state after the round's last sample
		for _, en := range entries[k-len(rd.samples) : k] {
			if en.Warning != nil {
				e.log.Warn(en.Warning.Error())
			}
		}
		t := rd.target
		roundAt := rd.samples[len(rd.samples)-1].at // the verdict's time of the round
		e.logVerdict(t, &rd.result, &entry, roundAt)
		s := &Service{}
		e.service(s, t, &rd.result, entry.State, roundAt)
		s.At = rd.start
		t.remember(rd.start, &rd.result, s.Error)
		if e.settings.History {
			s.History = t.recent() // only a status server reads it
		}
		// the schedule counts from the planned start (the gather's time
		// plus the offset), so that it follows the gathers' own clock
		t.lastStart, t.fresh = rd.scheduled, s
		if t.Schedule.Interval > 0 {
			// not due every gather: the report carries its last round
			// (kept only for such targets: a Service holds its maps)
			t.last = s
		}
		emit(s)
	}
}

// service fills one service's part of the report.
func (e *Engine) service(s *Service, t *Target, r *probe.Result, st *stats.State, roundAt time.Time) {
	st.Snapshot(t.Percentiles, &e.snap)
	s.Name = t.Name
	s.Tags, s.Fields = fieldsOf(t, r, &e.snap, e.settings.Shape)
	verdictFields(s.Fields, &st.Verdict, roundAt, e.settings.Shape)
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
func (e *Engine) internal(services int, took time.Duration, timeouts int64) Internal {
	h := e.store.Health()
	return Internal{
		GatherTime:        took,
		Services:          services,
		ProbesInFlightMax: e.inFlightMax.Swap(0),
		Timeouts:          timeouts,
		StoreErrors:       e.storeErrors + h.WriteErrors,
		StoreSlowWrites:   h.SlowWrites,
		StoreUnreachable:  h.Unreachable,
		ReplayQueue:       int64(h.QueueLen),
		StoreDropped:      h.Dropped,
	}
}

// logVerdict logs a change of the service's status as this agent sees
// it, one line per change: a warning going down or degraded, an info line
// coming back up (the first verdict up of a new service only at debug).
// The status this agent last saw is the baseline; before it has seen one
// (a new process), the status the store held before the round, so that a
// status restored from a state file or shared through Redis is not
// logged as a change. With Redis another agent's round may have changed
// the status: this agent logs it when it first sees it.
func (e *Engine) logVerdict(t *Target, r *probe.Result, en *store.Entry, at time.Time) {
	v := &en.State.Verdict
	prev, prevSince := t.status, t.since
	if !t.seen {
		prev, prevSince = en.Before.Status, en.Before.Since
	}
	t.status, t.since, t.seen = v.Status, v.Since, true
	if v.Status == prev {
		if r.Outcome != probe.Success {
			e.log.Debugf("service %q: %s: %s (status %s)", t.Name, r.Outcome, errText(r.Err), v.Status)
		}
		return
	}
	was := prev.String()
	if prevSince > 0 && v.Since > prevSince {
		was += " for " + time.Duration(v.Since-prevSince).Round(time.Millisecond).String()
	}
	vp := t.Params.Verdict
	switch v.Status {
	case stats.StatusDown:
		e.log.Warnf("service %q (%s) failing: %s: %s; status down after %d failed rounds in a row (was %s)",
			t.Name, t.Server, r.Outcome, errText(r.Err), v.Failed, was)
	case stats.StatusDegraded:
		// rare (a change of status): a buffer of its own, not one kept per target
		x, _ := en.State.Statistic(vp.Statistic, nil)
		e.log.Warnf("service %q (%s) degraded: %s %s above degraded_latency %s (was %s)",
			t.Name, t.Server, vp.Statistic, seconds(x), seconds(vp.DegradedLatency), was)
	case stats.StatusUp:
		if prev == stats.StatusUnknown {
			e.log.Debugf("service %q (%s) up after %d good rounds", t.Name, t.Server, v.OK)
			return
		}
		e.log.Infof("service %q (%s) up again after %d good rounds in a row (was %s)", t.Name, t.Server, v.OK, was)
	default: // unknown: only a state that started over
		e.log.Debugf("service %q (%s) status unknown (was %s)", t.Name, t.Server, was)
	}
}

// seconds renders a latency in seconds as a duration (to the microsecond).
func seconds(x float64) string {
	return time.Duration(x * 1e9).Round(time.Microsecond).String()
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return redact.Text(err.Error())
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
