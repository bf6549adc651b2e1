package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/redis/go-redis/v9"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// Defaults of the fleet (probe_replicas).
const (
	// DefaultFleetInterval is the gather interval an agent advertises
	// before it has measured its own (two gathers): Telegraf's default
	// interval.
	DefaultFleetInterval = 10 * time.Second
	// DefaultLeaseIntervals is the default lease, in advertised gather
	// intervals.
	DefaultLeaseIntervals = 3
)

// FleetOptions configure the sharing of the probes among the agents of
// one Redis and key prefix ([inputs.service_latency.redis]
// probe_replicas and lease).
type FleetOptions struct {
	// Replicas is the number of live agents that probe each service
	// (probe_replicas; 0: every agent probes every service, no fleet).
	Replicas int
	// Lease: a member whose last heartbeat is older is gone (0:
	// DefaultLeaseIntervals × the gather interval it advertises).
	Lease time.Duration
	// Version is advertised in the lease (shown to operators; the
	// ownership hash does not depend on it).
	Version string
	Log     telegraf.Logger
}

// FleetConfig are the fleet's keys of the [inputs.service_latency.redis]
// table.
type FleetConfig struct {
	ProbeReplicas int             `toml:"probe_replicas"`
	Lease         config.Duration `toml:"lease"`
}

// Options validates the keys; errors are *keyerr.Error naming the key in
// the redis table.
func (c *FleetConfig) Options() (FleetOptions, error) {
	o := FleetOptions{Replicas: c.ProbeReplicas, Lease: time.Duration(c.Lease)}
	return o, o.Check()
}

// Check validates the options; errors name the key in the redis table.
func (o *FleetOptions) Check() error {
	if o.Replicas < 0 {
		return keyerr.Errorf("probe_replicas", "%d: must not be negative (0 or unset: every agent probes every service)", o.Replicas)
	}
	if o.Lease < 0 {
		return keyerr.Errorf("lease", "%s: must be positive (0 or unset: %d × the gather interval)", o.Lease, DefaultLeaseIntervals)
	}
	if o.Lease > 0 && o.Lease < 10*time.Millisecond {
		return keyerr.Errorf("lease", "%s: too short (at least 10ms; it should span several gathers)", o.Lease)
	}
	return nil
}

// Fleet is the membership of the agents that share a Redis (and key
// prefix), and the share of the services each one probes. It needs no
// coordinator: every agent renews its own lease in one hash,
//
//	<prefix>:{members}  hash  agent id -> {"hb": ms, "version": ...,
//	                          "interval_ms": ..., "lease_ms": ...}
//
// (one hash tag: one Redis Cluster slot), at the start of every gather,
// with one script call that stamps the heartbeat with Redis's own clock
// (TIME: the agents' clocks do not matter), deletes the leases that have
// expired (heartbeat + the member's own lease_ms before now) and returns
// the others: the live members. A service is owned by the Replicas live
// members of highest rendezvous weight hash(service, member): every agent
// that sees the same members computes the same owners, and a member that
// joins or leaves moves only its own share.
//
// When the lease cannot be renewed (Redis unreachable or failing), the
// agent probes every service until it can again: it logs a warning once,
// then at most once a minute, and an info line when it shares again.
type Fleet struct {
	opts    FleetOptions
	client  redis.UniversalClient
	key     string
	id      string
	timeout time.Duration
	addrs   string
	log     telegraf.Logger

	mu       sync.Mutex
	down     bool
	warnedAt time.Time
	closed   bool
}

// Share is one gather's ownership: which services this agent probes.
type Share struct {
	// Members are the live members seen, sorted (this agent among them);
	// nil when the lease could not be renewed.
	Members []string
	// All: this agent probes every service (the lease could not be
	// renewed, or there are no more live members than Replicas).
	All bool
	// Err is why the lease could not be renewed.
	Err error

	self     uint64
	others   []uint64
	replicas int
}

// Owns reports whether this agent probes the service this gather.
func (s *Share) Owns(service string) bool {
	if s == nil || s.All {
		return true
	}
	hs := hashString(service)
	mine := weight(hs, s.self)
	above := 0
	for _, m := range s.others {
		if w := weight(hs, m); w > mine {
			above++
			if above >= s.replicas {
				return false
			}
		}
	}
	return true
}

// Owners returns the members that probe the service, by rendezvous
// weight (the highest first): what every agent that sees members
// computes.
func Owners(service string, members []string, replicas int) []string {
	hs := hashString(service)
	type mw struct {
		m string
		w uint64
	}
	ws := make([]mw, len(members))
	for i, m := range members {
		ws[i] = mw{m, weight(hs, hashString(m))}
	}
	slices.SortFunc(ws, func(a, b mw) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return strings.Compare(a.m, b.m)
	})
	out := make([]string, 0, min(replicas, len(ws)))
	for _, x := range ws[:min(replicas, len(ws))] {
		out = append(out, x.m)
	}
	return out
}

// hashString is FNV-1a, 64 bits: stable across processes, versions and
// platforms (it is part of the agents' agreement on the owners).
func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// weight is the rendezvous weight of a service for a member: their
// hashes combined and finished with the splitmix64 mixer.
func weight(service, member uint64) uint64 {
	x := service ^ (member * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// NewShare is the share of the agent self among members (tests and
// tools; Renew builds the gather's).
func NewShare(self string, members []string, replicas int) *Share {
	s := &Share{Members: members, self: hashString(self), replicas: replicas}
	for _, m := range members {
		if m != self {
			s.others = append(s.others, hashString(m))
		}
	}
	s.All = replicas <= 0 || len(members) <= replicas || !slices.Contains(members, self)
	return s
}

// fleetScript renews this agent's lease and returns Redis's time (ms) and
// the live members' records (id, JSON, ...). ARGV: id, version,
// interval_ms, lease_ms, key TTL ms.
var fleetScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = cjson.encode({hb = now, version = ARGV[2], interval_ms = tonumber(ARGV[3]), lease_ms = tonumber(ARGV[4])})
redis.call('HSET', KEYS[1], ARGV[1], rec)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local out = {tostring(now)}
for i = 1, #all, 2 do
  local ok, r = pcall(cjson.decode, all[i + 1])
  if ok and type(r) == 'table' and tonumber(r.hb) and tonumber(r.lease_ms) and tonumber(r.hb) + tonumber(r.lease_ms) >= now then
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
`)

// Member is a live member's lease as stored in Redis.
type Member struct {
	ID         string `json:"-"`
	Heartbeat  int64  `json:"hb"` // Redis time, unix ms
	Version    string `json:"version"`
	IntervalMS int64  `json:"interval_ms"`
	LeaseMS    int64  `json:"lease_ms"`
}

// NewFleet returns the fleet of the agents sharing the Redis of opts
// (their agent ids must be unique; opts.AgentID must be set). It makes
// its own client with the store's connection settings and does no
// network I/O.
func NewFleet(ropts RedisOptions, fo FleetOptions) (*Fleet, error) {
	if err := fo.Check(); err != nil {
		return nil, err
	}
	if ropts.AgentID == "" {
		return nil, keyerr.New("agent_id", errors.New("the fleet needs an agent id"))
	}
	if ropts.KeyPrefix == "" {
		ropts.KeyPrefix = DefaultRedisKeyPrefix
	}
	if ropts.Timeout == 0 {
		ropts.Timeout = DefaultRedisTimeout
	}
	if err := ropts.check(); err != nil {
		return nil, err
	}
	if len(ropts.Client.Addrs) == 0 {
		return nil, keyerr.New("address", errors.New("no Redis address"))
	}
	if fo.Log == nil {
		fo.Log = NopLogger{}
	}
	redisLogOnce.Do(func() { redis.SetLogger(debugLogger{fo.Log}) })
	f := &Fleet{
		opts:    fo,
		key:     FleetKey(ropts.KeyPrefix),
		id:      ropts.AgentID,
		timeout: ropts.Timeout,
		addrs:   redact.Text(strings.Join(ropts.Client.Addrs, ",")),
		log:     fo.Log,
	}
	f.client = newFleetClient(ropts.Client, ropts.Timeout)
	return f, nil
}

// FleetKey is the members hash of a key prefix.
func FleetKey(prefix string) string { return prefix + ":{members}" }

// newFleetClient makes a client as the store does (same settings: a
// renewal is one round trip within the timeout).
func newFleetClient(o redis.UniversalOptions, timeout time.Duration) redis.UniversalClient {
	configureClient(&o, timeout)
	return newClient(o)
}

// ID is this agent's id in the fleet.
func (f *Fleet) ID() string { return f.id }

// Replicas is probe_replicas.
func (f *Fleet) Replicas() int { return f.opts.Replicas }

// LeaseFor is the lease an agent advertising this gather interval holds
// (interval 0: not measured yet, DefaultFleetInterval).
func (f *Fleet) LeaseFor(interval time.Duration) time.Duration {
	if f.opts.Lease > 0 {
		return f.opts.Lease
	}
	if interval <= 0 {
		interval = DefaultFleetInterval
	}
	return DefaultLeaseIntervals * interval
}

// Renew renews this agent's lease, advertising interval as its gather
// interval (0: not known yet), and returns this gather's share. It never
// fails: when Redis cannot be reached the share is every service (and
// Share.Err says why).
func (f *Fleet) Renew(ctx context.Context, interval time.Duration) *Share {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return &Share{All: true, Err: errors.New("fleet closed")}
	}
	members, err := f.renew(ctx, interval)
	if err != nil && ctx.Err() != nil {
		return &Share{All: true, Err: err} // shutting down: nothing to report
	}
	if err != nil {
		now := time.Now()
		if !f.down || f.warnedAt.IsZero() || now.Sub(f.warnedAt) >= time.Minute {
			f.warnedAt = now
			f.log.Warnf("Redis fleet %s: cannot renew this agent's lease (%s): probing every service (probe_replicas = %d) until it can",
				f.addrs, redact.Text(err.Error()), f.opts.Replicas)
		}
		f.down = true
		return &Share{All: true, Err: err}
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	if f.down {
		f.down = false
		f.log.Infof("Redis fleet %s: lease renewed again: %d live members, each service probed by %d", f.addrs, len(ids), min(f.opts.Replicas, len(ids)))
	}
	return NewShare(f.id, ids, f.opts.Replicas)
}

// renew runs the lease script and returns the live members.
func (f *Fleet) renew(ctx context.Context, interval time.Duration) ([]Member, error) {
	if interval <= 0 {
		interval = DefaultFleetInterval
	}
	lease := f.LeaseFor(interval)
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ttl := 10 * lease
	v, err := fleetScript.Run(ctx, f.client, []string{f.key},
		f.id, f.opts.Version, interval.Milliseconds(), lease.Milliseconds(), ttl.Milliseconds()).Result()
	if err != nil {
		return nil, err
	}
	_, members, err := decodeMembers(v)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(members, func(m Member) bool { return m.ID == f.id }) {
		return nil, errors.New("own lease missing from the members")
	}
	return members, nil
}

func decodeMembers(v interface{}) (now int64, out []Member, err error) {
	arr, ok := v.([]interface{})
	if !ok || len(arr) < 1 || len(arr)%2 != 1 {
		return 0, nil, fmt.Errorf("unexpected fleet reply %T", v)
	}
	s, _ := arr[0].(string)
	if now, err = strconv.ParseInt(s, 10, 64); err != nil {
		return 0, nil, fmt.Errorf("fleet reply: time %q", s)
	}
	for i := 1; i+1 < len(arr); i += 2 {
		id, _ := arr[i].(string)
		rec, _ := arr[i+1].(string)
		m := Member{ID: id}
		if json.Unmarshal([]byte(rec), &m) != nil {
			continue
		}
		out = append(out, m)
	}
	return now, out, nil
}

// LiveMembers reads the members hash and returns the live leases by
// Redis's clock, sorted by id, without renewing any (for tests and
// tools).
func LiveMembers(ctx context.Context, c redis.Cmdable, prefix string) ([]Member, error) {
	t, err := c.Time(ctx).Result()
	if err != nil {
		return nil, err
	}
	all, err := c.HGetAll(ctx, FleetKey(prefix)).Result()
	if err != nil {
		return nil, err
	}
	now := t.UnixMilli()
	var out []Member
	for id, rec := range all {
		m := Member{ID: id}
		if json.Unmarshal([]byte(rec), &m) != nil || m.Heartbeat+m.LeaseMS < now {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Close gives up this agent's lease (its share moves to the others at
// their next gather) and closes the client.
func (f *Fleet) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	_ = f.client.HDel(ctx, f.key, f.id).Err()
	cancel()
	return f.client.Close()
}
