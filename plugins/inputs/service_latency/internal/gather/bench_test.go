package gather

import (
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// benchAccumulator drops what it is given; with build set it first turns
// every call into a telegraf.Metric, as Telegraf's agent (and the execd
// shim) does.
type benchAccumulator struct {
	build bool
	n     int
}

func (a *benchAccumulator) add(name string, f map[string]interface{}, tags map[string]string, t []time.Time) {
	a.n++
	if a.build {
		_ = metric.New(name, tags, f, t[0])
	}
}

func (a *benchAccumulator) AddFields(n string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(n, f, tags, t)
}

func (a *benchAccumulator) AddGauge(n string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(n, f, tags, t)
}

func (a *benchAccumulator) AddCounter(n string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(n, f, tags, t)
}

func (a *benchAccumulator) AddSummary(n string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(n, f, tags, t)
}

func (a *benchAccumulator) AddHistogram(n string, f map[string]interface{}, tags map[string]string, t ...time.Time) {
	a.add(n, f, tags, t)
}

func (a *benchAccumulator) AddMetric(telegraf.Metric)                   { a.n++ }
func (*benchAccumulator) SetPrecision(time.Duration)                    {}
func (*benchAccumulator) AddError(error)                                {}
func (*benchAccumulator) WithTracking(int) telegraf.TrackingAccumulator { return nil }

// benchmarkEmit builds the fields of one HTTP service (window 100 +
// sketch, the default percentiles, a warm state, a successful probe with
// its phase fields) and hands them to acc: what Gather does per service
// once the probes are back.
func benchmarkEmit(b *testing.B, acc *benchAccumulator) {
	pr, err := probe.New("http://127.0.0.1:9/health", 5*time.Second, probe.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer pr.Close()
	params := stats.Params{Window: 100, HalfLife: 5 * time.Minute}
	t := NewTarget("api", "http://127.0.0.1:9/health", pr, params, []float64{50, 90, 95, 99}, nil)
	st := stats.NewState(t.Params)
	now := time.Unix(1_700_000_000, 0)
	for i := range 1000 {
		now = now.Add(10 * time.Second)
		st.Observe(now, i%20 != 19, 0.02+float64(i%17)*0.001, t.Params)
	}
	r := probe.Result{
		Outcome: probe.Success,
		Latency: 21 * time.Millisecond,
		Fields: []probe.Field{
			{Key: "tcp_connect", Value: 0.0001},
			{Key: "time_to_first_byte", Value: 0.0205},
			{Key: "body_transfer", Value: 0.00001},
			{Key: "http_response_code", Value: int64(200)},
		},
	}
	var snap stats.Snapshot
	emit := func() {
		st.Snapshot(t.Percentiles, &snap)
		tags, fields := fieldsOf(t, &r, &snap, Shape{})
		acc.AddFields("service_latency", fields, tags, now)
	}
	emit() // warm-up: sizes the snapshot's slices
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		emit()
	}
}

// BenchmarkEmit: the fields and tags of one service, handed to an
// accumulator that drops them.
func BenchmarkEmit(b *testing.B) { benchmarkEmit(b, &benchAccumulator{}) }

// BenchmarkEmitMetric: the same, plus the telegraf.Metric that Telegraf
// builds from them.
func BenchmarkEmitMetric(b *testing.B) { benchmarkEmit(b, &benchAccumulator{build: true}) }
