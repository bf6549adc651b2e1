package stats

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
)

// State is one service's latency state. Its fields are exported so that
// state stores can persist and restore it; the invariants they must keep are
// those checked by Validate.
//
// Every probe is either a success, with a latency sample in seconds, or a
// failure. Failures count in Probes, Failures and ConsecutiveFailures and take
// a NaN slot in the ring; they never enter the mean, variance, min, max,
// EWMA, sketch or histogram, which describe successful samples only. Hence
// Probes == Count + Failures.
//
// A State is not safe for concurrent use.
type State struct {
	// Count is the number of successful samples (those in Mean).
	Count int64
	// Mean is the Welford running mean of the successful samples.
	Mean float64
	// M2 is the Welford sum of squared deviations from the mean.
	M2 float64
	// Min and Max are the smallest and largest successful samples.
	Min, Max float64
	// EWMA is the time-based exponentially weighted moving average of the
	// successful samples (see Observe).
	EWMA float64
	// EWMAAt is the time of the last EWMA update, in unix nanoseconds;
	// 0 means never.
	EWMAAt int64
	// Probes counts all probes; Failures the failed ones;
	// ConsecutiveFailures the failures since the last success.
	Probes, Failures, ConsecutiveFailures int64
	// LastSuccess and LastFailure are the times of the last success and
	// failure in unix nanoseconds; 0 means never.
	LastSuccess, LastFailure int64
	// Ring is the exact window: the last len(Ring) <= Params.Window probes,
	// a failed probe stored as NaN. While len(Ring) < Window the ring is in
	// chronological order and RingPos is 0; once full, the oldest entry is
	// at RingPos, which is also the next write index.
	Ring []float64
	// RingPos is the next write index once the ring is full (0 before).
	RingPos int
	// Sketch holds all successful samples of the state's lifetime (see
	// NewSketch for its fixed parameters).
	Sketch *ddsketch.DDSketch
	// Buckets are per-bucket (not cumulative) counts of successful samples:
	// len(Params.Buckets)+1 counters, the last one for +Inf. Nil without a
	// histogram.
	Buckets []int64
	// Verdict is the service's status (up, degraded, down, unknown) and the
	// runs of rounds that decide it: advanced once per round by EndRound,
	// not by Observe.
	Verdict Verdict
}

// NewState returns an empty state for p, with the ring pre-sized to
// p.Window so that Observe does not allocate for it.
func NewState(p Params) *State {
	s := &State{
		Ring:   make([]float64, 0, max(p.Window, 0)),
		Sketch: NewSketch(),
	}
	if n := p.bucketCount(); n > 0 {
		s.Buckets = make([]int64, n)
	}
	return s
}

// Observe records one probe made at time now. ok=false is a failure and its
// latency is ignored. For a success, latency is in seconds: a negative
// latency is recorded as 0, and a NaN or infinite latency is recorded as a
// failure (there is no measurement to record).
//
// The EWMA is time-based so that irregular intervals and skipped gathers
// weigh correctly: with tau = HalfLife/ln 2, a success x at time t gives
//
//	EWMA = x                         on the first success (EWMAAt == 0)
//	EWMA = EWMA + alpha*(x - EWMA)   otherwise, alpha = 1 - exp(-dt/tau)
//
// (evaluated as (1-alpha)*EWMA + alpha*x, a sum of non-negative terms, so
// that the relative error stays at a few ulps even when the EWMA decays
// towards a much smaller sample),
// where dt = t - EWMAAt in seconds. A sample taken at the same instant as the
// previous update (or earlier, if the clock stepped back) has dt clamped to
// 0, hence alpha = 0: it does not move the EWMA, and EWMAAt never moves
// backwards.
//
// p must be the Params the state was created or resized for. Observe does
// not allocate once the ring is full, except when the sketch's index range
// grows.
func (s *State) Observe(now time.Time, ok bool, latency float64, p Params) {
	t := now.UnixNano()
	s.Probes++
	if !ok || math.IsNaN(latency) || math.IsInf(latency, 0) {
		s.Failures++
		s.ConsecutiveFailures++
		s.LastFailure = t
		s.push(math.NaN(), p.Window)
		return
	}
	x := max(latency, 0)
	s.ConsecutiveFailures = 0
	s.LastSuccess = t

	// Welford.
	if s.Count == 0 {
		s.Count = 1
		s.Mean, s.M2 = x, 0
		s.Min, s.Max = x, x
	} else {
		s.Count++
		d := x - s.Mean
		s.Mean += d / float64(s.Count)
		s.M2 += d * (x - s.Mean)
		if x < s.Min {
			s.Min = x
		}
		if x > s.Max {
			s.Max = x
		}
	}

	// Time-based EWMA.
	if s.EWMAAt == 0 {
		s.EWMA = x
		s.EWMAAt = t
	} else {
		dt := float64(t-s.EWMAAt) / 1e9
		if dt > 0 {
			alpha, decay := ewmaWeights(dt, p.HalfLife)
			s.EWMA = decay*s.EWMA + alpha*x
			s.EWMAAt = t
		}
	}

	if s.Sketch == nil {
		s.Sketch = NewSketch()
	}
	_ = s.Sketch.Add(x) // cannot fail: x is finite and non-negative

	if len(p.Buckets) > 0 {
		if len(s.Buckets) != len(p.Buckets)+1 {
			s.RebuildBuckets(p) // already includes x, which is in the sketch
		} else {
			s.Buckets[bucketIndex(p.Buckets, x)]++
		}
	}

	s.push(x, p.Window)
}

// ewmaWeights returns alpha = 1 - exp(-dt/tau) and decay = exp(-dt/tau),
// with tau = halfLife/ln 2 and dt > 0 in seconds, each with full relative
// precision (the smaller of the two is computed directly, the larger as its
// complement). A non-positive half-life gives alpha = 1 (EWMA = last sample).
func ewmaWeights(dt float64, halfLife time.Duration) (alpha, decay float64) {
	tau := halfLife.Seconds() / math.Ln2
	if !(tau > 0) {
		return 1, 0
	}
	u := -dt / tau
	if u > -math.Ln2 { // alpha < 1/2
		alpha = -math.Expm1(u)
		return alpha, 1 - alpha
	}
	decay = math.Exp(u)
	return 1 - decay, decay
}

// bucketIndex returns the index of the bucket counting x: the first bound
// with x <= bound, or len(bounds) for +Inf.
func bucketIndex(bounds []float64, x float64) int {
	i, _ := slices.BinarySearch(bounds, x)
	return i
}

// push appends one probe (NaN for a failure) to the ring of size w.
func (s *State) push(x float64, w int) {
	if w <= 0 {
		return
	}
	n := len(s.Ring)
	if n > w || (n < w && s.RingPos != 0) || s.RingPos < 0 || s.RingPos >= max(n, 1) {
		s.resizeRing(w) // malformed or not resized: restore the invariants
		n = len(s.Ring)
	}
	if n < w {
		if cap(s.Ring) < w {
			r := make([]float64, n, w)
			copy(r, s.Ring)
			s.Ring = r
		}
		s.Ring = append(s.Ring, x)
		return
	}
	s.Ring[s.RingPos] = x
	s.RingPos++
	if s.RingPos == w {
		s.RingPos = 0
	}
}

// ringStart returns the index of the oldest ring entry.
func (s *State) ringStart() int {
	if s.RingPos < 0 || s.RingPos >= len(s.Ring) {
		return 0
	}
	return s.RingPos
}

// appendChronological appends the ring entries, oldest first, to dst.
func (s *State) appendChronological(dst []float64) []float64 {
	start := s.ringStart()
	dst = append(dst, s.Ring[start:]...)
	return append(dst, s.Ring[:start]...)
}

// resizeRing rewrites the ring in chronological order with capacity w,
// keeping the newest min(len, w) entries, and sets RingPos to 0.
func (s *State) resizeRing(w int) {
	if w <= 0 {
		s.Ring, s.RingPos = nil, 0
		return
	}
	all := s.appendChronological(make([]float64, 0, len(s.Ring)))
	if len(all) > w {
		all = all[len(all)-w:]
	}
	r := make([]float64, len(all), w)
	copy(r, all)
	s.Ring, s.RingPos = r, 0
}

// Resize adapts the state to new Params after a configuration change that
// kept the service name. If the window changed, the ring keeps its newest
// min(len(Ring), p.Window) entries in chronological order (the old window
// need not be known). If the number of histogram buckets changed, the bucket
// counts are rebuilt from the sketch (see RebuildBuckets); a change of bounds
// that keeps their number cannot be detected from the state, so the caller
// must then call RebuildBuckets itself.
//
// Resize never panics, even on a malformed state, so a loaded state can be
// resized first and validated with the new Params afterwards. It is a no-op
// on a state that already fits p.
func (s *State) Resize(p Params) {
	w := max(p.Window, 0)
	n := len(s.Ring)
	if n > w || cap(s.Ring) < w || (n < w && s.RingPos != 0) || s.RingPos < 0 || (n > 0 && s.RingPos >= n) {
		s.resizeRing(w)
	}
	if len(s.Buckets) != p.bucketCount() {
		s.RebuildBuckets(p)
	}
}

// RebuildBuckets recomputes the histogram bucket counts for p from the
// lifetime sketch, so that they sum to Count again (nil without buckets).
// Each sketch bin is counted in the bucket of its representative value, so a
// sample within about SketchRelativeAccuracy of a bound may be counted on
// the other side of it; bounds further apart than that are exact. Used when
// the histogram bounds change; counts recorded afterwards are exact.
func (s *State) RebuildBuckets(p Params) {
	n := p.bucketCount()
	if n == 0 {
		s.Buckets = nil
		return
	}
	if len(s.Buckets) == n {
		clear(s.Buckets)
	} else {
		s.Buckets = make([]int64, n)
	}
	if s.Sketch == nil {
		return
	}
	b := s.Buckets
	s.Sketch.ForEach(func(v, c float64) bool {
		if v < 0 {
			v = 0
		}
		b[bucketIndex(p.Buckets, v)] += int64(math.Round(c))
		return false
	})
}

// Clone returns a deep copy of s: no slice or sketch is shared.
func (s *State) Clone() *State {
	c := *s
	if s.Ring != nil {
		c.Ring = make([]float64, len(s.Ring), cap(s.Ring))
		copy(c.Ring, s.Ring)
	}
	if s.Sketch != nil {
		c.Sketch = s.Sketch.Copy()
	}
	if s.Buckets != nil {
		c.Buckets = slices.Clone(s.Buckets)
	}
	return &c
}

// Merge folds o into s, for combining the states of several agents probing
// the same service. Both must be valid for p (o is not modified):
//
//   - Count, Mean, M2: Chan et al.'s parallel formula; Min/Max: extremes;
//   - Probes, Failures: sums; LastSuccess, LastFailure: latest;
//   - ConsecutiveFailures: the run of the state holding the latest success
//     (its failures all follow that success), plus the run of the other
//     state if its last failure is later than that success (all of it: an
//     upper bound, as the probes of two agents interleave in unknown order;
//     exact when the states cover successive periods);
//   - Sketch: MergeWith (exact); Buckets: sums;
//   - EWMA: the one with the later EWMAAt (s's on a tie);
//   - Ring: s's probes, then o's, oldest first; the newest p.Window kept;
//   - Verdict: the one with the later Since (s's on a tie).
func (s *State) Merge(o *State, p Params) {
	if o == nil {
		return
	}
	if o == s {
		o = o.Clone()
	}

	// Verdict: the one that changed last.
	if o.Verdict.Since > s.Verdict.Since {
		s.Verdict = o.Verdict
	}

	// Consecutive failures, from the pre-merge timestamps.
	lastOK := max(s.LastSuccess, o.LastSuccess)
	s.ConsecutiveFailures = trailingFailures(s, lastOK) + trailingFailures(o, lastOK)

	switch {
	case o.Count == 0:
	case s.Count == 0:
		s.Mean, s.M2, s.Min, s.Max = o.Mean, o.M2, o.Min, o.Max
	default:
		na, nb := float64(s.Count), float64(o.Count)
		n := na + nb
		d := o.Mean - s.Mean
		s.Mean += d * (nb / n)
		s.M2 += o.M2 + d*d*(na*nb/n)
		s.Min = min(s.Min, o.Min)
		s.Max = max(s.Max, o.Max)
	}
	if o.Count > 0 && (s.Count == 0 || o.EWMAAt > s.EWMAAt) {
		s.EWMA, s.EWMAAt = o.EWMA, o.EWMAAt
	}
	s.Count += o.Count
	s.Probes += o.Probes
	s.Failures += o.Failures
	s.LastSuccess = lastOK
	s.LastFailure = max(s.LastFailure, o.LastFailure)

	if s.Sketch == nil {
		s.Sketch = NewSketch()
	}
	if o.Sketch != nil {
		if err := s.Sketch.MergeWith(o.Sketch); err != nil {
			// Different mapping (foreign sketch): re-index o's bins.
			o.Sketch.ForEach(func(v, c float64) bool {
				_ = s.Sketch.AddWithCount(v, c)
				return false
			})
		}
	}

	if n := p.bucketCount(); n > 0 && len(s.Buckets) == n && len(o.Buckets) == n {
		for i, c := range o.Buckets {
			s.Buckets[i] += c
		}
	} else {
		s.RebuildBuckets(p)
	}

	w := max(p.Window, 0)
	all := o.appendChronological(s.appendChronological(make([]float64, 0, len(s.Ring)+len(o.Ring))))
	if len(all) > w {
		all = all[len(all)-w:]
	}
	r := make([]float64, len(all), w)
	copy(r, all)
	s.Ring, s.RingPos = r, 0
}

// trailingFailures is x's contribution to the consecutive failures of a merge
// whose latest success is at lastOK: all of x's run if x holds that success
// (its run follows it) or if x's last failure is later, else none.
func trailingFailures(x *State, lastOK int64) int64 {
	if x.ConsecutiveFailures > 0 && (x.LastSuccess == lastOK || x.LastFailure > lastOK) {
		return x.ConsecutiveFailures
	}
	return 0
}

// Validate reports a malformed state: one that could not have been produced
// by NewState, Observe, Merge and Resize with the Params p. A caller that
// gets an error should discard the state and start afresh.
func (s *State) Validate(p Params) error {
	if s.Count < 0 || s.Probes < 0 || s.Failures < 0 || s.ConsecutiveFailures < 0 {
		return fmt.Errorf("negative counter: count %d, probes %d, failures %d, consecutive failures %d",
			s.Count, s.Probes, s.Failures, s.ConsecutiveFailures)
	}
	if s.Count > s.Probes || s.Failures > s.Probes {
		return fmt.Errorf("count %d or failures %d exceed probes %d", s.Count, s.Failures, s.Probes)
	}
	if s.Count+s.Failures != s.Probes {
		return fmt.Errorf("count %d + failures %d != probes %d", s.Count, s.Failures, s.Probes)
	}
	if s.ConsecutiveFailures > s.Failures {
		return fmt.Errorf("consecutive failures %d exceed failures %d", s.ConsecutiveFailures, s.Failures)
	}
	if s.Count == 0 {
		if s.M2 != 0 || s.EWMAAt != 0 || !isFinite(s.Mean) || !isFinite(s.EWMA) {
			return fmt.Errorf("no sample but mean %v, m2 %v, ewma %v at %d", s.Mean, s.M2, s.EWMA, s.EWMAAt)
		}
	} else {
		for _, f := range []struct {
			name string
			v    float64
		}{{"mean", s.Mean}, {"m2", s.M2}, {"min", s.Min}, {"max", s.Max}, {"ewma", s.EWMA}} {
			if !isFinite(f.v) || f.v < 0 {
				return fmt.Errorf("%s is %v: must be finite and non-negative", f.name, f.v)
			}
		}
		if s.Min > s.Max {
			return fmt.Errorf("min %v > max %v", s.Min, s.Max)
		}
		tol := 1e-9 * s.Max
		if s.Mean < s.Min-tol || s.Mean > s.Max+tol {
			return fmt.Errorf("mean %v outside [min %v, max %v]", s.Mean, s.Min, s.Max)
		}
		if s.EWMA < s.Min-tol || s.EWMA > s.Max+tol {
			return fmt.Errorf("ewma %v outside [min %v, max %v]", s.EWMA, s.Min, s.Max)
		}
		if s.Count == 1 && s.M2 != 0 {
			return fmt.Errorf("one sample but m2 %v", s.M2)
		}
	}

	if err := s.Verdict.Validate(); err != nil {
		return err
	}

	// Ring.
	n := len(s.Ring)
	if n > p.Window {
		return fmt.Errorf("ring holds %d probes, window is %d", n, p.Window)
	}
	if int64(n) > s.Probes {
		return fmt.Errorf("ring holds %d probes, more than the %d made", n, s.Probes)
	}
	if n < p.Window && s.RingPos != 0 {
		return fmt.Errorf("ring position %d in a ring not yet full (%d of %d)", s.RingPos, n, p.Window)
	}
	if s.RingPos < 0 || (n > 0 && s.RingPos >= n) {
		return fmt.Errorf("ring position %d out of range [0, %d)", s.RingPos, n)
	}
	var okN, failN int64
	for _, x := range s.Ring {
		switch {
		case math.IsNaN(x):
			failN++
		case math.IsInf(x, 0) || x < 0:
			return fmt.Errorf("ring sample %v: must be finite and non-negative", x)
		default:
			okN++
		}
	}
	if okN > s.Count || failN > s.Failures {
		return fmt.Errorf("ring holds %d successes and %d failures, more than count %d and failures %d",
			okN, failN, s.Count, s.Failures)
	}

	// Sketch.
	if s.Sketch == nil {
		return fmt.Errorf("nil sketch")
	}
	if !s.Sketch.IndexMapping.Equals(fixedMapping) {
		return fmt.Errorf("sketch mapping differs from the fixed one (relative accuracy %v)",
			s.Sketch.RelativeAccuracy())
	}
	if !s.Sketch.GetNegativeValueStore().IsEmpty() {
		return fmt.Errorf("sketch holds negative values")
	}
	if c := s.Sketch.GetCount(); !(math.Abs(c-float64(s.Count)) < 0.5) {
		return fmt.Errorf("sketch count %v != count %d", c, s.Count)
	}

	// Histogram.
	if len(s.Buckets) != p.bucketCount() {
		return fmt.Errorf("%d bucket counters, want %d", len(s.Buckets), p.bucketCount())
	}
	var sum int64
	for _, c := range s.Buckets {
		if c < 0 {
			return fmt.Errorf("negative bucket count %d", c)
		}
		sum += c
	}
	if len(s.Buckets) > 0 && sum != s.Count {
		return fmt.Errorf("bucket counts sum to %d, count is %d", sum, s.Count)
	}
	return nil
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
