package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

var testBuckets = []float64{0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// checkPercentiles are the percentiles compared in the brute-force tests.
var checkPercentiles = []float64{0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100}

// compare asserts that the state built from evs agrees with the brute force.
func compare(t *testing.T, p Params, s *State, evs []event, ps []float64) {
	t.Helper()
	e := bruteForce(p, evs)
	require.NoError(t, s.Validate(p))

	var snap Snapshot
	s.Snapshot(ps, &snap)

	require.Equal(t, e.count, snap.Count, "count")
	require.Equal(t, e.probes, snap.Probes, "probes")
	require.Equal(t, e.failures, snap.Failures, "failures")
	require.Equal(t, e.cf, snap.ConsecutiveFailures, "consecutive failures")

	if e.count > 0 {
		require.LessOrEqual(t, relErr(snap.Mean, e.mean), 1e-9, "mean %v want %v", snap.Mean, e.mean)
		require.Equal(t, e.min, snap.Min, "min")
		require.Equal(t, e.max, snap.Max, "max")
		require.LessOrEqual(t, relErr(snap.EWMA, e.ewma), 1e-9, "ewma %v want %v", snap.EWMA, e.ewma)
	}
	require.Equal(t, e.count >= 2, snap.HasStddev)
	if e.count >= 2 {
		want := math.Sqrt(e.m2 / float64(e.count-1))
		require.LessOrEqual(t, relErr(snap.Stddev, want), 1e-9, "stddev %v want %v", snap.Stddev, want)
		require.LessOrEqual(t, relErr(s.M2, e.m2), 1e-9, "m2")
	}

	// Window: exact.
	require.Equal(t, e.windowProbes, snap.WindowProbes, "window probes")
	require.Equal(t, len(e.window), snap.WindowSuccesses, "window successes")
	if e.windowProbes > 0 {
		require.Equal(t, float64(len(e.window))/float64(e.windowProbes), snap.Availability, "availability")
	}
	if len(e.window) >= 2 {
		require.Equal(t, e.jitter, snap.Jitter, "jitter")
	}
	if len(e.window) == 0 {
		require.Empty(t, snap.Window)
	} else {
		sorted := slices.Clone(e.window)
		slices.Sort(sorted)
		require.Len(t, snap.Window, len(ps))
		for i, p := range ps {
			require.Equal(t, r7(sorted, p), snap.Window[i], "window p%v of %v", p, sorted)
		}
	}

	// Lifetime: within the sketch's relative accuracy of the sample at
	// rank floor(q*(n-1)), and within [min, max].
	if e.count == 0 {
		require.Empty(t, snap.Lifetime)
	} else {
		require.Len(t, snap.Lifetime, len(ps))
		n := len(e.successes)
		for i, p := range ps {
			rank := float64(p / 100 * float64(n-1))
			want := e.successes[int(math.Floor(rank))]
			got := snap.Lifetime[i]
			require.LessOrEqual(t, math.Abs(got-want), SketchRelativeAccuracy*want*(1+1e-9),
				"lifetime p%v: got %v want %v", p, got, want)
			require.GreaterOrEqual(t, got, e.min)
			require.LessOrEqual(t, got, e.max)
		}
	}

	// Histogram.
	if len(p.Buckets) == 0 {
		require.Nil(t, snap.Cumulative)
	} else {
		require.Equal(t, e.cumulative, snap.Cumulative, "cumulative buckets")
		require.Equal(t, snap.Count, snap.Cumulative[len(snap.Cumulative)-1])
	}
}

// TestBruteForce compares the state with brute-force computations over
// random histories: 50 seeds × windows 1, 7 and 100, random lengths up to
// 2,000 probes, random failure rates, irregular timestamps.
func TestBruteForce(t *testing.T) {
	seeds := 50
	if testing.Short() {
		seeds = 10
	}
	for seed := range uint64(seeds) {
		for _, w := range []int{1, 7, 100} {
			t.Run(fmt.Sprintf("seed%d/window%d", seed, w), func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, uint64(w)))
				n := r.IntN(2001)
				failRate := r.Float64() * 0.7
				switch seed {
				case 0:
					failRate = 1 // failures only
				case 1:
					failRate = 0
				}
				halfLives := []time.Duration{time.Second, 30 * time.Second, 5 * time.Minute, time.Hour}
				p := Params{Window: w, HalfLife: halfLives[r.IntN(len(halfLives))]}
				if seed%2 == 0 {
					p.Buckets = testBuckets
				}
				ps := append(slices.Clone(checkPercentiles), 100*r.Float64(), 100*r.Float64())
				evs := genEvents(r, n, failRate, seed%3 == 0)

				s := NewState(p)
				next := 0
				for i, ev := range evs {
					s.Observe(ev.t, ev.ok, ev.x, p)
					if i == next || i < 5 {
						compare(t, p, s, evs[:i+1], ps)
						next += 1 + r.IntN(80)
					}
				}
				compare(t, p, s, evs, ps)
			})
		}
	}
}

// TestEWMAIrregular checks the EWMA against its closed form over long
// histories of very irregular intervals (including long gaps and
// same-instant samples) for several half-lives.
func TestEWMAIrregular(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 99))
		p := Params{Window: 10, HalfLife: time.Duration(1 + r.Int64N(int64(time.Hour)))}
		evs := genEvents(r, 5000, 0, false)
		s := build(p, evs)
		e := bruteForce(p, evs)
		require.LessOrEqual(t, relErr(s.EWMA, e.ewma), 1e-9, "seed %d: ewma %v want %v", seed, s.EWMA, e.ewma)
		require.Equal(t, s.LastSuccess, s.EWMAAt)
	}
}

func TestEWMAHalfLife(t *testing.T) {
	p := Params{Window: 10, HalfLife: time.Minute}
	s := NewState(p)
	s.Observe(baseTime, true, 1, p)
	require.Equal(t, 1.0, s.EWMA, "first sample sets the EWMA")
	// One half-life later the new sample has weight 1/2.
	s.Observe(baseTime.Add(time.Minute), true, 3, p)
	require.InDelta(t, 2.0, s.EWMA, 1e-12)
	// Two half-lives later: weight 3/4.
	s.Observe(baseTime.Add(3*time.Minute), true, 6, p)
	require.InDelta(t, 2+0.75*4, s.EWMA, 1e-12)
	// Same instant: no change. Earlier instant: no change, EWMAAt kept.
	at := s.EWMAAt
	v := s.EWMA
	s.Observe(baseTime.Add(3*time.Minute), true, 100, p)
	s.Observe(baseTime, true, 100, p)
	require.Equal(t, v, s.EWMA)
	require.Equal(t, at, s.EWMAAt)
	// A very long gap: the new sample takes over completely.
	s.Observe(baseTime.Add(1000*time.Hour), true, 0.5, p)
	require.Equal(t, 0.5, s.EWMA)
	// Failures do not move it.
	s.Observe(baseTime.Add(2000*time.Hour), false, 100, p)
	require.Equal(t, 0.5, s.EWMA)
	require.NoError(t, s.Validate(p))
}

// TestWelfordPrecision feeds 10 million samples of 1e9 + k/64 (k in
// [0, 64), exactly representable) and checks the Welford mean and variance
// against the exact values computed with integers; naive summation loses
// the fractional part and the textbook sum-of-squares variance is garbage.
func TestWelfordPrecision(t *testing.T) {
	n := 10_000_000
	if testing.Short() {
		n = 1_000_000
	}
	p := Params{Window: 1, HalfLife: time.Minute}
	s := NewState(p)
	r := rand.New(rand.NewPCG(7, 7))
	var sumK, sumK2 int64
	var naiveSum, naiveSumSq float64
	now := baseTime
	for range n {
		k := r.Int64N(64)
		x := 1e9 + float64(k)/64
		sumK += k
		sumK2 += k * k
		naiveSum += x
		naiveSumSq += x * x
		now = now.Add(time.Second)
		s.Observe(now, true, x, p)
	}
	fn := float64(n)
	exactMean := 1e9 + float64(sumK)/64/fn
	// Var = (Σk² - (Σk)²/n) / (n-1) / 64², with the numerator exact in
	// float64 after the integer products are split.
	meanK := float64(sumK) / fn
	exactVar := (float64(sumK2) - float64(sumK)*meanK) / (fn - 1) / 4096

	require.LessOrEqual(t, relErr(s.Mean, exactMean), 1e-9)
	require.LessOrEqual(t, math.Abs(s.Mean-exactMean), 1e-3, "welford mean %v, exact %v", s.Mean, exactMean)
	welfordVar := s.M2 / (fn - 1)
	require.LessOrEqual(t, relErr(welfordVar, exactVar), 1e-6, "welford var %v, exact %v", welfordVar, exactVar)

	naiveMean := naiveSum / fn
	naiveVar := (naiveSumSq - naiveSum*naiveSum/fn) / (fn - 1)
	t.Logf("mean error: welford %.3g, naive %.3g; variance relative error: welford %.3g, naive %.3g",
		s.Mean-exactMean, naiveMean-exactMean, relErr(welfordVar, exactVar), relErr(naiveVar, exactVar))
	// The test is meaningful only if the naive approaches do fail. The
	// naive sum only drifts once it passes 2^53 (about 9 million samples).
	if n >= 10_000_000 {
		require.Greater(t, math.Abs(naiveMean-exactMean), 100*math.Abs(s.Mean-exactMean))
	}
	require.Greater(t, relErr(naiveVar, exactVar), 0.5)
}

// TestMergeHalves merges the states of the two chronological halves of a
// history and compares with the state of the whole history.
func TestMergeHalves(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 5))
		p := Params{Window: []int{1, 7, 100}[seed%3], HalfLife: time.Minute}
		if seed%2 == 0 {
			p.Buckets = testBuckets
		}
		evs := genEvents(r, 1+r.IntN(2000), r.Float64()*0.6, seed%4 == 0)
		k := r.IntN(len(evs) + 1)
		// The second half starts strictly later than the first ends.
		for i := k; i < len(evs); i++ {
			evs[i].t = evs[i].t.Add(time.Second)
		}
		full := build(p, evs)
		a, b := build(p, evs[:k]), build(p, evs[k:])
		bEWMA, bAt := b.EWMA, b.EWMAAt
		a.Merge(b, p)
		require.NoError(t, a.Validate(p), "seed %d", seed)

		require.Equal(t, full.Count, a.Count)
		require.Equal(t, full.Probes, a.Probes)
		require.Equal(t, full.Failures, a.Failures)
		require.Equal(t, full.ConsecutiveFailures, a.ConsecutiveFailures, "seed %d", seed)
		require.Equal(t, full.LastSuccess, a.LastSuccess)
		require.Equal(t, full.LastFailure, a.LastFailure)
		require.LessOrEqual(t, relErr(a.Mean, full.Mean), 1e-9)
		require.LessOrEqual(t, relErr(a.M2, full.M2), 1e-9)
		require.Equal(t, full.Min, a.Min)
		require.Equal(t, full.Max, a.Max)
		require.Equal(t, full.Buckets, a.Buckets)
		require.True(t, sameFloats(ringChronological(full), ringChronological(a)), "seed %d ring", seed)
		if b.Count > 0 {
			require.Equal(t, bEWMA, a.EWMA, "the later EWMA wins")
			require.Equal(t, bAt, a.EWMAAt)
		} else {
			require.Equal(t, full.EWMA, a.EWMA)
		}
		requireSameSketch(t, full, a)
	}
}

// TestMergeInterleaved merges two states built from a random partition of
// the samples and checks the order-independent statistics.
func TestMergeInterleaved(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 6))
		p := Params{Window: 50, HalfLife: time.Minute, Buckets: testBuckets}
		evs := genEvents(r, r.IntN(3000), 0.2, false)
		var ea, eb []event
		for _, e := range evs {
			if r.IntN(2) == 0 {
				ea = append(ea, e)
			} else {
				eb = append(eb, e)
			}
		}
		full, a, b := build(p, evs), build(p, ea), build(p, eb)
		a.Merge(b, p)
		require.NoError(t, a.Validate(p))
		require.Equal(t, full.Count, a.Count)
		require.Equal(t, full.Probes, a.Probes)
		require.Equal(t, full.Failures, a.Failures)
		require.LessOrEqual(t, relErr(a.Mean, full.Mean), 1e-9)
		require.LessOrEqual(t, relErr(a.M2, full.M2), 1e-9)
		require.Equal(t, full.Min, a.Min)
		require.Equal(t, full.Max, a.Max)
		require.Equal(t, full.Buckets, a.Buckets)
		requireSameSketch(t, full, a)
		require.Len(t, a.Ring, min(len(evs), p.Window))
	}
}

func requireSameSketch(t *testing.T, want, got *State) {
	t.Helper()
	require.Equal(t, want.Sketch.GetCount(), got.Sketch.GetCount())
	if want.Sketch.IsEmpty() {
		return
	}
	for q := 0.0; q <= 1; q += 0.005 {
		w, err := want.Sketch.GetValueAtQuantile(q)
		require.NoError(t, err)
		g, err := got.Sketch.GetValueAtQuantile(q)
		require.NoError(t, err)
		require.Equal(t, w, g, "quantile %v", q)
	}
}

func TestMergeEdgeCases(t *testing.T) {
	p := Params{Window: 5, HalfLife: time.Minute, Buckets: []float64{0.1, 1}}
	r := rand.New(rand.NewPCG(1, 2))
	evs := genEvents(r, 50, 0.3, false)

	// Into an empty state and from an empty state.
	full := build(p, evs)
	empty := NewState(p)
	empty.Merge(full, p)
	require.NoError(t, empty.Validate(p))
	require.Equal(t, full.Count, empty.Count)
	require.Equal(t, full.Mean, empty.Mean)
	require.Equal(t, full.M2, empty.M2)
	require.Equal(t, full.EWMA, empty.EWMA)
	require.Equal(t, full.ConsecutiveFailures, empty.ConsecutiveFailures)
	require.True(t, sameFloats(ringChronological(full), ringChronological(empty)))
	c := full.Clone()
	c.Merge(NewState(p), p)
	require.NoError(t, c.Validate(p))
	require.Equal(t, full.Mean, c.Mean)
	require.Equal(t, full.Buckets, c.Buckets)
	require.True(t, sameFloats(ringChronological(full), ringChronological(c)))
	c.Merge(nil, p)
	require.Equal(t, full.Count, c.Count)

	// With itself: counts double, mean and extremes stay.
	self := full.Clone()
	self.Merge(self, p)
	require.NoError(t, self.Validate(p))
	require.Equal(t, 2*full.Count, self.Count)
	require.Equal(t, 2*full.Probes, self.Probes)
	require.InDelta(t, full.Mean, self.Mean, 1e-12*full.Mean)
	require.Equal(t, 2*full.Sketch.GetCount(), self.Sketch.GetCount())

	// Failures only on both sides: consecutive failures add up.
	fa, fb := NewState(p), NewState(p)
	fa.Observe(baseTime, false, 0, p)
	fb.Observe(baseTime.Add(time.Second), false, 0, p)
	fb.Observe(baseTime.Add(2*time.Second), false, 0, p)
	fa.Merge(fb, p)
	require.NoError(t, fa.Validate(p))
	require.EqualValues(t, 3, fa.ConsecutiveFailures)
	require.EqualValues(t, 0, fa.Count)

	// An older agent's failures before the other's latest success do not
	// count; later ones do.
	ok, bad := NewState(p), NewState(p)
	bad.Observe(baseTime, false, 0, p)
	ok.Observe(baseTime.Add(time.Second), true, 0.01, p)
	m := ok.Clone()
	m.Merge(bad, p)
	require.EqualValues(t, 0, m.ConsecutiveFailures)
	bad.Observe(baseTime.Add(2*time.Second), false, 0, p)
	m = ok.Clone()
	m.Merge(bad, p)
	require.EqualValues(t, 2, m.ConsecutiveFailures)

	// Mismatched bucket layout is rebuilt from the merged sketch.
	q := Params{Window: 5, HalfLife: time.Minute}
	nb := build(q, evs)
	m = full.Clone()
	m.Merge(nb, p)
	require.NoError(t, m.Validate(p))
}

func TestObserveBasics(t *testing.T) {
	p := Params{Window: 3, HalfLife: time.Minute, Buckets: []float64{0, 0.1}}
	s := NewState(p)
	require.Equal(t, 3, cap(s.Ring))
	require.Len(t, s.Buckets, 3)
	require.NoError(t, s.Validate(p))

	now := baseTime
	tick := func() time.Time { now = now.Add(time.Second); return now }
	s.Observe(tick(), false, 0.5, p)
	require.EqualValues(t, 1, s.Failures)
	require.EqualValues(t, 0, s.Count)
	require.Equal(t, now.UnixNano(), s.LastFailure)
	require.True(t, math.IsNaN(s.Ring[0]))

	s.Observe(tick(), true, -0.25, p) // negative: recorded as 0
	require.EqualValues(t, 1, s.Count)
	require.Equal(t, 0.0, s.Min)
	require.Equal(t, []int64{1, 0, 0}, s.Buckets, "0 <= le 0")
	require.EqualValues(t, 0, s.ConsecutiveFailures)
	require.Equal(t, now.UnixNano(), s.LastSuccess)

	s.Observe(tick(), true, math.NaN(), p) // no measurement: a failure
	s.Observe(tick(), true, math.Inf(1), p)
	require.EqualValues(t, 1, s.Count)
	require.EqualValues(t, 2, s.ConsecutiveFailures)
	require.EqualValues(t, 3, s.Failures)
	require.EqualValues(t, 4, s.Probes)
	require.Equal(t, 1.0, s.Sketch.GetCount())

	s.Observe(tick(), true, 0.1, p) // on the bound: le 0.1
	s.Observe(tick(), true, 7, p)
	require.Equal(t, []int64{1, 1, 1}, s.Buckets)
	require.Len(t, s.Ring, 3)
	require.Equal(t, 0, s.RingPos)
	require.True(t, sameFloats([]float64{math.NaN(), 0.1, 7}, ringChronological(s)))
	require.NoError(t, s.Validate(p))
}

func TestObserveZeroAllocs(t *testing.T) {
	p := Params{Window: 100, HalfLife: time.Minute, Buckets: testBuckets}
	s, now := warmState(3, 5000, p)
	xs := benchLatencies(4, 1000) // same range: the sketch does not grow
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Second)
		s.Observe(now, i%10 != 0, xs[i%len(xs)], p)
		i++
	})
	require.Zero(t, allocs)

	var snap Snapshot
	ps := []float64{50, 90, 99, 99.9}
	s.Snapshot(ps, &snap)
	allocs = testing.AllocsPerRun(100, func() { s.Snapshot(ps, &snap) })
	require.Zero(t, allocs)
}

func TestSnapshotBeforeFirstSuccess(t *testing.T) {
	p := Params{Window: 4, HalfLife: time.Minute, Buckets: []float64{1}}
	s := NewState(p)
	ps := []float64{50, 99}
	var snap Snapshot
	snap.Window = []float64{1, 2, 3} // stale content must be cleared
	snap.Lifetime = []float64{1, 2, 3}
	snap.Mean, snap.HasStddev, snap.Jitter, snap.Availability = 9, true, 9, 9

	s.Snapshot(ps, &snap)
	require.Zero(t, snap.Count)
	require.Zero(t, snap.WindowProbes)
	require.Zero(t, snap.Availability)
	require.Empty(t, snap.Window)
	require.Empty(t, snap.Lifetime)
	require.False(t, snap.HasStddev)
	require.Equal(t, []int64{0, 0}, snap.Cumulative)

	for i := range 6 {
		s.Observe(baseTime.Add(time.Duration(i)*time.Second), false, 0, p)
	}
	s.Snapshot(ps, &snap)
	require.Zero(t, snap.Count)
	require.EqualValues(t, 6, snap.Probes)
	require.EqualValues(t, 6, snap.ConsecutiveFailures)
	require.Equal(t, 4, snap.WindowProbes)
	require.Zero(t, snap.WindowSuccesses)
	require.Zero(t, snap.Availability)
	require.Empty(t, snap.Window)
	require.Empty(t, snap.Lifetime)
	require.Zero(t, snap.Mean)
	require.Zero(t, snap.Min)
	require.Zero(t, snap.Max)
	require.Zero(t, snap.EWMA)
	require.Zero(t, snap.Jitter)
	require.False(t, snap.HasStddev)
	require.Equal(t, []int64{0, 0}, snap.Cumulative)

	// One success: every percentile is that sample, exactly.
	s.Observe(baseTime.Add(time.Minute), true, 0.0421, p)
	s.Snapshot(ps, &snap)
	require.EqualValues(t, 1, snap.Count)
	require.Equal(t, []float64{0.0421, 0.0421}, snap.Window)
	require.Equal(t, []float64{0.0421, 0.0421}, snap.Lifetime, "clamped to [min, max]")
	require.Equal(t, 0.25, snap.Availability)
	require.False(t, snap.HasStddev)
	require.Zero(t, snap.Jitter)
	require.Equal(t, []int64{1, 1}, snap.Cumulative)

	// No histogram: nil.
	q := Params{Window: 4, HalfLife: time.Minute}
	NewState(q).Snapshot(ps, &snap)
	require.Nil(t, snap.Cumulative)
}

func TestPercentileR7(t *testing.T) {
	// Reference values from numpy.percentile (default "linear" method).
	xs := []float64{15, 20, 35, 40, 50}
	for _, c := range []struct{ p, want float64 }{
		{0, 15}, {5, 16}, {30, 23}, {40, 29}, {50, 35}, {95, 48}, {100, 50},
	} {
		require.InDelta(t, c.want, PercentileR7(xs, c.p), 1e-12, "p%v", c.p)
	}
	require.Equal(t, 1.75, PercentileR7([]float64{1, 2, 3, 4}, 25))
	require.Equal(t, 2.5, PercentileR7([]float64{1, 2, 3, 4}, 50))
	require.Equal(t, 7.0, PercentileR7([]float64{7}, 99.9))
	require.True(t, math.IsNaN(PercentileR7(nil, 50)))
	require.True(t, math.IsNaN(PercentileR7(xs, math.NaN())))
	require.Equal(t, 50.0, PercentileR7(xs, 250), "clamped")
}

func TestLifetimeZeroLatency(t *testing.T) {
	p := Params{Window: 10, HalfLife: time.Minute}
	s := NewState(p)
	for i := range 100 {
		x := 0.0
		if i%2 == 0 {
			x = 0.5
		}
		s.Observe(baseTime.Add(time.Duration(i)*time.Second), true, x, p)
	}
	var snap Snapshot
	s.Snapshot([]float64{10, 90}, &snap)
	require.Equal(t, 0.0, snap.Lifetime[0])
	require.InEpsilon(t, 0.5, snap.Lifetime[1], SketchRelativeAccuracy)
	require.NoError(t, s.Validate(p))
}

func TestParamsValidate(t *testing.T) {
	ok := Params{Window: 100, HalfLife: time.Minute, Buckets: []float64{0, 0.1, 1}}
	require.NoError(t, ok.Validate())
	require.NoError(t, Params{Window: 1, HalfLife: 1}.Validate())
	require.NoError(t, Params{Window: MaxWindow, HalfLife: time.Hour}.Validate())
	for _, c := range []struct {
		p   Params
		key string
		msg string
	}{
		{Params{Window: 0, HalfLife: time.Minute}, "window", "window: must be between 1 and 100000, got 0"},
		{Params{Window: -3, HalfLife: time.Minute}, "window", "got -3"},
		{Params{Window: MaxWindow + 1, HalfLife: time.Minute}, "window", "got 100001"},
		{Params{Window: 10}, "ewma_half_life", "ewma_half_life: must be positive, got 0s"},
		{Params{Window: 10, HalfLife: -time.Second}, "ewma_half_life", "got -1s"},
		{Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.1, 0.1}}, "histogram_buckets", "strictly increasing, #2 (0.1) follows 0.1"},
		{Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{1, 0.1}}, "histogram_buckets", "strictly increasing"},
		{Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{-1, 0.1}}, "histogram_buckets", "bound #1 (-1) is negative"},
		{Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.1, math.NaN()}}, "histogram_buckets", "bound #2 (NaN) is not finite"},
		{Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.1, math.Inf(1)}}, "histogram_buckets", "is not finite"},
	} {
		err := c.p.Validate()
		require.Error(t, err, "%+v", c.p)
		require.Equal(t, c.key, keyerr.Key(err), "%+v: %v", c.p, err)
		require.Contains(t, err.Error(), c.msg)
	}
}

func TestValidatePercentiles(t *testing.T) {
	require.NoError(t, ValidatePercentiles(nil))
	require.NoError(t, ValidatePercentiles([]float64{50, 90, 99, 99.9, 99.99, 0.1}))
	for _, c := range []struct {
		ps  []float64
		msg string
	}{
		{[]float64{0}, "percentiles: 0 must be strictly between 0 and 100"},
		{[]float64{100}, "100 must be strictly"},
		{[]float64{-1}, "-1 must be strictly"},
		{[]float64{150}, "150 must be strictly"},
		{[]float64{math.NaN()}, "NaN must be strictly"},
		{[]float64{math.Inf(1)}, "+Inf must be strictly"},
		{[]float64{50, 90, 50}, "percentiles: 50 is listed twice"},
	} {
		err := ValidatePercentiles(c.ps)
		require.Error(t, err, "%v", c.ps)
		require.Equal(t, "percentiles", keyerr.Key(err), "%v: %v", c.ps, err)
		require.Contains(t, err.Error(), c.msg)
	}
}

func TestPercentileFieldSuffix(t *testing.T) {
	for p, want := range map[float64]string{
		50: "p50", 99.9: "p99_9", 99.99: "p99_99", 12.5: "p12_5", 1: "p1", 0.1: "p0_1", 99.999: "p99_999",
	} {
		require.Equal(t, want, PercentileFieldSuffix(p))
	}
}

func TestSketchParameters(t *testing.T) {
	s := NewSketch()
	require.True(t, s.IndexMapping.Equals(SketchMapping()))
	require.InDelta(t, SketchRelativeAccuracy, SketchMapping().RelativeAccuracy(), 1e-12)
	ref, err := ddsketch.LogCollapsingLowestDenseDDSketch(0.01, 2048)
	require.NoError(t, err)
	// Same mapping and store type: merges both ways.
	require.NoError(t, s.Add(0.02))
	require.NoError(t, ref.Add(0.03))
	require.NoError(t, ref.MergeWith(s))
	require.Equal(t, 2.0, ref.GetCount())
	// Bins persist through the mapping.
	m := SketchMapping()
	require.InEpsilon(t, 0.02, m.Value(m.Index(0.02)), SketchRelativeAccuracy)
}

// validState returns a state that is valid for p: failures, successes,
// a full ring (RingPos != 0) and buckets.
func validState(p Params) *State {
	r := rand.New(rand.NewPCG(11, 12))
	evs := genEvents(r, 103, 0.3, false)
	evs[len(evs)-1].ok = false // ends with a failure
	return build(p, evs)
}

func TestValidate(t *testing.T) {
	p := Params{Window: 7, HalfLife: time.Minute, Buckets: []float64{0.01, 0.1, 1}}
	require.NoError(t, NewState(p).Validate(p))
	base := validState(p)
	require.NoError(t, base.Validate(p))
	require.NotZero(t, base.RingPos)
	require.NotZero(t, base.ConsecutiveFailures)

	foreign, err := ddsketch.LogCollapsingLowestDenseDDSketch(0.02, 2048)
	require.NoError(t, err)

	cases := map[string]func(s *State){
		"NaN mean":                 func(s *State) { s.Mean = math.NaN() },
		"Inf mean":                 func(s *State) { s.Mean = math.Inf(1) },
		"negative mean":            func(s *State) { s.Mean = -1 },
		"mean above max":           func(s *State) { s.Mean = s.Max * 2 },
		"NaN M2":                   func(s *State) { s.M2 = math.NaN() },
		"negative M2":              func(s *State) { s.M2 = -1 },
		"NaN min":                  func(s *State) { s.Min = math.NaN() },
		"negative min":             func(s *State) { s.Min = -0.5 },
		"Inf max":                  func(s *State) { s.Max = math.Inf(1) },
		"min above max":            func(s *State) { s.Min, s.Max = s.Max, s.Min },
		"NaN EWMA":                 func(s *State) { s.EWMA = math.NaN() },
		"EWMA above max":           func(s *State) { s.EWMA = s.Max * 3 },
		"negative count":           func(s *State) { s.Count = -1 },
		"count above probes":       func(s *State) { s.Count = s.Probes + 1 },
		"failures above probes":    func(s *State) { s.Failures = s.Probes + 1 },
		"negative probes":          func(s *State) { s.Probes = -5 },
		"count+failures != probes": func(s *State) { s.Probes++ },
		"negative consecutive":     func(s *State) { s.ConsecutiveFailures = -1 },
		"consecutive > failures":   func(s *State) { s.ConsecutiveFailures = s.Failures + 1 },
		"ring too long":            func(s *State) { s.Ring = append(s.Ring, 0.1) },
		"ring pos negative":        func(s *State) { s.RingPos = -1 },
		"ring pos out of range":    func(s *State) { s.RingPos = len(s.Ring) },
		"ring pos in partial ring": func(s *State) { s.Ring = s.Ring[:3]; s.RingPos = 1 },
		"negative ring sample":     func(s *State) { s.Ring[0] = -1 },
		"Inf ring sample":          func(s *State) { s.Ring[0] = math.Inf(1) },
		"nil sketch":               func(s *State) { s.Sketch = nil },
		"sketch count too high":    func(s *State) { _ = s.Sketch.Add(0.1) },
		"empty sketch":             func(s *State) { s.Sketch = NewSketch() },
		"foreign sketch mapping": func(s *State) {
			for range s.Count {
				_ = foreign.Add(0.05)
			}
			s.Sketch = foreign
		},
		"negative sketch value": func(s *State) {
			_ = s.Sketch.Add(-1)
			s.Count++
			s.Probes++
			s.Buckets[0]++
		},
		"bucket length": func(s *State) { s.Buckets = s.Buckets[:3] },
		"nil buckets":   func(s *State) { s.Buckets = nil },
		"negative bucket": func(s *State) {
			d := s.Buckets[0] + 1
			s.Buckets[0] = -1
			s.Buckets[1] += d
		},
		"bucket sum != count":  func(s *State) { s.Buckets[1]++ },
		"no sample but M2":     func(s *State) { *s = *NewState(p); s.M2 = 1 },
		"no sample but EWMAAt": func(s *State) { *s = *NewState(p); s.EWMAAt = 1 },
		"no sample but NaN":    func(s *State) { *s = *NewState(p); s.Mean = math.NaN() },
		"one sample but M2":    func(s *State) { *s = *build(p, []event{{baseTime, true, 0.1}}); s.M2 = 0.5 },
		"ring successes>count": func(s *State) {
			*s = *build(p, []event{{baseTime, true, 0.1}, {baseTime, false, 0}})
			s.Ring[1] = 0.2
		},
		"ring longer than probes": func(s *State) {
			*s = *build(p, []event{{baseTime, false, 0}})
			s.Ring = append(s.Ring, math.NaN())
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			s := base.Clone()
			mutate(s)
			require.Error(t, s.Validate(p))
		})
	}

	// Valid under other Params only.
	require.Error(t, base.Validate(Params{Window: 3, HalfLife: time.Minute, Buckets: p.Buckets}), "ring longer than window")
	require.Error(t, base.Validate(Params{Window: 7, HalfLife: time.Minute}), "buckets without histogram")
	// After Resize it is valid again.
	q := Params{Window: 3, HalfLife: time.Minute}
	c := base.Clone()
	c.Resize(q)
	require.NoError(t, c.Validate(q))
}

func TestResize(t *testing.T) {
	p := Params{Window: 7, HalfLife: time.Minute}
	r := rand.New(rand.NewPCG(3, 4))
	evs := genEvents(r, 23, 0.3, false)
	s := build(p, evs)
	require.NotZero(t, s.RingPos)
	chrono := ringChronological(s)
	snapshotBefore := s.Clone()

	// Unchanged Params: no-op.
	same := s.Clone()
	same.Resize(p)
	require.Equal(t, s.RingPos, same.RingPos)
	require.True(t, sameFloats(s.Ring, same.Ring))

	// Shrink: the newest 4, oldest first.
	small := s.Clone()
	q := Params{Window: 4, HalfLife: time.Minute}
	small.Resize(q)
	require.NoError(t, small.Validate(q))
	require.True(t, sameFloats(chrono[3:], small.Ring))
	require.Zero(t, small.RingPos)
	require.True(t, sameFloats(ringChronological(build(q, evs)), small.Ring))

	// Grow: all 7 kept in order, then new probes append, and the state
	// keeps matching the brute force for the new window.
	big := s.Clone()
	g := Params{Window: 12, HalfLife: time.Minute}
	big.Resize(g)
	require.NoError(t, big.Validate(g))
	require.True(t, sameFloats(chrono, big.Ring))
	require.Equal(t, 12, cap(big.Ring))
	more := genEvents(r, 9, 0.3, false)
	for i := range more {
		more[i].t = more[i].t.Add(100 * time.Hour)
		big.Observe(more[i].t, more[i].ok, more[i].x, g)
	}
	require.NoError(t, big.Validate(g))
	want := slices.Clone(chrono)
	for _, e := range more {
		if e.ok {
			want = append(want, e.x)
		} else {
			want = append(want, math.NaN())
		}
	}
	require.True(t, sameFloats(want[len(want)-12:], ringChronological(big)))

	// Resize did not touch the original.
	require.True(t, sameFloats(snapshotBefore.Ring, s.Ring))
	require.Equal(t, snapshotBefore.RingPos, s.RingPos)
}

func TestResizeBuckets(t *testing.T) {
	// Samples far from every bound: the rebuilt counts are exact.
	values := []float64{0.0003, 0.002, 0.02, 0.2, 2, 20}
	p := Params{Window: 10, HalfLife: time.Minute}
	var evs []event
	for i := range 600 {
		evs = append(evs, event{baseTime.Add(time.Duration(i) * time.Second), i%7 != 0, values[(i*i)%len(values)]})
	}
	s := build(p, evs)
	require.Nil(t, s.Buckets)

	q := Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.001, 0.01, 0.1, 1, 10}}
	s.Resize(q)
	require.NoError(t, s.Validate(q))
	var snap Snapshot
	s.Snapshot(nil, &snap)
	require.Equal(t, bruteForce(q, evs).cumulative, snap.Cumulative)

	// Same number of bounds, different values: RebuildBuckets.
	q2 := Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.005, 0.05, 0.5, 5, 50}}
	s.RebuildBuckets(q2)
	require.NoError(t, s.Validate(q2))
	s.Snapshot(nil, &snap)
	require.Equal(t, bruteForce(q2, evs).cumulative, snap.Cumulative)

	// Observations afterwards are exact.
	s.Observe(baseTime.Add(time.Hour), true, 0.004, q2)
	require.NoError(t, s.Validate(q2))

	// Back to no histogram.
	s.Resize(p)
	require.Nil(t, s.Buckets)
	require.NoError(t, s.Validate(p))

	// Random samples: the rebuilt counts differ from the exact ones only
	// by samples within the sketch accuracy of a bound, and sum to Count.
	r := rand.New(rand.NewPCG(9, 9))
	evs = genEvents(r, 3000, 0.1, false)
	s = build(p, evs)
	qb := Params{Window: 10, HalfLife: time.Minute, Buckets: testBuckets}
	s.Resize(qb)
	require.NoError(t, s.Validate(qb))
	s.Snapshot(nil, &snap)
	exact := bruteForce(qb, evs).cumulative
	for i, b := range testBuckets {
		var near int64
		for _, e := range evs {
			if e.ok && math.Abs(e.x-b) <= 2*SketchRelativeAccuracy*b {
				near++
			}
		}
		require.LessOrEqual(t, abs64(snap.Cumulative[i]-exact[i]), near, "bound %v", b)
	}
	require.Equal(t, s.Count, snap.Cumulative[len(testBuckets)])
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestResizeMalformed(t *testing.T) {
	// Resize never panics and restores the ring invariants.
	p := Params{Window: 5, HalfLife: time.Minute}
	for _, s := range []*State{
		{RingPos: 9, Ring: []float64{1, 2, 3}},
		{RingPos: -2, Ring: []float64{1, 2, 3, 4, 5, 6, 7}},
		{Ring: nil, Buckets: []int64{1, 2}},
	} {
		s.Resize(p)
		require.LessOrEqual(t, len(s.Ring), 5)
		require.Zero(t, s.RingPos)
		require.Nil(t, s.Buckets)
	}
	// Observe on a state that was not resized keeps the newest entries.
	s := build(Params{Window: 6, HalfLife: time.Minute}, []event{
		{baseTime, true, 1}, {baseTime, true, 2}, {baseTime, true, 3},
		{baseTime, true, 4}, {baseTime, true, 5}, {baseTime, true, 6}, {baseTime, true, 7},
	})
	s.Observe(baseTime, true, 8, p)
	require.Equal(t, []float64{4, 5, 6, 7, 8}, ringChronological(s))
}

func TestClone(t *testing.T) {
	p := Params{Window: 7, HalfLife: time.Minute, Buckets: []float64{0.01, 0.1, 1}}
	s := validState(p)
	orig := s.Clone()
	origSketch := sketchBytes(s)

	c := s.Clone()
	require.True(t, sameFloats(s.Ring, c.Ring))
	require.Equal(t, s.Buckets, c.Buckets)
	require.Equal(t, origSketch, sketchBytes(c))
	require.Equal(t, cap(s.Ring), cap(c.Ring))

	c.Ring[0] = 123
	c.Buckets[0] += 5
	_ = c.Sketch.Add(42)
	for i := range 20 {
		c.Observe(baseTime.Add(time.Duration(1000+i)*time.Hour), true, float64(i), p)
	}
	require.True(t, sameFloats(orig.Ring, s.Ring))
	require.Equal(t, orig.Buckets, s.Buckets)
	require.Equal(t, origSketch, sketchBytes(s))
	require.Equal(t, orig.Count, s.Count)
	require.Equal(t, orig.Mean, s.Mean)
	require.Equal(t, orig.RingPos, s.RingPos)
	require.NoError(t, s.Validate(p))

	// A state without buckets clones to nil buckets.
	require.Nil(t, NewState(Params{Window: 1, HalfLife: time.Minute}).Clone().Buckets)
}

// TestStateHeap reports (and bounds) the heap bytes of a state with window
// 100 and a sketch after 10,000 samples spread over 100µs..10s.
func TestStateHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	perState := stateHeapBytes(200)
	t.Logf("%.0f B/state", perState)
	require.LessOrEqual(t, perState, 8192.0)
}
