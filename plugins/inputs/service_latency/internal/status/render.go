package status

// The /status document: rendered once per snapshot, written as is.

import (
	"bytes"
	"encoding/json"
	"runtime"
	"slices"
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

	// The operator's page (page.go): its JSON, rendered once like doc,
	// and the services by name.
	pageOnce sync.Once
	page     *pageDoc
	idxOnce  sync.Once
	idx      map[string]int
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
	var e serviceEncoder
	b := append(make([]byte, 0, 4<<10), '[')
	for i := range svcs {
		mark := len(b)
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, svcIndent...)
		var le *serviceError
		if len(errs) > 0 && errs[0].i == i {
			le = &errs[0]
			errs = errs[1:]
		}
		if b, err = e.appendService(b, &svcs[i], le); err != nil {
			return nil, 0, err
		}
		if len(b)+len(end) > budget {
			b = b[:mark]
			break
		}
		if i == 0 {
			// room for all, from the first one's size, within budget
			if want := min(budget, (len(b)+len(b)/4)*len(svcs)); want > cap(b) {
				b = slices.Grow(b, want-len(b))
			}
		}
		shown++
	}
	if shown == 0 {
		return []byte(empty), 0, nil
	}
	return append(b, end...), shown, nil
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
