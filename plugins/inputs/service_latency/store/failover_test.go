package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

// failoverFigures are what a failover did to the observations of two
// agents writing through it.
type failoverFigures struct {
	submitted, stored int64
	lost, doubled     int64
	resumed           time.Duration // from the kill to an agent's first queue drained
	drained           time.Duration // from the kill to both queues empty
}

func (f failoverFigures) resumedText() string {
	if f.resumed == 0 {
		return "not while writing (only in the drain after)"
	}
	return f.resumed.Round(time.Millisecond).String()
}

// runThroughFailover has two agents (stores made by mk) write one
// observation per service every 20 ms, kills the master after 1 s
// (kill), restarts it once the replica has taken over (failedOver,
// rejoin), goes on 2 s, drains the queues
// and compares, per service, the probes stored in Redis (read through
// read) with the observations submitted.
func runThroughFailover(t *testing.T, mk func(id string) *Redis, kill, failedOver, rejoin func(), read redis.Cmdable, services int) failoverFigures {
	t.Helper()
	names := make([]string, services)
	for i := range names {
		names[i] = fmt.Sprintf("fo-%d", i)
	}
	agents := []*Redis{mk("fa"), mk("fb")}
	var mu sync.Mutex
	submitted := map[string]int64{}
	var killedAt time.Time
	var resumed time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range agents {
		wg.Add(1)
		go func() {
			queued := false
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				obs := make([]Observation, len(names))
				for i, n := range names {
					obs[i] = Observation{Service: n, Params: testParams, OK: true, Latency: 0.001}
				}
				_, err := r.Update(context.Background(), time.Now(), obs)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, n := range names {
					submitted[n]++
				}
				switch q := r.Health().QueueLen; {
				case q > 0:
					queued = true
				case queued && resumed == 0:
					resumed = time.Since(killedAt)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	kill()
	failedOver()
	// the old master back, as a replica of the new one: until then a
	// write that waits for a replica cannot be acknowledged
	rejoin()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	// drain what is still queued
	for _, r := range agents {
		for i := 0; r.Health().QueueLen > 0 && i < 300; i++ {
			_, err := r.Update(context.Background(), time.Now(), nil)
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond)
		}
		require.Zero(t, r.Health().QueueLen, "the queue drains")
	}
	f := failoverFigures{resumed: resumed, drained: time.Since(killedAt) - 2*time.Second}
	ctx := context.Background()
	for _, n := range names {
		raw, err := read.HGet(ctx, redisKeys("fo", n)[0], "s").Result()
		require.NoError(t, err, n)
		v, err := mpDecode([]byte(raw))
		require.NoError(t, err)
		stored := v.([]interface{})[blobProbes].(int64)
		want := submitted[n]
		f.submitted += want
		f.stored += stored
		if stored < want {
			f.lost += want - stored
		} else {
			f.doubled += stored - want
		}
	}
	return f
}

// Two agents writing through a Sentinel failover (the master SIGKILLed)
// with wait_replicas = 1 lose and double no observation: a write counts
// only once the replica has it, the rest is queued and sent again to the
// promoted replica, where the script skips what it already has.
func TestRedisSentinelFailoverLosesNothing(t *testing.T) {
	for _, wait := range []int{1, 0} {
		t.Run(fmt.Sprintf("wait_replicas=%d", wait), func(t *testing.T) {
			st := redistest.StartSentinel(t)
			old := st.Current()
			mk := func(id string) *Redis {
				r, err := NewRedis(RedisOptions{
					Client:       redis.UniversalOptions{Addrs: st.Addrs(), MasterName: redistest.SentinelMaster},
					KeyPrefix:    "fo",
					Timeout:      500 * time.Millisecond,
					AgentID:      id,
					WaitReplicas: wait,
				})
				require.NoError(t, err)
				t.Cleanup(func() { _ = r.Close() })
				return r
			}
			var promoted *redistest.Server
			read := redis.NewClient(&redis.Options{Addr: st.Replica.Addr(), DisableIdentity: true})
			defer read.Close()
			f := runThroughFailover(t, mk, old.Kill, func() { promoted = st.WaitFailover(old, 30*time.Second) }, func() { old.RestartAsReplicaOf(promoted) }, read, 20)
			require.Equal(t, st.Replica, promoted)
			t.Logf("sentinel, wait_replicas=%d: %d observations submitted, %d stored, %d lost, %d doubled; a queue first drained %s after the kill, both queues %s after it",
				wait, f.submitted, f.stored, f.lost, f.doubled, f.resumedText(), f.drained.Round(time.Millisecond))
			require.Zero(t, f.doubled, "never doubled")
			if wait > 0 {
				require.Zero(t, f.lost, "none lost with WAIT")
			}
		})
	}
}

// The same through a Redis Cluster failover: one of the three masters
// SIGKILLed, its replica promoted.
func TestRedisClusterFailoverLosesNothing(t *testing.T) {
	c := redistest.StartCluster(t)
	victim := c.MasterOf(redisKeys("fo", "fo-0")[0])
	mk := func(id string) *Redis {
		r, err := NewRedis(RedisOptions{
			Client:       redis.UniversalOptions{Addrs: c.Addrs()},
			KeyPrefix:    "fo",
			Timeout:      500 * time.Millisecond,
			AgentID:      id,
			WaitReplicas: 1,
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Close() })
		return r
	}
	read := c.Client()
	defer read.Close()

	// the fleet's leases live in one slot of the Cluster
	fo := FleetOptions{Replicas: 1, Lease: time.Minute}
	var fleets []*Fleet
	for _, id := range []string{"c1", "c2"} {
		f, err := NewFleet(RedisOptions{Client: redis.UniversalOptions{Addrs: c.Addrs()}, KeyPrefix: "fo", AgentID: id, Timeout: 2 * time.Second}, fo)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		fleets = append(fleets, f)
	}
	fleets[0].Renew(context.Background(), time.Second)
	sh := fleets[1].Renew(context.Background(), time.Second)
	require.NoError(t, sh.Err)
	require.Equal(t, []string{"c1", "c2"}, sh.Members)

	f := runThroughFailover(t, mk, victim.KillKeepConfig, func() { c.WaitFailover(redisKeys("fo", "fo-0")[0], victim, 30*time.Second) }, victim.Restart, read, 30)
	t.Logf("cluster, wait_replicas=1: %d observations submitted, %d stored, %d lost, %d doubled; a queue first drained %s after the kill, both queues %s after it",
		f.submitted, f.stored, f.lost, f.doubled, f.resumedText(), f.drained.Round(time.Millisecond))
	require.Zero(t, f.doubled, "never doubled")
	require.Zero(t, f.lost, "none lost with WAIT")
}

// What WAIT costs: Updates of 1,000 services (one observation each)
// against a master with one replica on loopback, with wait_replicas = 0
// and 1 in turn (the medians of 15 Updates each).
func TestRedisWaitCost(t *testing.T) {
	m := redistest.Start(t)
	redistest.StartReplica(t, m)
	const services = 1000
	obs := make([]Observation, services)
	for i := range obs {
		obs[i] = Observation{Service: fmt.Sprintf("w-%d", i), Params: testParams, OK: true, Latency: 0.001}
	}
	stores := make([]*Redis, 2)
	for wait := range stores {
		r, err := NewRedis(RedisOptions{
			Client:       redis.UniversalOptions{Addrs: []string{m.Addr()}},
			KeyPrefix:    fmt.Sprintf("w%d", wait),
			Timeout:      2 * time.Second,
			AgentID:      "w",
			WaitReplicas: wait,
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = r.Close() })
		stores[wait] = r
	}
	took := make([][]time.Duration, 2)
	for i := range 17 {
		for wait, r := range stores {
			began := time.Now()
			_, err := r.Update(context.Background(), time.Now(), obs)
			require.NoError(t, err)
			require.Zero(t, r.Health().QueueLen, "every write acknowledged")
			if i >= 2 { // the first writes create the keys
				took[wait] = append(took[wait], time.Since(began))
			}
		}
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	off, on := med(took[0]), med(took[1])
	require.Zero(t, stores[1].unreplicated.Load())
	t.Logf("an Update of %d services: %s without WAIT, %s with wait_replicas = 1 (%+.1f%%, %+.1f µs per service)",
		services, off.Round(time.Microsecond), on.Round(time.Microsecond), 100*(on.Seconds()-off.Seconds())/off.Seconds(),
		(on-off).Seconds()*1e6/services)
}

// With wait_replicas and no replica, nothing counts as written: the
// agent emits its local state, queues the observations and says why; a
// replica that connects lets the queue drain, exactly once.
func TestRedisWaitWithoutReplicaQueues(t *testing.T) {
	m := redistest.Start(t)
	r, log := newRedis(t, m, withTimeout(300*time.Millisecond), func(o *RedisOptions) { o.WaitReplicas = 1 })
	for i := range 3 {
		res, err := r.Update(context.Background(), time.Now(), obs1("nw", true, 0.001))
		require.NoError(t, err)
		require.Equal(t, int64(i+1), res[0].State.Count, "local state")
	}
	require.Equal(t, 3, r.Health().QueueLen)
	require.NotEmpty(t, log.Warnings())
	require.Contains(t, log.Warnings()[0], "acknowledged by 0 of wait_replicas = 1")
	redistest.StartReplica(t, m)
	// a loaded machine may need more than one WAIT of half the timeout
	probes := int64(3)
	for i := 0; i < 20; i++ {
		res, err := r.Update(context.Background(), time.Now(), obs1("nw", true, 0.001))
		require.NoError(t, err)
		probes++
		if r.Health().QueueLen == 0 {
			require.Equal(t, probes, res[0].State.Count, "every observation once: the script skipped the ones it had")
			return
		}
	}
	t.Fatalf("the queue did not drain with a replica: %d queued", r.Health().QueueLen)
}

func TestRedisConfigWaitReplicas(t *testing.T) {
	c := RedisConfig{Address: "127.0.0.1:6379", WaitReplicas: 1}
	o, err := c.Options()
	require.NoError(t, err)
	require.Equal(t, 1, o.WaitReplicas)
	c.WaitReplicas = -1
	_, err = c.Options()
	require.ErrorContains(t, err, "wait_replicas")
}
