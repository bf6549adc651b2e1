package stats

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// Sketch parameters. They are fixed forever: every agent and every stored
// state must use the same ones, or merges break (DDSketch refuses to merge
// sketches with different index mappings).
const (
	// SketchRelativeAccuracy is the relative accuracy of lifetime
	// percentiles: a reported quantile is within 1 % of a sample value at
	// the same rank.
	SketchRelativeAccuracy = 0.01
	// SketchMaxBins bounds the number of bins of each sketch store; beyond
	// it the lowest bins collapse. With 1 % accuracy 2048 bins span a
	// factor of about e^41 between the smallest and the largest latency,
	// far more than any real latency range, so collapsing never happens in
	// practice.
	SketchMaxBins = 2048
)

// MaxWindow is the largest accepted exact window (Params.Window).
const MaxWindow = 100000

// NewSketch returns an empty sketch with the fixed parameters:
// ddsketch.LogCollapsingLowestDenseDDSketch(SketchRelativeAccuracy, SketchMaxBins).
func NewSketch() *ddsketch.DDSketch {
	s, err := ddsketch.LogCollapsingLowestDenseDDSketch(SketchRelativeAccuracy, SketchMaxBins)
	if err != nil {
		// Unreachable: the constants are valid parameters.
		panic("stats: invalid sketch parameters: " + err.Error())
	}
	return s
}

// SketchMapping returns the index mapping used by every sketch of this
// package (a logarithmic mapping with SketchRelativeAccuracy). Stores use its
// Index and Value methods to persist and restore sketch bins. A new value is
// returned on every call; all of them are equal (mapping.IndexMapping.Equals).
func SketchMapping() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(SketchRelativeAccuracy)
	if err != nil {
		panic("stats: invalid sketch relative accuracy: " + err.Error())
	}
	return m
}

// fixedMapping is a SketchMapping built once, for State.Validate to compare
// against without building a mapping (an allocation and a logarithm) on
// every call.
var fixedMapping = SketchMapping()

// Params are the configuration-dependent parameters of a State. They are
// passed to every method that needs them rather than stored in the State, so
// that a persisted State stays small and a configuration change is applied
// with State.Resize.
type Params struct {
	// Window is the number of most recent probes (successes and failures)
	// kept in the exact window, 1..MaxWindow.
	Window int
	// HalfLife is the EWMA half-life (> 0): a sample's weight halves every
	// HalfLife of wall time.
	HalfLife time.Duration
	// Buckets are the histogram upper bounds in seconds (inclusive, like
	// Prometheus "le"), finite, non-negative and strictly increasing. An
	// implicit +Inf bucket follows them. Nil or empty means no histogram.
	Buckets []float64
	// Verdict are the parameters of the service's status (thresholds and
	// latency objective). They shape no stored data: Validate does not
	// check them (VerdictParams.Validate does), a state file does not hold
	// them, and a change applies from the next round on.
	Verdict VerdictParams
}

// Validate checks the parameters. Every error is a *keyerr.Error whose Key
// is the configuration key at fault: "window", "ewma_half_life" or
// "histogram_buckets".
func (p Params) Validate() error {
	if p.Window < 1 || p.Window > MaxWindow {
		return keyerr.Errorf("window", "must be between 1 and %d, got %d", MaxWindow, p.Window)
	}
	if p.HalfLife <= 0 {
		return keyerr.Errorf("ewma_half_life", "must be positive, got %s", p.HalfLife)
	}
	for i, b := range p.Buckets {
		switch {
		case math.IsNaN(b) || math.IsInf(b, 0):
			return keyerr.Errorf("histogram_buckets", "bound #%d (%v) is not finite", i+1, b)
		case b < 0:
			return keyerr.Errorf("histogram_buckets", "bound #%d (%v) is negative", i+1, b)
		case i > 0 && b <= p.Buckets[i-1]:
			return keyerr.Errorf("histogram_buckets", "bounds must be strictly increasing, #%d (%v) follows %v",
				i+1, b, p.Buckets[i-1])
		}
	}
	return nil
}

// bucketCount returns the number of bucket counters a State needs for p:
// len(p.Buckets)+1 (the last one is +Inf), or 0 without a histogram.
func (p Params) bucketCount() int {
	if len(p.Buckets) == 0 {
		return 0
	}
	return len(p.Buckets) + 1
}

// ValidatePercentiles checks a list of requested percentiles: each must be
// finite and strictly between 0 and 100, without duplicates. An empty list is
// valid. Every error is a *keyerr.Error with Key "percentiles".
func ValidatePercentiles(ps []float64) error {
	for i, p := range ps {
		if !(p > 0 && p < 100) { // also rejects NaN
			return keyerr.Errorf("percentiles", "%v must be strictly between 0 and 100", p)
		}
		for _, q := range ps[:i] {
			if q == p {
				return keyerr.Errorf("percentiles", "%v is listed twice", p)
			}
		}
	}
	return nil
}

// PercentileFieldSuffix returns the field-name suffix of a percentile: the
// shortest decimal representation with '.' replaced by '_', prefixed by 'p'.
// 50 -> "p50", 99.9 -> "p99_9", 99.99 -> "p99_99", 12.5 -> "p12_5".
func PercentileFieldSuffix(p float64) string {
	return "p" + strings.ReplaceAll(strconv.FormatFloat(p, 'f', -1, 64), ".", "_")
}
