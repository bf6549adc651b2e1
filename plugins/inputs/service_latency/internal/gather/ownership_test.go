package gather

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// fakeOwnership hands out a fixed share and records the intervals
// advertised.
type fakeOwnership struct {
	share     *store.Share
	intervals []time.Duration
}

func (f *fakeOwnership) Renew(_ context.Context, interval time.Duration) *store.Share {
	f.intervals = append(f.intervals, interval)
	return f.share
}

// Only the owned services are probed and emitted; a service keeps its
// state (in the store) across a change of owner; the internal fields
// count the share, the members and the changes.
func TestOwnershipFiltersTargets(t *testing.T) {
	srv := newArrivals(t)
	sched := Schedule{Timeout: time.Second, Samples: 1}
	tgs := targets(t, srv, 40, sched)
	e := New(store.NewMemory(), nopLog{})
	e.SetTargets(tgs, Settings{MaxConcurrency: 8})
	members := []string{"a", "b", "c"}
	own := &fakeOwnership{share: store.NewShare("a", members, 1)}
	e.SetOwnership(own)

	mine := map[string]bool{}
	for _, tg := range tgs {
		if store.Owners(tg.Name, members, 1)[0] == "a" {
			mine[tg.Name] = true
		}
	}
	require.NotEmpty(t, mine)
	require.Less(t, len(mine), 40)

	now := time.Unix(1_700_000_000, 0)
	rep, got := gatherAll(t, e, now)
	require.Len(t, got, len(mine))
	for _, s := range got {
		require.True(t, mine[s.Name], s.Name)
	}
	require.Len(t, rep.Services, len(mine), "the status lists this agent's share")
	f := rep.Internal.Fields()
	require.Equal(t, int64(3), f["members_seen"])
	require.Equal(t, int64(len(mine)), f["owned_services"])
	require.Equal(t, int64(0), f["ownership_changes"])
	require.Equal(t, int64(40), f["services"])
	for i := range 40 {
		path := "/" + itoa(i)
		n := len(srv.times(path))
		if mine["s"+itoa(i)] {
			require.Equal(t, 1, n, path)
		} else {
			require.Equal(t, 0, n, path)
		}
	}

	// b leaves: a owns its share of b's services too, only those change
	own.share = store.NewShare("a", []string{"a", "c"}, 1)
	rep, got = gatherAll(t, e, now.Add(time.Second))
	gained := 0
	for _, s := range got {
		if !mine[s.Name] {
			gained++
			require.Equal(t, "b", store.Owners(s.Name, members, 1)[0], "only b's services move")
		}
	}
	require.Positive(t, gained)
	require.Equal(t, int64(gained), rep.Internal.OwnershipChanges)
	require.Equal(t, int64(len(mine)+gained), rep.Internal.OwnedServices)
	require.Equal(t, []time.Duration{0, time.Second}, own.intervals, "the cadence is advertised once known")

	// Redis unreachable: every service
	own.share = &store.Share{All: true}
	rep, got = gatherAll(t, e, now.Add(2*time.Second))
	require.Len(t, got, 40)
	require.Equal(t, int64(0), rep.Internal.MembersSeen)
	for _, s := range got {
		// a service probed by this agent for the first time has every
		// earlier probe of it in its count (memory store: its own)
		require.Equal(t, int64(len(srv.times("/"+s.Name[1:]))), s.Fields["latency_count"])
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
