package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// The replay queue on disk (queue_file): the observations not yet
// written to Redis, so that an agent that restarts during an outage
// replays them when Redis answers. The file is rewritten atomically
// (temporary file, fsync, rename, fsync of the directory) after every
// Update that leaves the queue non-empty or empties it — never while the
// queue stays empty, so an agent whose Redis answers does not write it.
// It holds at most QueueSize observations, like the queue.
//
// A file that cannot be decoded is kept aside as
// "<file>.corrupt-<UTC timestamp>" with a warning and the agent starts
// with an empty queue; a malformed observation in an otherwise good file
// is dropped (counted in the warning), the others are replayed.

// queueFileVersion is the format of the queue file.
const queueFileVersion = 1

type queueFile struct {
	Version int    `json:"version"`
	AgentID string `json:"agent_id"`
	// Entries, oldest first.
	Entries []queueEntry `json:"entries"`
}

type queueEntry struct {
	Service string       `json:"service"`
	Params  stats.Params `json:"params"`
	Seq     int64        `json:"seq"`
	T       int64        `json:"t"`
	OK      bool         `json:"ok"`
	Latency float64      `json:"latency"`
	Round   string       `json:"round,omitempty"`
}

// checkQueueFile reports a queue_file path that cannot work (a
// directory, or a file in a directory that does not exist).
func checkQueueFile(path string) error {
	if path == "" {
		return nil
	}
	return checkFilePath("queue_file", path)
}

// loadQueueLocked reads the queue file into the queue (NewRedis, before
// any Update). It returns the agent id the file was written under ("":
// none). It never fails: a file that cannot be read or decoded is kept
// aside and the queue starts empty.
func (r *Redis) loadQueueLocked() string {
	path := resolveLink(r.opts.QueueFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ""
	}
	if err != nil {
		r.opts.Log.Warnf("Redis state store: queue file %s cannot be read (%v): starting with an empty replay queue; it will be overwritten", r.opts.QueueFile, err)
		return ""
	}
	var qf queueFile
	err = json.Unmarshal(data, &qf)
	if err == nil && qf.Version != queueFileVersion {
		err = fmt.Errorf("version %d (want %d)", qf.Version, queueFileVersion)
	}
	if err == nil && qf.AgentID != "" && checkAgentID(qf.AgentID) != nil {
		err = fmt.Errorf("agent id %q", qf.AgentID)
	}
	if err != nil {
		aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			r.opts.Log.Warnf("Redis state store: queue file %s is malformed (%v) and cannot be kept aside (%v): starting with an empty replay queue", r.opts.QueueFile, err, rerr)
		} else {
			r.opts.Log.Warnf("Redis state store: queue file %s is malformed (%v): kept aside as %s; starting with an empty replay queue", r.opts.QueueFile, err, aside)
		}
		return ""
	}
	bad := 0
	for _, e := range qf.Entries {
		if e.Service == "" || e.Params.Validate() != nil ||
			math.IsNaN(e.Latency) || math.IsInf(e.Latency, 0) || (e.Round != "" && e.Round != "0" && e.Round != "1") {
			bad++
			continue
		}
		r.queue = append(r.queue, pending{service: e.Service, params: e.Params, seq: e.Seq, t: e.T, ok: e.OK, latency: e.Latency, round: e.Round})
		r.seq = max(r.seq, e.Seq)
	}
	if n := len(r.queue) - r.opts.QueueSize; n > 0 {
		r.queue = append(r.queue[:0], r.queue[n:]...)
		bad += n
	}
	r.queueLen.Store(int64(len(r.queue)))
	r.queueOnDisk = len(r.queue)
	if bad > 0 {
		r.opts.Log.Warnf("Redis state store: queue file %s: %d malformed or excess observations dropped, %d kept for replay", r.opts.QueueFile, bad, len(r.queue))
	} else if len(r.queue) > 0 {
		r.opts.Log.Infof("Redis state store: %d observations from queue file %s kept for replay", len(r.queue), r.opts.QueueFile)
	}
	return qf.AgentID
}

// saveQueueLocked writes the queue to the queue file when it holds
// something or has just been emptied.
func (r *Redis) saveQueueLocked() {
	if r.opts.QueueFile == "" || (len(r.queue) == 0 && r.queueOnDisk == 0) {
		return
	}
	qf := queueFile{Version: queueFileVersion, AgentID: r.opts.AgentID, Entries: make([]queueEntry, len(r.queue))}
	for i, e := range r.queue {
		ok, lat := e.ok, e.latency
		if math.IsNaN(lat) || math.IsInf(lat, 0) { // JSON has no NaN; the script counts it as failed anyway
			ok, lat = false, 0
		}
		qf.Entries[i] = queueEntry{Service: e.service, Params: e.params, Seq: e.seq, T: e.t, OK: ok, Latency: lat, Round: e.round}
	}
	err := writeAtomic(resolveLink(r.opts.QueueFile), func(w io.Writer) error { return json.NewEncoder(w).Encode(&qf) })
	if err != nil {
		r.errs.Add(1)
		now := r.now()
		if r.queueWarnAt.IsZero() || now.Sub(r.queueWarnAt) >= time.Minute {
			r.queueWarnAt = now
			r.opts.Log.Warnf("Redis state store: writing queue file %s: %v (the queue is kept in memory)", r.opts.QueueFile, err)
		}
		return
	}
	r.queueOnDisk = len(r.queue)
}

// checkAgentID validates an agent id (it is part of Redis field names).
func checkAgentID(id string) error {
	if strings.ContainsAny(id, " \t\r\n:") {
		return keyerr.Errorf("agent_id", "%q may not contain blanks or ':'", id)
	}
	return nil
}

// AgentID is this agent's id in the exactly-once records (configured,
// adopted from the queue file, or random).
func (r *Redis) AgentID() string { return r.opts.AgentID }
