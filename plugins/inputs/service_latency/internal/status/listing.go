package status

// The services part of a /status body: one service (?service=NAME) or a
// page of them in config order (?limit=N, ?after=NAME), with the cursor
// of the next page. At 100,000 services the whole list is ~260 MB of
// JSON: no body holds it, a client pages through it.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// statusQuery is what a /status request asks for.
type statusQuery struct {
	service string // ?service=: that service alone ("" for a page)
	after   string // ?after=: the page starts after this service
	limit   int    // ?limit=: at most this many services
}

// firstPage: the request asks for what a request without parameters
// gets (rendered once per gather).
func (q statusQuery) firstPage() bool {
	return q.service == "" && q.after == "" && q.limit == DefaultLimit
}

// parseStatusQuery checks a /status query string: service, limit and
// after, each at most once, service alone; anything else is an error
// that says what is wrong (the request gets 400).
func parseStatusQuery(raw string) (statusQuery, error) {
	q := statusQuery{limit: DefaultLimit}
	if raw == "" {
		return q, nil
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Errorf("malformed query string %q: %v", raw, err)
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same error for the same query
	for _, k := range keys {
		v := vals[k]
		if len(v) > 1 {
			return q, fmt.Errorf("%s= is given %d times; give it once", k, len(v))
		}
		switch k {
		case "service":
			if q.service = v[0]; q.service == "" {
				return q, errors.New("service= needs a service name")
			}
		case "after":
			if q.after = v[0]; q.after == "" {
				return q, errors.New("after= needs a service name: the previous page's next_after")
			}
		case "limit":
			if q.limit, err = parseLimit(v[0]); err != nil {
				return q, err
			}
		default:
			return q, fmt.Errorf("unknown parameter %q: /status takes service=NAME, or limit=N (1 to %d) and after=NAME", k, MaxLimit)
		}
	}
	if q.service != "" && (vals.Has("limit") || vals.Has("after")) {
		return q, errors.New("service= selects one service: it takes neither limit= nor after=")
	}
	return q, nil
}

// parseLimit reads limit=: a whole number from 1 to MaxLimit, digits
// only (no sign, no space).
func parseLimit(s string) (int, error) {
	bad := fmt.Errorf("limit must be a whole number from 1 to %d, not %q", MaxLimit, s)
	if s == "" || len(s) > 9 {
		return 0, bad
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, bad
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, bad
	}
	return n, nil
}

// errorResponse is a refused /status request's answer.
type errorResponse struct {
	code int
	msg  string
}

// writeJSONError answers {"error": msg} with code.
func writeJSONError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	b := append([]byte(`{"error": `), appendJSONString(nil, msg)...)
	b = append(b, "}\n"...)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// listingFor returns the services part q asks for, or why there is none
// (an unknown service or cursor).
func (s *Server) listingFor(ctx context.Context, sn *snapshot, frame *document, q statusQuery) (*listing, *errorResponse) {
	switch {
	case q.service != "":
		i, ok := sn.index()[q.service]
		if !ok {
			return nil, &errorResponse{http.StatusNotFound, fmt.Sprintf("no such service: %q", q.service)}
		}
		return sn.renderListing(i, 1, math.MaxInt32, false), nil // one service is never cut
	case q.firstPage():
		return sn.defaultPage(s), nil
	}
	from := 0
	if q.after != "" {
		i, ok := sn.index()[q.after]
		if !ok {
			return nil, &errorResponse{http.StatusNotFound, fmt.Sprintf("after=%q: no such service (the configuration changed since the previous page?): start again without after=", q.after)}
		}
		from = i + 1
	}
	select {
	case s.pageRender <- struct{}{}:
		defer func() { <-s.pageRender }()
	case <-ctx.Done():
		return nil, &errorResponse{http.StatusServiceUnavailable, "the request ended while waiting for another page's render"}
	}
	return sn.renderListing(from, q.limit, s.listBudget(frame), true), nil
}

// listing is a rendered services part: keys holds "services_total",
// "services_truncated", "next_after" and the "services" key, list the
// services array and the document's closing brace.
type listing struct {
	keys, list []byte
	err        error
}

func (l *listing) size() int { return len(l.keys) + len(l.list) }

// reserve is room left in the body for "healthy", "health", the paging
// keys (less the cursor's name, counted with its service) and the
// closing brackets.
const reserve = 1 << 10

// listBudget is how many bytes a listing may take in a body with frame.
func (s *Server) listBudget(frame *document) int {
	return s.maxBody - len(frame.head) - len(frame.mid) - reserve
}

// shownServices are the services sn shows (none before the first gather).
func (sn *snapshot) shownServices() []gather.Service {
	if sn.services == nil {
		return nil
	}
	return sn.services.Services
}

// renderListing renders at most limit services from index from, as many
// as fit in budget bytes (at least one). With cursor, next_after names
// the last one shown when more follow; it is null otherwise.
func (sn *snapshot) renderListing(from, limit, budget int, cursor bool) *listing {
	svcs := sn.shownServices()
	list, shown, err := renderServices(svcs, sn.errs, from, limit, budget)
	if err != nil {
		return &listing{err: err}
	}
	b := make([]byte, 0, 128)
	b = append(b, `  "services_total": `...)
	b = strconv.AppendInt(b, int64(len(svcs)), 10)
	b = append(b, ",\n  \"services_truncated\": "...)
	b = strconv.AppendBool(b, shown < len(svcs))
	b = append(b, ",\n  \"next_after\": "...)
	if last := from + shown; cursor && shown > 0 && last < len(svcs) {
		b = appendJSONString(b, svcs[last-1].Name)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ",\n  \"services\": "...)
	return &listing{keys: b, list: list}
}

// renderServices renders the services list as the last member of the
// document, closing brackets included: svcs[from:], at most limit of
// them and as many as fit in budget bytes with the cursor's name, but at
// least one (a page that cannot hold its first service would send a
// pager round in circles). errs are the last errors of svcs, by index.
func renderServices(svcs []gather.Service, errs []serviceError, from, limit, budget int) (list []byte, shown int, err error) {
	const empty, end = "[]\n}\n", "\n  ]\n}\n"
	to := from + min(limit, len(svcs)-from)
	if from < 0 || from >= to {
		return []byte(empty), 0, nil
	}
	k, _ := slices.BinarySearchFunc(errs, from, func(e serviceError, i int) int { return e.i - i })
	errs = errs[k:]
	var e serviceEncoder
	var name []byte // the service's name as JSON: the cursor, if it is the last
	b := append(make([]byte, 0, 4<<10), '[')
	for i := from; i < to; i++ {
		mark := len(b)
		if i > from {
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
		name = appendJSONString(name[:0], svcs[i].Name)
		if shown > 0 && len(b)+len(end)+len(name) > budget {
			b = b[:mark]
			break
		}
		if i == from {
			// room for the page, from the first one's size, within budget
			// and the service that passes it (cut, but appended first: it
			// must not double an 8 MiB buffer)
			if want := min(budget+2*len(b), (len(b)+len(b)/4)*(to-from)); want > cap(b) {
				b = slices.Grow(b, want-len(b))
			}
		}
		shown++
	}
	return append(b, end...), shown, nil
}
