package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// TestRedisScriptVariants (profiling aid, run by hand): the same script
// calls (one Update's KEYS and ARGV, captured after warm-up) against the
// same stored state (restored before each run) with each variant of the
// script in SL_LUA_VARIANTS (a directory of .lua files), from INFO
// commandstats.
//
//	SL_LUA_VARIANTS=/tmp/v go test -run TestRedisScriptVariants -v ./plugins/inputs/service_latency/store/
func TestRedisScriptVariants(t *testing.T) {
	dir := os.Getenv("SL_LUA_VARIANTS")
	if dir == "" {
		t.Skip("SL_LUA_VARIANTS not set")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.lua"))
	require.NoError(t, err)
	ctx := context.Background()
	srv := redistest.Start(t)
	c := srv.Client()
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer r.Close()
	const n, warmup = 2000, 3
	now := time.Now()
	for g := range warmup {
		now = now.Add(10 * time.Second)
		_, err := r.Update(ctx, now, scaleObs(n, g))
		require.NoError(t, err)
	}
	// The next Update's calls, as Update would send them.
	r.mu.Lock()
	r.seq += n
	seq0 := r.seq - n
	obs := scaleObs(n, warmup)
	batches := r.planLocked(obs, func(i int) pending {
		o := &obs[i]
		return pending{service: o.Service, params: o.Params, seq: seq0 + int64(i) + 1, t: now.Add(10 * time.Second).UnixNano(), ok: o.OK, latency: o.Latency, round: roundArg(o)}
	})
	for _, b := range batches {
		b.args = r.args(b)
	}
	r.mu.Unlock()
	// The stored state, to restore before each run.
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	dumps := make(map[string]string, len(keys))
	for _, k := range keys {
		dumps[k], err = c.Dump(ctx, k).Result()
		require.NoError(t, err)
	}
	restore := func() {
		pipe := c.Pipeline()
		for k, d := range dumps {
			pipe.RestoreReplace(ctx, k, 0, d)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	}
	// The variants are run in turn, round after round, so that a change
	// of the machine's load weighs on all of them alike.
	scripts := make([]*redis.Script, len(files))
	for i, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		scripts[i] = redis.NewScript(string(src))
	}
	per := make([][]float64, len(files))
	cpus := make([][]float64, len(files))
	for range 9 {
		for i, sc := range scripts {
			// one script loaded at a time, as in production (the Lua GC
			// marks every loaded script)
			require.NoError(t, c.ScriptFlush(ctx).Err())
			require.NoError(t, sc.Load(ctx, c).Err())
			restore()
			require.NoError(t, c.ConfigResetStat(ctx).Err())
			c0 := cpuMainThread(t, c)
			pipe := c.Pipeline()
			var cmds []*redis.Cmd
			for _, b := range batches {
				cmds = append(cmds, sc.EvalSha(ctx, pipe, r.keys(b.service), b.args...))
			}
			_, _ = pipe.Exec(ctx)
			for _, cmd := range cmds {
				require.NoError(t, cmd.Err(), filepath.Base(files[i]))
			}
			cpus[i] = append(cpus[i], (cpuMainThread(t, c)-c0)/n*1e6)
			calls, us := commandStat(t, c, "evalsha")
			require.Equal(t, int64(n), calls)
			per[i] = append(per[i], us)
		}
	}
	for i, f := range files {
		slices.Sort(per[i])
		slices.Sort(cpus[i])
		t.Logf("%-28s least %6.2f µs  median %6.2f µs  (main thread CPU per call: least %6.2f µs)", filepath.Base(f), per[i][0], per[i][len(per[i])/2], cpus[i][0])
	}
}
