package service_latency

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
)

// probe_replicas and lease: checked at load with the key and its line;
// with them two plugins split the services, every service probed once;
// a reload that changes them is refused.
func TestFleetConfigAndShare(t *testing.T) {
	rs := redistest.Start(t)
	srv := newDelayServer(t, 0)
	var services strings.Builder
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		services.WriteString("\n[[inputs.service_latency.service]]\n  name = \"" + n + "\"\n  url = \"" + srv.URL + "/" + n + "\"\n")
	}
	for _, bad := range []struct{ extra, key string }{
		{"  probe_replicas = -1\n", "redis.probe_replicas"},
		{"  lease = \"-1s\"\n", "redis.lease"},
	} {
		_, err := ParseConfig([]byte(redisConf(rs, bad.extra, services.String())))
		require.ErrorContains(t, err, bad.key)
		require.True(t, strings.HasPrefix(err.Error(), "7: "), "the line of the key: %v", err)
	}

	a, _ := newPlugin(t, redisConf(rs, "  agent_id = \"a\"\n  probe_replicas = 1\n", services.String()))
	b, _ := newPlugin(t, redisConf(rs, "  agent_id = \"b\"\n  probe_replicas = 1\n", services.String()))
	gather(t, a) // a alone: every service
	for range 3 {
		ma, mb := gather(t, b), gather(t, a)
		require.Len(t, ma, 8-len(mb))
		for name := range ma {
			require.NotContains(t, mb, name, "one agent per service")
		}
	}
	next, err := config.Parse([]byte(redisConf(rs, "  agent_id = \"a\"\n  probe_replicas = 2\n", services.String())))
	require.NoError(t, err)
	require.ErrorContains(t, a.Reconfigure(&next.Config), "redis.probe_replicas")
}
