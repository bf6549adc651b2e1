// Package stats is the pure math of a service's latency state: Welford
// running mean/variance (with Chan's merge), a time-based EWMA, an exact
// ring window of the last N probes, a DDSketch for lifetime percentiles, and
// histogram bucket counters. No I/O; time is always passed in, never read.
//
// Each gather probes a service once; the probe either succeeds with a
// latency sample in seconds or fails. The typical life of a State:
//
//	s := NewState(p)                    // or a state loaded from a store:
//	s.Resize(p)                         //   adapt it to the current Params,
//	if s.Validate(p) != nil { ... }     //   and discard it if malformed
//	s.Observe(now, ok, latency, p)      // once per probe
//	s.Snapshot(percentiles, &snap)      // fields to emit; snap is reused
//	a.Merge(b, p)                       // combine the states of several agents
//
// Definitions:
//
//   - Mean and variance: Welford's update (n++, d = x-mean, mean += d/n,
//     M2 += d*(x-mean)); the standard deviation uses n-1.
//   - EWMA: alpha = 1 - exp(-dt/tau), tau = HalfLife/ln 2, dt the time since
//     the previous successful sample (see State.Observe).
//   - Window percentiles: exact, R-7 linear interpolation (see
//     State.Snapshot and PercentileR7).
//   - Lifetime percentiles: DDSketch with SketchRelativeAccuracy, clamped to
//     the exact [Min, Max].
//   - Histogram: per-bucket counts of successful samples, upper bounds
//     inclusive; Snapshot returns them cumulative.
//
// Failed probes count in Probes, Failures and ConsecutiveFailures and take a
// NaN slot in the window; no other statistic sees them.
package stats
