package main

// Micro-benchmarks of the state stores, through their public API: one
// service's update in the memory store (window 100 + sketch), the same per
// service in a gather-sized batch, and an update in the Redis store
// against a real redis-server (skipped when redis-server is missing).

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// microParams: window 100, sketch, no histogram (the plugin's defaults).
var microParams = stats.Params{Window: 100, HalfLife: 5 * time.Minute}

// latencies returns n lognormal latencies around 20 ms (seconds).
func latencies(seed uint64, n int) []float64 {
	r := rand.New(rand.NewPCG(seed, 2))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = 0.02 * (1 + r.ExpFloat64())
	}
	return xs
}

// warmMemory returns a memory store whose services have each seen 1,000
// probes (5 % failures), one every 10 s.
func warmMemory(services []string) (*store.Memory, time.Time) {
	m := store.NewMemory()
	now := time.Unix(1_700_000_000, 0)
	obs := make([]store.Observation, len(services))
	xs := latencies(1, 1000)
	for i := range 1000 {
		now = now.Add(10 * time.Second)
		for j, s := range services {
			obs[j] = store.Observation{Service: s, Params: microParams, OK: i%20 != 19, Latency: xs[(i+j)%len(xs)]}
		}
		if _, err := m.Update(context.Background(), now, obs); err != nil {
			panic(err)
		}
	}
	return m, now
}

// BenchmarkMemoryStoreUpdate is one state update: one service's
// observation through the memory store (map lookup, Welford, EWMA, window
// ring, DDSketch), one Update call per op.
func BenchmarkMemoryStoreUpdate(b *testing.B) {
	m, now := warmMemory([]string{"svc"})
	xs := latencies(2, 4096)
	obs := []store.Observation{{Service: "svc", Params: microParams}}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Second)
		obs[0].OK = i%20 != 19
		obs[0].Latency = xs[i&4095]
		if _, err := m.Update(ctx, now, obs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryStoreUpdateBatch is the same per service when a gather
// hands the store 1,000 observations at once, as the plugin does (one
// Update per gather): op = one gather; ns/service and allocs/service are
// per observation (the store reuses its result slice: no allocation).
func BenchmarkMemoryStoreUpdateBatch(b *testing.B) {
	const n = 1000
	names := make([]string, n)
	for i := range names {
		names[i] = "svc-" + strconv.Itoa(i)
	}
	m, now := warmMemory(names)
	xs := latencies(3, 4096)
	obs := make([]store.Observation, n)
	for i := range obs {
		obs[i] = store.Observation{Service: names[i], Params: microParams}
	}
	ctx := context.Background()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ReportAllocs()
	b.ResetTimer()
	k := 0
	for b.Loop() {
		now = now.Add(10 * time.Second)
		for i := range obs {
			k++
			obs[i].OK = k%20 != 19
			obs[i].Latency = xs[k&4095]
		}
		if _, err := m.Update(ctx, now, obs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/service")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N)/n, "allocs/service")
}

// BenchmarkRedisStoreUpdate is one service's observation through the
// Redis store (one pipelined Lua script round trip to a local
// redis-server), one Update call per op.
func BenchmarkRedisStoreUpdate(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("redis-server not installed (make deps)")
	}
	srv := redistest.Start(b)
	r, err := store.NewRedis(store.RedisOptions{
		Client:  redis.UniversalOptions{Addrs: []string{srv.Addr()}},
		AgentID: "bench",
		Timeout: 5 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	xs := latencies(4, 4096)
	obs := []store.Observation{{Service: "svc", Params: microParams}}
	for i := range 1000 { // warm: a full window and a populated sketch
		now = now.Add(10 * time.Second)
		obs[0].OK, obs[0].Latency = i%20 != 19, xs[i&4095]
		if _, err := r.Update(ctx, now, obs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Second)
		obs[0].OK, obs[0].Latency = i%20 != 19, xs[i&4095]
		res, err := r.Update(ctx, now, obs)
		if err != nil {
			b.Fatal(err)
		}
		if res[0].Warning != nil {
			b.Fatal(res[0].Warning)
		}
	}
}
