package store

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

var testParams = stats.Params{Window: 8, HalfLife: 30 * time.Second, Buckets: []float64{0.005, 0.02, 0.1}}

// fakeClock is a settable clock for the warning rate limits.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time           { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration)      { c.ns.Add(int64(d)) }
func (c *fakeClock) opts(o *RedisOptions)     { o.Now = c.Now }
func withQueue(n int) func(*RedisOptions)     { return func(o *RedisOptions) { o.QueueSize = n } }
func withAgent(id string) func(*RedisOptions) { return func(o *RedisOptions) { o.AgentID = id } }
func withTimeout(d time.Duration) func(*RedisOptions) {
	return func(o *RedisOptions) { o.Timeout = d }
}

func newRedis(t *testing.T, srv *redistest.Server, mods ...func(*RedisOptions)) (*Redis, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	o := RedisOptions{
		Client:    redis.UniversalOptions{Addrs: []string{srv.Addr()}},
		KeyPrefix: "t",
		Timeout:   2 * time.Second, // generous: a loaded CI machine
		Log:       log,
	}
	for _, m := range mods {
		m(&o)
	}
	r, err := NewRedis(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r, log
}

func obs1(service string, ok bool, latency float64) []Observation {
	return []Observation{{Service: service, Params: testParams, OK: ok, Latency: latency}}
}

// requireSameState checks that a state merged in Redis is the one
// stats.State.Observe builds from the same probes.
func requireSameState(t *testing.T, want, got *stats.State) {
	t.Helper()
	require.Equal(t, want.Count, got.Count, "count")
	require.Equal(t, want.Probes, got.Probes, "probes")
	require.Equal(t, want.Failures, got.Failures, "failures")
	require.Equal(t, want.ConsecutiveFailures, got.ConsecutiveFailures, "consecutive failures")
	require.Equal(t, want.Mean, got.Mean, "mean (same Welford steps in Lua)")
	require.Equal(t, want.M2, got.M2, "m2")
	require.Equal(t, want.Min, got.Min)
	require.Equal(t, want.Max, got.Max)
	require.InEpsilon(t, want.EWMA+1e-300, got.EWMA+1e-300, 1e-14, "ewma")
	require.Equal(t, want.EWMAAt, got.EWMAAt)
	require.Equal(t, want.LastSuccess, got.LastSuccess)
	require.Equal(t, want.LastFailure, got.LastFailure)
	require.Equal(t, ringOf(want), ringOf(got), "window, oldest first")
	require.Equal(t, want.Buckets, got.Buckets, "histogram")
	require.Equal(t, want.Sketch.GetCount(), got.Sketch.GetCount())
	require.Equal(t, want.Sketch.GetZeroCount(), got.Sketch.GetZeroCount())
	for _, q := range []float64{0, 0.25, 0.5, 0.9, 0.99, 1} {
		if want.Count == 0 {
			break
		}
		a, err := want.Sketch.GetValueAtQuantile(q)
		require.NoError(t, err)
		b, err := got.Sketch.GetValueAtQuantile(q)
		require.NoError(t, err)
		require.Equal(t, a, b, "sketch quantile %v", q)
	}
}

func ringOf(s *stats.State) []string {
	var out []string
	n := len(s.Ring)
	for k := range n {
		x := s.Ring[(s.RingPos+k)%n]
		if math.IsNaN(x) {
			out = append(out, "fail")
		} else {
			out = append(out, fmt.Sprint(x))
		}
	}
	return out
}

func TestRedisMergeMatchesObserve(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv)
	want := stats.NewState(testParams)
	now := time.Unix(1_700_000_000, 123456789)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		ok := i%7 != 3
		lat := rng.ExpFloat64() * 0.02
		switch i {
		case 5:
			lat = 0 // the sketch's zero bin
		case 6:
			lat = -1 // recorded as 0
		case 9:
			lat = 0.005 // exactly on a bound
		}
		if i == 12 {
			now = now.Add(-time.Second) // the clock steps back: EWMA stays
		} else {
			now = now.Add(time.Duration(rng.IntN(20000)) * time.Millisecond)
		}
		if i%10 == 8 {
			now = now.Add(90 * time.Second) // alpha > 1/2: the exp branch
		}
		prevOK, prevFail := want.LastSuccess, want.LastFailure
		want.Observe(now, ok, lat, testParams)
		// A shared state keeps the latest times (the agents' clocks differ).
		want.LastSuccess, want.LastFailure = max(prevOK, want.LastSuccess), max(prevFail, want.LastFailure)
		res, err := r.Update(context.Background(), now, obs1("api", ok, lat))
		require.NoError(t, err)
		require.NoError(t, res[0].Warning)
		requireSameState(t, want, res[0].State)
		require.NoError(t, res[0].State.Validate(testParams))
	}
	require.Zero(t, r.Health().WriteErrors)
	require.Zero(t, r.Health().QueueLen)
}

func TestRedisTwoAgentsShareOneState(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := newRedis(t, srv, withAgent("a"))
	b, _ := newRedis(t, srv, withAgent("b"))
	var samples []float64
	now := time.Now()
	var lastA, lastB *stats.State
	for i := range 30 {
		lat := 0.001 * float64(1+i%9)
		now = now.Add(time.Second)
		st := a
		if i%2 == 1 {
			st = b
		}
		res, err := st.Update(context.Background(), now, obs1("api", true, lat))
		require.NoError(t, err)
		samples = append(samples, lat)
		var sum float64
		for _, x := range samples {
			sum += x
		}
		got := res[0].State
		require.Equal(t, int64(len(samples)), got.Count, "every agent's probes are in the count")
		require.InEpsilon(t, sum/float64(len(samples)), got.Mean, 1e-12)
		if st == a {
			lastA = got.Clone()
		} else {
			lastB = got.Clone()
		}
	}
	// Both agents emit the same merged state: one more (failed) probe each
	// leaves the statistics of the successes equal.
	ra, err := a.Update(context.Background(), now.Add(time.Second), obs1("api", false, 0))
	require.NoError(t, err)
	rb, err := b.Update(context.Background(), now.Add(2*time.Second), obs1("api", false, 0))
	require.NoError(t, err)
	require.Equal(t, ra[0].State.Count, rb[0].State.Count)
	require.Equal(t, ra[0].State.Mean, rb[0].State.Mean)
	require.Equal(t, ra[0].State.M2, rb[0].State.M2)
	require.Equal(t, int64(32), rb[0].State.Probes)
	require.NotNil(t, lastA)
	require.NotNil(t, lastB)
}

// TestRedisRetriedWriteCountsOnce sends the same (agent, seq) batch twice,
// as a go-redis retry or a replay after a lost reply does.
func TestRedisRetriedWriteCountsOnce(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv, withAgent("agent-1"))
	now := time.Now()
	entries := []pending{{service: "api", params: testParams, seq: 7, t: now.UnixNano(), ok: true, latency: 0.01}}
	o := obs1("api", true, 0.01)
	for range 3 {
		outs := r.writeEntries(context.Background(), entries, o)
		require.NoError(t, outs["api"].err)
		require.Equal(t, int64(1), outs["api"].state.Count, "applied once")
		require.Equal(t, int64(1), outs["api"].state.Probes)
	}
	// a newer seq of the same agent is applied; an older one is not
	entries[0].seq = 8
	entries = append(entries, pending{service: "api", params: testParams, seq: 5, t: now.UnixNano(), ok: true, latency: 0.02})
	outs := r.writeEntries(context.Background(), entries, o)
	require.NoError(t, outs["api"].err)
	require.Equal(t, int64(2), outs["api"].state.Count)
	// another agent's seq 7 is its own
	other, _ := newRedis(t, srv, withAgent("agent-2"))
	outs = other.writeEntries(context.Background(), entries[:1], o)
	require.NoError(t, outs["api"].err)
	require.Equal(t, int64(3), outs["api"].state.Count)
	// the idempotence record
	rec, err := srv.Client().HGet(context.Background(), r.keys("api")[0], "a:agent-1").Result()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(rec, "8:"), rec)
}

func TestRedisKeysShareOneHashTag(t *testing.T) {
	for _, name := range []string{"api", "a}b{c", "{x}", "100%", "tcp://h:1/{}"} {
		keys := redisKeys("pfx", name)
		require.Len(t, keys, 6)
		var tag string
		for _, k := range keys {
			open := strings.IndexByte(k, '{')
			end := strings.IndexByte(k[open+1:], '}')
			require.Positive(t, open)
			require.GreaterOrEqual(t, end, 0)
			kt := k[open+1 : open+1+end]
			if tag == "" {
				tag = kt
			}
			require.Equal(t, tag, kt, "one slot per service: %v", keys)
			require.True(t, strings.HasPrefix(k, "pfx:{"))
		}
		require.Equal(t, escapeTag(name), tag, "the whole (escaped) name is the tag")
	}
	require.NotEqual(t, redisKeys("p", "a}b")[0], redisKeys("p", "a")[0])
	_, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}}, KeyPrefix: "a{b"})
	require.Error(t, err)
}

// TestRedisOutageQueuesAndReplaysExactlyOnce kills Redis (after a
// snapshot, like a crash of a persisting Redis), keeps gathering, and
// restarts it: every Update returns in time with the local state, and the
// replay brings the shared count to every probe taken.
func TestRedisOutageQueuesAndReplaysExactlyOnce(t *testing.T) {
	srv := redistest.Start(t)
	clock := newFakeClock()
	const timeout = 300 * time.Millisecond
	r, log := newRedis(t, srv, withTimeout(timeout), clock.opts)
	two := func(now time.Time, i int) []Observation {
		return []Observation{
			{Service: "a", Params: testParams, OK: true, Latency: 0.001 * float64(1+i%5)},
			{Service: "b", Params: testParams, OK: i%3 != 0, Latency: 0.002},
		}
	}
	now := time.Now()
	probes := 0
	var samplesA []float64
	step := func() []Entry {
		i := probes
		probes++
		now = now.Add(time.Second)
		o := two(now, i)
		samplesA = append(samplesA, o[0].Latency)
		start := time.Now()
		res, err := r.Update(context.Background(), now, o)
		require.NoError(t, err)
		require.Less(t, time.Since(start), timeout+300*time.Millisecond, "an Update never waits on Redis longer than the timeout")
		return res
	}
	for range 3 {
		step()
	}
	srv.SaveAndKill()
	for i := range 4 {
		res := step()
		require.Equal(t, int64(probes), res[0].State.Count, "local state: the last merged state plus this agent's probes")
		require.Equal(t, int64(probes), res[1].State.Probes)
		require.Equal(t, 2*(i+1), r.Health().QueueLen)
		clock.Add(10 * time.Second)
	}
	require.Len(t, log.Warnings(), 1, "one warning per outage, then at most one a minute: %v", log.Warnings())
	clock.Add(time.Minute)
	step()
	require.Len(t, log.Warnings(), 2, "another warning after a minute")
	require.Equal(t, int64(5), r.Health().WriteErrors)
	require.Equal(t, 10, r.Health().QueueLen)

	srv.Restart()
	res := step()
	require.Zero(t, r.Health().QueueLen)
	require.Equal(t, int64(10), r.replayed.Load())
	require.Equal(t, int64(probes), res[0].State.Count, "after the replay the shared count is every probe taken")
	require.Equal(t, int64(probes), res[1].State.Probes)
	var sum float64
	for _, x := range samplesA {
		sum += x
	}
	require.InEpsilon(t, sum/float64(len(samplesA)), res[0].State.Mean, 1e-12)
	require.Len(t, log.Warnings(), 2)
	require.Contains(t, strings.Join(logInfos(log), "\n"), "reachable again: 10 queued observations replayed")

	// the replay is exactly once: a second store reading the state sees
	// the same count
	other, _ := newRedis(t, srv, withAgent("reader"))
	res2, err := other.Update(context.Background(), now.Add(time.Second), []Observation{{Service: "a", Params: testParams, OK: false}})
	require.NoError(t, err)
	require.Equal(t, int64(probes), res2[0].State.Count)
}

func logInfos(l *testutil.CaptureLogger) []string {
	var out []string
	for _, m := range l.Messages() {
		if m.Level == 'I' {
			out = append(out, m.Text)
		}
	}
	return out
}

// TestRedisHungServerTimesOut pauses Redis (connections hang): the Update
// gives up after the timeout and emits the local state.
func TestRedisHungServerTimesOut(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = 250 * time.Millisecond
	r, _ := newRedis(t, srv, withTimeout(timeout))
	now := time.Now()
	_, err := r.Update(context.Background(), now, obs1("api", true, 0.01))
	require.NoError(t, err)
	srv.Pause()
	for i := range 3 {
		start := time.Now()
		res, err := r.Update(context.Background(), now.Add(time.Duration(i+1)*time.Second), obs1("api", true, 0.01))
		elapsed := time.Since(start)
		require.NoError(t, err)
		require.GreaterOrEqual(t, elapsed, timeout-10*time.Millisecond, "it did wait for Redis")
		require.Less(t, elapsed, timeout+300*time.Millisecond)
		require.Equal(t, int64(i+2), res[0].State.Count)
	}
	srv.Resume()
	res, err := r.Update(context.Background(), now.Add(10*time.Second), obs1("api", true, 0.01))
	require.NoError(t, err)
	require.Equal(t, int64(5), res[0].State.Count, "the hung writes were applied at most once")
	require.Zero(t, r.Health().QueueLen)
}

func TestRedisQueueIsBounded(t *testing.T) {
	srv := redistest.Start(t)
	r, log := newRedis(t, srv, withQueue(5), withTimeout(300*time.Millisecond))
	now := time.Now()
	srv.Kill()
	for i := range 4 {
		res, err := r.Update(context.Background(), now.Add(time.Duration(i)*time.Second), []Observation{
			{Service: "a", Params: testParams, OK: true, Latency: 0.01},
			{Service: "b", Params: testParams, OK: true, Latency: 0.01},
		})
		require.NoError(t, err)
		require.Equal(t, int64(i+1), res[0].State.Count)
	}
	require.Equal(t, 5, r.Health().QueueLen)
	require.Equal(t, int64(3), r.Health().Dropped)
	var full int
	for _, w := range log.Warnings() {
		if strings.Contains(w, "queue full") {
			full++
		}
	}
	require.Equal(t, 1, full, "drops are logged, at most once a minute")
	srv.Restart()
	res, err := r.Update(context.Background(), now.Add(10*time.Second), []Observation{
		{Service: "a", Params: testParams, OK: true, Latency: 0.01},
		{Service: "b", Params: testParams, OK: true, Latency: 0.01},
	})
	require.NoError(t, err)
	// 8 queued, the 3 oldest dropped (a, b, a), then this gather's two
	require.Equal(t, int64(2+1), res[0].State.Count)
	require.Equal(t, int64(3+1), res[1].State.Count)
}

// TestRedisMalformedKeysFallBackForThatServiceOnly puts garbage in one
// service's keys: that service falls back to the current sample with a
// warning naming the key, only its keys are rewritten, the other service
// goes on.
func TestRedisMalformedKeysFallBackForThatServiceOnly(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	ctx := context.Background()
	r, _ := newRedis(t, srv)
	ka, kb := r.keys("a"), r.keys("b")
	// setField rewrites one field of the packed state (1-based, see
	// redis.lua)
	setField := func(i int, v string) func() error {
		return func() error {
			return c.Eval(ctx, `local t = cmsgpack.unpack(redis.call('HGET', KEYS[1], 's')) t[tonumber(ARGV[1])] = cjson.decode(ARGV[2]) return redis.call('HSET', KEYS[1], 's', cmsgpack.pack(t))`, []string{ka[0]}, i, v).Err()
		}
	}
	cases := []struct {
		name   string
		key    string
		break_ func() error
		// full: the corruption is in a part the increments do not read;
		// it is found at the next full read (every fullReadEvery-th write
		// of the agent, or another agent's): have it now
		full bool
	}{
		{"wrong type", ka[0], func() error { c.Del(ctx, ka[0]); return c.Set(ctx, ka[0], "x", 0).Err() }, false},
		{"garbage state", ka[0], func() error { return c.HSet(ctx, ka[0], "s", "abc").Err() }, false},
		{"garbage field", ka[0], setField(5, `"abc"`), false},
		{"counters disagree", ka[0], setField(11, `1`), false},
		{"sketch mapping differs", ka[0], setField(2, `"ddsketch:other"`), false},
		{"state missing", ka[0], func() error { return c.HDel(ctx, ka[0], "s").Err() }, false},
		{"garbage bin", ka[0], func() error { return c.HSet(ctx, ka[0], "bnope", "1").Err() }, true},
		{"bin count", ka[0], func() error { return c.HSet(ctx, ka[0], "b-1", "1").Err() }, true},
		{"window entry", ka[1], func() error { return c.LPush(ctx, ka[1], "-3").Err() }, true},
		{"window type", ka[1], func() error { c.Del(ctx, ka[1]); return c.SAdd(ctx, ka[1], "x").Err() }, false},
	}
	now := time.Now()
	gather := func(latA float64) []Entry {
		now = now.Add(time.Second)
		res, err := r.Update(ctx, now, []Observation{
			{Service: "a", Params: testParams, OK: true, Latency: latA},
			{Service: "b", Params: testParams, OK: true, Latency: 0.003},
		})
		require.NoError(t, err)
		return res
	}
	for range 3 {
		gather(0.01)
	}
	nb := int64(3)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, tc.break_())
			bBefore, err := c.HGetAll(ctx, kb[0]).Result()
			require.NoError(t, err)
			if tc.full {
				r.mu.Lock()
				clear(r.synced)
				r.mu.Unlock()
			}
			res := gather(0.042)
			nb++
			require.Error(t, res[0].Warning)
			require.Contains(t, res[0].Warning.Error(), `"a"`)
			require.Contains(t, res[0].Warning.Error(), tc.key, "the warning names the key")
			require.Equal(t, int64(1), res[0].State.Count, "fallback: the current sample")
			require.Equal(t, 0.042, res[0].State.Mean)
			require.NoError(t, res[1].Warning)
			require.Equal(t, nb, res[1].State.Count, "the other service goes on")
			require.NotEmpty(t, bBefore["s"])
			// rewritten: the next gather builds on it
			res = gather(0.01)
			nb++
			require.NoError(t, res[0].Warning)
			require.Equal(t, int64(2), res[0].State.Count)
			require.Equal(t, nb, res[1].State.Count)
		})
	}
}

func TestRedisHistogramBoundsChangeRebuildsFromTheSketch(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv)
	now := time.Now()
	p1 := stats.Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.01, 0.1}}
	p2 := stats.Params{Window: 10, HalfLife: time.Minute, Buckets: []float64{0.005, 0.05, 0.5}}
	want := stats.NewState(p1)
	lats := []float64{0.001, 0.02, 0.2, 0.003, 0.07, 0, 0.005, 0.05, 0.5, 0.0049999, 0.0500001}
	for i, x := range lats {
		now = now.Add(time.Second)
		want.Observe(now, true, x, p1)
		res, err := r.Update(context.Background(), now, []Observation{{Service: "h", Params: p1, OK: true, Latency: x}})
		require.NoError(t, err)
		require.Equal(t, want.Buckets, res[0].State.Buckets, "probe %d", i)
	}
	// another agent (or a new config) with other bounds
	now = now.Add(time.Second)
	res, err := r.Update(context.Background(), now, []Observation{{Service: "h", Params: p2, OK: true, Latency: 0.3}})
	require.NoError(t, err)
	require.NoError(t, res[0].Warning)
	want.Observe(now, true, 0.3, p1)
	want.RebuildBuckets(p2)
	require.Equal(t, want.Buckets, res[0].State.Buckets, "as stats.State.RebuildBuckets")
	// and exact counting goes on with the new bounds
	now = now.Add(time.Second)
	res, err = r.Update(context.Background(), now, []Observation{{Service: "h", Params: p2, OK: true, Latency: 0.7}})
	require.NoError(t, err)
	want.Observe(now, true, 0.7, p2)
	require.Equal(t, want.Buckets, res[0].State.Buckets)
	require.Equal(t, int64(len(lats)+2), want.Buckets[0]+want.Buckets[1]+want.Buckets[2]+want.Buckets[3])
	require.NoError(t, res[0].State.Validate(p2))
}

func TestRedisOneScriptPerServiceInChunks(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv)
	var pipelines, cmds, maxPipe atomic.Int64
	r.mu.Lock()
	r.clientLocked().AddHook(countHook{&pipelines, &cmds, &maxPipe})
	r.mu.Unlock()
	const n = 1000
	o := make([]Observation, n)
	for i := range o {
		o[i] = Observation{Service: fmt.Sprintf("svc-%04d", i), Params: testParams, OK: true, Latency: 0.001 * float64(i%17)}
	}
	now := time.Now()
	for g := range 3 {
		start := time.Now()
		res, err := r.Update(context.Background(), now.Add(time.Duration(g)*time.Second), o)
		require.NoError(t, err)
		t.Logf("gather %d: %d services in %v", g, n, time.Since(start))
		for i := range res {
			require.Equal(t, int64(g+1), res[i].State.Count)
		}
	}
	// one script call per service per Update, in chunks of at most
	// DefaultRedisChunkSize (the script is loaded up front, not in a
	// pipeline)
	require.Equal(t, int64(3*n), cmds.Load())
	require.GreaterOrEqual(t, pipelines.Load(), int64(3*n/DefaultRedisChunkSize))
	require.LessOrEqual(t, maxPipe.Load(), int64(DefaultRedisChunkSize))
}

type countHook struct{ pipelines, cmds, max *atomic.Int64 }

func (countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		h.cmds.Add(int64(len(cmds)))
		for {
			m := h.max.Load()
			if int64(len(cmds)) <= m || h.max.CompareAndSwap(m, int64(len(cmds))) {
				break
			}
		}
		return next(ctx, cmds)
	}
}

func TestRedisRetainForgetsLocalStateAndQueue(t *testing.T) {
	srv := redistest.Start(t)
	r, _ := newRedis(t, srv, withTimeout(200*time.Millisecond))
	srv.Kill()
	_, err := r.Update(context.Background(), time.Now(), []Observation{
		{Service: "keep", Params: testParams, OK: true, Latency: 0.01},
		{Service: "drop", Params: testParams, OK: true, Latency: 0.01},
	})
	require.NoError(t, err)
	require.Equal(t, 2, r.Health().QueueLen)
	r.Retain(func(s string) bool { return s == "keep" })
	require.Equal(t, 1, r.Health().QueueLen)
}
