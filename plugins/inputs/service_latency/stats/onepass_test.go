package stats

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLifetimeOnePassEqualsPerPercentile: the one walk gives, bit for bit,
// what GetValueAtQuantile gives percentile by percentile, for sketches
// with zeros, one bin, wide ranges, merged states, and percentiles in any
// order, repeated, at 0 and 100.
func TestLifetimeOnePassEqualsPerPercentile(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 1))
	p := Params{Window: 10, HalfLife: time.Minute}
	pcts := [][]float64{{50, 90, 95, 99}, {99.9, 0, 100, 50, 50}, {100}, {0}, {25, 75, 12.5, 99.99, 1}}
	for trial := range 300 {
		s := NewState(p)
		now := time.Unix(1_700_000_000, 0)
		n := 1 + r.IntN(500)
		for i := range n {
			now = now.Add(time.Second)
			var x float64
			switch trial % 5 {
			case 0:
				x = lognormal(r)
			case 1:
				x = 0.02 // one bin
			case 2:
				if i%3 == 0 {
					x = 0 // the zero bucket
				} else {
					x = r.Float64() * 1e-6
				}
			case 3:
				x = math.Exp(r.Float64()*30 - 15)
			default:
				x = float64(r.IntN(4)) * 0.001
			}
			s.Observe(now, true, x, p)
		}
		if trial%7 == 0 {
			o, _ := warmState(uint64(trial), 50, p)
			s.Merge(o, p)
		}
		for _, ps := range pcts {
			var got Snapshot
			s.Snapshot(ps, &got)
			for i, pc := range ps {
				v, err := s.Sketch.GetValueAtQuantile(min(max(pc, 0), 100) / 100)
				require.NoError(t, err)
				want := min(max(v, s.Min), s.Max)
				require.Equal(t, math.Float64bits(want), math.Float64bits(got.Lifetime[i]), "trial %d, p%v: %v vs %v", trial, pc, got.Lifetime[i], want)
			}
			// A copied Snapshot walks with its own state.
			cp := got
			s.Snapshot(ps, &cp)
			require.Equal(t, got.Lifetime, cp.Lifetime)
		}
	}
}

// TestLifetimeOnePassIsTaken: the sketch module's layout is the one
// denseBins reads, so Snapshot does walk the bins once (a module upgrade
// that moved them would fall back silently, still bit-equal, and only
// this test would tell).
func TestLifetimeOnePassIsTaken(t *testing.T) {
	require.True(t, denseLayout.ok, "store.DenseStore's layout changed: lifetimeOnePass always falls back")
	s := NewState(Params{Window: 10, HalfLife: time.Minute})
	s.Observe(time.Unix(1_700_000_000, 0), true, 0.02, Params{Window: 10, HalfLife: time.Minute})
	var dst Snapshot
	require.True(t, s.lifetimeOnePass([]float64{50, 99}, &dst))
	require.Len(t, dst.Lifetime, 2)
}
