package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func runProbe(t *testing.T, conf, name string) (string, int) {
	t.Helper()
	out, err := exec.Command(binPath, "-config", writeConf(t, conf), "-probe", name).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

// -probe NAME probes one service once and prints its trace: exit 0 on
// success, 1 on a failed probe, 2 on a bad config or name; secrets never
// appear.
func TestBinaryProbeTrace(t *testing.T) {
	srv := target(t)
	refused := refusedAddr(t)
	conf := `[[inputs.service_latency]]
[[inputs.service_latency.service]]
  name = "ok"
  url = "` + strings.Replace(srv.URL, "http://", "http://u:SECRETPW@", 1) + `/health"
  bearer_token = "SECRETBT"
[[inputs.service_latency.service]]
  name = "down"
  url = "tcp://` + refused + `"
`
	valid := strings.Replace(conf, `  bearer_token = "SECRETBT"`+"\n", "", 1)
	out, code := runProbe(t, valid, "ok")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "options in effect")
	require.Contains(t, out, "outcome:\n  success")
	require.Contains(t, out, "field latency = ")
	require.Contains(t, out, "tag   result = success")
	require.NotContains(t, out, "SECRETPW")

	out, code = runProbe(t, conf, "ok")
	require.Equal(t, 2, code, "bearer token and URL credentials together are a config error: %s", out)
	require.Contains(t, out, "bearer_token")
	require.NotContains(t, out, "SECRETBT")
	require.NotContains(t, out, "SECRETPW")

	out, code = runProbe(t, valid, "down")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "connection_failed")
	require.Contains(t, out, "field result_code = 3")

	out, code = runProbe(t, valid, "nope")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, `no service named "nope"`)

	out, code = runProbe(t, "[[inputs.service_latency]]\n  bogus = 1\n", "ok")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, `"bogus"`)
	for _, s := range []string{"SECRETPW", "SECRETBT"} {
		require.NotContains(t, out, s)
	}
}
