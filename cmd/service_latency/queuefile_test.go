package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// TestBinaryQueueFileSurvivesRestartDuringOutage: Redis goes down, the
// agent queues, exits (stdin EOF) and starts again while Redis is still
// down; when Redis answers, the new process replays what both processes
// queued: the shared count is every probe taken, once.
func TestBinaryQueueFileSurvivesRestartDuringOutage(t *testing.T) {
	rs := redistest.Start(t)
	srv := target(t)
	queue := filepath.Join(t.TempDir(), "queue.json")
	conf := redisAgentConf(t, rs, srv.URL, fmt.Sprintf("    timeout = \"500ms\"\n    queue_file = %q", queue))
	p := start(t, "-config", conf, "-poll_interval_disabled")
	probes := int64(0)
	gather := func(p *proc) map[string]int64 {
		t.Helper()
		probes++
		out := map[string]int64{}
		for name, m := range p.gatherN(2) {
			out[name] = fieldOf[int64](t, m, "latency_count")
		}
		return out
	}
	for range 2 {
		for _, c := range gather(p) {
			require.Equal(t, probes, c)
		}
	}
	rs.SaveAndKill() // a persisting Redis crashes: the first two probes survive
	for range 3 {
		gather(p)
	}
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
	require.Contains(t, p.stderr.String(), "kept in queue file "+queue)
	require.NotContains(t, p.stderr.String(), "they are lost")

	p2 := start(t, "-config", conf, "-poll_interval_disabled")
	for range 2 {
		gather(p2) // still down: its own local state
	}
	require.Eventually(t, func() bool { return strings.Contains(p2.stderr.String(), "6 observations from queue file") }, 5*time.Second, 10*time.Millisecond, p2.stderr.String())
	rs.Restart()
	for name, c := range gather(p2) {
		require.Equal(t, probes, c, "%s: every probe of both processes, once", name)
	}
	for name, c := range gather(p2) {
		require.Equal(t, probes, c, name)
	}
	require.NoError(t, p2.stdin.Close())
	require.Equal(t, 0, p2.wait(), p2.stderr.String())
	requireLevelPrefixes(t, p2.stderr.String())
}
