package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// Memory keeps the state in the process.
type Memory struct {
	mu     sync.Mutex
	states map[string]*memEntry
	// bad holds, per service, why its imported entry was rejected: the
	// warning of its next Update (which starts over from the sample).
	bad map[string]error
	// pruneNext drops the imported state of services no longer
	// configured: those not observed during the first gather after the
	// import (every Update of a gather has the gather's start as now; a
	// gather is several Updates of at most 500 rounds), once the next
	// gather's first Update comes. pruneAt is the first gather's now,
	// pruneSeen the services observed in it.
	pruneNext bool
	pruneAt   time.Time
	pruneSeen map[string]bool
	// out is Update's result slice, reused from call to call (the Store
	// contract: results are valid until the next Update).
	out []Entry
	// scratch is the verdict's sort buffer (a window percentile).
	scratch []float64
}

type memEntry struct {
	state  *stats.State
	params stats.Params
	// checked: state passed Validate(params) (or is new) and has only been
	// changed by Observe since, which keeps a valid state valid; it needs
	// no new check until its params change. Import leaves it clear.
	checked bool
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory {
	return &Memory{states: make(map[string]*memEntry)}
}

// Update implements Store.
func (m *Memory) Update(_ context.Context, now time.Time, obs []Observation) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pruneNext {
		if m.pruneAt.IsZero() {
			m.pruneAt = now
		}
		for i := range obs {
			m.pruneSeen[obs[i].Service] = true
		}
		if !now.Equal(m.pruneAt) { // the second gather: the first saw every configured service
			seen := m.pruneSeen
			m.pruneNext, m.pruneAt, m.pruneSeen = false, time.Time{}, nil
			for name := range m.states {
				if !seen[name] {
					delete(m.states, name)
				}
			}
			for name := range m.bad {
				if !seen[name] {
					delete(m.bad, name)
				}
			}
		}
	}
	if cap(m.out) < len(obs) {
		m.out = make([]Entry, len(obs))
	}
	out := m.out[:len(obs)]
	for i := range obs {
		o := &obs[i]
		out[i] = m.apply(now, o)
		if err, ok := m.bad[o.Service]; ok {
			delete(m.bad, o.Service)
			if out[i].Warning == nil {
				out[i].Warning = err
			}
		}
	}
	return out, nil
}

func (m *Memory) apply(now time.Time, o *Observation) Entry {
	var warn error
	e := m.states[o.Service]
	switch {
	case e == nil:
		e = &memEntry{state: stats.NewState(o.Params), params: o.Params, checked: true}
		m.states[o.Service] = e
	case e.checked && sameParams(e.params, o.Params):
		// Valid, same params: nothing to check (Validate walks the window
		// and the sketch: it would cost more than the update itself).
	default:
		if !sameParams(e.params, o.Params) && e.state != nil && e.state.Validate(e.params) == nil {
			e.state.Resize(o.Params)
			if !slices.Equal(e.params.Buckets, o.Params.Buckets) {
				// Resize rebuilds only when the number of buckets changes.
				e.state.RebuildBuckets(o.Params)
			}
			e.params = o.Params
		}
		if e.state == nil {
			warn = fmt.Errorf("state of service %q is missing; starting over from the current sample", o.Service)
		} else if err := e.state.Validate(o.Params); err != nil {
			warn = fmt.Errorf("state of service %q is malformed (%w); starting over from the current sample", o.Service, err)
		}
		if warn != nil {
			e.state = stats.NewState(o.Params)
			e.params = o.Params
		}
		e.checked = true
	}
	e.state.Observe(o.at(now), o.OK, o.Latency, o.Params)
	before := e.state.Verdict
	if o.EndsRound {
		e.state.EndRound(o.at(now), o.RoundOK, o.Params.Verdict, &m.scratch)
	}
	return Entry{State: e.state, Warning: warn, Before: before}
}

func sameParams(a, b stats.Params) bool {
	return a.Window == b.Window && a.HalfLife == b.HalfLife && slices.Equal(a.Buckets, b.Buckets)
}

// Retain implements Store.
func (m *Memory) Retain(keep func(string) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.states {
		if !keep(name) {
			delete(m.states, name)
		}
	}
	for name := range m.bad {
		if !keep(name) {
			delete(m.bad, name)
		}
	}
}

// Close implements Store.
func (*Memory) Close() error { return nil }

// Health implements Store: the memory store has nothing to report.
func (*Memory) Health() Health { return Health{} }

// Export implements Persister. Only states that are valid for their
// Params are exported (a malformed one falls back at its next Update
// anyway).
func (m *Memory) Export() *Dump {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := &Dump{Version: DumpVersion, Services: make(map[string]json.RawMessage, len(m.states))}
	for name, e := range m.states {
		if e.state == nil {
			continue
		}
		raw, err := encodeEntry(e.state, e.params)
		if err != nil {
			continue
		}
		d.Services[name] = raw
	}
	return d
}

// writeDump writes the state as a Dump (the state file's JSON), one
// service's entry at a time: the same document as json.Marshal(Export())
// with SavedAt set, without holding all of it in memory. The store is
// locked meanwhile (an Update waits).
func (m *Memory) writeDump(w io.Writer, savedAt time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	head, err := json.Marshal(&Dump{Version: DumpVersion, SavedAt: savedAt})
	if err != nil {
		return err
	}
	// {"version":2,"saved_at":"...","services":null} → ...,"services":{
	head = append(bytes.TrimSuffix(head, []byte("null}")), '{')
	if _, err := w.Write(head); err != nil {
		return err
	}
	buf := make([]byte, 0, 4096)
	first := true
	for name, e := range m.states {
		if e.state == nil || e.state.Validate(e.params) != nil {
			continue
		}
		buf = buf[:0]
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = appendJSONString(buf, name)
		buf = append(buf, ':')
		buf = appendEntry(buf, e.state, e.params)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	_, err = w.Write([]byte("}}"))
	return err
}

// Import implements Persister.
func (m *Memory) Import(snap *Dump) error {
	_, err := m.importDump(snap, "")
	return err
}

// importDump replaces the state with snap's and returns the number of
// malformed entries. source ("state file /x") is named in their warnings.
func (m *Memory) importDump(snap *Dump, source string) (int, error) {
	if err := checkDump(snap); err != nil {
		return 0, err
	}
	if source == "" {
		source = "the imported state"
	}
	states := make(map[string]*memEntry, len(snap.Services))
	bad := make(map[string]error)
	for name, raw := range snap.Services {
		s, p, err := decodeEntry(raw)
		if err != nil {
			bad[name] = fmt.Errorf("state of service %q in %s is malformed (%w); starting over from the current sample", name, source, err)
			continue
		}
		states[name] = &memEntry{state: s, params: p}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states = states
	m.bad = bad
	m.pruneNext, m.pruneAt, m.pruneSeen = true, time.Time{}, make(map[string]bool, len(states))
	return len(bad), nil
}
