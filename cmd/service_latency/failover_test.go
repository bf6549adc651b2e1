package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// TestBinaryTwoAgentsThroughSentinelFailover: two agent processes write
// through Sentinel with wait_replicas = 1; the master is SIGKILLed, its
// replica promoted, the old master restarted (a replica again). Once the
// replay queues are empty, the shared count of every service is every
// probe both agents took: none lost, none doubled.
func TestBinaryTwoAgentsThroughSentinelFailover(t *testing.T) {
	st := redistest.StartSentinel(t)
	srv := target(t)
	const n = 5
	var b strings.Builder
	fmt.Fprintf(&b, `[[inputs.service_latency]]
  timeout = "1s"
  spread = "0s"
  collect_internal = true
  state = "redis"
  [inputs.service_latency.redis]
    address = %q
    master_name = %q
    key_prefix = "fo"
    timeout = "500ms"
    wait_replicas = 1
`, strings.Join(st.Addrs(), ","), redistest.SentinelMaster)
	for i := range n {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"s%d\"\n  url = \"%s/%d\"\n", i, srv.URL, i)
	}
	conf := writeConf(t, b.String())
	agents := []*proc{start(t, "-config", conf, "-poll_interval_disabled"), start(t, "-config", conf, "-poll_interval_disabled")}
	probes := int64(0) // per service: every agent probes every service
	gather := func(p *proc) gathered {
		t.Helper()
		_, err := io.WriteString(p.stdin, "\n")
		require.NoError(t, err)
		probes++
		g := p.untilInternal()
		require.Len(t, g.services, n)
		return g
	}
	for range 5 {
		for _, p := range agents {
			for name, m := range gather(p).services {
				require.Equal(t, probes, fieldOf[int64](t, m, "latency_count"), name)
			}
		}
	}
	old := st.Current()
	old.Kill()
	killed := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		promoted := st.WaitFailover(old, 30*time.Second)
		old.RestartAsReplicaOf(promoted)
	}()
	for i := 0; ; i++ {
		require.Less(t, i, 400, "the queues drain once the old master is back as a replica")
		queued := int64(0)
		for _, p := range agents {
			queued += gather(p).internal["replay_queue"].(int64)
		}
		select {
		case <-done:
			if queued == 0 {
				t.Logf("queues drained %s after the kill (%d gathers per agent)", time.Since(killed).Round(time.Millisecond), probes/2)
				goto drained
			}
		default:
		}
		time.Sleep(50 * time.Millisecond)
	}
drained:
	for _, p := range agents {
		for name, m := range gather(p).services {
			require.Equal(t, probes, fieldOf[int64](t, m, "latency_count"), "%s: every probe of both agents, once", name)
		}
	}
	for _, p := range agents {
		require.NoError(t, p.stdin.Close())
		require.Equal(t, 0, p.wait(), p.stderr.String())
		requireLevelPrefixes(t, p.stderr.String())
	}
}
