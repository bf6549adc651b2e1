package store

import (
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
