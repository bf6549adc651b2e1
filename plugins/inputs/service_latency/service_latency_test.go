package service_latency

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"encoding/json"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

func TestRunningMeanEqualsArithmeticMean(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
timeout = "2s"
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`/health"
`))
	var samples []float64
	for i := range 25 {
		srv.delay.Store(int64(time.Duration(i%5) * time.Millisecond))
		m := gather(t, p)["api"]
		require.NotNil(t, m)
		samples = append(samples, field[float64](t, m, "latency"))
		var sum float64
		for _, s := range samples {
			sum += s
		}
		mean := sum / float64(len(samples))
		require.InEpsilon(t, mean, field[float64](t, m, "latency_avg"), 1e-9)
		require.Equal(t, int64(len(samples)), field[int64](t, m, "latency_count"))
		require.Equal(t, int64(len(samples)), field[int64](t, m, "probes"))
		require.Equal(t, "success", m.Tags()["result"])
		require.Equal(t, int64(0), field[int64](t, m, "result_code"))
		require.Equal(t, int64(200), field[int64](t, m, "http_response_code"))
	}
}

func TestFailuresStayOutOfTheMean(t *testing.T) {
	srv := newDelayServer(t, time.Millisecond)
	p, _ := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	var sum float64
	var n, fails, consec int64
	pattern := []bool{true, true, false, false, false, true, false, true}
	for i, ok := range pattern {
		if ok {
			srv.status.Store(http.StatusOK)
		} else {
			srv.status.Store(http.StatusServiceUnavailable)
		}
		m := gather(t, p)["api"]
		if ok {
			n++
			consec = 0
			sum += field[float64](t, m, "latency")
			require.Equal(t, "success", m.Tags()["result"])
		} else {
			fails++
			consec++
			require.False(t, m.HasField("latency"), "a failed probe has no latency")
			require.Equal(t, "response_status_code_mismatch", m.Tags()["result"])
			require.Equal(t, int64(6), field[int64](t, m, "result_code"))
			require.Equal(t, int64(503), field[int64](t, m, "http_response_code"))
		}
		require.Equal(t, n, field[int64](t, m, "latency_count"), "gather %d", i)
		require.Equal(t, fails, field[int64](t, m, "failures"))
		require.Equal(t, consec, field[int64](t, m, "consecutive_failures"))
		require.Equal(t, int64(i+1), field[int64](t, m, "probes"))
		require.InEpsilon(t, sum/float64(n), field[float64](t, m, "latency_avg"), 1e-9)
	}
}

func TestNoAverageBeforeFirstSuccess(t *testing.T) {
	p, _ := newPlugin(t, conf(`
timeout = "1s"
[[inputs.service_latency.service]]
  name = "down"
  url = "tcp://`+refusedAddr(t)+`"
`))
	for range 2 {
		m := gather(t, p)["down"]
		require.Equal(t, "connection_failed", m.Tags()["result"])
		require.Equal(t, int64(3), field[int64](t, m, "result_code"))
		require.Equal(t, int64(0), field[int64](t, m, "latency_count"))
		for _, f := range []string{"latency", "latency_avg", "latency_min", "latency_ewma", "latency_p50", "latency_lifetime_p50", "jitter"} {
			require.False(t, m.HasField(f), "field %s must be absent before the first success", f)
		}
		require.Equal(t, 0.0, field[float64](t, m, "availability"))
	}
}

func TestMalformedStateFallsBackToCurrentSample(t *testing.T) {
	srv := newDelayServer(t, 0)
	other := newDelayServer(t, 0)
	p, log := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
[[inputs.service_latency.service]]
  name = "other"
  url = "`+other.URL+`"
`))
	for range 3 {
		gather(t, p)
	}
	// corrupt rewrites one key of the service's stored state (through
	// Telegraf's SetState, as a damaged statefile would).
	corrupt := func(key, value string) func() {
		return func() {
			d, ok := p.GetState().(*store.Dump)
			require.True(t, ok)
			var e map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(d.Services["api"], &e))
			e[key] = json.RawMessage(value)
			raw, err := json.Marshal(e)
			require.NoError(t, err)
			d.Services["api"] = raw
			require.NoError(t, p.SetState(d))
		}
	}
	corruptions := map[string]func(){
		"non-finite mean":    corrupt("mean", "1e999"),
		"count out of range": corrupt("count", "-5"),
		"mean not a number":  corrupt("mean", `"x"`),
	}
	for name, corrupt := range corruptions {
		t.Run(name, func(t *testing.T) {
			before := len(log.Warnings())
			corrupt()
			ms := gather(t, p)
			m := ms["api"]
			require.Equal(t, int64(1), field[int64](t, m, "latency_count"))
			require.Equal(t, field[float64](t, m, "latency"), field[float64](t, m, "latency_avg"))
			warns := log.Warnings()[before:]
			require.Len(t, warns, 1, "one warning for that service")
			require.Contains(t, warns[0], `"api"`)
			// the other service is untouched
			require.Greater(t, field[int64](t, ms["other"], "latency_count"), int64(3))
			// and the next gather builds on the fresh state
			require.Equal(t, int64(2), field[int64](t, gather(t, p)["api"], "latency_count"))
		})
	}
}

func TestInjectedDelayShowsUpInLatency(t *testing.T) {
	const delay = 60 * time.Millisecond
	srv := newDelayServer(t, delay)
	p, _ := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	for range 3 {
		lat := field[float64](t, gather(t, p)["api"], "latency")
		require.GreaterOrEqual(t, lat, delay.Seconds())
		require.Less(t, lat, (delay + 25*time.Millisecond).Seconds(), "latency %.4fs for a %s delay", lat, delay)
	}
}

func TestTimeoutEndsTheProbeNearTheTimeout(t *testing.T) {
	srv := newDelayServer(t, 3*time.Second)
	p, _ := newPlugin(t, conf(`
timeout = "300ms"
[[inputs.service_latency.service]]
  name = "slow"
  url = "`+srv.URL+`"
`))
	start := time.Now()
	m := gather(t, p)["slow"]
	elapsed := time.Since(start)
	require.Equal(t, "timeout", m.Tags()["result"])
	require.Equal(t, int64(4), field[int64](t, m, "result_code"))
	require.False(t, m.HasField("latency"))
	require.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
	require.Less(t, elapsed, 500*time.Millisecond, "gather must return near the timeout")
}

func TestProbesRunConcurrently(t *testing.T) {
	const delay = 200 * time.Millisecond
	srv := newDelayServer(t, delay)
	var b strings.Builder
	b.WriteString("timeout = \"2s\"\nmax_concurrency = 64\n")
	for i := range 30 {
		b.WriteString("[[inputs.service_latency.service]]\n  name = \"s" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\"\n  url = \"" + srv.URL + "/" + string(rune('a'+i%26)) + "\"\n")
	}
	p, _ := newPlugin(t, conf(b.String()))
	start := time.Now()
	ms := gather(t, p)
	elapsed := time.Since(start)
	require.Len(t, ms, 30)
	for _, m := range ms {
		require.Equal(t, "success", m.Tags()["result"])
	}
	// sequential would be 30 × 200 ms = 6 s
	require.Less(t, elapsed, 3*delay, "30 probes of %s took %s", delay, elapsed)
}

func TestMaxConcurrencyBoundsProbesInFlight(t *testing.T) {
	const delay = 100 * time.Millisecond
	srv := newDelayServer(t, delay)
	var b strings.Builder
	b.WriteString("timeout = \"5s\"\nmax_concurrency = 2\n")
	for i := range 6 {
		b.WriteString("[[inputs.service_latency.service]]\n  url = \"" + srv.URL + "/" + string(rune('a'+i)) + "\"\n")
	}
	p, _ := newPlugin(t, conf(b.String()))
	start := time.Now()
	require.Len(t, gather(t, p), 6)
	// 6 probes, 2 at once → at least 3 rounds
	require.GreaterOrEqual(t, time.Since(start), 3*delay)
}

func TestMetricShape(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  url = "http://user:secret@`+strings.TrimPrefix(srv.URL, "http://")+`/x"
  tags = { env = "prod" }
`))
	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	got := acc.GetTelegrafMetrics()
	require.Len(t, got, 1)
	m := got[0]
	server := "http://user@" + strings.TrimPrefix(srv.URL, "http://") + "/x"
	require.Equal(t, map[string]string{
		"service": server, "probe": "http", "server": server, "result": "success", "env": "prod",
	}, m.Tags())
	require.NotContains(t, fmt.Sprint(m.Tags(), m.Fields()), "secret")
	lat := field[float64](t, m, "latency")
	want := metric.New(Measurement, m.Tags(), map[string]interface{}{
		"latency": lat, "latency_avg": lat, "latency_count": int64(1), "result_code": int64(0),
		"probes": int64(1), "failures": int64(0), "consecutive_failures": int64(0), "http_response_code": int64(200),
	}, time.Unix(0, 0))
	// compare the issue-2 core; statistics fields are checked in their own tests
	core := metric.New(Measurement, m.Tags(), map[string]interface{}{}, time.Unix(0, 0))
	for _, f := range want.FieldList() {
		v, ok := m.GetField(f.Key)
		require.True(t, ok, f.Key)
		core.AddField(f.Key, v)
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{want}, []telegraf.Metric{core}, testutil.IgnoreTime())
}

func TestSampleConfigsAreTheSame(t *testing.T) {
	root, err := os.ReadFile("../../../sample.conf")
	require.NoError(t, err)
	require.Equal(t, sampleConfig, string(root), "root sample.conf and the embedded one differ: copy plugins/inputs/service_latency/sample.conf to the root")
	p, err := ParseConfig(root)
	require.NoError(t, err, "the sample config must be valid")
	require.NotEmpty(t, p.ServiceNames())
	p.Stop()
}

func TestOutcomeNamesMatchHTTPResponse(t *testing.T) {
	want := map[string]int{
		"success": 0, "response_string_mismatch": 1, "body_read_error": 2, "connection_failed": 3,
		"timeout": 4, "dns_error": 5, "response_status_code_mismatch": 6,
	}
	for name, code := range want {
		require.Equal(t, name, probe.Outcome(code).String())
	}
}
