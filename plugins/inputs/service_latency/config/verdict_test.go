package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

const verdictSvc = "[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"tcp://127.0.0.1:1\"\n"

func compileText(t *testing.T, plugin, service string) (*Spec, error) {
	t.Helper()
	f, err := Parse([]byte("[[inputs.service_latency]]\n" + plugin + verdictSvc + service))
	require.NoError(t, err)
	spec, err := Compile(&f.Config)
	if spec != nil {
		t.Cleanup(spec.Close)
	}
	return spec, err
}

func TestVerdictDefaultsAndOverrides(t *testing.T) {
	spec, err := compileText(t, "", "")
	require.NoError(t, err)
	v := spec.Targets[0].Params.Verdict
	require.Equal(t, stats.VerdictParams{FailureThreshold: 3, SuccessThreshold: 2, Statistic: stats.Statistic{Kind: stats.StatPercentile, Percentile: 95}}, v)

	spec, err = compileText(t, "failure_threshold = 5\nsuccess_threshold = 4\ndegraded_latency = \"250ms\"\n", "")
	require.NoError(t, err)
	v = spec.Targets[0].Params.Verdict
	require.Equal(t, 5, v.FailureThreshold)
	require.Equal(t, 4, v.SuccessThreshold)
	require.Equal(t, 0.25, v.DegradedLatency)
	require.Equal(t, "p95", v.Statistic.String())

	spec, err = compileText(t, "failure_threshold = 5\ndegraded_latency = \"250ms\"\n",
		"  failure_threshold = 1\n  success_threshold = 7\n  degraded_latency = \"0s\"\n  degraded_statistic = \"ewma\"\n")
	require.NoError(t, err)
	v = spec.Targets[0].Params.Verdict
	require.Equal(t, stats.VerdictParams{FailureThreshold: 1, SuccessThreshold: 7, Statistic: stats.Statistic{Kind: stats.StatEWMA}}, v,
		"every key overridden; degraded_latency = \"0s\" turns the plugin-wide objective off")

	for in, want := range map[string]string{"p99.9": "p99_9", "p99_9": "p99_9", "avg": "avg", "ewma": "ewma", "p50": "p50"} {
		spec, err = compileText(t, "percentiles = [50.0, 99.9]\n", "  degraded_latency = \"1s\"\n  degraded_statistic = \""+in+"\"\n")
		require.NoError(t, err, in)
		require.Equal(t, want, spec.Targets[0].Params.Verdict.Statistic.String(), in)
	}
}

func TestVerdictValidation(t *testing.T) {
	cases := []struct {
		name, plugin, service string
		service0              bool // the error is about the service
		key, msg              string
	}{
		{"zero failure threshold", "failure_threshold = 0\n", "", false, "failure_threshold", "between 1 and"},
		{"negative success threshold", "success_threshold = -1\n", "", false, "success_threshold", "between 1 and"},
		{"service failure threshold", "", "  failure_threshold = 1001\n", true, "failure_threshold", "between 1 and 1000"},
		{"negative objective", "degraded_latency = \"-1s\"\n", "", false, "degraded_latency", "negative"},
		{"service negative objective", "", "  degraded_latency = \"-5ms\"\n", true, "degraded_latency", "negative"},
		{"unknown statistic", "degraded_statistic = \"median\"\n", "", false, "degraded_statistic", `"median"`},
		{"percentile out of range", "degraded_statistic = \"p100\"\n", "", false, "degraded_statistic", "between 0 and 100"},
		{"percentile not computed", "percentiles = [50.0]\ndegraded_latency = \"1s\"\n", "", false, "degraded_statistic", "not computed"},
		{"service percentile not computed", "", "  percentiles = [50.0, 99.0]\n  degraded_latency = \"1s\"\n", true, "degraded_statistic", `"p95" is not computed`},
		{"service statistic not computed", "", "  degraded_statistic = \"p99.9\"\n", true, "degraded_statistic", "not computed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileText(t, tc.plugin, tc.service)
			require.Error(t, err)
			var ce *Error
			require.True(t, errors.As(err, &ce), "%T: %v", err, err)
			require.Equal(t, tc.key, ce.Key, err.Error())
			if tc.service0 {
				require.Equal(t, 0, ce.Service)
				require.Equal(t, "api", ce.Name)
			} else {
				require.Equal(t, -1, ce.Service)
			}
			require.Contains(t, err.Error(), tc.msg)
			require.True(t, strings.HasPrefix(err.Error(), map[bool]string{true: `service "api": `, false: tc.key}[tc.service0]), err.Error())
		})
	}
}
