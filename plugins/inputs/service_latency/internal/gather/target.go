// Package gather is the gather engine: it probes every target of a Spec
// (at most max_concurrency at once, a panicking probe turned into a failed
// result), hands the observations to the store, turns each service's new
// state into fields and yields one Report per gather. It keeps the
// engine's own counters (probes in flight, store errors) and logs each
// change of a service's status (its verdict, kept in the state).
//
//	targets → probe results → observations → store → state → snapshot → fields → Report
package gather

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Target is a service ready to probe: what the config compiler makes of a
// [[inputs.service_latency.service]] table.
type Target struct {
	// Name keys the service's state and is its `service` tag.
	Name string
	// Server is the `server` tag: the URL without credentials.
	Server string
	Prober probe.Prober
	Params stats.Params
	// Percentiles emitted (window and lifetime).
	Percentiles []float64
	// Tags are the service's own tags.
	Tags map[string]string
	// Schedule: timeout, interval and rounds.
	Schedule Schedule

	// Derived once, used every gather.
	fieldNames percentileNames
	le         []string // the histogram's `le` tag values, one per bucket and "+Inf"

	// hash places the target within the spread (of its name and the seed).
	hash uint64
	// fresh is this gather's entry (until the report is made).
	fresh *Service
	// The engine's bookkeeping of the service, which a reload carries
	// over to the target of the same name (SetTargets). Written by the
	// engine only.
	kept
}

// kept is a target's bookkeeping that outlives a reload.
type kept struct {
	// This agent's own view of the service's verdict, for logging its
	// changes (the state may be shared with other agents): the status it
	// last saw, since when; seen is false until it has seen one.
	status stats.Status
	since  int64
	seen   bool
	// lastStart and last are its last round's start and entry.
	lastStart time.Time
	last      *Service
	// owned: this agent probed the service at the last gather (always,
	// without probe_replicas); ownSeen: once it has been decided.
	owned, ownSeen bool
	// history is a ring of the last HistoryLen rounds, kept compact; next
	// is where the next one goes.
	history []pastRound
	next    int
}

// pastRound is a round in the history ring (40 bytes: it is kept for
// every service).
type pastRound struct {
	at      int64 // unix ns
	latency float64
	err     string
	outcome probe.Outcome
}

// remember adds a round to the history ring (no allocation once it is
// full).
func (t *Target) remember(at time.Time, r *probe.Result, errText string) {
	p := pastRound{at: at.UnixNano(), err: errText, outcome: r.Outcome}
	if r.Outcome == probe.Success {
		p.latency = r.Latency.Seconds()
	}
	if len(t.history) < HistoryLen {
		t.history = append(t.history, p)
	} else {
		t.history[t.next] = p
	}
	t.next = (t.next + 1) % HistoryLen
}

// recent returns the history newest first.
func (t *Target) recent() []HistoryEntry {
	out := make([]HistoryEntry, len(t.history))
	for i := range out {
		h := &t.history[(t.next-1-i+HistoryLen)%HistoryLen%len(t.history)]
		out[i] = HistoryEntry{At: time.Unix(0, h.at).UTC(), Result: h.outcome.String(), Latency: h.latency, Error: h.err}
	}
	return out
}

type percentileNames struct {
	window, lifetime []string
}

// NewTarget returns a target with its field names and histogram labels
// derived. Targets with the same percentiles and buckets share them (they
// are read-only): 100,000 services would otherwise make 100,000 copies of
// the same dozen strings at start-up.
func NewTarget(name, server string, pr probe.Prober, params stats.Params, percentiles []float64, tags map[string]string) *Target {
	t := &Target{Name: name, Server: server, Prober: pr, Params: params, Percentiles: percentiles, Tags: tags}
	t.fieldNames, t.le = sharedNames.get(percentiles, params.Buckets)
	return t
}

// derivedNames are the names derived from one set of percentiles and
// buckets.
type derivedNames struct {
	percentiles, buckets []float64
	fields               percentileNames
	le                   []string
}

// nameCache holds the derived names of the sets seen so far (a config has
// one, or a few).
type nameCache struct {
	mu   sync.Mutex
	sets []*derivedNames
}

var sharedNames nameCache

// maxSharedSets bounds the cache: a config where every service has its own
// percentiles gets its names derived per target past it.
const maxSharedSets = 64

func (c *nameCache) get(percentiles, buckets []float64) (percentileNames, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.sets {
		if slices.Equal(d.percentiles, percentiles) && slices.Equal(d.buckets, buckets) {
			return d.fields, d.le
		}
	}
	d := deriveNames(percentiles, buckets)
	if len(c.sets) < maxSharedSets {
		c.sets = append(c.sets, d)
	}
	return d.fields, d.le
}

// deriveNames makes the field names of percentiles and the `le` values of
// buckets (one per bucket and "+Inf"; none without buckets).
func deriveNames(percentiles, buckets []float64) *derivedNames {
	d := &derivedNames{percentiles: slices.Clone(percentiles), buckets: slices.Clone(buckets)}
	if n := len(buckets); n > 0 {
		d.le = make([]string, 0, n+1)
		for _, b := range buckets {
			d.le = append(d.le, strconv.FormatFloat(b, 'f', -1, 64))
		}
		d.le = append(d.le, "+Inf")
	}
	if len(percentiles) > 0 {
		d.fields.window = make([]string, 0, len(percentiles))
		d.fields.lifetime = make([]string, 0, len(percentiles))
	}
	for _, pc := range percentiles {
		sfx := stats.PercentileFieldSuffix(pc)
		d.fields.window = append(d.fields.window, "latency_"+sfx)
		d.fields.lifetime = append(d.fields.lifetime, "latency_lifetime_"+sfx)
	}
	return d
}
