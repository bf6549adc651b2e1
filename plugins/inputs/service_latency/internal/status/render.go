package status

// The /status document: rendered once per snapshot, written as is.

import (
	"bytes"
	"encoding/json"
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

	// The /status document's frame (everything but the services part),
	// rendered once, and its default page (no parameters), rendered
	// once: the bytes most requests get.
	frameOnce sync.Once
	frame     *document
	once      sync.Once
	firstPage *listing

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

// document is the frame of a rendered /status body: head is "{" and
// "build"; "healthy" and "health" (per request) follow, then mid
// ("gathers", "last_gather", "internal") and a listing's tail.
type document struct {
	head, mid []byte
	err       error
}

// framed returns sn's frame, rendered on first use.
func (sn *snapshot) framed() *document {
	sn.frameOnce.Do(func() { sn.frame = sn.renderFrame() })
	return sn.frame
}

// defaultPage returns the listing of a /status request without
// parameters (the first DefaultLimit services), rendered once for sn.
func (sn *snapshot) defaultPage(s *Server) *listing {
	sn.once.Do(func() {
		s.renders.Add(1)
		if s.onRender != nil {
			s.onRender()
		}
		sn.firstPage = sn.renderListing(0, DefaultLimit, s.listBudget(sn.framed()), true)
	})
	return sn.firstPage
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

// renderFrame writes the frame as json.MarshalIndent(doc, "", "  ")
// would, one member at a time (the listing and the health go between).
func (sn *snapshot) renderFrame() *document {
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
	return &document{head: head.Bytes(), mid: tail.Bytes()}
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
