package store

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// fuzzParams are the Params the fuzzed states are observed with: one with
// a histogram and a small window (so a decoded state is resized and its
// buckets rebuilt), one without.
var fuzzParams = []stats.Params{
	{Window: 5, HalfLife: time.Minute, Buckets: []float64{0.01, 0.1, 1}},
	{Window: 100, HalfLife: 5 * time.Minute},
}

// FuzzStateFile feeds arbitrary bytes to the file store as its state file.
// Loading must never panic; whatever was loaded, the next Update gives
// every service a valid state, and what the store would write back loads
// again without a malformed entry. Seeds: testdata/fuzz/FuzzStateFile.
func FuzzStateFile(f *testing.F) {
	f.Add([]byte(`{"version": 1, "services": {}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs, err := NewFile(path, fuzzQuietLogger{})
		if err != nil {
			t.Fatalf("NewFile: %v", err)
		}
		loaded := fs.Export() // loads the file (and does not write it)

		// observe every service the file named, and one it did not
		names := []string{"fuzz-new-service"}
		var head struct {
			Services map[string]json.RawMessage `json:"services"`
		}
		if json.Unmarshal(data, &head) == nil {
			for name := range head.Services {
				names = append(names, name)
			}
		}
		sort.Strings(names[1:])
		if len(names) > 50 {
			names = names[:50]
		}
		mem := fs.memory()
		now := time.Unix(1_700_000_000, 0)
		for round := range 2 {
			obs := make([]Observation, len(names))
			for i, name := range names {
				obs[i] = Observation{Service: name, Params: fuzzParams[(i+round)%2], OK: i%3 != 1, Latency: 0.002 * float64(i+1)}
			}
			now = now.Add(time.Second)
			res, err := mem.Update(context.Background(), now, obs)
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if len(res) != len(obs) {
				t.Fatalf("%d results for %d observations", len(res), len(obs))
			}
			for i := range res {
				if res[i].State == nil {
					t.Fatalf("no state for %q", names[i])
				}
				if err := res[i].State.Validate(obs[i].Params); err != nil {
					t.Fatalf("state of %q after Update is invalid: %v", names[i], err)
				}
				var snap stats.Snapshot
				res[i].State.Snapshot([]float64{50, 99.9}, &snap)
				requireFiniteSnapshot(t, names[i], &snap)
			}
		}

		// what would be written back loads again, entry for entry
		out := mem.Export()
		enc, err := json.Marshal(out)
		if err != nil {
			t.Fatalf("encoding the state: %v", err)
		}
		var back Dump
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("decoding what was written: %v", err)
		}
		again := NewMemory()
		bad, err := again.importDump(&back, "fuzz")
		if err != nil || bad != 0 {
			t.Fatalf("re-import of the written state: %d malformed entries, %v", bad, err)
		}
		if len(out.Services) != len(names) {
			t.Fatalf("%d services written, %d observed", len(out.Services), len(names))
		}
		_ = loaded
	})
}

func requireFiniteSnapshot(t *testing.T, name string, s *stats.Snapshot) {
	t.Helper()
	vals := []float64{s.Mean, s.Min, s.Max, s.EWMA, s.Stddev, s.Availability, s.Jitter}
	vals = append(vals, s.Window...)
	vals = append(vals, s.Lifetime...)
	for _, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("service %q: non-finite statistic in %+v", name, *s)
		}
	}
}

// fuzzReply turns JSON into the shape go-redis gives a Lua reply: strings,
// integers (a Lua number), nil (false/nil) and nested arrays; other JSON
// values are passed on as they are (wrong types the decoder must refuse).
func fuzzReply(v interface{}) interface{} {
	switch v := v.(type) {
	case []interface{}:
		for i := range v {
			v[i] = fuzzReply(v[i])
		}
		return v
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<62 {
			return int64(v)
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	return v
}

// FuzzRedisState feeds arbitrary script replies to the Redis state
// decoder (what an agent makes of the state another agent, an older
// version or a corrupted Redis left). It must never panic; a reply it
// accepts is a valid state for the Params, stays valid when observed
// further, and decodes the same into reused storage. Seeds:
// testdata/fuzz/FuzzRedisState (JSON: strings, integers, arrays).
func FuzzRedisState(f *testing.F) {
	f.Fuzz(func(t *testing.T, reply []byte, window uint16, buckets uint8) {
		if len(reply) > 1<<20 {
			return
		}
		p := stats.Params{Window: 1 + int(window)%200, HalfLife: time.Minute}
		p.Buckets = []float64{0.01, 0.1, 1}[:int(buckets)%4]
		var v interface{}
		if err := json.Unmarshal(reply, &v); err != nil {
			return
		}
		decode := func(st *stats.State) error {
			var raw interface{}
			_ = json.Unmarshal(reply, &raw)
			_, err := decodeReply(fuzzReply(raw), st, p)
			return err
		}
		st := stats.NewState(p)
		if err := decode(st); err != nil {
			// a refused reply leaves storage that can be decoded into
			// again
			_ = decode(st)
			return
		}
		if err := st.Validate(p); err != nil {
			t.Fatalf("accepted reply gives an invalid state: %v", err)
		}
		var snap stats.Snapshot
		st.Snapshot([]float64{50, 99}, &snap)
		requireFiniteSnapshot(t, "reply", &snap)

		// reused storage (the agent's local state) decodes the same
		reused := stats.NewState(p)
		reused.Observe(time.Unix(1_700_000_000, 0), true, 0.5, p)
		if err := decode(reused); err != nil {
			t.Fatalf("decoding into reused storage: %v", err)
		}
		if reused.Count != st.Count || reused.Probes != st.Probes || len(reused.Ring) != len(st.Ring) ||
			reused.Sketch.GetCount() != st.Sketch.GetCount() {
			t.Fatalf("reused storage decodes differently: %+v vs %+v", reused, st)
		}

		// the degraded path observes on top of the last merged state
		at := time.Unix(0, max(st.EWMAAt, st.LastSuccess, st.LastFailure)).Add(time.Second)
		st.Observe(at, true, 0.003, p)
		st.Observe(at.Add(time.Second), false, 0, p)
		if err := st.Validate(p); err != nil {
			t.Fatalf("an accepted state observed further is invalid: %v", err)
		}
	})
}

// fuzzQuietLogger drops every message.
type fuzzQuietLogger struct{}

func (fuzzQuietLogger) Level() telegraf.LogLevel         { return telegraf.Debug }
func (fuzzQuietLogger) AddAttribute(string, interface{}) {}
func (fuzzQuietLogger) Errorf(string, ...interface{})    {}
func (fuzzQuietLogger) Error(...interface{})             {}
func (fuzzQuietLogger) Warnf(string, ...interface{})     {}
func (fuzzQuietLogger) Warn(...interface{})              {}
func (fuzzQuietLogger) Infof(string, ...interface{})     {}
func (fuzzQuietLogger) Info(...interface{})              {}
func (fuzzQuietLogger) Debugf(string, ...interface{})    {}
func (fuzzQuietLogger) Debug(...interface{})             {}
func (fuzzQuietLogger) Tracef(string, ...interface{})    {}
func (fuzzQuietLogger) Trace(...interface{})             {}
