package stats

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// steps runs classes through a verdict, one round a second from t0, and
// returns the status after each.
func steps(t *testing.T, v *Verdict, p VerdictParams, classes string) []Status {
	t.Helper()
	var out []Status
	for _, c := range classes {
		cl := map[rune]RoundClass{'f': RoundFailed, 'g': RoundGood, 's': RoundSlow}[c]
		at := int64(1_700_000_000+len(out)) * 1e9
		v.Step(p, cl, at)
		require.NoError(t, v.Validate())
		out = append(out, v.Status)
	}
	return out
}

const (
	U, P, D, X = StatusUnknown, StatusUp, StatusDegraded, StatusDown
)

func TestVerdictThresholdsDoNotFlap(t *testing.T) {
	p := DefaultVerdict
	var v Verdict
	got := steps(t, &v, p, "g"+"g"+"ff"+"g"+"fff"+"g"+"f"+"g"+"gg")
	want := []Status{
		U, P, // unknown until 2 good rounds
		P, P, // 2 failed rounds: still up (threshold 3)
		P,
		P, P, X, // 3 failed rounds: down
		X,    // one success: still down
		X,    // a failure in between resets the run
		X, P, // 2 good rounds in a row: up
		P,
	}
	require.Equal(t, want, got)
}

func TestVerdictUnknownUntilDecided(t *testing.T) {
	var v Verdict
	require.Equal(t, []Status{U, U, X}, steps(t, &v, DefaultVerdict, "fff"), "a service that never worked: down after 3")
	v = Verdict{}
	require.Equal(t, []Status{U, U, U, P}, steps(t, &v, DefaultVerdict, "gfgg"))
	v = Verdict{}
	require.Equal(t, []Status{P}, steps(t, &v, VerdictParams{FailureThreshold: 1, SuccessThreshold: 1}, "g"), "thresholds of 1 decide at once")
}

func TestVerdictDegraded(t *testing.T) {
	p := DefaultVerdict
	var v Verdict
	got := steps(t, &v, p, "gg"+"ss"+"g"+"sss"+"g"+"g"+"g"+"s"+"fff")
	want := []Status{
		U, P,
		P, P, // 2 slow rounds: still up (3 needed)
		P,       // a good one resets the run
		P, P, D, // 3 slow rounds in a row: degraded
		D,    // one good round: still degraded
		P,    // 2 good rounds in a row: up
		P, P, // good, then one slow: still up
		P, P, X, // down after 3 failed rounds
	}
	require.Equal(t, want, got)
	// coming back slow from down: degraded, not up
	v = Verdict{}
	require.Equal(t, []Status{U, U, X, X, D}, steps(t, &v, p, "fffgs"))
	// from unknown, slow: degraded
	v = Verdict{}
	require.Equal(t, []Status{U, D}, steps(t, &v, p, "gs"))
}

func TestVerdictSince(t *testing.T) {
	p := DefaultVerdict
	var v Verdict
	t0 := int64(1_000e9)
	v.Step(p, RoundGood, t0)
	require.Equal(t, t0, v.Since, "unknown since the first round")
	require.Equal(t, 2.0, v.SinceAt(t0+2e9))
	require.True(t, v.Step(p, RoundGood, t0+10e9))
	require.Equal(t, t0+10e9, v.Since, "up since the round that decided it")
	require.False(t, v.Step(p, RoundFailed, t0+20e9))
	require.Equal(t, t0+10e9, v.Since, "no change, no new since")
	v.Step(p, RoundFailed, t0+21e9)
	// a round whose time is earlier than since (another agent's clock)
	require.True(t, v.Step(p, RoundFailed, t0+5e9))
	require.Equal(t, StatusDown, v.Status)
	require.Equal(t, t0+10e9, v.Since, "since never moves backwards")
	require.Zero(t, v.SinceAt(t0))
	require.Zero(t, (&Verdict{}).SinceAt(t0))
}

func TestVerdictClassifyUsesTheStatistic(t *testing.T) {
	p := Params{Window: 20, HalfLife: time.Minute}
	s := NewState(p)
	at := time.Unix(1_700_000_000, 0)
	for i := range 19 {
		s.Observe(at.Add(time.Duration(i)*time.Second), true, 0.010, p)
	}
	s.Observe(at.Add(19*time.Second), true, 0.500, p)
	vp := DefaultVerdict
	var scratch []float64
	require.Equal(t, RoundGood, s.Classify(true, vp, &scratch), "no objective: good")
	vp.DegradedLatency = 0.1
	// p95 of 19 × 10 ms and one 500 ms = 10ms + 0.05*(490ms) = 34.5 ms
	x, ok := s.Statistic(vp.Statistic, &scratch)
	require.True(t, ok)
	require.InDelta(t, 0.0345, x, 1e-12)
	require.Equal(t, RoundGood, s.Classify(true, vp, &scratch))
	vp.Statistic = Statistic{Kind: StatPercentile, Percentile: 99}
	require.Equal(t, RoundSlow, s.Classify(true, vp, &scratch), "p99 is above 100 ms")
	vp.Statistic = Statistic{Kind: StatAvg}
	require.Equal(t, RoundGood, s.Classify(true, vp, &scratch), "avg 34.5 ms")
	vp.DegradedLatency = 0.03
	require.Equal(t, RoundSlow, s.Classify(true, vp, &scratch))
	require.Equal(t, RoundFailed, s.Classify(false, vp, &scratch))
	vp.Statistic = Statistic{Kind: StatEWMA}
	s.EWMA = 0.02
	require.Equal(t, RoundGood, s.Classify(true, vp, &scratch))
}

func TestVerdictValidateAndParse(t *testing.T) {
	bad := []Verdict{{Status: 4}, {Since: -1}, {Failed: 1, OK: 1}, {OK: 1, Slow: 1, Good: 1}, {OK: 1, Slow: 2}}
	for _, v := range bad {
		require.Error(t, v.Validate(), "%+v", v)
	}
	s := NewState(Params{Window: 2, HalfLife: time.Minute})
	s.Verdict.Status = 9
	require.Error(t, s.Validate(Params{Window: 2, HalfLife: time.Minute}), "State.Validate checks the verdict")
	for _, v := range []string{"", "p", "p0", "p100", "px", "mean", "P95"} {
		_, err := ParseStatistic(v, []float64{95})
		require.Error(t, err, v)
	}
	st, err := ParseStatistic("p95", []float64{50, 95})
	require.NoError(t, err)
	require.Equal(t, DefaultStatistic, st)
	require.Equal(t, []string{"unknown", "up", "degraded", "down"}, []string{U.String(), P.String(), D.String(), X.String()})
	require.Equal(t, []int{0, 1, 2, 3}, []int{int(U), int(P), int(D), int(X)}, "status_code is fixed")
}
