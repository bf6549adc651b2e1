package stats

import (
	"math"
	"slices"
)

// Snapshot is the set of statistics derived from a State at one instant.
// It is meant to be reused: State.Snapshot overwrites every field and reuses
// the slices' storage, so filling the same Snapshot again does not allocate.
type Snapshot struct {
	// Count, Probes, Failures and ConsecutiveFailures are copied from the
	// state.
	Count, Probes, Failures, ConsecutiveFailures int64
	// Mean, Min, Max and EWMA of the successful samples, in seconds; valid
	// when Count > 0 (zero otherwise).
	Mean, Min, Max, EWMA float64
	// Stddev is the sample standard deviation (n-1 denominator); valid when
	// HasStddev, that is when Count >= 2.
	Stddev    float64
	HasStddev bool
	// WindowProbes and WindowSuccesses count the probes in the exact window
	// and the successful ones among them.
	WindowProbes, WindowSuccesses int
	// Availability is WindowSuccesses/WindowProbes; valid when
	// WindowProbes > 0 (zero otherwise).
	Availability float64
	// Jitter is the mean absolute difference between consecutive successful
	// samples of the window, in chronological order, failures skipped;
	// valid when WindowSuccesses >= 2 (zero otherwise).
	Jitter float64
	// Window holds the exact window percentiles, one per requested
	// percentile, in the order requested; see State.Snapshot for the
	// definition. It has one entry per requested
	// percentile when WindowSuccesses > 0 and is empty otherwise.
	Window []float64
	// Lifetime holds the lifetime percentiles estimated by the sketch
	// (within SketchRelativeAccuracy of a sample at the same rank) and
	// clamped to [Min, Max]. It has one entry per requested percentile when
	// Count > 0 and is empty otherwise.
	Lifetime []float64
	// Cumulative holds the cumulative histogram bucket counts: entry i
	// counts the samples <= Params.Buckets[i], the last entry (+Inf) counts
	// all of them and equals Count. Nil without a histogram.
	Cumulative []int64

	scratch []float64 // sort buffer, reused
}

// Snapshot fills dst with the statistics of s for the given percentiles
// (each in [0, 100]; values outside are clamped). dst's slices are reused, so
// once they have grown to size Snapshot does not allocate.
//
// Window percentiles are exact over the successful samples among the last
// Window probes, interpolating linearly between closest ranks: the "R-7"
// definition (Hyndman & Fan type 7), the default of numpy.percentile and R's
// quantile, and Excel's PERCENTILE.INC. With the n samples sorted ascending
// as x[0..n-1] and h = (n-1)*p/100:
//
//	P(p) = x[floor(h)] + (h - floor(h)) * (x[floor(h)+1] - x[floor(h)])
//
// (P(p) = x[n-1] when floor(h) = n-1). P(0) is the minimum, P(100) the
// maximum, P(50) the usual median.
//
// Lifetime percentiles are the sketch's GetValueAtQuantile(p/100), that is
// the bin value of the sample of rank floor((n-1)*p/100), clamped to
// [Min, Max] because the sketch's bin value can lie slightly outside the
// range of the samples.
func (s *State) Snapshot(percentiles []float64, dst *Snapshot) {
	dst.Count = s.Count
	dst.Probes = s.Probes
	dst.Failures = s.Failures
	dst.ConsecutiveFailures = s.ConsecutiveFailures
	dst.Mean, dst.Min, dst.Max, dst.EWMA = 0, 0, 0, 0
	dst.Stddev, dst.HasStddev = 0, false
	if s.Count > 0 {
		dst.Mean, dst.Min, dst.Max, dst.EWMA = s.Mean, s.Min, s.Max, s.EWMA
	}
	if s.Count >= 2 {
		dst.Stddev = math.Sqrt(max(s.M2, 0) / float64(s.Count-1))
		dst.HasStddev = true
	}

	// Exact window, oldest first.
	xs := dst.scratch[:0]
	var jitter, prev float64
	start := s.ringStart()
	for k := range s.Ring {
		i := start + k
		if i >= len(s.Ring) {
			i -= len(s.Ring)
		}
		x := s.Ring[i]
		if math.IsNaN(x) {
			continue
		}
		if len(xs) > 0 {
			jitter += math.Abs(x - prev)
		}
		prev = x
		xs = append(xs, x)
	}
	dst.scratch = xs
	dst.WindowProbes = len(s.Ring)
	dst.WindowSuccesses = len(xs)
	dst.Availability, dst.Jitter = 0, 0
	if len(s.Ring) > 0 {
		dst.Availability = float64(len(xs)) / float64(len(s.Ring))
	}
	if len(xs) >= 2 {
		dst.Jitter = jitter / float64(len(xs)-1)
	}
	dst.Window = dst.Window[:0]
	if len(xs) > 0 {
		slices.Sort(xs)
		for _, p := range percentiles {
			dst.Window = append(dst.Window, PercentileR7(xs, p))
		}
	}

	// Lifetime percentiles from the sketch.
	dst.Lifetime = dst.Lifetime[:0]
	if s.Count > 0 && s.Sketch != nil && !s.Sketch.IsEmpty() {
		for _, p := range percentiles {
			v, err := s.Sketch.GetValueAtQuantile(min(max(p, 0), 100) / 100)
			if err != nil { // only for a NaN percentile
				v = math.NaN()
			} else {
				v = min(max(v, s.Min), s.Max)
			}
			dst.Lifetime = append(dst.Lifetime, v)
		}
	}

	// Cumulative histogram.
	if len(s.Buckets) == 0 {
		dst.Cumulative = nil
		return
	}
	dst.Cumulative = dst.Cumulative[:0]
	var cum int64
	for _, c := range s.Buckets {
		cum += c
		dst.Cumulative = append(dst.Cumulative, cum)
	}
}

// PercentileR7 returns the p-th percentile (p in [0, 100], clamped) of the
// ascending, non-empty sorted, by linear interpolation between closest ranks
// (the R-7 / numpy default / Excel PERCENTILE.INC definition): with
// h = (n-1)*p/100, the result is
// sorted[floor(h)] + (h-floor(h))*(sorted[floor(h)+1]-sorted[floor(h)]).
// It returns NaN for an empty slice or a NaN p.
func PercentileR7(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 || math.IsNaN(p) {
		return math.NaN()
	}
	p = min(max(p, 0), 100)
	h := float64(n-1) * p / 100
	lo := math.Floor(h)
	i := int(lo)
	if i >= n-1 {
		return sorted[n-1]
	}
	// The explicit conversion forbids a fused multiply-add, so the result
	// is bit-identical on every architecture.
	return sorted[i] + float64((h-lo)*(sorted[i+1]-sorted[i]))
}
