package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

func newFleet(t *testing.T, addr, id string, fo FleetOptions) (*Fleet, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	fo.Log = log
	f, err := NewFleet(RedisOptions{
		Client:    redis.UniversalOptions{Addrs: []string{addr}},
		KeyPrefix: "t",
		Timeout:   2 * time.Second,
		AgentID:   id,
	}, fo)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f, log
}

func serviceNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("svc-%d", i)
	}
	return out
}

// Rendezvous ownership: every service has exactly Replicas owners among
// the members, each agent's Share agrees with Owners, the shares are
// balanced, and a member that joins or leaves moves only its own share.
func TestRendezvousOwnership(t *testing.T) {
	names := serviceNames(3000)
	members := []string{"a", "b", "c", "d"}
	for _, replicas := range []int{1, 2} {
		shares := map[string]*Share{}
		for _, m := range members {
			shares[m] = NewShare(m, members, replicas)
		}
		count := map[string]int{}
		for _, n := range names {
			owners := Owners(n, members, replicas)
			require.Len(t, owners, replicas)
			k := 0
			for _, m := range members {
				if shares[m].Owns(n) {
					k++
					count[m]++
					require.Contains(t, owners, m)
				}
			}
			require.Equal(t, replicas, k, n)
		}
		for _, m := range members {
			want := len(names) * replicas / len(members)
			require.InDelta(t, want, count[m], float64(want)/5, "balanced: %v", count)
		}
	}
	// d leaves: only d's services move
	for _, n := range names {
		before := Owners(n, members, 1)[0]
		after := Owners(n, members[:3], 1)[0]
		if before != "d" {
			require.Equal(t, before, after, n)
		}
	}
	// stable across processes: a fixed expectation
	require.Equal(t, []string{"b"}, Owners("svc-0", members, 1))
	require.True(t, NewShare("a", []string{"a"}, 1).All)
	require.True(t, NewShare("a", []string{"a", "b"}, 2).All)
	require.True(t, NewShare("z", members, 1).All, "not a member: every service")
	require.True(t, (*Share)(nil).Owns("x"))
}

// Leases in Redis: each agent sees every live member; a member that
// stops renewing is gone after its lease (by Redis's clock); one that
// closes is gone at once; with Redis down an agent owns every service and
// says so once.
func TestFleetLeases(t *testing.T) {
	srv := redistest.Start(t)
	fo := FleetOptions{Replicas: 1, Lease: 300 * time.Millisecond, Version: "v1"}
	a, alog := newFleet(t, srv.Addr(), "a", fo)
	b, _ := newFleet(t, srv.Addr(), "b", fo)
	c, _ := newFleet(t, srv.Addr(), "c", fo)
	ctx := context.Background()
	require.Equal(t, []string{"a"}, a.Renew(ctx, 100*time.Millisecond).Members)
	require.Equal(t, []string{"a", "b"}, b.Renew(ctx, 100*time.Millisecond).Members)
	sc := c.Renew(ctx, 100*time.Millisecond)
	require.Equal(t, []string{"a", "b", "c"}, sc.Members)
	require.False(t, sc.All)
	live, err := LiveMembers(ctx, srv.Client(), "t")
	require.NoError(t, err)
	require.Len(t, live, 3)
	require.Equal(t, "v1", live[0].Version)
	require.Equal(t, int64(100), live[0].IntervalMS)
	require.Equal(t, int64(300), live[0].LeaseMS)
	require.Positive(t, srv.Client().PTTL(ctx, "t:{members}").Val(), "the hash expires when every agent is gone")

	// c stops renewing: gone after its lease
	time.Sleep(150 * time.Millisecond)
	require.Equal(t, []string{"a", "b", "c"}, a.Renew(ctx, 100*time.Millisecond).Members, "within the lease")
	time.Sleep(200 * time.Millisecond)
	b.Renew(ctx, 100*time.Millisecond)
	require.Equal(t, []string{"a", "b"}, a.Renew(ctx, 100*time.Millisecond).Members, "after the lease")
	require.False(t, srv.Client().HExists(ctx, "t:{members}", "c").Val(), "the expired lease is deleted")

	// b closes: gone at once
	require.NoError(t, b.Close())
	require.Equal(t, []string{"a"}, a.Renew(ctx, 100*time.Millisecond).Members)
	require.True(t, a.Renew(ctx, 100*time.Millisecond).All, "alone: every service")

	// Redis down: every service, one warning
	srv.Kill()
	for range 3 {
		s := a.Renew(ctx, 100*time.Millisecond)
		require.True(t, s.All)
		require.Error(t, s.Err)
		require.Nil(t, s.Members)
	}
	require.Len(t, alog.Warnings(), 1)
	require.Contains(t, alog.Warnings()[0], "cannot renew this agent's lease")
	srv.Restart()
	require.Equal(t, []string{"a"}, a.Renew(ctx, 100*time.Millisecond).Members)
	var infos []string
	for _, m := range alog.Messages() {
		infos = append(infos, m.Text)
	}
	require.Contains(t, strings.Join(infos, "\n"), "lease renewed again")
}

// The default lease is three advertised gather intervals (10 s until the
// cadence is known); options are checked.
func TestFleetLeaseDefaultsAndChecks(t *testing.T) {
	f := &Fleet{}
	require.Equal(t, 30*time.Second, f.LeaseFor(0))
	require.Equal(t, 3*time.Second, f.LeaseFor(time.Second))
	f.opts.Lease = time.Minute
	require.Equal(t, time.Minute, f.LeaseFor(time.Second))
	for _, tc := range []struct {
		o   FleetOptions
		key string
	}{
		{FleetOptions{Replicas: -1}, "probe_replicas"},
		{FleetOptions{Lease: -time.Second}, "lease"},
		{FleetOptions{Lease: time.Millisecond}, "lease"},
	} {
		err := tc.o.Check()
		require.Error(t, err)
		require.Contains(t, err.Error(), tc.key)
	}
	_, err := NewFleet(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}}}, FleetOptions{Replicas: 1})
	require.ErrorContains(t, err, "agent_id")
}
