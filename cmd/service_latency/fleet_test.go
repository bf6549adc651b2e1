package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// fleetConf is an agent of a fleet: probe_replicas = 1 over n services of
// srv (/0 … /n-1), service_latency_internal after each gather's services.
func fleetConf(t *testing.T, redisAddr, id, url string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[[inputs.service_latency]]
  timeout = "1s"
  spread = "0s"
  collect_internal = true
  state = "redis"
  [inputs.service_latency.redis]
    address = %q
    key_prefix = "fleet"
    agent_id = %q
    timeout = "2s"
    probe_replicas = 1
`, redisAddr, id)
	for i := range n {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"s%d\"\n  url = \"%s/%d\"\n", i, url, i)
	}
	return writeConf(t, b.String())
}

// gathered is one agent's gather: its services' metrics and its internal
// fields.
type gathered struct {
	services map[string]telegraf.Metric
	internal map[string]any
}

// untilInternal reads one gather's metrics, up to its
// service_latency_internal.
func (p *proc) untilInternal() gathered {
	p.t.Helper()
	g := gathered{services: map[string]telegraf.Metric{}}
	for {
		m := p.metric()
		if m.Name() == "service_latency_internal" {
			g.internal = m.Fields()
			return g
		}
		name := m.Tags()["service"]
		_, dup := g.services[name]
		require.False(p.t, dup, "one metric per service per gather")
		g.services[name] = m
	}
}

// TestBinaryFleetSharesTheProbes runs three agents with probe_replicas =
// 1 over 300 services: in steady state each service is probed and emitted
// by one agent per interval and its latency_count rises by exactly 1; one
// agent SIGKILLed, its services are owned by the others within lease +
// one interval and the counts go on exactly; started again, it gets its
// share back (the same services: rendezvous hashing of the same id).
func TestBinaryFleetSharesTheProbes(t *testing.T) {
	const n = 300
	const period = 500 * time.Millisecond
	rs := redistest.Start(t)
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(srv.Close)
	ids := []string{"a1", "a2", "a3"}
	confs := map[string]string{}
	agents := map[string]*proc{}
	for _, id := range ids {
		confs[id] = fleetConf(t, rs.Addr(), id, srv.URL, n)
		agents[id] = start(t, "-config", confs[id], "-poll_interval_disabled")
	}

	// emitted counts every service's metrics, across agents: with every
	// probe successful, latency_count is every probe taken of it, each
	// counted once, so the highest count emitted in a tick must be the
	// number of metrics emitted of it so far.
	emitted := map[string]int64{}
	begin := time.Now()
	ticks := 0
	tick := func(live ...string) map[string]gathered {
		t.Helper()
		ticks++
		time.Sleep(time.Until(begin.Add(time.Duration(ticks) * period)))
		for _, id := range live {
			_, err := io.WriteString(agents[id].stdin, "\n")
			require.NoError(t, err)
		}
		out := map[string]gathered{}
		for _, id := range live {
			out[id] = agents[id].untilInternal()
		}
		high := map[string]int64{}
		for _, g := range out {
			for name, m := range g.services {
				require.Equal(t, "success", m.Tags()["result"])
				emitted[name]++
				high[name] = max(high[name], fieldOf[int64](t, m, "latency_count"))
			}
		}
		for name, c := range high {
			require.Equal(t, emitted[name], c, "tick %d, %s: every probe counted once", ticks, name)
		}
		return out
	}
	// owners maps each service emitted in a tick to the agents that emitted it.
	owners := func(out map[string]gathered) map[string][]string {
		o := map[string][]string{}
		for id, g := range out {
			for name := range g.services {
				o[name] = append(o[name], id)
			}
		}
		return o
	}
	balanced := func(out map[string]gathered, members int) bool {
		o := owners(out)
		if len(o) != n {
			return false
		}
		for _, who := range o {
			if len(who) != 1 {
				return false
			}
		}
		for _, g := range out {
			if g.internal["members_seen"] != int64(members) {
				return false
			}
		}
		return true
	}

	// warm-up: the agents register at their first gathers
	var out map[string]gathered
	for range 10 {
		if out = tick(ids...); balanced(out, 3) {
			break
		}
	}
	require.True(t, balanced(out, 3), "the shares settle within a few gathers")

	// steady state: one agent per service, +1 per interval
	share := map[string]map[string]bool{}
	for range 5 {
		before := map[string]int64{}
		for k, v := range emitted {
			before[k] = v
		}
		out = tick(ids...)
		require.True(t, balanced(out, 3))
		for name, who := range owners(out) {
			require.Equal(t, before[name]+1, emitted[name], name)
			if share[who[0]] == nil {
				share[who[0]] = map[string]bool{}
			}
			share[who[0]][name] = true
		}
		for _, id := range ids {
			g := out[id]
			require.Equal(t, int64(len(g.services)), g.internal["owned_services"])
			require.InDelta(t, n/3, len(g.services), n/6, "%s's share", id)
			require.Equal(t, int64(n), g.internal["services"])
		}
	}
	for _, id := range ids {
		require.Len(t, share[id], int(out[id].internal["owned_services"].(int64)), "%s: the same share every interval", id)
	}
	members, err := store.LiveMembers(context.Background(), rs.Client(), "fleet")
	require.NoError(t, err)
	require.Len(t, members, 3)
	lease := time.Duration(members[2].LeaseMS) * time.Millisecond
	interval := time.Duration(members[2].IntervalMS) * time.Millisecond
	require.InDelta(t, float64(period), float64(interval), float64(period)/2, "the advertised interval is the measured cadence")
	require.InDelta(t, float64(3*interval), float64(lease), float64(3*time.Millisecond), "the default lease: 3 advertised intervals")
	changes := map[string]int64{}
	for id, g := range out {
		changes[id] = g.internal["ownership_changes"].(int64)
	}

	// SIGKILL a3: its services come back within lease + one interval
	require.NoError(t, agents["a3"].cmd.Process.Kill())
	killed := time.Now()
	_ = agents["a3"].wait()
	var recovered time.Duration
	for range 20 {
		out = tick("a1", "a2")
		if balanced(out, 2) {
			recovered = time.Since(killed)
			break
		}
	}
	require.NotZero(t, recovered, "a3's services owned again")
	t.Logf("a3's services owned by a1 and a2 %s after the kill (lease %s, interval %s)", recovered.Round(time.Millisecond), lease, interval)
	require.LessOrEqual(t, recovered, lease+interval+2*period, "within the documented bound (plus a tick of the test's own clock)")
	for range 3 {
		out = tick("a1", "a2")
		require.True(t, balanced(out, 2))
	}
	for id, g := range out {
		gained := 0
		for name := range g.services {
			if !share[id][name] {
				require.True(t, share["a3"][name], "%s took over %s, not one of a3's", id, name)
				gained++
			}
		}
		require.Len(t, g.services, len(share[id])+gained, "%s keeps its own share", id)
		require.Equal(t, int64(gained), g.internal["ownership_changes"].(int64)-changes[id], "%s: ownership_changes counts what it took over", id)
	}

	// a3 again (same agent id): it gets the same share back
	agents["a3"] = start(t, "-config", confs["a3"], "-poll_interval_disabled")
	for range 10 {
		if out = tick(ids...); balanced(out, 3) {
			break
		}
	}
	require.True(t, balanced(out, 3))
	out = tick(ids...)
	require.True(t, balanced(out, 3))
	for id, g := range out {
		require.Len(t, g.services, len(share[id]), id)
		for name := range g.services {
			require.True(t, share[id][name], "%s: %s is its own again", id, name)
		}
	}

	for _, id := range ids {
		require.NoError(t, agents[id].stdin.Close())
		require.Equal(t, 0, agents[id].wait(), agents[id].stderr.String())
		requireLevelPrefixes(t, agents[id].stderr.String())
	}
	// in the test server: every request is a counted probe
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		require.Equal(t, int(emitted[fmt.Sprintf("s%d", i)]), hits[fmt.Sprintf("/%d", i)], "s%d", i)
	}
	t.Logf("%d ticks in %s", ticks, time.Since(begin).Round(time.Millisecond))
}
