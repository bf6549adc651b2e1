package store

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Fields of the packed state (0-based here, see redis.lua's BLOB).
const (
	blobProbes  = 10
	blobVerdict = 15
)

// redisStateField reads one field of a service's packed state.
func redisStateField(t testing.TB, c *redis.Client, key string, i int) interface{} {
	t.Helper()
	raw, err := c.HGet(context.Background(), key, "s").Result()
	require.NoError(t, err, key)
	v, err := mpDecode([]byte(raw))
	require.NoError(t, err)
	l := v.([]interface{})
	require.Len(t, l, 28)
	return l[i]
}

// layout1Script is the script of the previous version (layout 1: stats,
// window, sketch and agents keys), to write a Redis as that version did.
//
//go:embed testdata/redis_layout1.lua
var layout1Script string

// writeLayout1 applies observations to a service's layout-1 keys (stats,
// window, sketch, agents) exactly as the previous version did.
func writeLayout1(t testing.TB, c *redis.Client, keys []string, agent string, seq0 int64, p stats.Params, obs ...pending) {
	t.Helper()
	r := &Redis{opts: RedisOptions{AgentID: agent, TTL: DefaultRedisTTL}, mapping: mappingID, now: time.Now, forceReset: map[string]bool{}, synced: map[string]*syncState{}, thresholds: map[string]string{}}
	for i := range obs {
		obs[i].seq = seq0 + int64(i)
	}
	args := r.args(&batch{service: "x", params: p, entries: obs})
	// layout 1 had no agent copy (ARGV 15-18)
	args = append(args[:14:14], args[18:]...)
	require.NoError(t, c.Eval(context.Background(), layout1Script, keys, args...).Err())
}

// TestRedisMigratesLayout1: a Redis written by the previous version (four
// keys per service) keeps working. The first write of this version reads
// the old keys, validates them as the old script did, rewrites them in the
// new layout and deletes them; the merged state goes on exactly as if one
// version had written every probe (the in-process math, bit for bit).
func TestRedisMigratesLayout1(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	r, log := newRedis(t, srv, withAgent("new"))
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Unix(1_700_000_000, 0)
	want := map[string]*stats.State{}
	at := base
	observe := func(service string, ok bool, x float64) {
		at = at.Add(time.Duration(1+rng.IntN(3000)) * time.Millisecond)
		w := want[service]
		if w == nil {
			w = stats.NewState(testParams)
			want[service] = w
		}
		prevOK, prevFail := w.LastSuccess, w.LastFailure
		w.Observe(at, ok, x, testParams)
		w.LastSuccess, w.LastFailure = max(prevOK, w.LastSuccess), max(prevFail, w.LastFailure)
	}
	services := []string{"a", "b{x}"}
	for si, svc := range services {
		var obs []pending
		for i := range 15 + 5*si {
			ok := i%4 != 1
			x := rng.ExpFloat64() * 0.02
			observe(svc, ok, x)
			obs = append(obs, pending{t: at.UnixNano(), ok: ok, latency: x})
		}
		writeLayout1(t, c, r.keys(svc)[2:], "old", 1, testParams, obs...)
		n, err := c.Exists(ctx, r.keys(svc)[2:]...).Result()
		require.NoError(t, err)
		require.Equal(t, int64(4), n, "layout 1 written")
	}
	for g := range 40 {
		var obs []Observation
		for _, svc := range services {
			ok := g%5 != 2
			x := rng.ExpFloat64() * 0.02
			observe(svc, ok, x)
			obs = append(obs, Observation{Service: svc, Params: testParams, OK: ok, Latency: x, At: at})
		}
		res, err := r.Update(ctx, at, obs)
		require.NoError(t, err)
		for i, svc := range services {
			require.NoError(t, res[i].Warning)
			requireSameState(t, want[svc], res[i].State)
		}
		if g == 0 {
			for _, svc := range services {
				n, err := c.Exists(ctx, r.keys(svc)[2:]...).Result()
				require.NoError(t, err)
				require.Zero(t, n, "the old keys are deleted once migrated")
				n, err = c.Exists(ctx, r.keys(svc)[:2]...).Result()
				require.NoError(t, err)
				require.Equal(t, int64(2), n)
				ttl, err := c.PTTL(ctx, r.keys(svc)[0]).Result()
				require.NoError(t, err)
				require.Greater(t, ttl, DefaultRedisTTL-time.Minute, "the TTL is set")
			}
		}
	}
	require.Empty(t, log.Warnings())
	// a second agent of this version reads the same merged state
	other, _ := newRedis(t, srv, withAgent("other"))
	at = at.Add(time.Second)
	observe("a", false, 0)
	res, err := other.Update(ctx, at, []Observation{{Service: "a", Params: testParams, OK: false, At: at}})
	require.NoError(t, err)
	requireSameState(t, want["a"], res[0].State)
}

// TestRedisDeltaRepliesEqualFullReads: agents that get only what changed
// since their last write (their own probes and the others') emit exactly
// the state a full read returns, with several agents, windows filling and
// wrapping, failures and histograms; and a reply is a delta when it can be.
func TestRedisDeltaRepliesEqualFullReads(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	agents := make([]*Redis, 3)
	for i := range agents {
		agents[i], _ = newRedis(t, srv, withAgent(fmt.Sprintf("agent-%d", i)))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	at := time.Unix(1_700_000_000, 0)
	deltas := 0
	for g := range 120 {
		a := agents[rng.IntN(len(agents))]
		if g%7 == 0 {
			a = agents[0]
		}
		var obs []Observation
		for k := range 1 + rng.IntN(3) {
			at = at.Add(time.Duration(1+rng.IntN(2000)) * time.Millisecond)
			ok := rng.IntN(6) != 0
			x := rng.ExpFloat64() * 0.03
			if k == 1 {
				x = 0
			}
			obs = append(obs, Observation{Service: "api", Params: testParams, OK: ok, Latency: x, At: at})
		}
		a.mu.Lock()
		sy := a.synced["api"]
		before := 0
		if sy != nil {
			before = sy.writes
		}
		a.mu.Unlock()
		res, err := a.Update(ctx, at, obs)
		require.NoError(t, err)
		got := res[len(res)-1].State
		require.NoError(t, res[len(res)-1].Warning)
		a.mu.Lock()
		if sy := a.synced["api"]; sy != nil && sy.writes > before {
			deltas++
		}
		a.mu.Unlock()

		// a full read by a fresh agent that observes nothing new: the
		// same state
		reader, _ := newRedis(t, srv, withAgent(fmt.Sprintf("reader-%d", g)))
		reader.mu.Lock()
		full := reader.writeEntriesLocked(ctx, "api", testParams)
		reader.mu.Unlock()
		require.NoError(t, full.err)
		requireSameState(t, full.state, got)
		require.Equal(t, full.state.Verdict, got.Verdict)
		require.NoError(t, reader.Close())
	}
	t.Logf("%d of 120 replies were deltas", deltas)
	require.Greater(t, deltas, 30)
}

// writeEntriesLocked runs the script for a service with no observation:
// the state as stored, read in full.
func (r *Redis) writeEntriesLocked(ctx context.Context, service string, p stats.Params) *callResult {
	b := &batch{service: service, params: p}
	r.writeLocked(ctx, []*batch{b})
	return b.out
}
