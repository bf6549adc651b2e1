package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// gatherN prompts one gather and returns its metrics by service name.
func (p *proc) gatherN(n int) map[string]telegraf.Metric {
	p.t.Helper()
	_, err := io.WriteString(p.stdin, "\n")
	require.NoError(p.t, err)
	return p.collect(n)
}

func (p *proc) collect(n int) map[string]telegraf.Metric {
	p.t.Helper()
	out := make(map[string]telegraf.Metric, n)
	for range n {
		m := p.metric()
		out[m.Tags()["service"]] = m
	}
	require.Len(p.t, out, n)
	return out
}

func fieldOf[T any](t *testing.T, m telegraf.Metric, key string) T {
	t.Helper()
	v, ok := m.GetField(key)
	require.Truef(t, ok, "field %q missing in %v", key, m)
	tv, ok := v.(T)
	require.Truef(t, ok, "field %q is %T", key, v)
	return tv
}

// series is every successful sample of one service, from every agent.
type series []float64

func (s series) mean() float64 {
	var sum float64
	for _, x := range s {
		sum += x
	}
	return sum / float64(len(s))
}

func (s series) minMax() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, x := range s {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func redisAgentConf(t *testing.T, rs *redistest.Server, url, extra string) string {
	return writeConf(t, fmt.Sprintf(`[[inputs.service_latency]]
  timeout = "2s"
  state = "redis"
  [inputs.service_latency.redis]
    address = %q
    key_prefix = "bin"
%s
[[inputs.service_latency.service]]
  name = "a"
  url = "%s/a"
[[inputs.service_latency.service]]
  name = "b"
  url = "%s/b"
`, rs.Addr(), extra, url, url))
}

// TestBinaryTwoAgentsShareRedisState runs two processes of the binary with
// the same config: the shared latency_count is every successful probe of
// both, latency_avg the exact mean of all their samples, and both emit the
// same merged state.
func TestBinaryTwoAgentsShareRedisState(t *testing.T) {
	rs := redistest.Start(t)
	srv := target(t)
	conf := redisAgentConf(t, rs, srv.URL, `    timeout = "2s"`)
	a := start(t, "-config", conf, "-poll_interval_disabled")
	b := start(t, "-config", conf, "-poll_interval_disabled")
	all := map[string]series{}
	check := func(who string, ms map[string]telegraf.Metric) {
		t.Helper()
		for name, m := range ms {
			require.Equal(t, "success", m.Tags()["result"])
			all[name] = append(all[name], fieldOf[float64](t, m, "latency"))
			s := all[name]
			require.Equal(t, int64(len(s)), fieldOf[int64](t, m, "latency_count"), "%s %s: every probe of both agents", who, name)
			require.InEpsilon(t, s.mean(), fieldOf[float64](t, m, "latency_avg"), 1e-9, "%s %s: the exact mean of all samples", who, name)
			lo, hi := s.minMax()
			require.Equal(t, lo, fieldOf[float64](t, m, "latency_min"))
			require.Equal(t, hi, fieldOf[float64](t, m, "latency_max"))
		}
	}
	const n = 6
	for range n {
		check("a", a.gatherN(2))
		check("b", b.gatherN(2))
	}

	// Both at once: the script merges atomically, nothing is lost.
	const rounds = 4
	for range rounds {
		var wg sync.WaitGroup
		for _, p := range []*proc{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.WriteString(p.stdin, "\n")
			}()
		}
		wg.Wait()
		res := []map[string]telegraf.Metric{a.collect(2), b.collect(2)}
		for name := range res[0] {
			ca := fieldOf[int64](t, res[0][name], "latency_count")
			cb := fieldOf[int64](t, res[1][name], "latency_count")
			total := int64(len(all[name]) + 2)
			require.ElementsMatch(t, []int64{total - 1, total}, []int64{ca, cb}, "%s: one agent saw the other's probe, the other not yet", name)
			all[name] = append(all[name], fieldOf[float64](t, res[0][name], "latency"), fieldOf[float64](t, res[1][name], "latency"))
			later := res[0][name]
			if cb > ca {
				later = res[1][name]
			}
			require.InEpsilon(t, all[name].mean(), fieldOf[float64](t, later, "latency_avg"), 1e-9)
		}
	}

	// Same merged state: b's state is a's plus b's one new sample.
	ma := a.gatherN(2)
	check("a", ma)
	mb := b.gatherN(2)
	check("b", mb)
	for name := range ma {
		ca := float64(fieldOf[int64](t, ma[name], "latency_count"))
		want := (fieldOf[float64](t, ma[name], "latency_avg")*ca + fieldOf[float64](t, mb[name], "latency")) / (ca + 1)
		require.InEpsilon(t, want, fieldOf[float64](t, mb[name], "latency_avg"), 1e-9)
		require.Equal(t, int64(2*(n+rounds+1)), fieldOf[int64](t, mb[name], "latency_count"))
		require.Equal(t, fieldOf[int64](t, ma[name], "probes")+1, fieldOf[int64](t, mb[name], "probes"))
	}
	for _, p := range []*proc{a, b} {
		require.NoError(t, p.stdin.Close())
		require.Equal(t, 0, p.wait(), p.stderr.String())
		require.NotContains(t, p.stderr.String(), "W!", "no outage, no malformed state")
		requireLevelPrefixes(t, p.stderr.String())
	}
}

func requireLevelPrefixes(t *testing.T, stderr string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line != "" {
			require.Regexp(t, `^[EWID]! `, line, "every stderr line carries a level prefix")
		}
	}
}

// TestBinaryRedisKilledMidRunAndRestarted kills Redis (after a snapshot, a
// crash of a persisting Redis) during a run: every gather is still emitted
// on time, from the agent's local state, and once Redis is back the queued
// probes are replayed: the shared count is every probe taken.
func TestBinaryRedisKilledMidRunAndRestarted(t *testing.T) {
	rs := redistest.Start(t)
	srv := target(t)
	const storeTimeout = 500 * time.Millisecond
	conf := redisAgentConf(t, rs, srv.URL, `    timeout = "500ms"`)
	p := start(t, "-config", conf, "-poll_interval_disabled")
	probes := 0
	timed := func() map[string]telegraf.Metric {
		t.Helper()
		begin := time.Now()
		ms := p.gatherN(2)
		elapsed := time.Since(begin)
		probes++
		var probeTime time.Duration
		for _, m := range ms {
			probeTime = max(probeTime, time.Duration(fieldOf[float64](t, m, "latency")*float64(time.Second)))
			require.Equal(t, int64(probes), fieldOf[int64](t, m, "latency_count"), "gather %d", probes)
		}
		// a failed chunk costs its deadline and a PING of half of it
		require.Less(t, elapsed, storeTimeout*3/2+probeTime+300*time.Millisecond, "gather %d emitted on time", probes)
		return ms
	}
	for range 3 {
		timed()
	}
	rs.SaveAndKill()
	for range 4 {
		timed()
	}
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), "W! Redis state store") }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, strings.Count(p.stderr.String(), "W! Redis state store"), "one warning for the outage: %s", p.stderr.String())
	rs.Restart()
	timed() // replays the 8 queued observations, then this gather's
	require.Eventually(t, func() bool {
		return strings.Contains(p.stderr.String(), "I! Redis state store "+rs.Addr()+" reachable again: 8 queued observations replayed")
	}, 5*time.Second, 10*time.Millisecond, p.stderr.String())

	c := rs.Client()
	for _, svc := range []string{"a", "b"} {
		n, err := redistest.BlobInt(context.Background(), c, "bin:{"+svc+"}:state", 4) // count
		require.NoError(t, err)
		require.Equal(t, probes, n, "in Redis: every probe, exactly once")
	}
	require.NoError(t, p.stdin.Close())
	require.Equal(t, 0, p.wait(), p.stderr.String())
	requireLevelPrefixes(t, p.stderr.String())
}
