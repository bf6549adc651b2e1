package gather

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// starts builds gather starts at the given seconds; a negative second is
// a queued start at its absolute value.
func startsAt(secs ...float64) []gatherStart {
	base := time.Unix(1_700_000_000, 0)
	var out []gatherStart
	for _, s := range secs {
		q := s < 0
		if q {
			s = -s
		}
		out = append(out, gatherStart{at: base.Add(time.Duration(s * float64(time.Second))), queued: q})
	}
	return out
}

// The cadence is a tick even when gathers overran: measured in the
// keeping-up run at 100,000 services, the first gather (a burst) took
// 69.6 s on a 60 s ticker, the second started queued at 69.6 s and the
// third, on time, at 120 s. The old rule (the least interval) said 69.6 s
// after the second (a spread that overran again) and 50.4 s after the
// third (a spread cut by a sixth).
func TestCadenceOfQueuedStarts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		starts []gatherStart
		want   time.Duration
	}{
		{"one start: unknown", startsAt(0), 0},
		{"on time", startsAt(0, 60, 120), 60 * time.Second},
		{"jitter: the shortest tick", startsAt(0, 60, 119, 180), 59 * time.Second},
		{"a queued start between two on time", startsAt(0, -69.6, 120), 60 * time.Second},
		{"two queued starts between two on time", startsAt(0, -69.6, -130, 180), 60 * time.Second},
		{"the interval after a queued start is not a tick", startsAt(0, -69.6, 120, 180, 240), 60 * time.Second},
		// fewer than two on-time starts: the least interval, which errs short
		{"only queued after the first", startsAt(0, -69.6, -129.5), 59900 * time.Millisecond},
		{"the first queued one alone", startsAt(0, -69.6), 69600 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, cadenceOf(tc.starts))
		})
	}
}

// noteStart calls a start queued when it comes right after the previous
// gather's end, and on time when the gather waited for its tick.
func TestNoteStartQueued(t *testing.T) {
	e := &Engine{}
	t0 := time.Unix(1_700_000_000, 0)
	require.Zero(t, e.noteStart(t0))
	e.lastEnd = t0.Add(69600 * time.Millisecond) // the burst overran the 60 s tick
	require.Equal(t, 69601*time.Millisecond, e.noteStart(e.lastEnd.Add(time.Millisecond)), "only the fallback while one start was on time")
	require.True(t, e.starts[1].queued)
	e.lastEnd = t0.Add(115 * time.Second) // ended before the tick, waited for it
	require.Equal(t, 60*time.Second, e.noteStart(t0.Add(120*time.Second)))
	require.False(t, e.starts[2].queued)
	require.Equal(t, 69601*time.Millisecond, e.longestGap(), "the lease still takes the longest gap")
}
