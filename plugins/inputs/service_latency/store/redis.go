package store

import (
	"cmp"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Defaults of the Redis store.
const (
	DefaultRedisKeyPrefix = "service_latency"
	DefaultRedisTTL       = 168 * time.Hour
	DefaultRedisTimeout   = 500 * time.Millisecond
	// DefaultRedisQueueSize is the number of observations kept for replay
	// while Redis cannot be reached.
	DefaultRedisQueueSize = 10000
	// DefaultRedisChunkSize is the number of services written in one
	// round trip (one pipeline, one deadline).
	DefaultRedisChunkSize = 500
	// DefaultRedisReplayPerUpdate is the number of queued observations
	// replayed per Update after an outage (see RedisOptions).
	DefaultRedisReplayPerUpdate = 10000
)

//go:embed redis.lua
var redisLua string

// redisScript merges a batch of one service's observations into its state.
var redisScript = redis.NewScript(redisLua)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// Client holds the connection settings (addresses, DB, credentials,
	// TLS, Sentinel master name). The store overrides the timeouts, the
	// retries, the client identity and maintenance notifications.
	Client redis.UniversalOptions
	// KeyPrefix starts every key; it may not contain '{' or '}'.
	KeyPrefix string
	// TTL expires a service's keys when no agent has written them for that
	// long (refreshed on every write).
	TTL time.Duration
	// Timeout bounds every round trip to Redis: an Update never waits on
	// Redis longer.
	Timeout time.Duration
	// AgentID identifies this agent in the idempotence records; it must be
	// unique among the agents sharing the Redis. Random when empty.
	AgentID string
	// QueueSize bounds the observations kept for replay during an outage;
	// beyond it the oldest are dropped (and counted).
	QueueSize int
	// ChunkSize is the number of services written in one round trip (0:
	// DefaultRedisChunkSize); each round trip has its own deadline,
	// Timeout.
	ChunkSize int
	// ReplayPerUpdate bounds the queued observations replayed per Update
	// (0: DefaultRedisReplayPerUpdate); it is raised to twice the number
	// of services with queued observations, so that every one of them
	// drains.
	ReplayPerUpdate int
	// WaitReplicas: a chunk counts as written only when this many replicas
	// have it (WAIT after the chunk's writes, within half the Timeout);
	// otherwise its observations stay queued and are sent again. 0: off
	// (a write counts once the master has applied it; a failover may lose
	// what the replica had not received yet).
	WaitReplicas int
	// QueueFile keeps the replay queue on disk (see redisqueue.go): loaded
	// by NewRedis, rewritten after every Update that leaves it non-empty
	// (or empties it). "": in memory only.
	QueueFile string
	// Log receives the outage, replay and malformed-state messages.
	Log telegraf.Logger
	// Now is the clock of the warning rate limits (time.Now when nil).
	Now func() time.Time
}

// Redis keeps every service's state in Redis, shared by every agent that
// uses the same Redis and key prefix: each agent's observations are merged
// into one state per service, and every agent emits that merged state.
//
// Per service, two keys share the hash tag {service} (one Redis Cluster
// slot; the name is escaped so that it holds no brace), layout 2:
//
//	<prefix>:{<service>}:state  hash  "s": the scalar state, packed
//	                                  (MessagePack: counters, Welford
//	                                  mean/m2, min, max, EWMA and its time,
//	                                  last success and failure, the verdict,
//	                                  histogram bounds and buckets);
//	                                  "a:<agent>": last applied sequence
//	                                  number and when; "b<index>" / "bz":
//	                                  DDSketch bin counts
//	<prefix>:{<service>}:win    list  the last probes, newest first
//	                                  (latency in seconds, "f" = failed)
//
// The previous layout (stats, window, sketch and agents keys) is read
// once, when a service has no state key yet, and migrated (then deleted).
//
// The script writes only what changed (the pushed probes, the bins they
// fall in, the packed state, this agent's record; the TTL at most every
// 1 % of it) and returns the packed state plus, when this agent's local
// state is the merged state as of its previous write, only the probes
// written since (the agent pushes them into its window and sketch);
// otherwise, and every fullReadEvery-th write, the whole window and
// sketch, validated.
//
// One Lua script call per service per Update merges the observations
// atomically and returns the merged state. The calls go in chunks of
// ChunkSize services, one pipeline and one deadline (Timeout) each. Every
// observation carries the agent id and a per-agent sequence number, and
// the script skips one it has already applied, so a retried or replayed
// write (a chunk whose replies were lost after Redis applied it) counts
// exactly once.
//
// When a chunk cannot be written within Timeout, the Update stops
// writing: the services of that chunk and of the ones after it get the
// agent's local state (the last merged state Redis returned, plus this
// agent's observations since), their observations are queued (at most
// QueueSize, oldest dropped first), and the store warns once, then at most
// once a minute; a chunk that missed its deadline while Redis answers
// PING is "slow" (Health.SlowWrites), one whose PING fails too is
// "unreachable" (Health.Unreachable). The next Updates replay the queue,
// at a bounded rate (ReplayPerUpdate), each service's queued observations
// in order before its new one.
type Redis struct {
	opts    RedisOptions
	client  redis.UniversalClient // created at the first Update
	mapping string
	now     func() time.Time

	mu     sync.Mutex
	closed bool
	// scriptLoaded: SCRIPT LOAD succeeded once.
	scriptLoaded bool
	// perService estimates a chunk's round trip per service, in seconds.
	perService float64
	seq        int64
	queue      []pending
	local      map[string]*stats.State
	forceReset map[string]bool
	// synced: the services whose local state is the merged state as of
	// this agent's last write (the script then returns only what changed).
	synced     map[string]*syncState
	thresholds map[string]string // bucket thresholds by bounds
	scratch    []float64         // the local verdict's sort buffer
	down       bool
	warnedAt   [4]time.Time // by failure kind
	droppedAt  time.Time

	queueLen    atomic.Int64
	dropped     atomic.Int64
	errs        atomic.Int64
	replayed    atomic.Int64
	slow        atomic.Int64
	unreachable atomic.Bool
	// unreplicated counts pipelines whose writes WAIT did not see on
	// WaitReplicas replicas in time.
	unreplicated atomic.Int64
	// queueOnDisk: the observations in the queue file at its last write;
	// queueWarnAt: its last write warning.
	queueOnDisk int
	queueWarnAt time.Time
}

// syncState says which merged state an agent's local state is: the
// generation and probes count of the state in Redis and the agent's
// sequence record it was returned with, for the Params it was decoded with.
type syncState struct {
	gen    string
	probes int64
	record string
	// blob is the packed state of that reply: sent back, it spares the
	// script the validation of a stored state that is still that blob
	// (the reply's own string, kept: ~200 bytes per service).
	blob   string
	window int
	bounds string
	// writes counts the writes since the last full read: every
	// fullReadEvery-th write reads (and validates) the whole state again.
	writes int
}

// fullReadEvery: a service's every 32nd write reads the whole state, so
// that a corrupted sketch bin or window entry the increments do not touch
// is found and rewritten (at ~1/32 of a full read's cost per write).
const fullReadEvery = 32

// pending is one observation not yet confirmed by Redis.
type pending struct {
	service string
	params  stats.Params
	seq     int64
	t       int64 // unix ns
	ok      bool
	latency float64
	// round: "" when the observation does not end a round, else "1" (the
	// round's result is success) or "0".
	round string
}

// roundArg is an observation's round argument of the script.
func roundArg(o *Observation) string {
	switch {
	case !o.EndsRound:
		return ""
	case o.RoundOK:
		return "1"
	}
	return "0"
}

// NewRedis returns a Redis store. It does no network I/O: the client
// connects at the first Update.
func NewRedis(opts RedisOptions) (*Redis, error) {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultRedisKeyPrefix
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultRedisTTL
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultRedisTimeout
	}
	if opts.QueueSize == 0 {
		opts.QueueSize = DefaultRedisQueueSize
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultRedisChunkSize
	}
	if opts.ReplayPerUpdate == 0 {
		opts.ReplayPerUpdate = DefaultRedisReplayPerUpdate
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	if len(opts.Client.Addrs) == 0 {
		return nil, keyerr.New("address", errors.New("no Redis address"))
	}
	configuredID := opts.AgentID != ""
	if opts.AgentID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		opts.AgentID = hex.EncodeToString(b[:])
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = NopLogger{}
	}
	redisLogOnce.Do(func() { redis.SetLogger(debugLogger{opts.Log}) })
	configureClient(&opts.Client, opts.Timeout)
	r := &Redis{
		opts:    opts,
		mapping: mappingID,
		now:     opts.Now,
		// Sequence numbers start at the current time in microseconds, so a
		// restarted agent with a configured agent id continues above the
		// numbers its previous process used.
		seq:        time.Now().UnixMicro(),
		local:      make(map[string]*stats.State),
		forceReset: make(map[string]bool),
		synced:     make(map[string]*syncState),
		thresholds: make(map[string]string),
	}
	if opts.QueueFile != "" {
		// The queued observations replay under the id they were sent
		// with (a write whose reply was lost is then skipped, not
		// counted twice): a random id gives way to the file's.
		switch id := r.loadQueueLocked(); {
		case id == "" || id == r.opts.AgentID:
		case !configuredID:
			r.opts.AgentID = id
		case len(r.queue) > 0:
			r.opts.Log.Warnf("Redis state store: queue file %s was written by agent %q, this agent is %q: its %d observations are replayed as this agent's (one whose reply was lost before may count twice)", opts.QueueFile, id, r.opts.AgentID, len(r.queue))
		}
	}
	return r, nil
}

// go-redis logs through a process-wide logger (to stderr by default, with
// no level prefix, which execd would log as an error): send its lines to
// the first store's logger at debug level. The store reports failures
// itself.
var redisLogOnce sync.Once

type debugLogger struct{ log telegraf.Logger }

func (l debugLogger) Printf(_ context.Context, format string, v ...interface{}) {
	l.log.Debug(redact.Text(fmt.Sprintf(format, v...)))
}

// Health implements Store.
func (r *Redis) Health() Health {
	return Health{
		WriteErrors: r.errs.Load(),
		Dropped:     r.dropped.Load(),
		QueueLen:    int(r.queueLen.Load()),
		SlowWrites:  r.slow.Load(),
		Unreachable: r.unreachable.Load(),
	}
}

// keys returns the Redis keys of a service's state.
func (r *Redis) keys(service string) []string { return redisKeys(r.opts.KeyPrefix, service) }

// redisKeys returns a service's keys: the state hash and the window list
// (layout 2), then the keys of the previous layout (1), which the script
// migrates and deletes.
func redisKeys(prefix, service string) []string {
	base := prefix + ":{" + escapeTag(service) + "}:"
	return []string{base + "state", base + "win", base + "stats", base + "window", base + "sketch", base + "agents"}
}

var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// escapeTag makes a service name safe inside a hash tag: no brace, so
// the tag is the whole name and no two services share a key.
func escapeTag(s string) string { return tagEscaper.Replace(s) }

// clientLocked creates the client at first use. It picks the client as
// redis.NewUniversalClient does, with one dial attempt per connection
// (go-redis would otherwise retry a refused dial for the whole timeout):
// a Redis that is down fails the Update at once, and the next gather tries
// again.
func (r *Redis) clientLocked() redis.UniversalClient {
	if r.client != nil {
		return r.client
	}
	r.client = newClient(r.opts.Client)
	return r.client
}

// configureClient sets the connection settings of the store's clients
// (the store's and the fleet's) on c.
func configureClient(c *redis.UniversalOptions, timeout time.Duration) {
	c.DisableIdentity = true
	c.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	c.ContextTimeoutEnabled = true
	c.DialTimeout = timeout
	c.ReadTimeout = timeout
	c.WriteTimeout = timeout
	c.PoolTimeout = timeout
	// A retry is safe (the script is idempotent) and bounded by the
	// Update's deadline; one is enough to get past a stale connection.
	c.MaxRetries = 1
	c.MinRetryBackoff = 5 * time.Millisecond
	c.MaxRetryBackoff = 50 * time.Millisecond
}

// newClient makes the client o describes: Sentinel (a master name),
// Cluster (several addresses, or cluster mode) or a single node, each
// dialing once per attempt.
func newClient(o redis.UniversalOptions) redis.UniversalClient {
	switch {
	case o.MasterName != "":
		fo := o.Failover()
		fo.DialerRetries, fo.DialerRetryTimeout = 1, time.Millisecond
		return redis.NewFailoverClient(fo)
	case len(o.Addrs) > 1 || o.IsClusterMode:
		co := o.Cluster()
		co.DialerRetries, co.DialerRetryTimeout = 1, time.Millisecond
		return redis.NewClusterClient(co)
	}
	so := o.Simple()
	so.DialerRetries, so.DialerRetryTimeout = 1, time.Millisecond
	return redis.NewClient(so)
}

// maxReplayPerCall bounds the queued observations of one service sent in
// one script call (the call's cost grows with them).
const maxReplayPerCall = 256

// callResult is what became of one service's batch: its merged state, or why it was not written.
type callResult struct {
	state  *stats.State  // merged state (nil when err != nil)
	before stats.Verdict // the shared verdict before the batch's last round
	warn   error         // the stored state was malformed and was rewritten
	err    error         // not written: Redis unreachable, slow or failing
}

// batch is one service's script call: some of its queued observations,
// oldest first, then (observed) this Update's observation.
type batch struct {
	service string
	params  stats.Params
	entries []pending
	// queued lists the queue indexes of the entries that come from the
	// replay queue (the first len(queued) entries).
	queued []int
	// observed is true when the service is observed by this Update (its
	// warning is then the Entry's, else it is logged here).
	observed bool
	args     []interface{}
	cmd      *redis.Cmd
	// unacked: the script ran but the write was not acknowledged by
	// WaitReplicas replicas (not written).
	unacked error
	out     *callResult // nil: not attempted
}

// failure kinds of a chunk.
const (
	failNone        = iota
	failSlow        // missed its deadline while Redis answers PING
	failUnreachable // Redis does not answer PING either
	failOther       // an error reply, a broken connection, the gather's own deadline
)

// chunkFailure is the first chunk of an Update that could not be written.
type chunkFailure struct {
	kind     int
	services int // in the chunk
	err      error
}

// Update implements Store.
//
// The services are written in chunks of at most ChunkSize script calls,
// one pipeline and one deadline (Timeout) per chunk, so that no number of
// services makes a round trip miss its deadline. A chunk that fails stops
// the Update: its services and those of the chunks after it emit the
// agent's local state and their observations are queued. What a chunk
// wrote before failing (every reply read) counts as written.
//
// Queued observations ride in their service's script call, before its
// new observation: at most ReplayPerUpdate of them per Update (raised to
// twice the number of services with queued observations, and at most
// maxReplayPerCall per service). A service whose queue is not emptied by
// this Update keeps its new observation queued behind the older ones: the
// script skips an observation whose sequence number is not above the last
// one it applied for the agent, so a newer one must never go first.
func (r *Redis) Update(ctx context.Context, now time.Time, obs []Observation) ([]Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// One sequence number per observation (the script applies an
	// agent's observations in sequence order, once each).
	seq0 := r.seq
	r.seq += int64(len(obs))
	entryOf := func(i int) pending {
		o := &obs[i]
		return pending{service: o.Service, params: o.Params, seq: seq0 + int64(i) + 1, t: o.at(now).UnixNano(), ok: o.OK, latency: o.Latency, round: roundArg(o)}
	}

	batches := r.planLocked(obs, entryOf)
	fail, replayed := r.writeLocked(ctx, batches)

	byService := make(map[string]*batch, len(batches))
	for _, b := range batches {
		byService[b.service] = b
	}
	res := make([]Entry, len(obs))
	for i := range obs {
		o := &obs[i]
		if b := byService[o.Service]; b != nil && b.observed && b.out != nil && b.out.err == nil {
			res[i] = Entry{State: b.out.state, Warning: b.out.warn, Before: b.out.before}
			continue
		}
		// Degraded: the agent's own view (last merged state + own probes),
		// no longer the merged state of any write.
		delete(r.synced, o.Service)
		st := r.local[o.Service]
		if st != nil {
			st.Resize(o.Params)
			if st.Validate(o.Params) != nil {
				st = nil
			}
		}
		if st == nil {
			st = stats.NewState(o.Params)
			r.local[o.Service] = st
		}
		st.Observe(o.at(now), o.OK, o.Latency, o.Params)
		before := st.Verdict
		if o.EndsRound {
			st.EndRound(o.at(now), o.RoundOK, o.Params.Verdict, &r.scratch)
		}
		res[i] = Entry{State: st, Before: before}
	}

	// Keep what was not written, in order: the queue, then this Update's
	// observations that were not written (held back or failed).
	written := make([]bool, len(r.queue))
	for _, b := range batches {
		if b.out != nil && b.out.err == nil {
			for _, qi := range b.queued {
				written[qi] = true
			}
		}
	}
	q := r.queue[:0]
	for i, e := range r.queue {
		if !written[i] {
			q = append(q, e)
		}
	}
	for i := range obs {
		o := &obs[i]
		b := byService[o.Service]
		if b != nil && b.observed && b.out != nil && b.out.err == nil {
			continue
		}
		q = append(q, entryOf(i))
	}
	r.queue = q
	r.replayed.Add(replayed)
	r.trimQueueLocked()
	r.saveQueueLocked()
	r.report(fail, replayed)
	return res, nil
}

// planLocked builds this Update's script calls: first the services with
// queued observations (oldest first), then the other observed services,
// in order.
func (r *Redis) planLocked(obs []Observation, entryOf func(int) pending) (batches []*batch) {
	obsAt := make(map[string][]int, len(obs))
	for i := range obs {
		obsAt[obs[i].Service] = append(obsAt[obs[i].Service], i)
	}
	groups := make(map[string][]int)
	var order []string
	for i := range r.queue {
		name := r.queue[i].service
		if _, ok := groups[name]; !ok {
			order = append(order, name)
		}
		groups[name] = append(groups[name], i)
	}
	share := maxReplayPerCall
	if len(order) > 0 {
		share = min(max(r.opts.ReplayPerUpdate/len(order), 2), maxReplayPerCall)
	}
	planned := make(map[string]bool, len(order))
	for _, name := range order {
		idx := groups[name]
		k := min(len(idx), share)
		b := &batch{service: name, queued: idx[:k], entries: make([]pending, 0, k+1)}
		for _, qi := range idx[:k] {
			b.entries = append(b.entries, r.queue[qi])
		}
		b.params = b.entries[len(b.entries)-1].params // the newest
		if is, ok := obsAt[name]; ok {
			planned[name] = true
			b.params = obs[is[len(is)-1]].Params
			if k == len(idx) {
				b.observed = true
				for _, i := range is {
					b.entries = append(b.entries, entryOf(i))
				}
			}
		}
		batches = append(batches, b)
	}
	fresh := make(map[string]*batch)
	for i := range obs {
		o := &obs[i]
		if b := fresh[o.Service]; b != nil { // observed twice: in order
			b.entries = append(b.entries, entryOf(i))
			b.params = o.Params
			continue
		}
		if planned[o.Service] {
			continue
		}
		b := &batch{service: o.Service, params: o.Params, observed: true, entries: []pending{entryOf(i)}}
		fresh[o.Service] = b
		batches = append(batches, b)
	}
	return batches
}

// writeLocked writes the batches in chunks, each with its own deadline,
// and stops at the first chunk that fails. It returns that failure (nil
// when every chunk was written) and the number of queued observations
// written.
func (r *Redis) writeLocked(ctx context.Context, batches []*batch) (*chunkFailure, int64) {
	var replayed int64
	var soft *chunkFailure // services that failed in a chunk that was written
	client := r.clientLocked()
	for start := 0; start < len(batches); {
		size := r.chunkSizeLocked()
		maxEntries := 8 * size
		end, n := start, 0
		for end < len(batches) && end-start < size && (end == start || n+len(batches[end].entries) <= maxEntries) {
			n += len(batches[end].entries)
			end++
		}
		chunk := batches[start:end]
		start = end
		if err := ctx.Err(); err != nil {
			return &chunkFailure{kind: failOther, services: len(chunk), err: err}, replayed
		}
		if !r.scriptLoaded {
			// Load the script once up front rather than have the first
			// chunk fail with NOSCRIPT and go again within its deadline
			// (after a Redis restart that fallback still does it).
			lctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
			r.scriptLoaded = redisScript.Load(lctx, client).Err() == nil
			cancel()
		}
		began := time.Now()
		err := r.writeChunk(ctx, client, chunk)
		r.observeChunkLocked(len(chunk), time.Since(began), err)
		var failed int
		var firstErr error
		for _, b := range chunk {
			switch {
			case b.out == nil:
			case b.out.err == nil:
				replayed += int64(len(b.queued))
			default:
				failed++
				firstErr = cmp.Or(firstErr, b.out.err)
			}
		}
		if err == nil && failed > 0 {
			r.errs.Add(1)
			if soft == nil {
				soft = &chunkFailure{kind: failOther, services: failed, err: firstErr}
			}
		}
		if err != nil {
			r.errs.Add(1)
			kind := r.classify(ctx, client, err)
			if kind == failSlow {
				r.slow.Add(1)
			}
			r.unreachable.Store(kind == failUnreachable)
			return &chunkFailure{kind: kind, services: len(chunk), err: err}, replayed
		}
		r.unreachable.Store(false)
	}
	return soft, replayed
}

// Chunk sizing. A chunk is at most ChunkSize services, and fewer when the
// round trips measured so far say it would not end within a quarter of
// the timeout: a slow link, a loaded Redis or a busy agent shrink the
// chunks before they miss their deadline, and a missed deadline shrinks
// them at once (the chunk's time is at least the timeout).
const (
	minChunkSize   = 10
	firstChunkSize = 100 // until a round trip has been measured
)

func (r *Redis) chunkSizeLocked() int {
	if r.perService <= 0 {
		return min(firstChunkSize, r.opts.ChunkSize)
	}
	n := int(r.opts.Timeout.Seconds() / 4 / r.perService)
	return max(min(n, r.opts.ChunkSize), min(minChunkSize, r.opts.ChunkSize))
}

// observeChunkLocked folds one round trip into the per-service estimate
// (an EWMA that rises at once and decays slowly).
func (r *Redis) observeChunkLocked(services int, took time.Duration, err error) {
	if services == 0 || (err != nil && !isTimeout(err)) {
		return
	}
	x := took.Seconds() / float64(services)
	switch {
	case r.perService <= 0 || x > r.perService:
		r.perService = x
	default:
		r.perService += (x - r.perService) / 8
	}
}

// writeChunk runs one chunk's script calls in one pipeline under its own
// deadline. A service whose reply was read is written, whatever happened
// to the replies after it. It returns the error of the round trip (nil
// when every service got a reply; a script error on one service's keys is
// that service's outcome, not the chunk's).
func (r *Redis) writeChunk(parent context.Context, client redis.UniversalClient, chunk []*batch) error {
	todo := chunk
	for _, b := range todo {
		b.args = r.args(b)
	}
	// The deadline starts with the round trip.
	ctx, cancel := context.WithTimeout(parent, r.opts.Timeout)
	defer cancel()
	var chunkErr error
	for attempt := 0; len(todo) > 0 && attempt < 2; attempt++ {
		execErr := r.execScripts(ctx, client, todo)
		var noscript []*batch
		for _, b := range todo {
			v, err := b.cmd.Result()
			switch {
			case v != nil && b.unacked != nil:
				// Applied by the master but not acknowledged by
				// wait_replicas replicas: not written. It is queued and
				// sent again (the script skips it if it survives).
				b.out = &callResult{err: b.unacked}
				chunkErr = cmp.Or(chunkErr, b.unacked)
			case v != nil:
				// A whole reply was read (go-redis sets the round trip's
				// error on every command once a later reply fails): the
				// script ran, the service is written.
				b.out = r.decodeCallResult(b, v)
			case err == nil:
				err = execErr
				if err == nil {
					err = errors.New("no reply from Redis")
				}
				b.out = &callResult{err: err}
				chunkErr = cmp.Or(chunkErr, err)
			case redis.HasErrorPrefix(err, "NOSCRIPT"):
				noscript = append(noscript, b)
			case isScriptError(err):
				// A runtime error of the script on this service's keys:
				// discard them at the next write.
				r.forceReset[b.service] = true
				r.opts.Log.Warnf("Redis state store: the script failed on service %q (keys %s): %v; its keys will be rewritten", b.service, r.keys(b.service)[0], err)
				b.out = &callResult{err: err}
			default:
				b.out = &callResult{err: err}
				chunkErr = cmp.Or(chunkErr, err)
			}
		}
		todo = noscript
		if len(todo) > 0 {
			if err := redisScript.Load(ctx, client).Err(); err != nil {
				for _, b := range todo {
					b.out = &callResult{err: err}
				}
				return cmp.Or(chunkErr, err)
			}
		}
	}
	for _, b := range todo { // still NOSCRIPT after loading
		err := errors.New("script not loaded (NOSCRIPT)")
		b.out = &callResult{err: err}
		chunkErr = cmp.Or(chunkErr, err)
	}
	if cc, ok := client.(*redis.ClusterClient); ok && chunkErr != nil && r.opts.WaitReplicas > 0 {
		cc.ReloadState(ctx) // a failover moves the slots: ask again
	}
	return chunkErr
}

// execScripts sends the batches' script calls in one pipeline and
// returns the round trip's error; each batch's reply is in b.cmd. With
// WaitReplicas, each pipeline ends with WAIT on the connection that
// carried the writes (one pipeline per master in a Cluster), and a batch
// whose master does not report WaitReplicas replicas within half the
// timeout gets b.unacked.
func (r *Redis) execScripts(ctx context.Context, client redis.UniversalClient, todo []*batch) error {
	for _, b := range todo {
		b.unacked = nil
	}
	n := r.opts.WaitReplicas
	if n <= 0 {
		pipe := client.Pipeline()
		for _, b := range todo {
			b.cmd = redisScript.EvalSha(ctx, pipe, r.keys(b.service), b.args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	waitFor := max(r.opts.Timeout/2, time.Millisecond)
	run := func(c redis.Cmdable, group []*batch) error {
		pipe := c.Pipeline()
		for _, b := range group {
			b.cmd = redisScript.EvalSha(ctx, pipe, r.keys(b.service), b.args...)
		}
		wait := redis.NewIntCmd(ctx, "wait", n, waitFor.Milliseconds())
		_ = pipe.Process(ctx, wait)
		_, err := pipe.Exec(ctx)
		var unacked error
		switch got, werr := wait.Result(); {
		case werr != nil:
			unacked = fmt.Errorf("WAIT %d: %w", n, werr)
		case got < int64(n):
			unacked = fmt.Errorf("written, but acknowledged by %d of wait_replicas = %d replicas within %s", got, n, waitFor)
		}
		if unacked != nil {
			for _, b := range group {
				b.unacked = unacked
			}
			r.unreplicated.Add(1)
		}
		return err
	}
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		return run(client, todo)
	}
	// A Cluster pipeline spreads the calls over the masters' connections;
	// WAIT must follow the writes on each: one pipeline per master.
	groups := map[*redis.Client][]*batch{}
	var order []*redis.Client
	var firstErr error
	for _, b := range todo {
		m, err := cc.MasterForKey(ctx, r.keys(b.service)[0])
		if err != nil {
			b.cmd = redis.NewCmd(ctx)
			b.cmd.SetErr(err)
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if groups[m] == nil {
			order = append(order, m)
		}
		groups[m] = append(groups[m], b)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, m := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(m, groups[m])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		firstErr = cmp.Or(firstErr, err)
	}
	return firstErr
}

// classify tells why a chunk failed. A chunk that missed its deadline
// while Redis answers PING (within half the timeout) is slow; one whose PING
// fails too is unreachable. The gather's own deadline and error replies
// are neither.
func (r *Redis) classify(ctx context.Context, client redis.UniversalClient, err error) int {
	if ctx.Err() != nil {
		return failOther // the Update's own budget is spent: no time to PING
	}
	var re redis.Error
	if errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) {
		return failOther // Redis answered (OOM, READONLY, LOADING, ...)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return failUnreachable // no connection at all: a PING would not get one either
	}
	// Half the timeout: a Redis that answers at all answers a PING far
	// sooner, and a gather against a stopped Redis must stay on time (one
	// missed chunk costs 1.5 × the timeout, not 2 ×).
	pctx, cancel := context.WithTimeout(ctx, r.opts.Timeout/2)
	defer cancel()
	if client.Ping(pctx).Err() != nil {
		return failUnreachable
	}
	if isTimeout(err) {
		return failSlow
	}
	return failOther
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// report logs a failed chunk, one warning per kind (slow, unreachable,
// failing) at first, then at most once a minute per kind, and the end of
// an outage.
func (r *Redis) report(f *chunkFailure, replayed int64) {
	now := r.now()
	addrs := redact.Text(strings.Join(r.opts.Client.Addrs, ","))
	if f != nil {
		r.down = true
		if last := r.warnedAt[f.kind]; !last.IsZero() && now.Sub(last) < time.Minute {
			return
		}
		r.warnedAt[f.kind] = now
		errText := redact.Text(f.err.Error())
		switch f.kind {
		case failSlow:
			r.opts.Log.Warnf("Redis state store %s slow: chunk of %d services missed its %s deadline while Redis answers PING; those services and the ones after them emit this agent's local state; %d observations queued for replay (at most %d)",
				addrs, f.services, r.opts.Timeout, len(r.queue), r.opts.QueueSize)
		case failUnreachable:
			r.opts.Log.Warnf("Redis state store %s unreachable (%s): emitting this agent's local state; %d observations queued for replay (at most %d)",
				addrs, errText, len(r.queue), r.opts.QueueSize)
		default:
			r.opts.Log.Warnf("Redis state store %s failing (%s): %d services not written; emitting this agent's local state for them; %d observations queued for replay (at most %d)",
				addrs, errText, f.services, len(r.queue), r.opts.QueueSize)
		}
		return
	}
	if r.down {
		r.down = false
		r.opts.Log.Infof("Redis state store %s reachable again: %d queued observations replayed, %d still queued (replayed at most %d per update)",
			addrs, replayed, len(r.queue), r.opts.ReplayPerUpdate)
	}
}

func (r *Redis) trimQueueLocked() {
	if n := len(r.queue) - r.opts.QueueSize; n > 0 {
		r.queue = append(r.queue[:0], r.queue[n:]...)
		total := r.dropped.Add(int64(n))
		now := r.now()
		if r.droppedAt.IsZero() || now.Sub(r.droppedAt) >= time.Minute {
			r.droppedAt = now
			r.opts.Log.Warnf("Redis state store: replay queue full (%d observations): dropped the oldest; %d dropped so far", r.opts.QueueSize, total)
		}
	}
	r.queueLen.Store(int64(len(r.queue)))
}

// isScriptError tells a runtime error of the Lua script from the server
// refusing or failing the call.
func isScriptError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "user_script") || strings.Contains(msg, "Error running script")
}

// args builds the script's ARGV for a batch (see redis.lua).
func (r *Redis) args(b *batch) []interface{} {
	p := b.params
	nb := 0
	bounds := ""
	th := ""
	if len(p.Buckets) > 0 {
		nb = len(p.Buckets) + 1
		bounds = formatBounds(p.Buckets)
		th = r.bucketThresholds(bounds, p.Buckets)
	}
	force := "0"
	if r.forceReset[b.service] {
		force = "1"
	}
	tau := p.HalfLife.Seconds() / math.Ln2
	v := p.Verdict
	stat := "p"
	switch v.Statistic.Kind {
	case stats.StatEWMA:
		stat = "ewma"
	case stats.StatAvg:
		stat = "avg"
	default:
		stat = strconv.FormatFloat(v.Statistic.Percentile, 'g', -1, 64)
	}
	args := make([]interface{}, 0, 19+7*len(b.entries))
	args = append(args,
		r.opts.AgentID,
		r.mapping,
		strconv.Itoa(p.Window),
		strconv.FormatFloat(tau, 'g', -1, 64),
		strconv.FormatInt(r.opts.TTL.Milliseconds(), 10),
		bounds,
		strconv.Itoa(nb),
		th,
		force,
		strconv.FormatInt(r.now().Unix(), 10),
		strconv.Itoa(v.FailureThreshold),
		strconv.Itoa(v.SuccessThreshold),
		strconv.FormatFloat(max(v.DegradedLatency, 0), 'g', -1, 64),
		stat,
	)
	if sy := r.syncFor(b); sy != nil {
		args = append(args, sy.gen, strconv.FormatInt(sy.probes, 10), sy.record, sy.blob)
	} else {
		args = append(args, "", "-1", "", "")
	}
	args = append(args, strconv.Itoa(len(b.entries)))
	m := stats.SketchMapping()
	for _, e := range b.entries {
		ok := e.ok && !math.IsNaN(e.latency) && !math.IsInf(e.latency, 0)
		x := max(e.latency, 0)
		okS, lat, bin, bucket := "0", "", "", ""
		if ok {
			okS = "1"
			lat = strconv.FormatFloat(x, 'g', -1, 64)
			if x > m.MinIndexableValue() {
				bin = strconv.Itoa(m.Index(x))
			} else {
				bin = "z"
			}
			if nb > 0 {
				i, _ := slices.BinarySearch(p.Buckets, x)
				bucket = strconv.Itoa(i + 1)
			}
		}
		args = append(args, strconv.FormatInt(e.seq, 10), strconv.FormatInt(e.t, 10), okS, lat, bin, bucket, e.round)
	}
	return args
}

// syncFor returns what the agent's local state of the batch's service is a
// copy of, when the script may send only what changed since: the batch is
// decoded into that local state with the same window and bounds.
func (r *Redis) syncFor(b *batch) *syncState {
	sy := r.synced[b.service]
	if sy == nil || !b.observed || r.local[b.service] == nil || r.forceReset[b.service] {
		return nil
	}
	if sy.window != b.params.Window || sy.bounds != formatBounds(b.params.Buckets) || sy.writes%fullReadEvery == fullReadEvery-1 {
		return nil
	}
	return sy
}

func formatBounds(bs []float64) string {
	if len(bs) == 0 {
		return ""
	}
	parts := make([]string, len(bs))
	for i, b := range bs {
		parts[i] = strconv.FormatFloat(b, 'g', -1, 64)
	}
	return strings.Join(parts, ",")
}

// bucketThresholds returns, per bound, the largest sketch bin index whose
// value is <= the bound: a bin goes to the first bucket whose threshold
// is >= its index, as stats.State.RebuildBuckets counts it.
func (r *Redis) bucketThresholds(key string, bounds []float64) string {
	if th, ok := r.thresholds[key]; ok {
		return th
	}
	m := stats.SketchMapping()
	parts := make([]string, len(bounds))
	for j, b := range bounds {
		k := math.MinInt32 - 1 // no bin
		if b > m.MinIndexableValue() {
			k = m.Index(b)
			for m.Value(k+1) <= b {
				k++
			}
			for k > math.MinInt32 && m.Value(k) > b {
				k--
			}
		}
		parts[j] = strconv.Itoa(k)
	}
	th := strings.Join(parts, ",")
	r.thresholds[key] = th
	return th
}

// decodeCallResult turns the script's reply into the service's merged state,
// kept as the agent's local state.
func (r *Redis) decodeCallResult(b *batch, v interface{}) *callResult {
	delete(r.forceReset, b.service)
	sy := r.synced[b.service]
	delete(r.synced, b.service)
	// The merged state becomes the agent's local state when it holds this
	// Update's observation. A replay-only call (the service's newer
	// observations are still queued) must not replace it: the local state
	// already holds those newer observations.
	var st *stats.State
	if b.observed {
		st = r.local[b.service]
		if st == nil {
			st = stats.NewState(b.params)
			r.local[b.service] = st
		}
	} else {
		st = stats.NewState(b.params)
	}
	keys := r.keys(b.service)
	rep, err := decodeReply(v, st, b.params)
	if err != nil {
		// The reply does not make a valid state although the script
		// accepted it: rewrite the service's keys at the next write and
		// fall back to the current sample now.
		r.forceReset[b.service] = true
		if b.observed {
			delete(r.local, b.service)
		}
		return &callResult{err: fmt.Errorf("state of service %q in Redis (%s) is malformed: %w", b.service, keys[0], err)}
	}
	if b.observed && rep.record != "" {
		next := &syncState{gen: rep.gen, probes: st.Probes, record: rep.record, blob: rep.blob, window: b.params.Window, bounds: formatBounds(b.params.Buckets)}
		if rep.delta && sy != nil {
			next.writes = sy.writes + 1
		}
		r.synced[b.service] = next
	}
	out := &callResult{state: st, before: rep.before}
	if rep.status == "reset" {
		out.warn = fmt.Errorf("state of service %q in Redis is malformed (key %s: %s): its keys were rewritten, starting over from the current sample", b.service, rep.key, rep.reason)
		if !b.observed { // nobody else would log it
			r.opts.Log.Warn(out.warn.Error())
		}
	}
	return out
}

// scriptReply is what decodeReply makes of a script reply besides the
// state.
type scriptReply struct {
	status, key, reason string
	before              stats.Verdict // the verdict before the batch's last round
	gen                 string        // the state's generation in Redis
	blob                string        // the packed state as stored
	record              string        // the agent's sequence record ("" = none)
	delta               bool          // only the probes since the agent's copy were sent
}

// decodeReply fills st from a script reply and validates it for p. A full
// reply replaces st's contents (reusing its storage); a delta reply ("d")
// is applied to st, which must then be the merged state as of the agent's
// previous write (the script only sends one when the agent said so).
func decodeReply(v interface{}, st *stats.State, p stats.Params) (rep scriptReply, err error) {
	arr, ok := v.([]interface{})
	if !ok || len(arr) != 9 {
		return rep, fmt.Errorf("unexpected script reply %T", v)
	}
	str := func(x interface{}) string { s, _ := x.(string); return s }
	list := func(x interface{}) []interface{} { l, _ := x.([]interface{}); return l }
	rep.status, rep.key, rep.reason = str(arr[0]), str(arr[1]), str(arr[2])
	rep.record = str(arr[5])
	switch str(arr[6]) {
	case "d":
		rep.delta = true
	case "f":
	default:
		return rep, fmt.Errorf("reply mode %q", str(arr[6]))
	}
	rep.blob = str(arr[3])
	raw, err := mpDecode([]byte(rep.blob))
	if err != nil {
		return rep, fmt.Errorf("state: %w", err)
	}
	sc, _ := raw.([]interface{})
	if len(sc) != 28 {
		return rep, fmt.Errorf("state holds %d fields", len(sc))
	}
	var perr error
	fail := func(format string, a ...interface{}) {
		if perr == nil {
			perr = fmt.Errorf(format, a...)
		}
	}
	f64 := func(i int) float64 {
		switch x := sc[i].(type) {
		case int64:
			return float64(x)
		case float64:
			return x
		}
		fail("state field %d is %T", i+1, sc[i])
		return 0
	}
	i64 := func(i int) int64 {
		x, ok := sc[i].(int64)
		if !ok {
			fail("state field %d is %T", i+1, sc[i])
		}
		return x
	}
	ns := func(i int) int64 {
		n, err := strconv.ParseInt(str(sc[i]), 10, 64)
		if err != nil {
			fail("state field %d: %v", i+1, err)
		}
		return n
	}
	if i64(0) != 2 {
		fail("state layout %v", sc[0])
	}
	if str(sc[1]) != mappingID {
		fail("sketch mapping %q", str(sc[1]))
	}
	rep.gen = str(sc[2])
	st.Count, st.Mean, st.M2, st.Min, st.Max = i64(3), f64(4), f64(5), f64(6), f64(7)
	st.EWMA, st.EWMAAt = f64(8), ns(9)
	st.Probes, st.Failures, st.ConsecutiveFailures = i64(10), i64(11), i64(12)
	st.LastSuccess, st.LastFailure = ns(13), ns(14)
	verdict := func(code, since, failed, ok, slow, good int64) stats.Verdict {
		if code < 0 || code > int64(stats.MaxStatus) {
			code = int64(stats.MaxStatus) + 1 // Validate refuses it
		}
		return stats.Verdict{Status: stats.Status(code), Since: since, Failed: failed, OK: ok, Slow: slow, Good: good}
	}
	st.Verdict = verdict(i64(15), ns(16), i64(17), i64(18), i64(19), i64(20))
	rep.before = st.Verdict
	if b := str(arr[4]); b != "" {
		bv, err := mpDecode([]byte(b))
		l, _ := bv.([]interface{})
		if err != nil || len(l) != 6 {
			return rep, fmt.Errorf("verdict before the round: %v", cmp.Or(err, errors.New("not 6 fields")))
		}
		sc = l // the same field decoders
		rep.before = verdict(i64(0), ns(1), i64(2), i64(3), i64(4), i64(5))
		sc = nil
	}
	if perr != nil {
		return rep, perr
	}

	probes := list(arr[7])
	parse := func(x interface{}) (float64, error) {
		s := str(x)
		if s == "f" {
			return math.NaN(), nil
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || !(f >= 0) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("window entry %q", s)
		}
		return f, nil
	}
	if rep.delta {
		// The probes since the agent's copy, newest first: into its
		// window, and the successes into its sketch.
		if st.Sketch == nil || len(st.Ring) > p.Window {
			return rep, errors.New("a delta reply without the state it applies to")
		}
		m := stats.SketchMapping()
		pos := st.Sketch.GetPositiveValueStore()
		for j := len(probes) - 1; j >= 0; j-- {
			x, err := parse(probes[j])
			if err != nil {
				return rep, err
			}
			pushRing(st, x, p.Window)
			switch {
			case math.IsNaN(x):
			case x > m.MinIndexableValue():
				pos.Add(m.Index(x))
			default:
				_ = st.Sketch.AddWithCount(0, 1)
			}
		}
	} else {
		if cap(st.Ring) < p.Window {
			st.Ring = make([]float64, 0, p.Window)
		}
		st.Ring = st.Ring[:0]
		st.RingPos = 0
		for j := min(len(probes), p.Window) - 1; j >= 0; j-- { // newest first in Redis
			x, err := parse(probes[j])
			if err != nil {
				return rep, err
			}
			st.Ring = append(st.Ring, x)
		}
		if st.Sketch == nil {
			st.Sketch = stats.NewSketch()
		} else {
			st.Sketch.Clear()
		}
		bins := list(arr[8])
		pos := st.Sketch.GetPositiveValueStore()
		for j := 0; j+1 < len(bins); j += 2 {
			f := str(bins[j])
			c, err := strconv.ParseFloat(str(bins[j+1]), 64)
			if err != nil || !(c >= 0) || math.IsInf(c, 0) {
				return rep, fmt.Errorf("sketch bin %s count %q", f, str(bins[j+1]))
			}
			if f == "z" {
				_ = st.Sketch.AddWithCount(0, c)
				continue
			}
			idx, err := strconv.Atoi(f)
			if err != nil || idx < math.MinInt32 || idx > math.MaxInt32 {
				return rep, fmt.Errorf("sketch bin %q", f)
			}
			pos.AddWithCount(idx, c)
		}
	}

	bk, _ := sc28(raw)[22].([]interface{})
	switch n := len(p.Buckets); {
	case n == 0:
		st.Buckets = nil
	case str(sc28(raw)[21]) == formatBounds(p.Buckets) && len(bk) == n+1:
		if len(st.Buckets) != n+1 {
			st.Buckets = make([]int64, n+1)
		}
		for j := range bk {
			c, ok := bk[j].(int64)
			if !ok {
				return rep, fmt.Errorf("bucket %d is %T", j+1, bk[j])
			}
			st.Buckets[j] = c
		}
	default: // nothing applied by this call and the stored bounds differ
		st.RebuildBuckets(p)
	}
	return rep, st.Validate(p)
}

func sc28(raw interface{}) []interface{} { l, _ := raw.([]interface{}); return l }

// pushRing appends one probe (NaN: failed) to the window of size w, as
// stats.State.Observe does.
func pushRing(st *stats.State, x float64, w int) {
	if w <= 0 {
		return
	}
	if len(st.Ring) < w {
		st.Ring = append(st.Ring, x)
		return
	}
	st.Ring[st.RingPos] = x
	st.RingPos = (st.RingPos + 1) % len(st.Ring)
}

// Retain implements Store: it forgets the local state and the queued
// observations of the dropped services. Their keys stay in Redis (other
// agents may still probe them) until the TTL expires them.
func (r *Redis) Retain(keep func(string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.local {
		if !keep(name) {
			delete(r.local, name)
			delete(r.forceReset, name)
			delete(r.synced, name)
		}
	}
	q := r.queue[:0]
	for _, e := range r.queue {
		if keep(e.service) {
			q = append(q, e)
		}
	}
	r.queue = q
	r.queueLen.Store(int64(len(q)))
	r.saveQueueLocked()
}

// Close implements Store: it tries once (within the timeout, chunk by
// chunk) to replay what is queued, then closes the client.
func (r *Redis) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.client == nil {
		return nil
	}
	if len(r.queue) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
		batches := r.planLocked(nil, nil)
		fail, replayed := r.writeLocked(ctx, batches)
		cancel()
		written := make([]bool, len(r.queue))
		for _, b := range batches {
			if b.out != nil && b.out.err == nil {
				for _, qi := range b.queued {
					written[qi] = true
				}
			}
		}
		q := r.queue[:0]
		for i, e := range r.queue {
			if !written[i] {
				q = append(q, e)
			}
		}
		r.queue = q
		r.replayed.Add(replayed)
		r.queueLen.Store(int64(len(q)))
		r.saveQueueLocked()
		if len(q) > 0 {
			why := "no time left"
			if fail != nil {
				why = redact.Text(fail.err.Error())
			}
			if r.opts.QueueFile != "" && r.queueOnDisk == len(q) {
				r.opts.Log.Infof("Redis state store: closing with %d observations that could not be written (%s); kept in queue file %s for the next start", len(q), why, r.opts.QueueFile)
			} else {
				r.opts.Log.Warnf("Redis state store: closing with %d observations that could not be written (%s); they are lost", len(q), why)
			}
		}
	}
	return r.client.Close()
}
