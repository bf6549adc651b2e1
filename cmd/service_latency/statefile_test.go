package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func stateFileConf(t *testing.T, url, stateFile string) string {
	return writeConf(t, fmt.Sprintf(`[[inputs.service_latency]]
  timeout = "2s"
  state_file = %q
[[inputs.service_latency.service]]
  name = "api"
  url = "%s/health"
`, stateFile, url))
}

// TestBinaryStateFileSurvivesRestart: latency_count continues across
// processes, whether they end on stdin EOF, SIGTERM or after -once.
func TestBinaryStateFileSurvivesRestart(t *testing.T) {
	srv := target(t)
	stateFile := filepath.Join(t.TempDir(), "service_latency.state")
	conf := stateFileConf(t, srv.URL, stateFile)

	p := start(t, "-config", conf, "-poll_interval_disabled")
	for i := 1; i <= 3; i++ {
		require.Equal(t, int64(i), fieldOf[int64](t, p.gatherN(1)["api"], "latency_count"))
	}
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())

	p = start(t, "-config", conf, "-poll_interval_disabled")
	m := p.gatherN(1)["api"]
	require.Equal(t, int64(4), fieldOf[int64](t, m, "latency_count"), "the count continues in a new process")
	require.Equal(t, int64(4), fieldOf[int64](t, m, "probes"))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(), p.stderr.String())

	out, err := exec.Command(binPath, "-config", conf, "-once").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "latency_count=5i")

	// A new URL under the same name keeps the state.
	moved := writeConf(t, fmt.Sprintf("[[inputs.service_latency]]\n  state_file = %q\n[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"%s/moved\"\n", stateFile, srv.URL))
	out, err = exec.Command(binPath, "-config", moved, "-once").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "latency_count=6i")
	require.NotContains(t, string(out), "\nservice_latency,")
}

// TestBinaryCorruptStateFileIsKeptAside: a corrupt file is renamed aside,
// never overwritten, and the plugin runs on from the current sample.
func TestBinaryCorruptStateFileIsKeptAside(t *testing.T) {
	srv := target(t)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "service_latency.state")
	const garbage = `{"version": 1, "services": {"api": ` // truncated
	require.NoError(t, os.WriteFile(stateFile, []byte(garbage), 0o600))
	conf := stateFileConf(t, srv.URL, stateFile)

	p := start(t, "-config", conf, "-poll_interval_disabled")
	m := p.gatherN(1)["api"]
	require.Equal(t, int64(1), fieldOf[int64](t, m, "latency_count"))
	require.Equal(t, fieldOf[float64](t, m, "latency"), fieldOf[float64](t, m, "latency_avg"), "the current sample")
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "W! state file "+stateFile) }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, int64(2), fieldOf[int64](t, p.gatherN(1)["api"], "latency_count"), "and runs on")
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
	requireLevelPrefixes(t, p.stderr.String())

	aside, err := filepath.Glob(stateFile + ".corrupt-*")
	require.NoError(t, err)
	require.Len(t, aside, 1)
	kept, err := os.ReadFile(aside[0])
	require.NoError(t, err)
	require.Equal(t, garbage, string(kept), "nothing is lost")
	require.Contains(t, p.stderr.String(), aside[0])

	out, err := exec.Command(binPath, "-config", conf, "-once").Output()
	require.NoError(t, err)
	require.Contains(t, string(out), "latency_count=3i", "the new file is good")
}

// TestBinaryReloadRefusesAStoreChange: a SIGHUP whose config changes the
// store settings is refused; the old config and its state go on.
func TestBinaryReloadRefusesAStoreChange(t *testing.T) {
	srv := target(t)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "one.state")
	conf := stateFileConf(t, srv.URL, stateFile)
	p := start(t, "-config", conf, "-poll_interval_disabled")
	p.gatherN(1)
	other := stateFileConf(t, srv.URL, filepath.Join(dir, "two.state"))
	data, err := os.ReadFile(other)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, data, 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "E! SIGHUP: config not reloaded") }, 5*time.Second, 10*time.Millisecond)
	require.Contains(t, p.stderr.String(), "state_file")
	require.Equal(t, int64(2), fieldOf[int64](t, p.gatherN(1)["api"], "latency_count"))
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
	require.FileExists(t, stateFile)
	require.NoFileExists(t, filepath.Join(dir, "two.state"))
}
