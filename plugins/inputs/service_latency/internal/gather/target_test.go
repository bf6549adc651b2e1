package gather

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// TestNewTargetSharesNames: targets with the same percentiles and buckets
// share one copy of their names; other sets get their own, right ones.
func TestNewTargetSharesNames(t *testing.T) {
	params := stats.Params{Buckets: []float64{0.1, 1}}
	a := NewTarget("a", "x", nil, params, []float64{50, 99.9}, nil)
	b := NewTarget("b", "x", nil, params, []float64{50, 99.9}, nil)
	require.Equal(t, []string{"latency_p50", "latency_p99_9"}, a.fieldNames.window)
	require.Equal(t, []string{"latency_lifetime_p50", "latency_lifetime_p99_9"}, a.fieldNames.lifetime)
	require.Equal(t, []string{"0.1", "1", "+Inf"}, a.le)
	require.Same(t, &a.fieldNames.window[0], &b.fieldNames.window[0], "one copy")
	require.Same(t, &a.le[0], &b.le[0])

	c := NewTarget("c", "x", nil, stats.Params{}, []float64{50, 90}, nil)
	require.Equal(t, []string{"latency_p50", "latency_p90"}, c.fieldNames.window)
	require.Nil(t, c.le, "no buckets, no le")
	d := NewTarget("d", "x", nil, stats.Params{Buckets: []float64{0.1, 2}}, []float64{50, 99.9}, nil)
	require.Equal(t, []string{"0.1", "2", "+Inf"}, d.le, "other buckets, other labels")
	require.Equal(t, a.fieldNames, d.fieldNames)
}
