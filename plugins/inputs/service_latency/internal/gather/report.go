package gather

import "time"

// Report is everything one gather produced: the metrics to emit and the
// gather's own signals. The plugin adds its metrics to the accumulator;
// the status server and service_latency_internal read the same value. A
// Report is never modified once returned.
type Report struct {
	// Start and End of the gather. service_latency_internal is
	// timestamped with Start; each service with its round's start
	// (Service.At).
	Start, End time.Time
	// Err is the last failed store Update of the gather: the rounds of
	// that batch are not emitted and not in Services (a service with an
	// interval keeps its previous round's entry there).
	Err error
	// Services are every service's latest round, in config order: those
	// probed this gather and, for services not due (interval), their last
	// round's entry.
	Services []Service
	// Internal are the gather's own signals (service_latency_internal).
	Internal Internal
}

// Service is one service's metric of a gather and what the status server
// shows of it.
type Service struct {
	Name string
	// At is when the service's round started: its metric's timestamp. A
	// service not due this gather (its interval is longer) carries the
	// entry of its last round, with that round's time.
	At time.Time
	// Tags and Fields of the service_latency metric. Shared with the
	// accumulator and the status server: read-only.
	Tags   map[string]string
	Fields map[string]any
	// Histogram is one service_latency_histogram metric per bucket, in
	// bucket order ("le" tag, cumulative count); empty without
	// histogram_buckets.
	Histogram []Bucket
	// HistogramTags are the tags of the histogram metrics, less "le".
	HistogramTags map[string]string
	// LastSuccess and LastFailure are from the service's state (zero:
	// never).
	LastSuccess, LastFailure time.Time
	// Error is this gather's failure, "<result>: <cause>", with
	// credentials removed; "" when the probe succeeded.
	Error string
	// History are the service's last HistoryLen rounds, newest first:
	// per service, so a service that always fails cannot push another
	// one's rare failure out.
	History []HistoryEntry
}

// HistoryLen is how many rounds a service's history keeps.
const HistoryLen = 20

// HistoryEntry is one round in a service's history.
type HistoryEntry struct {
	At     time.Time
	Result string
	// Latency of a successful round (seconds); 0 for a failed one.
	Latency float64
	Error   string
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	LE    string // the "le" tag: the upper bound, or "+Inf"
	Count int64
}

// Internal are a gather's own signals: the fields of
// service_latency_internal.
type Internal struct {
	GatherTime        time.Duration
	Services          int
	ProbesInFlightMax int64
	Timeouts          int64
	// StoreErrors counts, over the process's life, store updates that
	// failed plus the store's own failed writes.
	StoreErrors int64
	// StoreSlowWrites counts writes to a shared store that missed their
	// deadline while it answered (slow, not unreachable).
	StoreSlowWrites int64
	// StoreUnreachable: the shared store could not be reached at the last write.
	StoreUnreachable bool
	ReplayQueue      int64
	// StoreDropped counts observations the store dropped (replay queue full).
	StoreDropped int64
	// MembersSeen is the number of live agents in the fleet this gather
	// (probe_replicas; 0 without it, or when the lease could not be
	// renewed). OwnedServices are the services this agent probed and
	// emitted (its share; every service without probe_replicas).
	// OwnershipChanges counts, over the process's life, the services this
	// agent took over or gave up.
	MembersSeen      int64
	OwnedServices    int64
	OwnershipChanges int64
}

// Fields returns the service_latency_internal fields.
func (in *Internal) Fields() map[string]any {
	return map[string]any{
		"gather_time":          in.GatherTime.Seconds(),
		"services":             int64(in.Services),
		"probes_in_flight_max": in.ProbesInFlightMax,
		"timeouts":             in.Timeouts,
		"store_errors":         in.StoreErrors,
		"store_slow_writes":    in.StoreSlowWrites,
		"store_unreachable":    in.StoreUnreachable,
		"replay_queue":         in.ReplayQueue,
		"store_dropped":        in.StoreDropped,
		"members_seen":         in.MembersSeen,
		"owned_services":       in.OwnedServices,
		"ownership_changes":    in.OwnershipChanges,
	}
}
