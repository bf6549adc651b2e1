package gather

import (
	"context"
	"slices"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// round is one target's round: the result its metric describes and every
// sample of it, each an observation of the state.
type round struct {
	target *Target
	// start is when the round began; scheduled when it was planned to.
	start, scheduled time.Time
	result           probe.Result
	// samples, in order, with their own times.
	samples []sample
}

type sample struct {
	ok      bool
	latency time.Duration
	at      time.Time
}

// runRound runs t's round that starts now: one probe, or Samples probes
// SampleInterval apart, all ending by start + Timeout. A prober that runs
// rounds of its own (probe.Result.Samples) is probed once.
func (e *Engine) runRound(ctx context.Context, t *Target, start time.Time) round {
	rd := round{target: t, start: start}
	n := max(t.Schedule.Samples, 1)
	if n == 1 {
		rd.result = e.trackProbe(ctx, t.Prober)
		rd.samples = samplesOf(&rd.result, start)
		return rd
	}
	rctx, cancel := context.WithDeadline(ctx, start.Add(t.Schedule.Timeout))
	defer cancel()
	results := make([]probe.Result, 0, n)
	for k := range n {
		at := start.Add(time.Duration(k) * t.Schedule.SampleInterval)
		if k > 0 && !sleepUntil(rctx, at) {
			break
		}
		at = time.Now()
		r := e.trackProbe(rctx, t.Prober)
		results = append(results, r)
		rd.samples = append(rd.samples, samplesOf(&r, at)...)
	}
	rd.result = composeRound(results, rd.samples)
	return rd
}

// samplesOf are the samples of one probe started at at: its own round's,
// or the probe itself.
func samplesOf(r *probe.Result, at time.Time) []sample {
	if r.Samples == nil {
		return []sample{{ok: r.Outcome == probe.Success, latency: r.Latency, at: at}}
	}
	out := make([]sample, len(r.Samples))
	for i, s := range r.Samples {
		// a distinct time for each: the EWMA weighs samples by time
		out[i] = sample{ok: s.OK, latency: s.Latency, at: at.Add(max(s.Offset, time.Duration(i)))}
	}
	return out
}

// composeRound is the result of a round of several probes: success when
// at least one sample succeeded, latency the median of the successes,
// the fields of the last successful probe (of the last probe when none
// succeeded) plus round_samples, round_failures, round_loss and, with a
// success, round_min and round_max.
func composeRound(results []probe.Result, samples []sample) probe.Result {
	var lat []time.Duration
	for _, s := range samples {
		if s.ok {
			lat = append(lat, s.latency)
		}
	}
	var out probe.Result
	pick := len(results) - 1
	for i := len(results) - 1; i >= 0; i-- {
		if results[i].Outcome == probe.Success {
			pick = i
			break
		}
	}
	if pick >= 0 {
		out = results[pick]
	} else {
		out = probe.Result{Outcome: probe.Timeout}
	}
	failures := len(samples) - len(lat)
	fields := slices.Clone(out.Fields)
	fields = append(fields,
		probe.Field{Key: "round_samples", Value: int64(len(samples))},
		probe.Field{Key: "round_failures", Value: int64(failures)},
		probe.Field{Key: "round_loss", Value: float64(failures) / float64(max(len(samples), 1))},
	)
	if len(lat) > 0 {
		slices.Sort(lat)
		out.Outcome, out.Err = probe.Success, nil
		out.Latency = median(lat)
		fields = append(fields,
			probe.Field{Key: "round_min", Value: lat[0].Seconds()},
			probe.Field{Key: "round_max", Value: lat[len(lat)-1].Seconds()},
		)
	}
	out.Fields = fields
	out.Samples = nil
	return out
}

// median of sorted durations (the mean of the two middle ones for an even
// count).
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// sleepUntil waits until at or ctx's end; false when ctx ended first.
func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
