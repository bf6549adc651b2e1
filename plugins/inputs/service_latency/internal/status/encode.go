package status

// A /status service entry, written as encoding/json's MarshalIndent would
// write serviceJSON at its place in the document, without reflection: a
// render of 2,000 services is then a few milliseconds and a few
// allocations instead of ~60 ms and ~150,000 (it runs while probes
// measure latency). shape_test.go holds it to encoding/json's bytes.

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// Indentation of a service's members and of their members.
const (
	svcIndent = "\n    "
	memIndent = "\n      "
	valIndent = "\n        "
)

// serviceEncoder appends service entries; its scratch is reused.
type serviceEncoder struct {
	keys    []string
	buckets []gather.Bucket
}

// appendService appends sv (with its last error le, or nil) as an element
// of the services list, from its opening brace to its closing one.
func (e *serviceEncoder) appendService(b []byte, sv *gather.Service, le *serviceError) ([]byte, error) {
	b = append(b, '{')
	b = append(b, memIndent+`"name": `...)
	b = appendJSONString(b, sv.Name)

	b = append(b, ","+memIndent+`"tags": `...)
	if sv.Tags == nil {
		b = append(b, "null"...)
	} else {
		e.keys = sortedKeys(e.keys[:0], sv.Tags)
		b = openMap(b, len(e.keys))
		for i, k := range e.keys {
			b = memberKey(b, i, k)
			b = appendJSONString(b, sv.Tags[k])
		}
		b = closeMap(b, len(e.keys))
	}

	b = append(b, ","+memIndent+`"fields": `...)
	if sv.Fields == nil {
		b = append(b, "null"...)
	} else {
		e.keys = sortedKeys(e.keys[:0], sv.Fields)
		b = openMap(b, len(e.keys))
		for i, k := range e.keys {
			b = memberKey(b, i, k)
			var err error
			if b, err = appendValue(b, sv.Fields[k]); err != nil {
				return b, err
			}
		}
		b = closeMap(b, len(e.keys))
	}

	if len(sv.Histogram) > 0 {
		// a map in encoding/json: sorted by le, the last count of a
		// repeated le
		e.buckets = append(e.buckets[:0], sv.Histogram...)
		slices.SortStableFunc(e.buckets, func(x, y gather.Bucket) int { return strings.Compare(x.LE, y.LE) })
		n := 0
		for i, h := range e.buckets {
			if i+1 < len(e.buckets) && e.buckets[i+1].LE == h.LE {
				continue
			}
			e.buckets[n] = h
			n++
		}
		b = append(b, ","+memIndent+`"histogram": `...)
		b = openMap(b, n)
		for i, h := range e.buckets[:n] {
			b = memberKey(b, i, h.LE)
			b = strconv.AppendInt(b, h.Count, 10)
		}
		b = closeMap(b, n)
	}

	var err error
	b = append(b, ","+memIndent+`"last_success": `...)
	if b, err = appendTimeOrNull(b, sv.LastSuccess); err != nil {
		return b, err
	}
	b = append(b, ","+memIndent+`"last_failure": `...)
	if b, err = appendTimeOrNull(b, sv.LastFailure); err != nil {
		return b, err
	}
	if le != nil {
		if le.msg != "" {
			b = append(b, ","+memIndent+`"last_error": `...)
			b = appendJSONString(b, le.msg)
		}
		b = append(b, ","+memIndent+`"last_error_at": `...)
		if b, err = appendTime(b, le.at); err != nil {
			return b, err
		}
	}
	if len(sv.History) > 0 {
		// newest first; one compact object per round
		b = append(b, ","+memIndent+`"history": [`...)
		for i, h := range sv.History {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, `{"time": `...)
			if b, err = appendTime(b, h.At); err != nil {
				return b, err
			}
			b = append(b, `, "result": `...)
			b = appendJSONString(b, h.Result)
			if h.Latency > 0 {
				b = append(b, `, "latency": `...)
				b = strconv.AppendFloat(b, h.Latency, 'g', -1, 64)
			}
			if h.Error != "" {
				b = append(b, `, "error": `...)
				b = appendJSONString(b, redact.Text(h.Error))
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, svcIndent+"}"...), nil
}

func sortedKeys[V any](keys []string, m map[string]V) []string {
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func openMap(b []byte, n int) []byte {
	if n == 0 {
		return append(b, "{}"...)
	}
	return append(b, '{')
}

func closeMap(b []byte, n int) []byte {
	if n == 0 {
		return b
	}
	return append(b, memIndent+"}"...)
}

// memberKey starts the i-th member of a map inside a service member.
func memberKey(b []byte, i int, k string) []byte {
	if i > 0 {
		b = append(b, ',')
	}
	b = append(b, valIndent...)
	b = appendJSONString(b, k)
	return append(b, ": "...)
}

// appendValue appends a field's value; non-finite floats are null.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return append(b, "null"...), nil
		}
		return appendFloat(b, v), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendJSONString(b, v), nil
	}
	// anything else as encoding/json writes it at this depth
	j, err := json.MarshalIndent(v, strings.TrimPrefix(valIndent, "\n"), "  ")
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

// appendFloat formats a finite float64 as encoding/json does.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

func appendTimeOrNull(b []byte, t time.Time) ([]byte, error) {
	if t.IsZero() {
		return append(b, "null"...), nil
	}
	return appendTime(b, t.UTC())
}

// appendTime appends t as time.Time's MarshalJSON does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		j, err := t.MarshalJSON() // its error
		return append(b, j...), err
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// appendJSONString appends s as encoding/json writes a string (HTML-safe,
// invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
