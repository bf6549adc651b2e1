package service_latency

// collect_internal: the prober's own golden signals, one
// service_latency_internal metric per gather.

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// InternalMeasurement is the measurement of collect_internal.
const InternalMeasurement = "service_latency_internal"

// internalStats are one gather's own signals.
type internalStats struct {
	gatherTime  time.Duration
	services    int
	inFlightMax int64
	timeouts    int64
	storeErrors int64
	replayQueue int64
}

func (s *internalStats) fields() map[string]any {
	return map[string]any{
		"gather_time":          s.gatherTime.Seconds(),
		"services":             int64(s.services),
		"probes_in_flight_max": s.inFlightMax,
		"timeouts":             s.timeouts,
		"store_errors":         s.storeErrors,
		"replay_queue":         s.replayQueue,
	}
}

// Counters a store may expose; the plugin reads those it implements.
type (
	// storeErrorCounter: writes to a shared store that failed (Redis).
	storeErrorCounter interface{ Errors() int64 }
	// storeSaveErrorCounter: failed saves of a state file.
	storeSaveErrorCounter interface{ SaveErrors() int64 }
	// storeQueue: observations waiting to be replayed to a shared store.
	storeQueue interface{ QueueLen() int }
)

// trackProbe runs one probe and keeps count of the probes in flight.
func (p *ServiceLatency) trackProbe(ctx context.Context, pr probe.Prober) probe.Result {
	o := &p.ops
	n := o.inFlight.Add(1)
	for {
		m := o.inFlightMax.Load()
		if n <= m || o.inFlightMax.CompareAndSwap(m, n) {
			break
		}
	}
	r := runProbe(ctx, pr)
	o.inFlight.Add(-1)
	return r
}

// endGather closes the books of a gather that began at start: it emits
// service_latency_internal (with collect_internal = true) and publishes the
// gather to the status server. storeErr is the store's Update error. The
// plugin's mutex is held.
func (p *ServiceLatency) endGather(acc telegraf.Accumulator, start time.Time, storeErr error) {
	o := &p.ops
	if storeErr != nil {
		o.storeErrors++
	}
	in := &internalStats{
		services:    len(p.targets),
		inFlightMax: o.inFlightMax.Swap(0),
		storeErrors: o.storeErrors,
	}
	for i := range p.results {
		if p.results[i].Outcome == probe.Timeout {
			in.timeouts++
		}
	}
	if c, ok := p.store.(storeErrorCounter); ok {
		in.storeErrors += c.Errors()
	}
	if c, ok := p.store.(storeSaveErrorCounter); ok {
		in.storeErrors += c.SaveErrors()
	}
	if q, ok := p.store.(storeQueue); ok {
		in.replayQueue = int64(q.QueueLen())
	}
	end := time.Now()
	in.gatherTime = end.Sub(start)
	if p.CollectInternal {
		acc.AddFields(InternalMeasurement, in.fields(), nil, start)
	}
	p.publishGather(start, end, storeErr, in)
}
