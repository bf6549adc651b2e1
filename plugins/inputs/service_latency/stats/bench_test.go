package stats

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// benchParams: window 100, sketch, no histogram.
var benchParams = Params{Window: 100, HalfLife: 5 * time.Minute}

// benchLatencies returns n lognormal latencies clipped to [100µs, 10s].
func benchLatencies(seed uint64, n int) []float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = lognormal(r)
	}
	return xs
}

// warmState returns a state that has seen n probes (5 % failures) of
// benchLatencies(seed, n), one every 10 s.
func warmState(seed uint64, n int, p Params) (*State, time.Time) {
	s := NewState(p)
	now := time.Unix(1_700_000_000, 0)
	for i, x := range benchLatencies(seed, n) {
		now = now.Add(10 * time.Second)
		s.Observe(now, i%20 != 19, x, p)
	}
	return s, now
}

func BenchmarkObserve(b *testing.B) {
	p := benchParams
	s, now := warmState(1, 10_000, p)
	xs := benchLatencies(2, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Second)
		s.Observe(now, i%20 != 19, xs[i&4095], p)
	}
}

func BenchmarkObserveWithBuckets(b *testing.B) {
	p := benchParams
	p.Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	s, now := warmState(1, 10_000, p)
	xs := benchLatencies(2, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Second)
		s.Observe(now, i%20 != 19, xs[i&4095], p)
	}
}

func BenchmarkSnapshot(b *testing.B) {
	p := benchParams
	p.Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	s, _ := warmState(1, 10_000, p)
	ps := []float64{50, 90, 99, 99.9}
	var snap Snapshot
	s.Snapshot(ps, &snap) // warm-up: grows the slices
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.Snapshot(ps, &snap)
	}
}

// stateHeapBytes builds states (window 100 + sketch, no histogram) from
// 10,000 varied samples each and returns the live heap bytes per state.
func stateHeapBytes(states int) float64 {
	p := benchParams
	keep := make([]*State, states)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		s, _ := warmState(uint64(i)+100, 10_000, p)
		keep[i] = s
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(states)
}

func BenchmarkStateHeap(b *testing.B) {
	var perState float64
	for b.Loop() {
		perState = stateHeapBytes(1000)
	}
	b.ReportMetric(perState, "B/state")
}

// BenchmarkLifetimePercentiles is the lifetime part of Snapshot alone:
// the sketch asked percentile by percentile (what Snapshot did before,
// one walk of the bins each) against the one walk for all of them.
func BenchmarkLifetimePercentiles(b *testing.B) {
	p := benchParams
	s, _ := warmState(1, 10_000, p)
	ps := []float64{50, 90, 95, 99}
	var snap Snapshot
	s.Snapshot(ps, &snap)
	b.Run("per-percentile", func(b *testing.B) {
		for b.Loop() {
			snap.Lifetime = snap.Lifetime[:0]
			for _, pc := range ps {
				v, _ := s.Sketch.GetValueAtQuantile(pc / 100)
				snap.Lifetime = append(snap.Lifetime, min(max(v, s.Min), s.Max))
			}
		}
	})
	b.Run("one-pass", func(b *testing.B) {
		for b.Loop() {
			snap.Lifetime = snap.Lifetime[:0]
			s.lifetimeOnePass(ps, &snap)
		}
	})
}
