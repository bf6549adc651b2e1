package store

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// DumpVersion is the version of the Dump format (the state file's
// "version" field). Version 2 added each entry's "verdict"; a version 1
// file still loads (its services' status is unknown until the
// thresholds decide). A file of another version is not loaded: it is kept
// aside like a corrupt one.
const DumpVersion = 2

// minDumpVersion is the oldest version that loads.
const minDumpVersion = 1

// Dump is every service's state in a portable form: the content of the
// state file and of Telegraf's statefile entry (GetState/SetState). It is
// plain JSON:
//
//	{"version": 2, "saved_at": "...", "services": {"api": {...}, ...}}
//
// Each service entry is kept as raw JSON so that one malformed entry does
// not prevent the others from loading.
type Dump struct {
	Version  int                        `json:"version"`
	SavedAt  time.Time                  `json:"saved_at,omitzero"`
	Services map[string]json.RawMessage `json:"services"`
}

// dumpEntry is one service's state in a Dump. Times are unix nanoseconds.
type dumpEntry struct {
	// The Params the state was built for.
	Window           int       `json:"window"`
	HalfLife         string    `json:"ewma_half_life"`
	HistogramBuckets []float64 `json:"histogram_buckets,omitempty"`

	Count               int64   `json:"count"`
	Mean                float64 `json:"mean"`
	M2                  float64 `json:"m2"`
	Min                 float64 `json:"min"`
	Max                 float64 `json:"max"`
	EWMA                float64 `json:"ewma"`
	EWMAAt              int64   `json:"ewma_at"`
	Probes              int64   `json:"probes"`
	Failures            int64   `json:"failures"`
	ConsecutiveFailures int64   `json:"consecutive_failures"`
	LastSuccess         int64   `json:"last_success"`
	LastFailure         int64   `json:"last_failure"`
	// Ring is the exact window, oldest first; null is a failed probe.
	Ring []*float64 `json:"ring"`
	// Sketch holds the DDSketch's bins explicitly.
	Sketch sketchJSON `json:"sketch"`
	// Buckets are the per-bucket (not cumulative) histogram counts.
	Buckets []int64 `json:"buckets,omitempty"`
	// Verdict is the service's status (version 2; absent: unknown).
	Verdict *verdictJSON `json:"verdict,omitempty"`
}

// verdictJSON is a stats.Verdict: the status by name, the time it began
// (unix ns) and the runs of rounds that decide it.
type verdictJSON struct {
	Status string `json:"status"`
	Since  int64  `json:"since"`
	Failed int64  `json:"failed_rounds"`
	OK     int64  `json:"ok_rounds"`
	Slow   int64  `json:"slow_rounds"`
	Good   int64  `json:"good_rounds"`
}

func encodeVerdict(v stats.Verdict) *verdictJSON {
	if v == (stats.Verdict{}) {
		return nil
	}
	return &verdictJSON{Status: v.Status.String(), Since: v.Since, Failed: v.Failed, OK: v.OK, Slow: v.Slow, Good: v.Good}
}

func decodeVerdict(j *verdictJSON) (stats.Verdict, error) {
	if j == nil {
		return stats.Verdict{}, nil
	}
	v := stats.Verdict{Since: j.Since, Failed: j.Failed, OK: j.OK, Slow: j.Slow, Good: j.Good}
	st, ok := parseStatus(j.Status)
	if !ok {
		return v, fmt.Errorf("verdict status %q", j.Status)
	}
	v.Status = st
	return v, v.Validate()
}

// parseStatus is the inverse of stats.Status.String.
func parseStatus(s string) (stats.Status, bool) {
	for st := stats.StatusUnknown; st <= stats.MaxStatus; st++ {
		if st.String() == s {
			return st, true
		}
	}
	return 0, false
}

type sketchJSON struct {
	// Mapping identifies the index mapping (see mappingID); a different
	// one makes the entry malformed.
	Mapping string `json:"mapping"`
	// Zero counts the samples too small to index (zero latency).
	Zero float64 `json:"zero,omitempty"`
	// Bins maps a bin index to its count.
	Bins map[int]float64 `json:"bins"`
}

// mappingID is a stable identifier of the sketches' index mapping: its
// binary encoding (kind, gamma and index offset) in hex. Equal mappings
// have equal IDs.
var mappingID = func() string {
	var b []byte
	stats.SketchMapping().Encode(&b)
	return "ddsketch:" + hex.EncodeToString(b)
}()

// encodeEntry converts a valid state to its snapshot form.
func encodeEntry(s *stats.State, p stats.Params) ([]byte, error) {
	if err := s.Validate(p); err != nil {
		return nil, err
	}
	e := dumpEntry{
		Window:              p.Window,
		HalfLife:            p.HalfLife.String(),
		HistogramBuckets:    p.Buckets,
		Count:               s.Count,
		Mean:                s.Mean,
		M2:                  s.M2,
		Min:                 s.Min,
		Max:                 s.Max,
		EWMA:                s.EWMA,
		EWMAAt:              s.EWMAAt,
		Probes:              s.Probes,
		Failures:            s.Failures,
		ConsecutiveFailures: s.ConsecutiveFailures,
		LastSuccess:         s.LastSuccess,
		LastFailure:         s.LastFailure,
		Buckets:             s.Buckets,
		Verdict:             encodeVerdict(s.Verdict),
		Ring:                make([]*float64, 0, len(s.Ring)),
		Sketch:              sketchJSON{Mapping: mappingID, Bins: map[int]float64{}},
	}
	start := s.RingPos
	if start < 0 || start >= len(s.Ring) {
		start = 0
	}
	for k := range s.Ring {
		x := s.Ring[(start+k)%len(s.Ring)]
		if math.IsNaN(x) {
			e.Ring = append(e.Ring, nil)
		} else {
			e.Ring = append(e.Ring, &x)
		}
	}
	e.Sketch.Zero = s.Sketch.GetZeroCount()
	s.Sketch.GetPositiveValueStore().ForEach(func(i int, c float64) bool {
		e.Sketch.Bins[i] = c
		return false
	})
	return json.Marshal(&e)
}

// appendEntry appends the JSON of a state that is valid for p: the
// document encodeEntry's json.Marshal of a dumpEntry makes (the same
// fields in the same order, floats formatted as encoding/json formats
// them; the sketch's bins in index order), without building it — the
// state file is written with it, 100,000 services a save.
func appendEntry(b []byte, s *stats.State, p stats.Params) []byte {
	b = append(b, `{"window":`...)
	b = strconv.AppendInt(b, int64(p.Window), 10)
	b = append(b, `,"ewma_half_life":"`...)
	b = append(b, p.HalfLife.String()...)
	b = append(b, '"')
	if len(p.Buckets) > 0 {
		b = append(b, `,"histogram_buckets":[`...)
		for i, x := range p.Buckets {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONFloat(b, x)
		}
		b = append(b, ']')
	}
	for _, f := range [...]struct {
		key string
		v   float64
		int bool
		i   int64
	}{
		{key: "count", int: true, i: s.Count},
		{key: "mean", v: s.Mean},
		{key: "m2", v: s.M2},
		{key: "min", v: s.Min},
		{key: "max", v: s.Max},
		{key: "ewma", v: s.EWMA},
		{key: "ewma_at", int: true, i: s.EWMAAt},
		{key: "probes", int: true, i: s.Probes},
		{key: "failures", int: true, i: s.Failures},
		{key: "consecutive_failures", int: true, i: s.ConsecutiveFailures},
		{key: "last_success", int: true, i: s.LastSuccess},
		{key: "last_failure", int: true, i: s.LastFailure},
	} {
		b = append(b, ',', '"')
		b = append(b, f.key...)
		b = append(b, '"', ':')
		if f.int {
			b = strconv.AppendInt(b, f.i, 10)
		} else {
			b = appendJSONFloat(b, f.v)
		}
	}
	b = append(b, `,"ring":[`...)
	start := s.RingPos
	if start < 0 || start >= len(s.Ring) {
		start = 0
	}
	for k := range s.Ring {
		if k > 0 {
			b = append(b, ',')
		}
		if x := s.Ring[(start+k)%len(s.Ring)]; math.IsNaN(x) {
			b = append(b, "null"...)
		} else {
			b = appendJSONFloat(b, x)
		}
	}
	b = append(b, `],"sketch":{"mapping":"`...)
	b = append(b, mappingID...)
	b = append(b, '"')
	if z := s.Sketch.GetZeroCount(); z != 0 {
		b = append(b, `,"zero":`...)
		b = appendJSONFloat(b, z)
	}
	b = append(b, `,"bins":{`...)
	first := true
	s.Sketch.GetPositiveValueStore().ForEach(func(i int, c float64) bool {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, '"', ':')
		b = appendJSONFloat(b, c)
		return false
	})
	b = append(b, '}', '}')
	if len(s.Buckets) > 0 {
		b = append(b, `,"buckets":[`...)
		for i, c := range s.Buckets {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, c, 10)
		}
		b = append(b, ']')
	}
	if v := encodeVerdict(s.Verdict); v != nil {
		b = append(b, `,"verdict":{"status":"`...)
		b = append(b, v.Status...)
		b = append(b, `","since":`...)
		b = strconv.AppendInt(b, v.Since, 10)
		b = append(b, `,"failed_rounds":`...)
		b = strconv.AppendInt(b, v.Failed, 10)
		b = append(b, `,"ok_rounds":`...)
		b = strconv.AppendInt(b, v.OK, 10)
		b = append(b, `,"slow_rounds":`...)
		b = strconv.AppendInt(b, v.Slow, 10)
		b = append(b, `,"good_rounds":`...)
		b = strconv.AppendInt(b, v.Good, 10)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendJSONFloat formats a finite float as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 → e-9, as encoding/json
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString appends s as encoding/json writes a string.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// decodeEntry parses a snapshot entry. The state is checked against the
// Params it was saved with; adapting it to the current Params is the
// memory store's job.
func decodeEntry(raw json.RawMessage) (*stats.State, stats.Params, error) {
	var e dumpEntry
	var p stats.Params
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, p, err
	}
	hl, err := time.ParseDuration(e.HalfLife)
	if err != nil {
		return nil, p, fmt.Errorf("ewma_half_life: %w", err)
	}
	p = stats.Params{Window: e.Window, HalfLife: hl, Buckets: e.HistogramBuckets}
	if err := p.Validate(); err != nil {
		return nil, p, err
	}
	if e.Sketch.Mapping != mappingID {
		return nil, p, fmt.Errorf("sketch mapping %q differs from %q", e.Sketch.Mapping, mappingID)
	}
	s := &stats.State{
		Count:               e.Count,
		Mean:                e.Mean,
		M2:                  e.M2,
		Min:                 e.Min,
		Max:                 e.Max,
		EWMA:                e.EWMA,
		EWMAAt:              e.EWMAAt,
		Probes:              e.Probes,
		Failures:            e.Failures,
		ConsecutiveFailures: e.ConsecutiveFailures,
		LastSuccess:         e.LastSuccess,
		LastFailure:         e.LastFailure,
		Ring:                make([]float64, 0, p.Window),
		Sketch:              stats.NewSketch(),
		Buckets:             e.Buckets,
	}
	if s.Verdict, err = decodeVerdict(e.Verdict); err != nil {
		return nil, p, err
	}
	if len(e.Ring) > p.Window {
		return nil, p, fmt.Errorf("ring holds %d probes, window is %d", len(e.Ring), p.Window)
	}
	for _, x := range e.Ring {
		if x == nil {
			s.Ring = append(s.Ring, math.NaN())
		} else {
			s.Ring = append(s.Ring, *x)
		}
	}
	if err := fillSketch(s, e.Sketch.Zero, e.Sketch.Bins); err != nil {
		return nil, p, err
	}
	if err := s.Validate(p); err != nil {
		return nil, p, err
	}
	return s, p, nil
}

// fillSketch adds the bins to the state's (empty) sketch.
func fillSketch(s *stats.State, zero float64, bins map[int]float64) error {
	if !(zero >= 0) || math.IsInf(zero, 0) {
		return fmt.Errorf("sketch zero count %v", zero)
	}
	if zero > 0 {
		if err := s.Sketch.AddWithCount(0, zero); err != nil {
			return err
		}
	}
	st := s.Sketch.GetPositiveValueStore()
	for i, c := range bins {
		if !(c >= 0) || math.IsInf(c, 0) {
			return fmt.Errorf("sketch bin %d count %v", i, c)
		}
		if i < math.MinInt32 || i > math.MaxInt32 {
			return fmt.Errorf("sketch bin index %d out of range", i)
		}
		st.AddWithCount(i, c)
	}
	return nil
}

var errNilDump = errors.New("no dump")

// checkDump reports a snapshot that cannot be loaded at all.
func checkDump(s *Dump) error {
	if s == nil {
		return errNilDump
	}
	if s.Version < minDumpVersion || s.Version > DumpVersion {
		return fmt.Errorf("unsupported state format version %d (want %d to %d)", s.Version, minDumpVersion, DumpVersion)
	}
	return nil
}
