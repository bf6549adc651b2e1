package service_latency

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

func infos(l *testutil.CaptureLogger) []string {
	var out []string
	for _, m := range l.Messages() {
		if m.Level == 'I' {
			out = append(out, m.Text)
		}
	}
	return out
}

func statusOf(t *testing.T, m telegraf.Metric) (string, int64) {
	t.Helper()
	return field[string](t, m, "status"), field[int64](t, m, "status_code")
}

// A service failing 2 rounds stays up (threshold 3), 3 make it down, one
// success leaves it down, 2 bring it up: one warning, one info line.
func TestVerdictDoesNotFlap(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, log := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	type want struct {
		ok     bool
		status string
		code   int64
	}
	seq := []want{
		{true, "unknown", 0}, // not decided until 2 good rounds
		{true, "up", 1},
		{false, "up", 1}, {false, "up", 1}, // 2 failed rounds: still up
		{false, "down", 3},
		{true, "down", 3}, // one success: still down
		{true, "up", 1},
		{false, "up", 1}, {true, "up", 1}, // one failure is no flap
	}
	var sinceDown float64
	for i, w := range seq {
		srv.status.Store(map[bool]int64{true: http.StatusOK, false: http.StatusServiceUnavailable}[w.ok])
		m := gather(t, p)["api"]
		st, code := statusOf(t, m)
		require.Equal(t, w.status, st, "round %d", i+1)
		require.Equal(t, w.code, code, "round %d", i+1)
		since := field[float64](t, m, "status_since")
		switch i {
		case 0, 1, 4, 6:
			require.Zero(t, since, "round %d: the round that changed the status", i+1)
		case 5:
			require.Positive(t, since, "down since the round before")
			sinceDown = since
		}
	}
	require.Positive(t, sinceDown)
	warns := log.Warnings()
	require.Len(t, warns, 1, "one warning for the change to down: %v", warns)
	require.Regexp(t, `^W! \[\] service "api" \(http://127\.0\.0\.1:\d+\) failing: response_status_code_mismatch: .*; status down after 3 failed rounds in a row \(was up for \d`, warns[0])
	var ups []string
	for _, l := range infos(log) {
		if strings.Contains(l, `service "api"`) {
			ups = append(ups, l)
		}
	}
	require.Len(t, ups, 1, "%v", ups)
	require.Regexp(t, `^service "api" \(.*\) up again after 2 good rounds in a row \(was down for \d`, ups[0])
}

// degraded when the window's p95 is above degraded_latency (3 slow rounds
// in a row), back up after 2 good ones; string_fields = false drops the
// status string, status_code stays.
func TestVerdictDegraded(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, log := newPlugin(t, conf(`
window = 3
degraded_latency = "40ms"
string_fields = false
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	code := func() int64 {
		m := gather(t, p)["api"]
		require.False(t, m.HasField("status"), "a string field")
		return field[int64](t, m, "status_code")
	}
	require.Equal(t, []int64{0, 1}, []int64{code(), code()})
	srv.delay.Store(int64(80 * time.Millisecond))
	// p95 of the window is above 40 ms from the first slow round on
	require.Equal(t, []int64{1, 1, 2, 2}, []int64{code(), code(), code(), code()})
	require.Len(t, log.Warnings(), 1)
	require.Regexp(t, `^W! \[\] service "api" \(.*\) degraded: p95 \d+(\.\d+)?ms above degraded_latency 40ms \(was up for`, log.Warnings()[0])
	srv.delay.Store(0)
	// window = 3: the first two fast rounds still have a slow sample in
	// the window (p95 above 40 ms); the third and fourth are good rounds
	got := []int64{code(), code(), code(), code(), code()}
	require.Equal(t, []int64{2, 2, 2, 1, 1}, got, "up after 2 good rounds in a row once the window is fast again")
	require.Len(t, log.Warnings(), 1)
	require.Regexp(t, `up again after \d+ good rounds in a row \(was degraded for`, strings.Join(infos(log), "\n"))
}

// The status survives a restart with a state file: down stays down, and
// the restart logs no change.
func TestVerdictSurvivesARestart(t *testing.T) {
	srv := newDelayServer(t, 0)
	srv.status.Store(http.StatusInternalServerError)
	cfg := conf(`
state_file = "` + filepath.Join(t.TempDir(), "sl.state") + `"
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`)
	p, plog := newPlugin(t, cfg)
	for range 3 {
		gather(t, p)
	}
	require.Len(t, plog.Warnings(), 1)
	p.Stop()
	time.Sleep(20 * time.Millisecond)
	srv.status.Store(http.StatusOK)
	q, log := newPlugin(t, cfg)
	m := gather(t, q)["api"]
	st, code := statusOf(t, m)
	require.Equal(t, "down", st, "restored, and one success is not enough")
	require.Equal(t, int64(3), code)
	require.Greater(t, field[float64](t, m, "status_since"), 0.02, "down since before the restart")
	require.Empty(t, log.Warnings(), "no change, nothing logged")
	m = gather(t, q)["api"]
	st, _ = statusOf(t, m)
	require.Equal(t, "up", st)
	require.Zero(t, field[float64](t, m, "status_since"))
	require.Equal(t, "up", dumpEntry(t, q, "api")["verdict"].(map[string]any)["status"])
}

// Two plugin instances on one Redis: one status per service, the rounds
// of both counted, both emitting the same status; each logs the change
// once, when it sees it.
func TestVerdictSharedThroughRedis(t *testing.T) {
	rs := redistest.Start(t)
	srv := newDelayServer(t, 0)
	services := `
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`
	a, alog := newPlugin(t, redisConf(rs, "  agent_id = \"a\"\n", services))
	b, blog := newPlugin(t, redisConf(rs, "  agent_id = \"b\"\n", services))
	st := func(p *ServiceLatency) string { s, _ := statusOf(t, gather(t, p)["api"]); return s }
	require.Equal(t, "unknown", st(a))
	require.Equal(t, "up", st(b), "a's good round and b's: 2 in a row")
	srv.status.Store(http.StatusBadGateway)
	require.Equal(t, "up", st(a))
	require.Equal(t, "up", st(b))
	require.Equal(t, "down", st(a), "3 failed rounds of the two agents")
	require.Len(t, alog.Warnings(), 1)
	require.Empty(t, blog.Warnings())
	m := gather(t, b)["api"]
	s, _ := statusOf(t, m)
	require.Equal(t, "down", s)
	require.Positive(t, field[float64](t, m, "status_since"), "down since a's round")
	require.Len(t, blog.Warnings(), 1, "b logs the change it sees")
	require.Contains(t, blog.Warnings()[0], "status down")

	// both gathering at once, many rounds: each round counted exactly once
	ctx := context.Background()
	key := "test:{api}:state"
	before, err := redistest.BlobInt(ctx, rs.Client(), key, 18) // the verdict's failed rounds
	require.NoError(t, err)
	const n = 15
	var wg sync.WaitGroup
	for _, p := range []*ServiceLatency{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				var acc testutil.Accumulator
				if err := p.Gather(&acc); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	vf, err := redistest.BlobInt(ctx, rs.Client(), key, 18)
	require.NoError(t, err)
	require.Equal(t, before+2*n, vf, "every agent's failed round counted once")
	sa, sb := gather(t, a)["api"], gather(t, b)["api"]
	require.Equal(t, field[int64](t, sa, "status_code"), field[int64](t, sb, "status_code"))
	require.Equal(t, int64(3), field[int64](t, sb, "status_code"))
	require.Len(t, alog.Warnings(), 1, "no new change, no new line")

	// back up: 2 good rounds, from either agent
	srv.status.Store(http.StatusOK)
	require.Equal(t, "down", st(b))
	require.Equal(t, "up", st(a))
	require.Equal(t, "up", st(b))
	require.Regexp(t, `service "api" .* up again`, strings.Join(infos(alog), "\n"))
	require.Regexp(t, `service "api" .* up again`, strings.Join(infos(blog), "\n"))
}
