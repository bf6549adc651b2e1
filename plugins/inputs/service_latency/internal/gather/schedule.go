package gather

import (
	"hash/fnv"
	"time"
)

// Schedule is when and how a target is probed.
type Schedule struct {
	// Timeout bounds a whole round: every sample of it ends by the
	// round's start + Timeout.
	Timeout time.Duration
	// Interval between the target's rounds; 0: every gather. A target is
	// due on a gather that starts at least Interval − cadence/2 after its
	// last round started, so jitter in the gathers' timing cannot make it
	// skip one.
	Interval time.Duration
	// Samples probes a round, SampleInterval apart (start to start).
	Samples        int
	SampleInterval time.Duration
}

// Settings are the engine's plugin-wide settings.
type Settings struct {
	MaxConcurrency int
	// Spread: the rounds of a gather start over this duration, each target
	// at a stable offset; with SpreadAuto it is derived from the observed
	// cadence instead (see spread).
	Spread     time.Duration
	SpreadAuto bool
	// Seed makes the offsets this agent's own: two agents probing the
	// same services are not in lockstep.
	Seed string
	// Shape of the metrics (result_tag, string_fields).
	Shape Shape
	// History: give each Service its last rounds (for a status server;
	// without one the copy would be garbage every round).
	History bool
}

// cadenceHistory is how many recent gather starts the cadence is taken
// from.
const cadenceHistory = 8

// gapHistory is how many recent gather starts the longest gap (the
// interval a fleet member advertises) is taken from: only the last few, so
// that one slow gather long ago does not stretch the lease.
const gapHistory = 4

// autoSpreadFraction of the cadence, less the largest round timeout, is
// the automatic spread: the last round starts early enough to end
// (timeout included) with a tenth of the cadence to spare.
const autoSpreadFraction = 0.9

// A gather that starts within queuedGap (or a fiftieth of the last
// interval, if more) of the previous one's end was queued: its tick came
// while the previous gather still ran (Telegraf's newline waited in the
// pipe), so its start says when the previous gather ended, not when the
// tick came.
const queuedGap = 250 * time.Millisecond

// gatherStart is one gather's start and whether it was queued.
type gatherStart struct {
	at     time.Time
	queued bool
}

// noteStart records a gather's start and returns the cadence observed so
// far (0 while unknown: fewer than two gathers).
func (e *Engine) noteStart(now time.Time) time.Duration {
	queued := false
	if n := len(e.starts); n > 0 && !e.lastEnd.IsZero() {
		gap := max(queuedGap, now.Sub(e.starts[n-1].at)/50)
		queued = !now.Before(e.lastEnd) && now.Sub(e.lastEnd) <= gap
	}
	e.starts = append(e.starts, gatherStart{at: now, queued: queued})
	if len(e.starts) > cadenceHistory {
		e.starts = e.starts[1:]
	}
	return cadenceOf(e.starts)
}

// cadenceOf is the interval between ticks, from the recent gather starts.
// A start that was not queued is at its tick; a queued one is late, by as
// much as the gather before it overran. So an interval between two
// on-time starts in a row is a tick (with Telegraf's jitter: the least of
// them is taken, so that the spread never overruns the shortest), and two
// on-time starts with queued ones between them are one tick per gather
// apart (each queued start used up one waiting tick): their mean interval
// is a tick too. Intervals that end or begin at a queued start are not
// ticks: a gather that overran measures long (the spread it gives would
// overrun again) and the one after it short. Only while fewer than two
// starts were on time does it fall back to the least interval of all,
// which errs short (a smaller spread), never long.
func cadenceOf(starts []gatherStart) time.Duration {
	var least, fallback time.Duration
	shorter := func(c, d time.Duration) time.Duration {
		if d > 0 && (c == 0 || d < c) {
			return d
		}
		return c
	}
	prev := -1 // the latest on-time start before i
	for i := range starts {
		if i > 0 {
			fallback = shorter(fallback, starts[i].at.Sub(starts[i-1].at))
		}
		if starts[i].queued {
			continue
		}
		if prev >= 0 {
			mean := starts[i].at.Sub(starts[prev].at) / time.Duration(i-prev)
			least = shorter(least, mean)
		}
		prev = i
	}
	if least > 0 {
		return least
	}
	return fallback
}

// longestGap is the longest interval between the last gather starts (0
// while fewer than two).
func (e *Engine) longestGap() time.Duration {
	var g time.Duration
	for i := max(1, len(e.starts)-gapHistory+1); i < len(e.starts); i++ {
		g = max(g, e.starts[i].at.Sub(e.starts[i-1].at))
	}
	return g
}

// spread is this gather's spread: the configured one, or with "auto"
// max(0, 0.9 × cadence − the largest round timeout of the due targets),
// 0 while the cadence is unknown.
func (e *Engine) spread(cadence time.Duration, due []*Target) time.Duration {
	if !e.settings.SpreadAuto {
		return e.settings.Spread
	}
	if cadence <= 0 {
		return 0
	}
	var budget time.Duration
	for _, t := range due {
		budget = max(budget, t.Schedule.Timeout)
	}
	return max(0, time.Duration(autoSpreadFraction*float64(cadence))-budget)
}

// due reports whether t has a round this gather.
func (t *Target) due(now time.Time, cadence time.Duration) bool {
	if t.Schedule.Interval <= 0 || t.lastStart.IsZero() {
		return true
	}
	return now.Sub(t.lastStart) >= t.Schedule.Interval-cadence/2
}

// offsetHash is the stable hash behind a target's offset: of its name and
// the agent's seed, so it survives restarts and reloads.
func offsetHash(seed, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(seed))
	h.Write([]byte{0})
	h.Write([]byte(name))
	x := h.Sum64()
	// fnv's low bits mix poorly for short keys: finish with a mixer
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// offset is t's start within a gather of the given spread.
func (t *Target) offset(spread time.Duration) time.Duration {
	if spread <= 0 {
		return 0
	}
	return time.Duration(t.hash % uint64(spread))
}
