package stats

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// Status is a service's verdict. The numbers are its status_code field and
// are fixed: alert rules are written against them.
type Status uint8

// The statuses, by status_code.
const (
	StatusUnknown  Status = 0 // not decided yet: fewer rounds than the thresholds need
	StatusUp       Status = 1
	StatusDegraded Status = 2 // up, but the latency statistic is above the objective
	StatusDown     Status = 3
)

// MaxStatus is the largest valid Status.
const MaxStatus = StatusDown

func (s Status) String() string {
	switch s {
	case StatusUp:
		return "up"
	case StatusDegraded:
		return "degraded"
	case StatusDown:
		return "down"
	}
	return "unknown"
}

// Defaults of the verdict.
const (
	DefaultFailureThreshold = 3
	DefaultSuccessThreshold = 2
	// MaxThreshold bounds failure_threshold and success_threshold.
	MaxThreshold = 1000
)

// StatisticKind is what the latency objective is compared with.
type StatisticKind uint8

const (
	StatPercentile StatisticKind = iota // a window percentile (Statistic.Percentile)
	StatEWMA                            // the EWMA
	StatAvg                             // the running mean
)

// Statistic is the latency statistic a service's objective applies to.
type Statistic struct {
	Kind       StatisticKind
	Percentile float64 // for StatPercentile, in (0, 100)
}

// DefaultStatistic is p95 of the window.
var DefaultStatistic = Statistic{Kind: StatPercentile, Percentile: 95}

func (s Statistic) String() string {
	switch s.Kind {
	case StatEWMA:
		return "ewma"
	case StatAvg:
		return "avg"
	}
	return PercentileFieldSuffix(s.Percentile)
}

// ParseStatistic parses a degraded_statistic: "ewma", "avg", or a
// percentile "p95", "p99.9" (also "p99_9", its field-name form). The
// percentile must be one of percentiles (the service's: only those are
// computed). Errors are *keyerr.Error with Key "degraded_statistic".
func ParseStatistic(v string, percentiles []float64) (Statistic, error) {
	switch v {
	case "ewma":
		return Statistic{Kind: StatEWMA}, nil
	case "avg":
		return Statistic{Kind: StatAvg}, nil
	}
	num, ok := strings.CutPrefix(v, "p")
	if !ok || num == "" {
		return Statistic{}, keyerr.Errorf("degraded_statistic", `%q: want "ewma", "avg" or a percentile such as "p95" or "p99.9"`, v)
	}
	p, err := strconv.ParseFloat(strings.ReplaceAll(num, "_", "."), 64)
	if err != nil || !(p > 0 && p < 100) {
		return Statistic{}, keyerr.Errorf("degraded_statistic", `%q: want "ewma", "avg" or a percentile such as "p95" or "p99.9" (strictly between 0 and 100)`, v)
	}
	if !slices.Contains(percentiles, p) {
		return Statistic{}, keyerr.Errorf("degraded_statistic", "%q is not computed: the percentiles are %v (add %v to percentiles, or pick another)", v, percentiles, p)
	}
	return Statistic{Kind: StatPercentile, Percentile: p}, nil
}

// VerdictParams are the parameters of a service's verdict.
type VerdictParams struct {
	// FailureThreshold failed rounds in a row make the service down (and
	// as many slow rounds in a row make an up service degraded).
	FailureThreshold int
	// SuccessThreshold good rounds in a row bring it up again (from down,
	// degraded or unknown).
	SuccessThreshold int
	// DegradedLatency is the objective in seconds: a successful round
	// after which Statistic is above it is slow. 0: no objective.
	DegradedLatency float64
	Statistic       Statistic
}

// DefaultVerdict are the verdict parameters without configuration.
var DefaultVerdict = VerdictParams{FailureThreshold: DefaultFailureThreshold, SuccessThreshold: DefaultSuccessThreshold, Statistic: DefaultStatistic}

// Validate checks the parameters; errors are *keyerr.Error naming
// failure_threshold, success_threshold or degraded_latency.
func (v VerdictParams) Validate() error {
	if v.FailureThreshold < 1 || v.FailureThreshold > MaxThreshold {
		return keyerr.Errorf("failure_threshold", "must be between 1 and %d, got %d", MaxThreshold, v.FailureThreshold)
	}
	if v.SuccessThreshold < 1 || v.SuccessThreshold > MaxThreshold {
		return keyerr.Errorf("success_threshold", "must be between 1 and %d, got %d", MaxThreshold, v.SuccessThreshold)
	}
	if !(v.DegradedLatency >= 0) || math.IsInf(v.DegradedLatency, 0) {
		return keyerr.Errorf("degraded_latency", "must not be negative, got %s", time.Duration(v.DegradedLatency*1e9))
	}
	return nil
}

// RoundClass is what a round says about a service.
type RoundClass uint8

const (
	RoundFailed RoundClass = iota // its result is not success
	RoundGood                     // success, the statistic within the objective (or none)
	RoundSlow                     // success, the statistic above the objective
)

// Verdict is a service's status and the runs of rounds that decide it.
// It is part of State (persisted and shared with the rest of it).
type Verdict struct {
	Status Status
	// Since is when the service entered Status (unix ns): the time of the
	// round that changed it; for unknown, of the first round. 0: no round
	// yet.
	Since int64
	// Runs of rounds in a row: Failed rounds; OK successful rounds (good
	// or slow); Slow and Good ones among those (one of them is 0).
	Failed, OK, Slow, Good int64
}

// Step advances the verdict by one round of class c that ended at at
// (unix ns) and reports whether the status changed. It is a pure
// function of v, p, c and at; the Redis script mirrors it (redis.lua).
//
//   - failure_threshold failed rounds in a row: down;
//   - down or unknown: success_threshold successful rounds in a row: up,
//     or degraded when the last one was slow;
//   - up: failure_threshold slow rounds in a row: degraded;
//   - degraded: success_threshold good rounds in a row: up.
//
// Since moves to at on a change, never backwards (agents' clocks may
// differ by a little). A threshold below 1 counts as 1.
func (v *Verdict) Step(p VerdictParams, c RoundClass, at int64) bool {
	fail, succ := int64(max(p.FailureThreshold, 1)), int64(max(p.SuccessThreshold, 1))
	if v.Since == 0 {
		v.Since = at
	}
	switch c {
	case RoundFailed:
		v.Failed++
		v.OK, v.Slow, v.Good = 0, 0, 0
	case RoundSlow:
		v.Failed, v.Good = 0, 0
		v.OK++
		v.Slow++
	default:
		v.Failed, v.Slow = 0, 0
		v.OK++
		v.Good++
	}
	next := v.Status
	switch {
	case v.Failed >= fail:
		next = StatusDown
	case v.Status == StatusUnknown || v.Status == StatusDown:
		if v.OK >= succ {
			next = StatusUp
			if c == RoundSlow {
				next = StatusDegraded
			}
		}
	case v.Status == StatusUp:
		if v.Slow >= fail {
			next = StatusDegraded
		}
	case v.Status == StatusDegraded:
		if v.Good >= succ {
			next = StatusUp
		}
	}
	if next == v.Status {
		return false
	}
	v.Status = next
	v.Since = max(v.Since, at)
	return true
}

// SinceAt returns how long the service has been in its status at time at
// (unix ns), in seconds; 0 before the first round or when at is earlier.
func (v *Verdict) SinceAt(at int64) float64 {
	if v.Since == 0 || at <= v.Since {
		return 0
	}
	return float64(at-v.Since) / 1e9
}

// Validate reports a malformed verdict.
func (v *Verdict) Validate() error {
	if v.Status > MaxStatus {
		return fmt.Errorf("status %d out of range", v.Status)
	}
	if v.Since < 0 || v.Failed < 0 || v.OK < 0 || v.Slow < 0 || v.Good < 0 {
		return fmt.Errorf("negative verdict field: since %d, runs %d/%d/%d/%d", v.Since, v.Failed, v.OK, v.Slow, v.Good)
	}
	if v.Failed > 0 && v.OK > 0 {
		return errors.New("failed and successful rounds in a row at once")
	}
	if v.Slow+v.Good > v.OK || (v.Slow > 0 && v.Good > 0) {
		return fmt.Errorf("slow %d and good %d rounds do not fit %d successful ones", v.Slow, v.Good, v.OK)
	}
	return nil
}

// Classify returns the class of a round of the state that just ended
// (its samples observed): ok is whether its result is success. scratch is
// a reusable sort buffer for a percentile.
func (s *State) Classify(ok bool, p VerdictParams, scratch *[]float64) RoundClass {
	if !ok {
		return RoundFailed
	}
	if p.DegradedLatency <= 0 {
		return RoundGood
	}
	x, has := s.Statistic(p.Statistic, scratch)
	if has && x > p.DegradedLatency {
		return RoundSlow
	}
	return RoundGood
}

// Statistic returns the value of st over the state, and false when it has
// no data (no success in the window, or none at all).
func (s *State) Statistic(st Statistic, scratch *[]float64) (float64, bool) {
	switch st.Kind {
	case StatEWMA:
		return s.EWMA, s.Count > 0
	case StatAvg:
		return s.Mean, s.Count > 0
	}
	var buf []float64
	if scratch != nil {
		buf = (*scratch)[:0]
	}
	for _, x := range s.Ring {
		if !math.IsNaN(x) {
			buf = append(buf, x)
		}
	}
	if scratch != nil {
		*scratch = buf
	}
	if len(buf) == 0 {
		return 0, false
	}
	slices.Sort(buf)
	return PercentileR7(buf, st.Percentile), true
}

// EndRound ends a round of the state: its samples have been observed, ok
// is whether its result is success and at its time. It advances the
// verdict and reports whether the status changed.
func (s *State) EndRound(at time.Time, ok bool, p VerdictParams, scratch *[]float64) bool {
	return s.Verdict.Step(p, s.Classify(ok, p, scratch), at.UnixNano())
}
