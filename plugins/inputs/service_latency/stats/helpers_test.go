package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// lognormal returns a lognormal-ish latency in seconds: median 20 ms,
// log-standard deviation 2, clipped to [100µs, 10s].
func lognormal(r *rand.Rand) float64 {
	x := math.Exp(math.Log(0.02) + 2*r.NormFloat64())
	return min(max(x, 1e-4), 10)
}

// event is one probe of a generated history.
type event struct {
	t  time.Time
	ok bool
	x  float64
}

var baseTime = time.Unix(1_700_000_000, 0)

// genEvents returns n probes with irregular timestamps (mostly ~10 s apart,
// some at the same instant, some sub-second, some long gaps of hours to
// days), a failure rate failRate (with occasional failure bursts), and
// lognormal latencies across 100µs..10s; quantized latencies (1 ms grid,
// hence ties and zeros) when quantize is set.
func genEvents(r *rand.Rand, n int, failRate float64, quantize bool) []event {
	evs := make([]event, 0, n)
	t := baseTime.Add(time.Duration(r.Int64N(int64(time.Hour))))
	burst := 0
	for range n {
		var dt time.Duration
		switch u := r.Float64(); {
		case u < 0.10:
			dt = 0
		case u < 0.20:
			dt = time.Duration(1 + r.Int64N(int64(time.Second)))
		case u < 0.25:
			dt = time.Hour + time.Duration(r.Int64N(int64(72*time.Hour)))
		case u < 0.30:
			dt = time.Minute + time.Duration(r.Int64N(int64(4*time.Minute)))
		default:
			dt = 8*time.Second + time.Duration(r.Int64N(int64(4*time.Second)))
		}
		t = t.Add(dt)
		ok := r.Float64() >= failRate
		if burst > 0 {
			ok = false
			burst--
		} else if r.Float64() < 0.01 {
			burst = r.IntN(20)
		}
		x := lognormal(r)
		if quantize {
			x = math.Round(x*1e3) / 1e3
		}
		evs = append(evs, event{t: t, ok: ok, x: x})
	}
	return evs
}

// build returns a state fed with evs.
func build(p Params, evs []event) *State {
	s := NewState(p)
	for _, e := range evs {
		s.Observe(e.t, e.ok, e.x, p)
	}
	return s
}

// expected are brute-force statistics of a probe history.
type expected struct {
	count, probes, failures, cf int64
	mean, m2, min, max          float64
	ewma                        float64
	successes                   []float64 // all successful samples, sorted
	window                      []float64 // successes among the last W probes, chronological
	windowProbes                int
	jitter                      float64
	cumulative                  []int64
}

// bruteForce computes the statistics of evs with straightforward
// algorithms: two-pass mean and variance, the EWMA closed form, a linear
// scan for the histogram.
func bruteForce(p Params, evs []event) expected {
	var e expected
	var xs []float64
	var ts []int64
	for _, ev := range evs {
		e.probes++
		if !ev.ok {
			e.failures++
			e.cf++
			continue
		}
		e.cf = 0
		xs = append(xs, ev.x)
		ts = append(ts, ev.t.UnixNano())
	}
	e.count = int64(len(xs))
	if len(xs) > 0 {
		var sum float64
		e.min, e.max = xs[0], xs[0]
		for _, x := range xs {
			sum += x
			e.min = min(e.min, x)
			e.max = max(e.max, x)
		}
		e.mean = sum / float64(len(xs))
		for _, x := range xs {
			e.m2 += (x - e.mean) * (x - e.mean)
		}
		e.ewma = ewmaClosedForm(xs, ts, p.HalfLife)
	}

	// Window: the last W probes.
	start := max(len(evs)-p.Window, 0)
	e.windowProbes = len(evs) - start
	for _, ev := range evs[start:] {
		if ev.ok {
			e.window = append(e.window, ev.x)
		}
	}
	for i := 1; i < len(e.window); i++ {
		e.jitter += math.Abs(e.window[i] - e.window[i-1])
	}
	if len(e.window) >= 2 {
		e.jitter /= float64(len(e.window) - 1)
	}

	if len(p.Buckets) > 0 {
		e.cumulative = make([]int64, len(p.Buckets)+1)
		for i, b := range p.Buckets {
			for _, x := range xs {
				if x <= b {
					e.cumulative[i]++
				}
			}
		}
		e.cumulative[len(p.Buckets)] = int64(len(xs))
	}
	e.successes = slices.Clone(xs)
	slices.Sort(e.successes)
	return e
}

// ewmaClosedForm evaluates
//
//	EWMA_n = w0*x0 + Σ_{i≥1} alpha_i x_i Π_{j>i}(1-alpha_j),  w0 = Π_{j≥1}(1-alpha_j)
//
// with alpha_i = 1 - exp(-dt_i/tau), dt_i the time since the previous
// success (times are non-decreasing), tau = halfLife/ln 2.
func ewmaClosedForm(xs []float64, ts []int64, halfLife time.Duration) float64 {
	tau := halfLife.Seconds() / math.Ln2
	n := len(xs)
	alpha := make([]float64, n)
	decay := make([]float64, n) // decay[i] = 1 - alpha_i
	for i := 1; i < n; i++ {
		dt := float64(ts[i]-ts[i-1]) / 1e9
		alpha[i] = -math.Expm1(-dt / tau)
		decay[i] = math.Exp(-dt / tau)
	}
	var sum float64
	suffix := 1.0 // Π_{j>i}(1-alpha_j)
	for i := n - 1; i >= 1; i-- {
		sum += alpha[i] * xs[i] * suffix
		suffix *= decay[i]
	}
	return sum + suffix*xs[0]
}

// r7 is an independent implementation of the R-7 percentile of an
// ascending slice: h = (n-1)*p/100, x[floor h] + (h-floor h)*(x[floor h+1]-x[floor h]).
func r7(sorted []float64, p float64) float64 {
	n := len(sorted)
	h := float64(n-1) * p / 100
	fl := math.Floor(h)
	k := int(fl)
	if k+1 >= n {
		return sorted[k]
	}
	return sorted[k] + float64((h-fl)*(sorted[k+1]-sorted[k]))
}

// relErr is |got-want|/|want|, or |got-want| when want is 0.
func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

// ringChronological returns s's ring oldest first.
func ringChronological(s *State) []float64 {
	return s.appendChronological(nil)
}

// sameFloats reports whether a and b are equal element by element, NaN
// equal to NaN.
func sameFloats(a, b []float64) bool {
	return slices.EqualFunc(a, b, func(x, y float64) bool {
		return x == y || (math.IsNaN(x) && math.IsNaN(y))
	})
}

// sketchBytes encodes a sketch, for exact comparisons.
func sketchBytes(s *State) []byte {
	var b []byte
	s.Sketch.Encode(&b, false)
	return b
}
