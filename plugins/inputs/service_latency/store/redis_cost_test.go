package store

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// commandStat reads calls and usec_per_call of one command from Redis'
// own INFO commandstats.
func commandStat(t testing.TB, c *redis.Client, cmd string) (calls int64, usecPerCall float64) {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec_per_call":
				usecPerCall, _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return calls, usecPerCall
}

// cpuMainThread reads the Redis main thread's CPU time (user + sys, in
// seconds) from INFO cpu.
func cpuMainThread(t testing.TB, c *redis.Client) float64 {
	t.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	require.NoError(t, err)
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user_main_thread" || k == "used_cpu_sys_main_thread") {
			x, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			sum += x
		}
	}
	return sum
}

// TestRedisScriptCostPerService measures what one service's script costs
// Redis itself at the defaults (window 100, no histogram, no objective)
// with 10,000 services, from Redis' own INFO commandstats: CONFIG
// RESETSTAT before each of `updates` Updates of every service (after
// warm-up Updates that create the keys and fill the windows), then the
// usec_per_call of evalsha. Redis times a call by the wall clock, so a
// loaded machine (the agent's own goroutines compete for the CPUs)
// inflates some Updates: the least of them is the script's cost, the
// median is logged beside it, and the Redis main thread's CPU time per
// service (INFO cpu: parsing, the script, the replies) is logged too.
// Issue 17: at most 20 µs per service.
//
//	go test -run TestRedisScriptCostPerService -v ./plugins/inputs/service_latency/store/
func TestRedisScriptCostPerService(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 services")
	}
	srv := redistest.Start(t)
	c := srv.Client()
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Timeout: 5 * time.Second})
	require.NoError(t, err)
	defer r.Close()
	const n, warmup, updates = 10000, 3, 10
	now := time.Now()
	g := 0
	update := func() {
		now = now.Add(10 * time.Second)
		res, err := r.Update(context.Background(), now, scaleObs(n, g))
		require.NoError(t, err)
		g++
		require.Equal(t, int64(g), res[n-1].State.Probes)
	}
	for range warmup {
		update()
	}
	var per []float64
	var cpu float64
	for range updates {
		require.NoError(t, c.ConfigResetStat(context.Background()).Err())
		c0 := cpuMainThread(t, c)
		update()
		cpu += cpuMainThread(t, c) - c0
		calls, us := commandStat(t, c, "evalsha")
		if testing.Verbose() && len(per) == 0 {
			info, _ := c.Info(context.Background(), "commandstats").Result()
			t.Log(info)
		}
		require.Equal(t, int64(n), calls, "one script call per service per Update")
		per = append(per, us)
	}
	t.Logf("evalsha usec_per_call of each Update: %v", per)
	sorted := slices.Clone(per)
	slices.Sort(sorted)
	t.Logf("Redis time per service (INFO commandstats, evalsha usec_per_call, %d Updates of %d services): least %.2f µs, median %.2f µs; Redis main thread CPU per service (INFO cpu): %.2f µs",
		updates, n, sorted[0], sorted[len(sorted)/2], cpu/float64(updates*n)*1e6)
	// Measured on the loaded 2-core machine (same method, same day):
	// layout 1 least 78 µs, median 87 µs; layout 2 least 33 µs, median
	// 44 µs. Issue 17 asks for ≤ 20 µs, not reached there yet: this bound
	// catches a regression (layout 1 fails it).
	require.LessOrEqual(t, sorted[0], 60.0, "Redis time per service")
	require.Equal(t, Health{}, r.Health())
}
