package stats

import (
	"math"
	"reflect"
	"slices"
	"unsafe"

	"github.com/DataDog/sketches-go/ddsketch/store"
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
	ranks   []float64 // lifetimeOnePass: each percentile's rank in the positive bins
	order   []int     // lifetimeOnePass: the percentiles by ascending rank
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
		if !s.lifetimeOnePass(percentiles, dst) {
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

// lifetimeOnePass appends to dst.Lifetime what GetValueAtQuantile gives
// for each percentile (clamped to [Min, Max]), walking the sketch's bins
// once for all of them instead of once per percentile: the ranks are
// sorted and each is resolved when the running count first exceeds it,
// the same float operations in the same order as the sketch's
// KeyAtRank. It returns false, having appended nothing, for a sketch
// with negative values (never made by Observe), which the caller asks
// percentile by percentile.
func (s *State) lifetimeOnePass(percentiles []float64, dst *Snapshot) bool {
	sk := s.Sketch
	neg := sk.GetNegativeValueStore()
	if !neg.IsEmpty() {
		return false
	}
	pos := sk.GetPositiveValueStore()
	count := sk.GetCount()
	zero := sk.GetZeroCount()
	negCount := neg.TotalCount()
	ranks, order := dst.ranks[:0], dst.order[:0]
	for i, p := range percentiles {
		q := min(max(p, 0), 100) / 100
		rank := float64(q * (count - 1))
		r := rank - zero - negCount
		if rank < zero+negCount {
			r = math.Inf(-1) // the zero bucket
		} else if r < 0 {
			r = 0
		}
		if math.IsNaN(r) {
			r = math.Inf(1) // no count exceeds it: the last bin, as KeyAtRank
		}
		ranks = append(ranks, r)
		// Insertion sort by rank (a handful of percentiles).
		order = append(order, i)
		for k := len(order) - 1; k > 0 && ranks[order[k-1]] > r; k-- {
			order[k-1], order[k] = order[k], order[k-1]
		}
	}
	dst.ranks, dst.order = ranks, order
	for range percentiles {
		dst.Lifetime = append(dst.Lifetime, 0)
	}
	next := 0
	for next < len(order) && math.IsInf(ranks[order[next]], -1) {
		dst.Lifetime[order[next]] = min(max(0, s.Min), s.Max)
		next++
	}
	if next < len(order) {
		bins, offset, ok := denseBins(pos)
		if !ok {
			dst.Lifetime = dst.Lifetime[:0]
			return false
		}
		var n float64
		for i, b := range bins {
			n += b
			for next < len(order) && n > ranks[order[next]] {
				dst.Lifetime[order[next]] = min(max(sk.Value(i+offset), s.Min), s.Max)
				next++
			}
			if next == len(order) {
				break
			}
		}
		if next < len(order) {
			// KeyAtRank's answer when no count exceeds the rank.
			v := min(max(sk.Value(pos.KeyAtRank(math.Inf(1))), s.Min), s.Max)
			for ; next < len(order); next++ {
				dst.Lifetime[order[next]] = v
			}
		}
	}
	return true
}

// denseLayout locates the bins and the offset of the sketch's store
// (store.DenseStore, embedded in store.CollapsingLowestDenseStore), whose
// fields the package does not export: read by reflection once, used with
// unsafe by denseBins. If the layout is not the one expected (another
// version of the module), ok is false and Snapshot asks the sketch
// percentile by percentile, as before.
var denseLayout = func() (l struct {
	dense, bins, offset uintptr
	ok                  bool
}) {
	c := reflect.TypeOf(store.CollapsingLowestDenseStore{})
	d, ok1 := c.FieldByName("DenseStore")
	t := reflect.TypeOf(store.DenseStore{})
	b, ok2 := t.FieldByName("bins")
	o, ok3 := t.FieldByName("offset")
	l.ok = ok1 && ok2 && ok3 && d.Anonymous && d.Type == t && len(d.Index) == 1 &&
		b.Type == reflect.TypeOf([]float64(nil)) && o.Type == reflect.TypeOf(int(0))
	l.dense, l.bins, l.offset = d.Offset, b.Offset, o.Offset
	return l
}()

// denseBins returns the bins of a sketch store and the index of bins[0]:
// bins[i] counts the values of index i+offset, as DenseStore.KeyAtRank
// reads them.
func denseBins(st store.Store) (bins []float64, offset int, ok bool) {
	cs, isDense := st.(*store.CollapsingLowestDenseStore)
	if !isDense || !denseLayout.ok {
		return nil, 0, false
	}
	p := unsafe.Add(unsafe.Pointer(cs), denseLayout.dense)
	return *(*[]float64)(unsafe.Add(p, denseLayout.bins)), *(*int)(unsafe.Add(p, denseLayout.offset)), true
}
