// Package store keeps every service's latency state between gathers.
//
// The plugin hands a store one gather's observations and gets back each
// service's resulting state; it does not know where the state lives. The
// memory store keeps it in the process (optionally persisted to a state
// file); the redis store keeps it in Redis, shared by every agent that
// probes the same services.
package store

import (
	"context"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Observation is one probe's outcome for one service.
type Observation struct {
	// Service is the stable key of the state (the service name).
	Service string
	// Params shape the service's state (window, EWMA half-life, buckets).
	Params stats.Params
	// OK is true when the probe succeeded and Latency is a sample.
	OK bool
	// Latency in seconds; only meaningful when OK.
	Latency float64
	// At is when the probe started (zero: the Update's now). A round of
	// several samples gives one Observation per sample, in order, each
	// with its own time; a service may appear several times in one
	// Update.
	At time.Time
	// EndsRound marks the last observation of a round (one metric of the
	// service): after it is applied the service's verdict advances by one
	// round, whose result is success when RoundOK, with Params.Verdict.
	// A round's other samples, and callers that keep no verdict, leave it
	// false.
	EndsRound bool
	RoundOK   bool
}

// at is the time of an observation: its own, else the Update's.
func (o *Observation) at(now time.Time) time.Time {
	if o.At.IsZero() {
		return now
	}
	return o.At
}

// Entry is a service's state after an Update.
type Entry struct {
	// State after the observation was applied. It is read-only for the
	// caller and valid until the next Update.
	State *stats.State
	// Warning is set when the stored state was missing parts or malformed
	// and the service fell back to a fresh state seeded with the current
	// observation. The gather goes on. A shared store that cannot be
	// written returns the agent's local state without a per-service
	// warning: it logs the outage itself (rate-limited) and reports it in
	// Health.
	Warning error
	// Before is the service's verdict before this observation (the one
	// stored or shared): it differs from State.Verdict when the
	// observation ended a round that changed the status.
	Before stats.Verdict
}

// Health is what a store says about itself, for service_latency_internal
// and /status.
type Health struct {
	WriteErrors int64 // cumulative: failed writes (Redis chunks that failed, state-file saves that failed)
	Dropped     int64 // cumulative: observations dropped because the replay queue was full
	QueueLen    int   // observations waiting to be replayed to a shared store now
	SlowWrites  int64 // cumulative: Redis chunks that missed their deadline while Redis was reachable
	Unreachable bool  // the shared store could not be reached at the last write
}

// Store keeps per-service state across gathers. Update is never called
// concurrently with itself.
type Store interface {
	// Update applies one gather's observations, taken at now, and returns
	// one Entry per observation, in the same order. An error means no
	// entry at all (the caller then has nothing to emit for any service);
	// per-service problems are Entry.Warning.
	Update(ctx context.Context, now time.Time, obs []Observation) ([]Entry, error)
	// Retain drops the state of every service for which keep is false.
	Retain(keep func(service string) bool)
	// Health reports the store's own condition. It is safe to call
	// concurrently with Update.
	Health() Health
	// Close flushes and releases the store.
	Close() error
}

// Persister is implemented by stores whose whole state can be exported and
// imported: the memory store (with or without a state file). The plugin
// uses it for telegraf.StatefulPlugin (GetState/SetState) without knowing
// which store it has; a store without it has nothing to persist locally.
type Persister interface {
	// Export returns a deep, self-contained copy of every service's state.
	Export() *Dump
	// Import replaces the state with the dump's. A dump of an
	// unknown version is an error and changes nothing; a malformed service
	// entry is skipped, and that service falls back to the current sample
	// at its next Update, with a warning naming it. Services absent from
	// the first gather after an Import (its Updates share their now) are
	// dropped when the next gather's first Update comes.
	Import(*Dump) error
}

// NopLogger is a telegraf.Logger that drops everything: the logger of a
// store built without one.
type NopLogger struct{}

func (NopLogger) Level() telegraf.LogLevel         { return telegraf.None }
func (NopLogger) AddAttribute(string, interface{}) {}
func (NopLogger) Errorf(string, ...interface{})    {}
func (NopLogger) Error(...interface{})             {}
func (NopLogger) Warnf(string, ...interface{})     {}
func (NopLogger) Warn(...interface{})              {}
func (NopLogger) Infof(string, ...interface{})     {}
func (NopLogger) Info(...interface{})              {}
func (NopLogger) Debugf(string, ...interface{})    {}
func (NopLogger) Debug(...interface{})             {}
func (NopLogger) Tracef(string, ...interface{})    {}
func (NopLogger) Trace(...interface{})             {}
