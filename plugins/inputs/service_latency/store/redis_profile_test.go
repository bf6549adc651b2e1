package store

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// BenchmarkRedisScriptVariants times the store's script, and each
// variant of it in SL_LUA_VARIANTS (a directory of .lua files, to profile
// by hand: the same script with parts removed), on the same calls (one
// Update's KEYS and ARGV at the defaults, captured after warm-up) against
// the same stored state (restored before each run): the least and the
// median of 9 runs of each, from INFO commandstats (evalsha), and the
// Redis main thread's CPU per call. SL_SERVICES services (2,000);
// SL_ROUNDS=1 makes every observation end a round; SL_WARMUP Updates
// before (3). A file
// named *_argv17.lua is a script of before ARGV 18 (the agent's packed
// state), e.g. git show f0d268b~1:plugins/inputs/service_latency/store/redis.lua.
//
//	SL_LUA_VARIANTS=/tmp/v go test -run '^$' -bench RedisScriptVariants -benchtime 1x ./plugins/inputs/service_latency/store/
func BenchmarkRedisScriptVariants(b *testing.B) {
	t := b
	files := []string{"redis.lua"}
	if dir := os.Getenv("SL_LUA_VARIANTS"); dir != "" {
		more, err := filepath.Glob(filepath.Join(dir, "*.lua"))
		require.NoError(t, err)
		files = append(files, more...)
	}
	ctx := context.Background()
	srv := redistest.Start(t)
	c := srv.Client()
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer r.Close()
	n, warmup := 2000, 3
	// SL_ROUNDS=1: every observation ends a round (as the gather sends
	// them: the verdict steps in every call)
	benchObs := scaleObs
	if os.Getenv("SL_ROUNDS") == "1" {
		benchObs = func(n, round int) []Observation {
			o := scaleObs(n, round)
			for i := range o {
				o[i].EndsRound, o[i].RoundOK = true, o[i].OK
			}
			return o
		}
	}
	if v, err := strconv.Atoi(os.Getenv("SL_SERVICES")); err == nil {
		n = v
	}
	// SL_WARMUP Updates first (3; beyond 100 the windows are full)
	if v, err := strconv.Atoi(os.Getenv("SL_WARMUP")); err == nil {
		warmup = v
	}
	now := time.Now()
	for g := range warmup {
		now = now.Add(10 * time.Second)
		_, err := r.Update(ctx, now, benchObs(n, g))
		require.NoError(t, err)
	}
	// The next Update's calls, as Update would send them.
	r.mu.Lock()
	r.seq += int64(n)
	seq0 := r.seq - int64(n)
	obs := benchObs(n, warmup)
	batches := r.planLocked(obs, func(i int) pending {
		o := &obs[i]
		return pending{service: o.Service, params: o.Params, seq: seq0 + int64(i) + 1, t: now.Add(10 * time.Second).UnixNano(), ok: o.OK, latency: o.Latency, round: roundArg(o)}
	})
	for _, bt := range batches {
		bt.args = r.args(bt)
	}
	r.mu.Unlock()
	if sy := r.synced[batches[0].service]; sy != nil {
		b.Logf("packed state of a service: %d bytes (kept by the agent per service)", len(sy.blob))
	}
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
		src := []byte(redisLua)
		if i > 0 {
			var err error
			src, err = os.ReadFile(f)
			require.NoError(t, err)
		}
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
			for _, bt := range batches {
				args := bt.args
				if strings.HasSuffix(files[i], "_argv17.lua") {
					// a script of before ARGV 18 (the agent's packed state)
					args = append(args[:17:17], args[18:]...)
				}
				cmds = append(cmds, sc.EvalSha(ctx, pipe, r.keys(bt.service), args...))
			}
			_, _ = pipe.Exec(ctx)
			for _, cmd := range cmds {
				require.NoError(t, cmd.Err(), filepath.Base(files[i]))
			}
			cpus[i] = append(cpus[i], (cpuMainThread(t, c)-c0)/float64(n)*1e6)
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
	b.ReportMetric(per[0][0], "least-µs/call")
	b.ReportMetric(cpus[0][0], "least-cpu-µs/call")
}
