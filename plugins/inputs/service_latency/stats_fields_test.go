package service_latency

import (
	"math"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// The statistics fields as emitted, against a brute-force computation over
// the samples the plugin itself reported.
func TestStatisticsFieldsMatchBruteForce(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
window = 5
percentiles = [50.0, 99.9]
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	var all []float64
	var window []float64 // NaN = failure
	for i := range 12 {
		ok := i%4 != 3
		if ok {
			srv.status.Store(http.StatusOK)
			srv.delay.Store(int64(time.Duration(i%3) * time.Millisecond))
		} else {
			srv.status.Store(http.StatusInternalServerError)
		}
		m := gather(t, p)["api"]
		if ok {
			all = append(all, field[float64](t, m, "latency"))
			window = append(window, field[float64](t, m, "latency"))
		} else {
			window = append(window, math.NaN())
		}
		if len(window) > 5 {
			window = window[1:]
		}
		minV, maxV := slices.Min(all), slices.Max(all)
		require.Equal(t, minV, field[float64](t, m, "latency_min"))
		require.Equal(t, maxV, field[float64](t, m, "latency_max"))
		if len(all) >= 2 {
			var mean, ss float64
			for _, x := range all {
				mean += x
			}
			mean /= float64(len(all))
			for _, x := range all {
				ss += (x - mean) * (x - mean)
			}
			require.InEpsilon(t, math.Sqrt(ss/float64(len(all)-1)), field[float64](t, m, "latency_stddev"), 1e-9)
		}
		var succ []float64
		for _, x := range window {
			if !math.IsNaN(x) {
				succ = append(succ, x)
			}
		}
		require.InDelta(t, float64(len(succ))/float64(len(window)), field[float64](t, m, "availability"), 1e-12)
		if len(succ) >= 2 {
			var j float64
			for k := 1; k < len(succ); k++ {
				j += math.Abs(succ[k] - succ[k-1])
			}
			require.InEpsilon(t, j/float64(len(succ)-1), field[float64](t, m, "jitter"), 1e-9)
		}
		sorted := slices.Clone(succ)
		sort.Float64s(sorted)
		require.InDelta(t, r7(sorted, 50), field[float64](t, m, "latency_p50"), 1e-15)
		require.InDelta(t, r7(sorted, 99.9), field[float64](t, m, "latency_p99_9"), 1e-15)
		lp := field[float64](t, m, "latency_lifetime_p50")
		require.GreaterOrEqual(t, lp, minV)
		require.LessOrEqual(t, lp, maxV)
		require.True(t, m.HasField("latency_ewma"))
		require.False(t, m.HasField("latency_p90"), "only the configured percentiles")
	}
}

func r7(sorted []float64, p float64) float64 {
	h := float64(len(sorted)-1) * p / 100
	lo := math.Floor(h)
	if int(lo)+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	return sorted[int(lo)] + (h-lo)*(sorted[int(lo)+1]-sorted[int(lo)])
}

func TestPerServiceOverrides(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
window = 100
[[inputs.service_latency.service]]
  name = "small"
  url = "`+srv.URL+`/a"
  window = 2
  percentiles = [75.0]
[[inputs.service_latency.service]]
  name = "default"
  url = "`+srv.URL+`/b"
`))
	gather(t, p)
	srv.status.Store(http.StatusInternalServerError)
	gather(t, p)
	gather(t, p)
	ms := gather(t, p)
	// small: window of 2 holds two failures; default: 1 success in 4
	require.Equal(t, 0.0, field[float64](t, ms["small"], "availability"))
	require.Equal(t, 0.25, field[float64](t, ms["default"], "availability"))
	require.True(t, ms["small"].HasField("latency_lifetime_p75"))
	require.False(t, ms["small"].HasField("latency_lifetime_p50"))
	require.True(t, ms["default"].HasField("latency_lifetime_p50"))
}

func TestHistogramMeasurement(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
histogram_buckets = [0.02, 10.0]
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
  tags = { team = "x" }
`))
	var acc testutil.Accumulator
	for _, d := range []time.Duration{0, 40 * time.Millisecond, 0} {
		srv.delay.Store(int64(d))
		acc.ClearMetrics()
		require.NoError(t, p.Gather(&acc))
	}
	counts := map[string]int64{}
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() != HistogramMeasurement {
			continue
		}
		require.Equal(t, "api", m.Tags()["service"])
		require.Equal(t, "x", m.Tags()["team"])
		require.NotContains(t, m.Tags(), "result")
		counts[m.Tags()["le"]] = field[int64](t, m, "count")
	}
	require.Equal(t, map[string]int64{"0.02": 2, "10": 3, "+Inf": 3}, counts)
}

// The README's Metrics section must list every tag and field the code
// emits: run every kind of probe, collect what comes out, and look each name
// up in the section.
func TestReadmeListsEveryFieldAndTag(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	sec := string(readme)
	start := strings.Index(sec, "## Metrics")
	require.GreaterOrEqual(t, start, 0)
	sec = sec[start:]
	if end := strings.Index(sec[3:], "\n## "); end >= 0 {
		sec = sec[:end+3]
	}
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
histogram_buckets = [0.1]
[[inputs.service_latency.service]]
  name = "http"
  url = "`+srv.URL+`"
[[inputs.service_latency.service]]
  name = "tcp"
  url = "tcp://`+strings.TrimPrefix(srv.URL, "http://")+`"
`))
	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	require.NoError(t, p.Gather(&acc))
	names := map[string]bool{}
	for _, m := range acc.GetTelegrafMetrics() {
		names[m.Name()] = true
		for k := range m.Tags() {
			names[k] = true
		}
		for k := range m.Fields() {
			names[k] = true
		}
	}
	for n := range names {
		require.Regexp(t, `(?m)(^|[\s(,`+"`"+`])`+regexp.QuoteMeta(n)+`([\s),:`+"`"+`]|$)`, sec, "README Metrics section does not list %q", n)
	}
}

func TestReadmeEmbedsSampleConf(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	require.Contains(t, string(readme), "```toml @sample.conf\n"+sampleConfig+"```\n",
		"README.md's configuration block differs from sample.conf (make docs regenerates it)")
}
