package status

// The /status document: rendered once per snapshot, written as is.

import (
	"bytes"
	"encoding/json"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// snapshot is what the handlers serve between two Publishes. Immutable
// once stored, except for its render (made once, under once).
type snapshot struct {
	gathers int64
	ref     time.Duration  // /healthz's reference interval
	report  *gather.Report // the last gather; nil before the first
	gErr    string         // report.Err, redacted
	// services is the report whose services are shown (an earlier one
	// when the last gather failed without metrics), errs the last errors
	// of its services.
	services *gather.Report
	errs     []serviceError

	once sync.Once
	doc  *document
}

// serviceError is the last error of services.Services[i].
type serviceError struct {
	i   int
	msg string
	at  time.Time
}

// document is a rendered /status body less "healthy" and "health", which
// go between head and tail; tail is mid and list.
type document struct {
	head, mid, list []byte
	err             error
}

func (d *document) size() int { return len(d.head) + len(d.mid) + len(d.list) }

func (sn *snapshot) rendered(s *Server) *document {
	sn.once.Do(func() {
		s.renders.Add(1)
		if s.onRender != nil {
			s.onRender()
		}
		sn.doc = sn.render(s.maxBody)
	})
	return sn.doc
}

type buildInfo struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	GoVersion string    `json:"go_version"`
	StartTime time.Time `json:"start_time"`
}

type gatherInfo struct {
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	DurationSeconds float64   `json:"duration_seconds"`
	Error           string    `json:"error,omitempty"`
}

// serviceJSON is one service's entry in /status.
type serviceJSON struct {
	Name        string            `json:"name"`
	Tags        map[string]string `json:"tags"`
	Fields      map[string]any    `json:"fields"`
	Histogram   map[string]int64  `json:"histogram,omitempty"`
	LastSuccess *time.Time        `json:"last_success"`
	LastFailure *time.Time        `json:"last_failure"`
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt *time.Time        `json:"last_error_at,omitempty"`
}

// render writes the document as json.MarshalIndent(doc, "", "  ") would,
// one member at a time so that the services can stop at maxBody.
func (sn *snapshot) render(maxBody int) *document {
	var head, tail bytes.Buffer
	top := json.NewEncoder(&tail)
	top.SetIndent("  ", "  ")
	member := func(b *bytes.Buffer, key string, v any) error {
		b.WriteString("  \"")
		b.WriteString(key)
		b.WriteString("\": ")
		enc := top
		if b != &tail {
			enc = json.NewEncoder(b)
			enc.SetIndent("  ", "  ")
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		b.WriteString(",\n")
		return nil
	}

	head.WriteString("{\n")
	if err := member(&head, "build", buildInfo{
		Version:   Version,
		Commit:    Commit,
		GoVersion: runtime.Version(),
		StartTime: processStart.UTC(),
	}); err != nil {
		return &document{err: err}
	}
	if err := member(&tail, "gathers", sn.gathers); err != nil {
		return &document{err: err}
	}
	if r := sn.report; r != nil {
		if err := member(&tail, "last_gather", gatherInfo{
			Start:           r.Start.UTC(),
			End:             r.End.UTC(),
			DurationSeconds: r.End.Sub(r.Start).Seconds(),
			Error:           sn.gErr,
		}); err != nil {
			return &document{err: err}
		}
		if err := member(&tail, "internal", r.Internal.Fields()); err != nil {
			return &document{err: err}
		}
	}

	var svcs []gather.Service
	if sn.services != nil {
		svcs = sn.services.Services
	}
	list, shown, err := renderServices(svcs, sn.errs, maxBody-head.Len()-tail.Len()-reserve)
	if err != nil {
		return &document{err: err}
	}
	if shown < len(svcs) {
		_ = member(&tail, "services_truncated", true)
		_ = member(&tail, "services_total", len(svcs))
	}
	tail.WriteString("  \"services\": ")
	return &document{head: head.Bytes(), mid: tail.Bytes(), list: list}
}

// reserve is room left in the body for "healthy", "health", the
// truncation flags and the closing brackets.
const reserve = 1 << 10

// renderServices renders the services list as the last member of the
// document, closing brackets included, with as many services (the first
// ones) as fit in budget bytes.
func renderServices(svcs []gather.Service, errs []serviceError, budget int) (list []byte, shown int, err error) {
	const empty, end = "[]\n}\n", "\n  ]\n}\n"
	if len(svcs) == 0 {
		return []byte(empty), 0, nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("    ", "  ")
	b.WriteString("[")
	for i := range svcs {
		mark := b.Len()
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		sv := &svcs[i]
		j := serviceJSON{
			Name:        sv.Name,
			Tags:        sv.Tags,
			Fields:      finiteFields(sv.Fields),
			LastSuccess: timeOrNil(sv.LastSuccess),
			LastFailure: timeOrNil(sv.LastFailure),
		}
		if len(sv.Histogram) > 0 {
			j.Histogram = make(map[string]int64, len(sv.Histogram))
			for _, h := range sv.Histogram {
				j.Histogram[h.LE] = h.Count
			}
		}
		if len(errs) > 0 && errs[0].i == i {
			j.LastError = errs[0].msg
			at := errs[0].at
			j.LastErrorAt = &at
			errs = errs[1:]
		}
		if err := enc.Encode(&j); err != nil {
			return nil, 0, err
		}
		b.Truncate(b.Len() - 1)
		if b.Len()+len(end) > budget {
			b.Truncate(mark)
			break
		}
		if i == 0 {
			// room for all, from the first one's size, within budget
			if want := min(budget, (b.Len()+b.Len()/4)*len(svcs)); want > b.Len() {
				b.Grow(want - b.Len())
			}
		}
		shown++
	}
	if shown == 0 {
		return []byte(empty), 0, nil
	}
	b.WriteString(end)
	return b.Bytes(), shown, nil
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// finiteFields returns fields, or a copy with non-finite floats (which JSON
// cannot carry) as null.
func finiteFields(fields map[string]any) map[string]any {
	for _, v := range fields {
		if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			out := make(map[string]any, len(fields))
			for k, v := range fields {
				if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
					v = nil
				}
				out[k] = v
			}
			return out
		}
	}
	return fields
}

// appendHealth appends the "healthy" and "health" members at now.
func appendHealth(b []byte, sn *snapshot, now time.Time) []byte {
	ok, msg := sn.health(now)
	b = append(b, `  "healthy": `...)
	if ok {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	b = append(b, ",\n  \"health\": "...)
	b = appendJSONString(b, msg)
	return append(b, ",\n"...)
}

// appendJSONString appends s as encoding/json writes it (HTML-safe
// escaping) for valid UTF-8, which the health messages are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			// U+2028, U+2029
			b = append(b, '\\', 'u', '2', '0', '2', hex[s[i+2]&0xf])
			i += 2
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
