package store

import (
	"context"
	"slices"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Test-only access to the stores' insides.

// state returns the live state of a service (nil when there is none). The
// caller may change it: the next Update validates it again.
func (m *Memory) state(service string) *stats.State {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.states[service]; e != nil {
		e.checked = false
		return e.state
	}
	return nil
}

// services lists the services with state, sorted.
func (m *Memory) services() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.states))
	for n := range m.states {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// memory returns the in-process store that holds a File's state.
func (f *File) memory() *Memory { return f.mem }

// agentID returns the agent id of a Redis store's writes.
func (r *Redis) agentID() string { return r.opts.AgentID }

// writeEntries writes the entries as given (grouped by service, in order),
// bypassing the queue: a retried or replayed write.
func (r *Redis) writeEntries(ctx context.Context, entries []pending, obs []Observation) map[string]*callResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	by := make(map[string]*batch)
	var batches []*batch
	for _, e := range entries {
		b := by[e.service]
		if b == nil {
			b = &batch{service: e.service, params: e.params}
			by[e.service] = b
			batches = append(batches, b)
		}
		b.entries = append(b.entries, e)
	}
	for i := range obs {
		if b := by[obs[i].Service]; b != nil {
			b.params, b.observed = obs[i].Params, true
		}
	}
	r.writeLocked(ctx, batches)
	outs := make(map[string]*callResult, len(batches))
	for _, b := range batches {
		outs[b.service] = b.out
	}
	return outs
}
