package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
)

func withQueueFile(path string) func(*RedisOptions) {
	return func(o *RedisOptions) { o.QueueFile = path }
}

func readQueueFile(t *testing.T, path string) queueFile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var qf queueFile
	require.NoError(t, json.Unmarshal(data, &qf))
	return qf
}

// An agent that restarts while Redis is unreachable keeps its queued
// observations in queue_file and replays them, exactly once and under
// the agent id they were sent with, when Redis answers.
func TestRedisQueueFileSurvivesRestart(t *testing.T) {
	srv := redistest.Start(t)
	path := filepath.Join(t.TempDir(), "queue.json")
	const timeout = 300 * time.Millisecond
	a, _ := newRedis(t, srv, withTimeout(timeout), withQueueFile(path))
	id := a.AgentID()
	update := func(r *Redis, ok bool) Entry {
		t.Helper()
		res, err := r.Update(context.Background(), time.Now(), []Observation{{Service: "q", Params: testParams, OK: ok, Latency: 0.002, EndsRound: true, RoundOK: ok}})
		require.NoError(t, err)
		return res[0]
	}
	update(a, true)
	update(a, true)
	_, err := os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist, "no file while Redis answers")
	srv.SaveAndKill()
	update(a, true)
	update(a, false)
	update(a, true)
	require.Equal(t, 3, a.Health().QueueLen)
	qf := readQueueFile(t, path)
	require.Len(t, qf.Entries, 3)
	require.Equal(t, id, qf.AgentID)
	require.NoError(t, a.Close()) // cannot replay: kept on disk
	require.Len(t, readQueueFile(t, path).Entries, 3)

	// the next process, Redis still down: it adopts the file's agent id
	b, blog := newRedis(t, srv, withTimeout(timeout), withQueueFile(path))
	require.Equal(t, id, b.AgentID())
	require.Equal(t, 3, b.Health().QueueLen)
	require.Contains(t, logInfos(blog)[0], "3 observations from queue file")
	update(b, true)
	require.Len(t, readQueueFile(t, path).Entries, 4)

	srv.Restart() // with the snapshot of the first two
	e := update(b, true)
	require.Zero(t, b.Health().QueueLen)
	require.Equal(t, int64(7), e.State.Probes, "every probe of both processes, once")
	require.Equal(t, int64(6), e.State.Count)
	require.Equal(t, int64(1), e.State.Failures)
	require.Empty(t, readQueueFile(t, path).Entries, "emptied on disk too")

	// the replay is exactly once: another agent reads the same count
	c, _ := newRedis(t, srv, withAgent("reader"))
	res, err := c.Update(context.Background(), time.Now(), obs1("q", true, 0.001))
	require.NoError(t, err)
	require.Equal(t, int64(8), res[0].State.Probes)
}

// A queue file that does not decode is kept aside and the agent starts
// with an empty queue; malformed observations in a good file are dropped,
// the others kept; at most queue_size are kept.
func TestRedisQueueFileCorruptTolerant(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "queue.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"version":1,"entries":[{"serv`), 0o600))
	r, log := newRedis(t, srv, withQueueFile(path))
	require.Zero(t, r.Health().QueueLen)
	require.Len(t, log.Warnings(), 1)
	require.Contains(t, log.Warnings()[0], "malformed")
	aside, _ := filepath.Glob(path + ".corrupt-*")
	require.Len(t, aside, 1)
	require.NoError(t, r.Close())

	good := queueEntry{Service: "g", Params: testParams, Seq: 5, T: time.Now().UnixNano(), OK: true, Latency: 0.001}
	bad := good
	bad.Params.Window = 0
	qf := queueFile{Version: queueFileVersion, AgentID: "ag", Entries: []queueEntry{good, bad, good, good}}
	qf.Entries[2].Seq, qf.Entries[3].Seq = 6, 7
	data, err := json.Marshal(qf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o600))
	r2, log2 := newRedis(t, srv, withQueueFile(path), withQueue(2))
	require.Equal(t, 2, r2.Health().QueueLen, "the newest queue_size of the good ones")
	require.Equal(t, "ag", r2.AgentID())
	require.Contains(t, log2.Warnings()[0], "2 malformed or excess observations dropped, 2 kept")
	res, err := r2.Update(context.Background(), time.Now(), obs1("g", true, 0.001))
	require.NoError(t, err)
	require.Equal(t, int64(3), res[0].State.Probes, "the two kept, then the new one")

	require.ErrorContains(t, (&RedisOptions{QueueFile: dir}).check(), "queue_file")
	require.ErrorContains(t, (&RedisOptions{QueueFile: filepath.Join(dir, "no", "q.json")}).check(), "does not exist")
}
