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
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Issue 12.1: the Redis store at 10,000 services.

// scaleParams are the plugin's defaults (window 100, EWMA half-life 5m).
var scaleParams = stats.Params{Window: 100, HalfLife: 5 * time.Minute}

func scaleObs(n, round int) []Observation {
	o := make([]Observation, n)
	for i := range o {
		o[i] = Observation{Service: fmt.Sprintf("svc-%05d", i), Params: scaleParams, OK: (i+round)%11 != 0, Latency: 0.001 * float64(1+(i+round)%23)}
	}
	return o
}

// redisProbes reads a service's probe count (latency_count + failures)
// straight from Redis.
func redisProbes(t *testing.T, c *redis.Client, r *Redis, service string) int64 {
	t.Helper()
	return redisStateField(t, c, r.keys(service)[0], blobProbes).(int64)
}

// requireExactInRedis checks the first, middle and last service (and a
// sample in between) of n: Redis holds exactly `updates` probes each.
func requireExactInRedis(t *testing.T, srv *redistest.Server, r *Redis, n int, updates int64) {
	t.Helper()
	c := srv.Client()
	for _, i := range []int{0, n / 3, n / 2, 2 * n / 3, n - 1} {
		require.Equal(t, updates, redisProbes(t, c, r, fmt.Sprintf("svc-%05d", i)), "service %d: no loss, no double count", i)
	}
}

func warningsWith(l *testutil.CaptureLogger, s string) int {
	n := 0
	for _, w := range l.Warnings() {
		if strings.Contains(w, s) {
			n++
		}
	}
	return n
}

// TestRedis10kServicesDefaultOptions: 10,000 services with the default
// options (timeout 500ms). On the old code the whole Update was one
// pipeline of 10,000 EVALSHA (~80µs each in Redis, ~0.8s) under one 500ms
// deadline: every Update ended in "context deadline exceeded", Redis kept
// nothing (or a prefix that was resent forever), the results came from
// the local state and Health showed write errors with a full queue — each
// assertion below on Health, on the counts in Redis and on
// "no warning" fails there.
func TestRedis10kServicesDefaultOptions(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 services")
	}
	srv := redistest.Start(t)
	log := &testutil.CaptureLogger{}
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Log: log})
	require.NoError(t, err)
	defer r.Close()
	const n, updates = 10000, 4
	now := time.Now()
	for g := range updates {
		o := scaleObs(n, g)
		now = now.Add(10 * time.Second)
		start := time.Now()
		res, err := r.Update(context.Background(), now, o)
		elapsed := time.Since(start)
		require.NoError(t, err)
		t.Logf("update %d: %d services in %v", g, n, elapsed)
		require.Less(t, elapsed, 20*time.Second, "bounded: %d chunks of %d", n/DefaultRedisChunkSize, DefaultRedisChunkSize)
		for i := range res {
			require.NoError(t, res[i].Warning)
			require.Equal(t, int64(g+1), res[i].State.Probes, "service %d: the merged state from Redis", i)
		}
		require.Equal(t, Health{}, r.Health(), "no write error, nothing queued")
	}
	requireExactInRedis(t, srv, r, n, updates)
	require.Empty(t, log.Warnings())
}

// TestRedisSlowRepliesAreSlowNotUnreachable: the replies of one chunk
// arrive after its deadline (a proxy holds them back) while Redis itself
// applied the chunk and answers PING. The store reports a slow write (not
// an outage), the chunk's services emit the local state and are queued,
// and their resend at the next Update — already applied in Redis — is
// skipped by the script: the counts stay exact. On the old code the one
// pipeline missed its deadline as well, but nothing told slow from
// unreachable (one "unreachable or failing" warning, no SlowWrites).
func TestRedisSlowRepliesAreSlowNotUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	log := &testutil.CaptureLogger{}
	const timeout = 300 * time.Millisecond
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{proxy.Addr()}}, Timeout: timeout, Log: log})
	require.NoError(t, err)
	defer r.Close()
	const n = 1200 // three chunks
	now := time.Now()
	update := func(g int) []Entry {
		now = now.Add(10 * time.Second)
		res, err := r.Update(context.Background(), now, scaleObs(n, g))
		require.NoError(t, err)
		return res
	}
	update(0)
	require.Equal(t, Health{}, r.Health())

	proxy.DelayReplies(timeout + 100*time.Millisecond) // past the chunk's deadline, not the PING's
	start := time.Now()
	res := update(1)
	require.Less(t, time.Since(start), 4*timeout, "the chunks before it, one missed deadline, one PING")
	h := r.Health()
	require.Equal(t, int64(1), h.SlowWrites)
	require.Equal(t, int64(1), h.WriteErrors)
	require.False(t, h.Unreachable, "PING answered: slow, not unreachable")
	require.Equal(t, n, h.QueueLen, "the failed chunk and the ones after it are queued")
	for i := range res {
		require.Equal(t, int64(2), res[i].State.Probes, "local state: last merged + this probe")
	}
	require.Equal(t, 1, warningsWith(log, " services missed its 300ms deadline while Redis answers PING"), "%v", log.Warnings())
	require.Zero(t, warningsWith(log, "unreachable"))
	// the first chunk reached Redis although its replies were lost
	require.Equal(t, int64(2), redisProbes(t, srv.Client(), r, "svc-00000"))
	require.Equal(t, int64(1), redisProbes(t, srv.Client(), r, fmt.Sprintf("svc-%05d", n-1)))

	res = update(2)
	h = r.Health()
	require.Zero(t, h.QueueLen, "the backlog is replayed")
	require.Equal(t, int64(1), h.SlowWrites)
	for i := range res {
		require.NoError(t, res[i].Warning)
		require.Equal(t, int64(3), res[i].State.Probes, "service %d: the resend of an applied chunk is skipped", i)
	}
	requireExactInRedis(t, srv, r, n, 3)
	require.Contains(t, strings.Join(logInfos(log), "\n"), "reachable again")
}

// TestRedisPausedWritesAreSlowAndExactAfterwards: Redis holds every write
// (CLIENT PAUSE WRITE) for part of an Update but answers PING. Slow, not
// unreachable; nothing of the held chunk is applied twice or lost.
func TestRedisPausedWritesAreSlowAndExactAfterwards(t *testing.T) {
	srv := redistest.Start(t)
	log := &testutil.CaptureLogger{}
	const timeout = 300 * time.Millisecond
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Timeout: timeout, Log: log})
	require.NoError(t, err)
	defer r.Close()
	const n = 2000
	now := time.Now()
	update := func(g int) {
		now = now.Add(10 * time.Second)
		_, err := r.Update(context.Background(), now, scaleObs(n, g))
		require.NoError(t, err)
	}
	update(0)
	srv.PauseWrites(timeout + 200*time.Millisecond)
	update(1)
	h := r.Health()
	require.Equal(t, int64(1), h.SlowWrites, "%+v %v", h, log.Warnings())
	require.False(t, h.Unreachable)
	require.Positive(t, h.QueueLen)
	time.Sleep(300 * time.Millisecond) // the pause ends
	update(2)
	require.Zero(t, r.Health().QueueLen)
	requireExactInRedis(t, srv, r, n, 3)
	require.Zero(t, warningsWith(log, "unreachable"))
}

// TestRedisRestartDrainsTheBacklogAtABoundedRate: Redis is killed for
// five Updates and restarted. The backlog (five observations per service)
// drains at most max(ReplayPerUpdate, 2 per service with a backlog) per
// Update, each service's observations in order, and the counts end exact.
// The old code replayed the whole queue in the first Update (one
// pipeline, no bound): the per-Update bound asserted here fails there.
func TestRedisRestartDrainsTheBacklogAtABoundedRate(t *testing.T) {
	srv := redistest.Start(t)
	log := &testutil.CaptureLogger{}
	const n, replay = 200, 100 // raised to 2 per service: 400 per Update
	r, err := NewRedis(RedisOptions{
		Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}, Timeout: 300 * time.Millisecond,
		QueueSize: 5000, ReplayPerUpdate: replay, Log: log,
	})
	require.NoError(t, err)
	defer r.Close()
	now := time.Now()
	g := 0
	update := func() []Entry {
		now = now.Add(10 * time.Second)
		res, err := r.Update(context.Background(), now, scaleObs(n, g))
		require.NoError(t, err)
		g++
		for i := range res {
			require.Equal(t, int64(g), res[i].State.Probes, "service %d: every probe in the emitted state", i)
		}
		return res
	}
	for range 3 {
		update()
	}
	srv.SaveAndKill() // a crash of a Redis that persists its data
	for range 5 {
		update()
	}
	h := r.Health()
	require.True(t, h.Unreachable)
	require.Zero(t, h.SlowWrites, "refused: unreachable, not slow")
	require.Equal(t, int64(5), h.WriteErrors)
	require.Equal(t, 5*n, h.QueueLen)
	require.Equal(t, 1, warningsWith(log, "unreachable"), "one warning per outage: %v", log.Warnings())

	srv.Restart()
	queue := []int{h.QueueLen}
	for r.Health().QueueLen > 0 {
		before := r.replayed.Load()
		update()
		require.LessOrEqual(t, r.replayed.Load()-before, int64(max(replay, 2*n)), "bounded replay per Update")
		queue = append(queue, r.Health().QueueLen)
		require.Less(t, queue[len(queue)-1], queue[len(queue)-2], "the backlog shrinks at every Update: %v", queue)
		require.Less(t, len(queue), 10)
	}
	t.Logf("queue after each Update: %v", queue)
	require.Equal(t, []int{1000, 800, 600, 400, 0}, queue, "2 queued per service per Update, the new one held behind")
	require.False(t, r.Health().Unreachable)
	requireExactInRedis(t, srv, r, n, int64(g))
	require.Zero(t, r.Health().Dropped)
}

// BenchmarkRedisStoreUpdate10k measures one Update of 10,000 services
// (default options, window 100) against a local redis-server:
//
//	go test -run '^$' -bench BenchmarkRedisStoreUpdate10k -benchtime 10x ./plugins/inputs/service_latency/store/
func BenchmarkRedisStoreUpdate10k(b *testing.B) {
	srv := redistest.Start(b)
	r, err := NewRedis(RedisOptions{Client: redis.UniversalOptions{Addrs: []string{srv.Addr()}}})
	require.NoError(b, err)
	defer r.Close()
	const n = 10000
	now := time.Now()
	g := 0
	for b.Loop() {
		now = now.Add(10 * time.Second)
		_, err := r.Update(context.Background(), now, scaleObs(n, g))
		if err != nil {
			b.Fatal(err)
		}
		g++
	}
	if h := r.Health(); h != (Health{}) {
		b.Fatalf("health %+v", h)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n, "µs/service")
}
