package store

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

var verdictParams = stats.Params{Window: 8, HalfLife: 30 * time.Second, Verdict: stats.VerdictParams{
	FailureThreshold: 3, SuccessThreshold: 2, DegradedLatency: 0.05, Statistic: stats.DefaultStatistic,
}}

// round builds the observations of one round: samples latencies (< 0 a
// failed sample) starting at at, a millisecond apart; the round is good
// when one sample is.
func round(service string, p stats.Params, at time.Time, samples ...float64) []Observation {
	obs := make([]Observation, len(samples))
	ok := false
	for i, x := range samples {
		obs[i] = Observation{Service: service, Params: p, OK: x >= 0, Latency: max(x, 0), At: at.Add(time.Duration(i) * time.Millisecond)}
		ok = ok || x >= 0
	}
	obs[len(obs)-1].EndsRound, obs[len(obs)-1].RoundOK = true, ok
	return obs
}

// The verdict of the Redis script is the memory store's, round for round:
// status, since, the runs, and the status before the round, for rounds of
// one to three samples, failing, fast and slow (p95 of the window above
// the objective), with every statistic.
func TestVerdictRedisMatchesMemory(t *testing.T) {
	srv := redistest.Start(t)
	for _, stat := range []stats.Statistic{stats.DefaultStatistic, {Kind: stats.StatEWMA}, {Kind: stats.StatAvg}} {
		t.Run(stat.String(), func(t *testing.T) {
			p := verdictParams
			p.Verdict.Statistic = stat
			mem := NewMemory()
			r, _ := newRedis(t, srv, func(o *RedisOptions) { o.KeyPrefix = "v-" + stat.String() })
			rng := rand.New(rand.NewPCG(7, uint64(stat.Kind)))
			base := time.Unix(1_700_000_000, 0)
			seen := map[stats.Status]bool{}
			changes := 0
			for i := range 300 {
				// phases of failures, fast and slow rounds
				phase := (i / 12) % 4
				n := 1 + rng.IntN(3)
				samples := make([]float64, n)
				for k := range samples {
					switch {
					case phase == 1 && rng.IntN(10) < 8:
						samples[k] = -1
					case phase == 3:
						samples[k] = 0.04 + 0.08*rng.Float64()
					default:
						samples[k] = 0.001 + 0.01*rng.Float64()
					}
				}
				obs := round("api", p, base.Add(time.Duration(i)*time.Second), samples...)
				me, err := mem.Update(context.Background(), base, obs)
				require.NoError(t, err)
				re, err := r.Update(context.Background(), base, obs)
				require.NoError(t, err)
				m, g := me[n-1], re[n-1]
				require.Equal(t, m.State.Verdict, g.State.Verdict, "round %d", i)
				require.Equal(t, m.Before, g.Before, "round %d: the verdict before it", i)
				require.Equal(t, m.State.Count, g.State.Count)
				seen[m.State.Verdict.Status] = true
				if m.Before.Status != m.State.Verdict.Status {
					changes++
					require.Equal(t, obs[n-1].At.UnixNano(), m.State.Verdict.Since, "since is the time of the round that changed it")
				}
			}
			require.True(t, seen[stats.StatusUp] && seen[stats.StatusDown] && seen[stats.StatusUnknown], "%v", seen)
			if stat.Kind == stats.StatPercentile {
				require.True(t, seen[stats.StatusDegraded], "p95 of the slow phases is above 50 ms: %v", seen)
			}
			require.Greater(t, changes, 4)
		})
	}
}

// A retried write (same agent, same sequence numbers) does not advance
// the verdict again: three failed rounds written twice are three rounds.
func TestVerdictRedisExactlyOnce(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv, withAgent("agent-1"))
	now := time.Now()
	for seq := int64(1); seq <= 3; seq++ {
		e := []pending{{service: "api", params: verdictParams, seq: seq, t: now.Add(time.Duration(seq) * time.Second).UnixNano(), round: "0"}}
		o := []Observation{{Service: "api", Params: verdictParams}}
		for range 2 {
			out := r.writeEntries(context.Background(), e, o)["api"]
			require.NoError(t, out.err)
			require.Equal(t, seq, out.state.Verdict.Failed, "seq %d applied once", seq)
		}
	}
	out := r.writeEntries(context.Background(), nil, nil)
	require.Empty(t, out)
	require.Equal(t, int64(3), redisStateField(t, srv.Client(), r.keys("api")[0], blobVerdict), "down after 3 rounds, stored in the state")
}

// Two agents alternately writing rounds of one service: one sequence of
// rounds, so both see the same status, and the thresholds count the
// rounds of both.
func TestVerdictRedisTwoAgentsAgree(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := newRedis(t, srv, withAgent("a"))
	b, _ := newRedis(t, srv, withAgent("b"))
	base := time.Unix(1_700_000_000, 0)
	upd := func(st Store, i int, x float64) stats.Verdict {
		res, err := st.Update(context.Background(), base, round("api", verdictParams, base.Add(time.Duration(i)*time.Second), x))
		require.NoError(t, err)
		return res[0].State.Verdict
	}
	require.Equal(t, stats.StatusUnknown, upd(a, 0, 0.01).Status)
	require.Equal(t, stats.StatusUp, upd(b, 1, 0.01).Status, "a's round and b's round: 2 good rounds")
	require.Equal(t, stats.StatusUp, upd(a, 2, -1).Status)
	require.Equal(t, stats.StatusUp, upd(b, 3, -1).Status)
	v := upd(a, 4, -1)
	require.Equal(t, stats.StatusDown, v.Status, "3 failed rounds of the two agents")
	require.Equal(t, base.Add(4*time.Second).UnixNano(), v.Since)
	w := upd(b, 5, -1)
	require.Equal(t, v.Status, w.Status, "b sees the same status")
	require.Equal(t, v.Since, w.Since, "and since")
	require.Equal(t, int64(4), w.Failed, "b's round counts after a's")
}

// A verdict survives a state file; a version 1 file (without verdicts)
// loads with the status unknown.
func TestVerdictStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state")
	f, err := NewFile(path, nil)
	require.NoError(t, err)
	base := time.Unix(1_700_000_000, 0)
	var v stats.Verdict
	for i := range 3 {
		res, err := f.Update(context.Background(), base, round("api", verdictParams, base.Add(time.Duration(i)*time.Second), -1))
		require.NoError(t, err)
		v = res[0].State.Verdict
	}
	require.Equal(t, stats.StatusDown, v.Status)
	require.NoError(t, f.Close())

	g, err := NewFile(path, nil)
	require.NoError(t, err)
	res, err := g.Update(context.Background(), base, round("api", verdictParams, base.Add(3*time.Second), 0.01))
	require.NoError(t, err)
	require.Equal(t, v, res[0].Before, "restored: down since the third round")
	require.Equal(t, stats.StatusDown, res[0].State.Verdict.Status, "one good round: still down")
	require.Equal(t, int64(1), res[0].State.Verdict.OK)

	// the same entry without its verdict, in a version 1 dump
	d := g.memory().Export()
	require.Equal(t, DumpVersion, d.Version)
	var e map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(d.Services["api"], &e))
	require.Contains(t, e, "verdict")
	delete(e, "verdict")
	raw, err := json.Marshal(e)
	require.NoError(t, err)
	old := NewMemory()
	require.NoError(t, old.Import(&Dump{Version: 1, Services: map[string]json.RawMessage{"api": raw}}))
	res, err = old.Update(context.Background(), base, round("api", verdictParams, base.Add(5*time.Second), 0.01))
	require.NoError(t, err)
	require.NoError(t, res[0].Warning)
	require.Equal(t, stats.Verdict{}, res[0].Before, "a version 1 entry is unknown")
	require.Equal(t, int64(5), res[0].State.Probes, "and keeps its statistics")

	// a malformed verdict makes that entry start over
	e["verdict"] = json.RawMessage(`{"status":"sideways","since":1}`)
	raw, err = json.Marshal(e)
	require.NoError(t, err)
	require.NoError(t, old.Import(&Dump{Version: 2, Services: map[string]json.RawMessage{"api": raw}}))
	res, err = old.Update(context.Background(), base, round("api", verdictParams, base.Add(6*time.Second), 0.01))
	require.NoError(t, err)
	require.Error(t, res[0].Warning)
	require.Equal(t, int64(1), res[0].State.Probes)
}

// A state written before the verdict existed (layout 1, no v* fields in
// the stats hash) is migrated and read as unknown; a malformed verdict in
// the state resets the keys.
func TestVerdictRedisOldAndMalformedHash(t *testing.T) {
	srv := redistest.Start(t)
	r, log := newRedis(t, srv)
	base := time.Unix(1_700_000_000, 0)
	ctx := context.Background()
	old := r.keys("api")[2:]
	writeLayout1(t, srv.Client(), old, "old-agent", 1, verdictParams, pending{seq: 1, t: base.UnixNano(), ok: true, latency: 0.01, round: "1"})
	require.NoError(t, srv.Client().HDel(ctx, old[0], "vs", "vsince", "vf", "vok", "vslow", "vgood").Err())
	res, err := r.Update(ctx, base, round("api", verdictParams, base.Add(time.Second), 0.01))
	require.NoError(t, err)
	require.NoError(t, res[0].Warning)
	require.Equal(t, int64(2), res[0].State.Probes, "kept")
	require.Equal(t, stats.Verdict{}, res[0].Before)
	require.Equal(t, stats.Verdict{Status: stats.StatusUnknown, Since: base.Add(time.Second).UnixNano(), OK: 1, Good: 1}, res[0].State.Verdict)

	k := r.keys("api")[0]
	require.NoError(t, srv.Client().Eval(ctx, `local t = cmsgpack.unpack(redis.call('HGET', KEYS[1], 's')) t[16] = 7 return redis.call('HSET', KEYS[1], 's', cmsgpack.pack(t))`, []string{k}).Err())
	res, err = r.Update(ctx, base, round("api", verdictParams, base.Add(2*time.Second), 0.01))
	require.NoError(t, err)
	require.Error(t, res[0].Warning)
	require.Contains(t, res[0].Warning.Error(), "verdict status")
	require.Equal(t, int64(1), res[0].State.Probes, "reset")
	require.Empty(t, log.Warnings(), "the warning is the Entry's")
}
