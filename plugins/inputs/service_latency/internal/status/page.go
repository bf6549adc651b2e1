package status

// The operator's page: GET / (in a browser) and GET /service/NAME are one
// small embedded HTML shell, a script and a style sheet (ui/, embedded in
// the binary: no external asset, no build step); the script fetches
//
//   - GET /api/services: every service, compact — only what the table and
//     its small charts need — rendered once per snapshot like /status,
//     with an ETag so that a refresh without a new gather is a 304;
//   - GET /api/service/NAME: one service, its /status entry byte for byte
//     plus the smoke (min–max) of its past rounds, per request (small);
//
// and patches the DOM. GET /probe/NAME runs that service's probe now and
// returns the trace (status_debug = true; one per second).
//
// Why a script on JSON and not server-side HTML: the page must refresh
// without a reload and hold 10,000 services. Server-side HTML with an SVG
// chart per service would be ~15 MB per refresh for 10,000 services; the
// compact JSON is ~250 bytes a service, the browser sorts and filters all
// of them at once without a round trip, and it builds the DOM of the rows
// shown (a page of them) only. Names, tags and errors reach the DOM as
// text (textContent, setAttribute), never as markup, and the
// Content-Security-Policy allows no inline script and no other origin.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

//go:embed ui
var uiFS embed.FS

// Prober runs service name's probe once and writes its trace to w; it
// returns debugprobe.Run's exit status (0 succeeded, 1 failed, 2 no such
// service).
type Prober func(ctx context.Context, name string, w io.Writer) int

// Limits of GET /probe/NAME.
const (
	// ProbeEvery is the least time between two debug probes (one server).
	ProbeEvery = time.Second
	// probeTimeout bounds one debug probe; its response may take that
	// long (the server's write timeout is raised for it).
	probeTimeout = time.Minute
	// maxTrace bounds a trace's body.
	maxTrace = 1 << 20
)

// SetProber sets what GET /probe/NAME runs (with status_debug = true);
// nil unsets it. Until it is set /probe answers 503.
func (s *Server) SetProber(p func(ctx context.Context, name string, w io.Writer) int) {
	if p == nil {
		s.prober.Store(nil)
		return
	}
	pr := Prober(p)
	s.prober.Store(&pr)
}

// asset is an embedded file of the page.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// assets are ui/'s files by name; index.html is the page.
var assets = func() map[string]asset {
	m := map[string]asset{}
	ents, err := uiFS.ReadDir("ui")
	if err != nil {
		panic(err)
	}
	for _, e := range ents {
		b, err := uiFS.ReadFile("ui/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		switch path.Ext(e.Name()) { // not from the system's mime tables
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		}
		m[e.Name()] = asset{body: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}()

// PageSize is the size of the page's embedded files (HTML, script, style
// sheet, icon), in bytes.
func PageSize() int {
	n := 0
	for _, a := range assets {
		n += len(a.body)
	}
	return n
}

// pageCSP: the page's own script and style sheet, fetches to this server,
// nothing else (no inline script, no other origin, no framing).
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func serveAsset(w http.ResponseWriter, r *http.Request, a asset, cache string) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", cache)
	h.Set("ETag", a.etag)
	if match(r, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}

// servePage writes the page's HTML (the script picks the view from the
// path: / or /service/NAME).
func servePage(w http.ResponseWriter, r *http.Request) {
	serveAsset(w, r, assets["index.html"], "no-cache")
}

func handleAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[strings.TrimPrefix(r.URL.Path, "/ui/")]
	if !ok || strings.HasSuffix(r.URL.Path, ".html") {
		http.NotFound(w, r)
		return
	}
	serveAsset(w, r, a, "no-cache")
}

// wantsHTML: the request is a browser's (it accepts text/html).
func wantsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") {
			return true
		}
	}
	return false
}

func match(r *http.Request, etag string) bool {
	for _, v := range r.Header.Values("If-None-Match") {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(t), "W/")); t == etag || t == "*" {
				return true
			}
		}
	}
	return false
}

// named routes the paths that end in a service name before the mux (which
// would clean a name holding "//" or "/../" into another path): the name
// is the rest of the escaped path, unescaped, so that any name the page
// links to with encodeURIComponent comes back whole.
func (s *Server) named(next http.Handler) http.Handler {
	routes := [...]struct {
		prefix string
		h      func(http.ResponseWriter, *http.Request, string)
	}{
		{"/service/", func(w http.ResponseWriter, r *http.Request, _ string) { servePage(w, r) }},
		{"/api/service/", s.handleDetailJSON},
		{"/probe/", s.handleProbe},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		for _, rt := range routes {
			if rest, ok := strings.CutPrefix(p, rt.prefix); ok {
				name, err := url.PathUnescape(rest)
				if err != nil || name == "" {
					http.NotFound(w, r)
					return
				}
				rt.h(w, r, name)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// pageSlot takes one of the /api request slots; false (503 sent) when all
// are taken.
func (s *Server) pageSlot(w http.ResponseWriter) bool {
	select {
	case s.pageSlots <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy: too many requests at once, retry in a second", http.StatusServiceUnavailable)
		return false
	}
}

// pageDoc is /api/services rendered for a snapshot: its head and each
// service's row, with what a request filters and sorts them by.
type pageDoc struct {
	head   []byte
	rows   [][]byte // sub-slices of one buffer
	keys   []rowKey
	counts [4]int // by status code
	etag   string
}

// rowKey is what a service's row is filtered and sorted by; absent
// figures are NaN (sorted last).
type rowKey struct {
	rank       int8 // worst first: down, degraded, unknown, up
	name, hay  string
	l, a, p, v float64
	f          float64
	ea         int64 // last error's time; 0: none
}

// statusRank: down 0, degraded 1, unknown 2, up 3.
var statusRank = [4]int8{codeUnknown: 2, codeUp: 3, codeDegraded: 1, codeDown: 0}

var statusWord = [4]string{"unknown", "up", "degraded", "down"}

func (sn *snapshot) pageRendered(s *Server) *pageDoc {
	sn.pageOnce.Do(func() {
		s.renders.Add(1)
		if s.onRender != nil {
			s.onRender()
		}
		sn.page = sn.renderPage(s)
	})
	return sn.page
}

// Page sizes of /api/services.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// handlePageJSON writes a page of /api/services: ?q= (terms, all of
// which a service's name, "status=<word>" or one of its "tag=value"
// contains, case-insensitive), sort= (s status, worst first — the
// default —, n name, l latency, a average, p p95, v availability, f
// consecutive failures, ea last error's time), dir= (asc, desc), page=
// (from 0) and size= (1..1000, 100). The rows were rendered once for
// the gather; a request filters, sorts and copies them.
func (s *Server) handlePageJSON(w http.ResponseWriter, r *http.Request) {
	if !s.pageSlot(w) {
		return
	}
	defer func() { <-s.pageSlots }()
	if s.onServe != nil {
		s.onServe()
	}
	doc := s.cur.Load().pageRendered(s)
	q := r.URL.Query()
	etag := doc.etag
	if r.URL.RawQuery != "" {
		sum := sha256.Sum256([]byte(r.URL.RawQuery))
		etag = etag[:len(etag)-1] + "-" + hex.EncodeToString(sum[:6]) + `"`
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", etag)
	if match(r, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := doc.page(q)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// page selects, sorts and writes the rows a query asks for.
func (d *pageDoc) page(q url.Values) []byte {
	terms := strings.Fields(strings.ToLower(q.Get("q")))
	sel := make([]int32, 0, len(d.rows))
	for i := range d.keys {
		ok := true
		for _, t := range terms {
			if !strings.Contains(d.keys[i].hay, t) {
				ok = false
				break
			}
		}
		if ok {
			sel = append(sel, int32(i))
		}
	}
	key, desc := q.Get("sort"), q.Get("dir") == "desc"
	worst := func(x, y *rowKey) int {
		return orCmp(cmpInt(int(x.rank), int(y.rank)), cmpFloat(x.f, y.f, true), cmpFloat(x.l, y.l, true), strings.Compare(x.name, y.name))
	}
	var by func(x, y *rowKey) int
	switch key {
	case "n":
		by = func(x, y *rowKey) int { return orCmp(strings.Compare(x.name, y.name)*sign(desc), worst(x, y)) }
	case "l", "a", "p", "v", "f":
		get := map[string]func(*rowKey) float64{
			"l": func(k *rowKey) float64 { return k.l }, "a": func(k *rowKey) float64 { return k.a },
			"p": func(k *rowKey) float64 { return k.p }, "v": func(k *rowKey) float64 { return k.v },
			"f": func(k *rowKey) float64 { return k.f },
		}[key]
		by = func(x, y *rowKey) int { return orCmp(cmpFloat(get(x), get(y), desc), worst(x, y)) }
	case "ea":
		by = func(x, y *rowKey) int {
			if (x.ea == 0) != (y.ea == 0) { // none last
				return cmpBool(x.ea == 0, y.ea == 0)
			}
			return orCmp(cmpInt64(x.ea, y.ea)*sign(desc), worst(x, y))
		}
	default:
		key = "s"
		by = func(x, y *rowKey) int { return worst(x, y) * sign(desc) }
	}
	slices.SortStableFunc(sel, func(i, j int32) int { return by(&d.keys[i], &d.keys[j]) })

	size, err := strconv.Atoi(q.Get("size"))
	if err != nil || size < 1 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	pg, _ := strconv.Atoi(q.Get("page"))
	pages := max(1, (len(sel)+size-1)/size)
	pg = max(0, min(pg, pages-1))
	from, to := pg*size, min(len(sel), (pg+1)*size)

	n := len(d.head) + 256
	for _, i := range sel[from:to] {
		n += len(d.rows[i]) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, d.head...)
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, int64(len(d.rows)), 10)
	b = append(b, `,"matched":`...)
	b = strconv.AppendInt(b, int64(len(sel)), 10)
	b = append(b, `,"page":`...)
	b = strconv.AppendInt(b, int64(pg), 10)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, `,"sort":"`+key+`","dir":"`...)
	if desc {
		b = append(b, "desc"...)
	} else {
		b = append(b, "asc"...)
	}
	b = append(b, `","counts":{`...)
	for i, c := range [...]int{codeDown, codeDegraded, codeUnknown, codeUp} {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, statusWord[c]...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, int64(d.counts[c]), 10)
	}
	b = append(b, `},"services":[`...)
	for k, i := range sel[from:to] {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, '\n')
		b = append(b, d.rows[i]...)
	}
	return append(b, "]}\n"...)
}

func sign(desc bool) int {
	if desc {
		return -1
	}
	return 1
}

// orCmp is the first non-zero comparison.
func orCmp(c ...int) int {
	for _, x := range c {
		if x != 0 {
			return x
		}
	}
	return 0
}

func cmpInt(x, y int) int { return cmpInt64(int64(x), int64(y)) }
func cmpInt64(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

// cmpFloat compares x and y (descending with desc); NaN (absent) last
// either way.
func cmpFloat(x, y float64, desc bool) int {
	xn, yn := math.IsNaN(x), math.IsNaN(y)
	if xn || yn {
		return cmpBool(xn, yn)
	}
	c := 0
	switch {
	case x < y:
		c = -1
	case x > y:
		c = 1
	}
	if desc {
		return -c
	}
	return c
}

// Status codes of the page: the status_code field's (stats.Status).
const (
	codeUnknown  = int(stats.StatusUnknown)
	codeUp       = int(stats.StatusUp)
	codeDegraded = int(stats.StatusDegraded)
	codeDown     = int(stats.StatusDown)
)

// statusOf is a service's status: its status_code field, else its status
// field, else (before the plugin emits them) derived: unknown before a
// probe, down while consecutive_failures > 0, up otherwise. derived says
// it was.
func statusOf(f map[string]any) (code int, derived bool) {
	if v, ok := num(f, "status_code"); ok && v >= float64(codeUnknown) && v <= float64(codeDown) && v == math.Trunc(v) {
		return int(v), false
	}
	if v, ok := f["status"].(string); ok {
		switch v {
		case "up":
			return codeUp, false
		case "degraded":
			return codeDegraded, false
		case "down":
			return codeDown, false
		case "unknown":
			return codeUnknown, false
		}
	}
	if p, ok := num(f, "probes"); !ok || p == 0 {
		if _, ok := f["result_code"]; !ok {
			return codeUnknown, true
		}
	}
	if c, ok := num(f, "consecutive_failures"); ok && c > 0 {
		return codeDown, true
	}
	return codeUp, true
}

// num is field k as a finite float64.
func num(f map[string]any, k string) (float64, bool) {
	var v float64
	switch x := f[k].(type) {
	case float64:
		v = x
	case int64:
		v = float64(x)
	case int:
		v = float64(x)
	case uint64:
		v = float64(x)
	default:
		return 0, false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// appendMS appends seconds as milliseconds to the microsecond: the bytes
// of strconv.AppendFloat(math.Round(sec*1e6)/1e3, 'f', -1, 64)
// (appendMSFloat), written from the whole microseconds, which is 4 times
// faster — a render of /api/services at 100,000 services formats 2.3
// million of them (the history's latencies).
func appendMS(b []byte, sec float64) []byte {
	us := math.Round(sec * 1e6)
	// Below 1e12 µs the float's ulp is far below 0.0005 ms, so the
	// shortest decimal of us/1e3 is its exact one, trailing zeros trimmed.
	if !(us > 0 && us < 1e12) {
		return appendMSFloat(b, sec)
	}
	n := int64(us)
	b = strconv.AppendInt(b, n/1000, 10)
	frac := n % 1000
	if frac == 0 {
		return b
	}
	b = append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
	for b[len(b)-1] == '0' {
		b = b[:len(b)-1]
	}
	return b
}

// appendMSFloat is appendMS through the float formatter (zero, negative
// and huge values, and the reference of the tests).
func appendMSFloat(b []byte, sec float64) []byte {
	return strconv.AppendFloat(b, math.Round(sec*1e6)/1e3, 'f', -1, 64)
}

// renderPage renders /api/services' head and rows. The head is
//
//	{"gathers": N, "start": T, "end": T, "error": "…", "ref": seconds,
//	 "debug": bool, "version": "…"
//
// (the request adds total, matched, page, size, sort, dir, counts and
// services); a row is
//
//	{"n": name, "t": {tag: value} (less service and result), "s": status
//	 code, "d": 1 when the status was derived, "l", "a", "p": latency,
//	 latency_avg, latency_p95 (ms), "v": availability (0..1), "f":
//	 consecutive_failures, "e": last error, "ea": its time, "h": the last
//	 rounds, newest first: a success's latency (ms) or [latency, min,
//	 max] with its smoke, a failure's result (a string)}
//
// Absent figures are absent members.
func (sn *snapshot) renderPage(s *Server) *pageDoc {
	var svcs []gather.Service
	if sn.services != nil {
		svcs = sn.services.Services
	}
	d := &pageDoc{
		rows: make([][]byte, len(svcs)),
		keys: make([]rowKey, len(svcs)),
		etag: fmt.Sprintf(`"%x-%d"`, processStart.UnixNano(), sn.gathers),
	}
	b := make([]byte, 0, 256)
	b = append(b, `{"gathers":`...)
	b = strconv.AppendInt(b, sn.gathers, 10)
	if r := sn.report; r != nil {
		b = append(b, `,"start":`...)
		b, _ = appendTime(b, r.Start.UTC())
		b = append(b, `,"end":`...)
		b, _ = appendTime(b, r.End.UTC())
		if sn.gErr != "" {
			b = append(b, `,"error":`...)
			b = appendJSONString(b, sn.gErr)
		}
	}
	b = append(b, `,"ref":`...)
	b = strconv.AppendFloat(b, sn.ref.Seconds(), 'f', -1, 64)
	b = append(b, `,"debug":`...)
	b = strconv.AppendBool(b, s.set.Debug)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, Version)
	d.head = b

	// room for every row at the first one's size, plus a quarter: a
	// buffer that doubles at 100,000 services copies ~30 MB
	b = make([]byte, 0, 4<<10)
	ends := make([]int, len(svcs))
	errs := sn.errs
	var keys []string
	// every row's hay, one after the other in one string: 100,000
	// services are then one allocation, not 100,000
	var hay strings.Builder
	hayEnds := make([]int, len(svcs))
	mem := s.smoke.begin()
	for i := range svcs {
		sv := &svcs[i]
		k := &d.keys[i]
		k.name = sv.Name
		hay.WriteString(strings.ToLower(sv.Name))
		b = append(b, `{"n":`...)
		b = appendJSONString(b, sv.Name)
		keys = keys[:0]
		for k, v := range sv.Tags {
			if k == "result" || (k == "service" && v == sv.Name) {
				continue
			}
			keys = append(keys, k)
		}
		if len(keys) > 0 {
			slices.Sort(keys)
			b = append(b, `,"t":{`...)
			for j, t := range keys {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, t)
				b = append(b, ':')
				b = appendJSONString(b, sv.Tags[t])
				hay.WriteByte(' ')
				hay.WriteString(strings.ToLower(t))
				hay.WriteByte('=')
				hay.WriteString(strings.ToLower(sv.Tags[t]))
			}
			b = append(b, '}')
		}
		code, derived := statusOf(sv.Fields)
		d.counts[code]++
		k.rank = statusRank[code]
		hay.WriteString(" status=")
		hay.WriteString(statusWord[code])
		hayEnds[i] = hay.Len()
		b = append(b, `,"s":`...)
		b = strconv.AppendInt(b, int64(code), 10)
		if derived {
			b = append(b, `,"d":1`...)
		}
		for _, m := range [...]struct {
			key, field string
			dst        *float64
		}{{"l", "latency", &k.l}, {"a", "latency_avg", &k.a}, {"p", "latency_p95", &k.p}} {
			*m.dst = math.NaN()
			if v, ok := num(sv.Fields, m.field); ok {
				*m.dst = v
				b = append(b, `,"`+m.key+`":`...)
				b = appendMS(b, v)
			}
		}
		k.v, k.f = math.NaN(), math.NaN()
		if v, ok := num(sv.Fields, "availability"); ok {
			k.v = v
			b = append(b, `,"v":`...)
			b = strconv.AppendFloat(b, math.Round(v*1e6)/1e6, 'f', -1, 64)
		}
		if v, ok := num(sv.Fields, "consecutive_failures"); ok {
			k.f = v
			b = append(b, `,"f":`...)
			b = strconv.AppendFloat(b, v, 'f', -1, 64)
		}
		if len(errs) > 0 && errs[0].i == i {
			if errs[0].msg != "" {
				b = append(b, `,"e":`...)
				b = appendJSONString(b, errs[0].msg)
			}
			b = append(b, `,"ea":`...)
			b, _ = appendTime(b, errs[0].at)
			k.ea = errs[0].at.UnixNano()
			errs = errs[1:]
		}
		ring := mem.record(sv)
		if len(sv.History) > 0 {
			b = append(b, `,"h":[`...)
			for j, h := range sv.History {
				if j > 0 {
					b = append(b, ',')
				}
				switch lo, hi, ok := ring.find(h.At); {
				case h.Result != "success":
					b = appendJSONString(b, h.Result)
				case ok:
					b = append(b, '[')
					b = appendMS(b, h.Latency)
					b = append(b, ',')
					b = appendMS(b, lo)
					b = append(b, ',')
					b = appendMS(b, hi)
					b = append(b, ']')
				default:
					b = appendMS(b, h.Latency)
				}
			}
			b = append(b, ']')
		}
		b = append(b, '}')
		ends[i] = len(b)
		if i == 0 {
			b = slices.Grow(b, (len(b)+len(b)/4)*len(svcs))
			hay.Grow((hay.Len() + hay.Len()/4) * len(svcs))
		}
	}
	mem.end()
	hays, from := hay.String(), 0
	for i, e := range hayEnds {
		d.keys[i].hay = hays[from:e]
		from = e
	}
	start := 0
	for i, e := range ends {
		d.rows[i] = b[start:e:e]
		start = e
	}
	return d
}

// index returns the position of each service of sn by name (the first of a
// repeated name), built once.
func (sn *snapshot) index() map[string]int {
	sn.idxOnce.Do(func() {
		if sn.services == nil {
			return
		}
		sn.idx = make(map[string]int, len(sn.services.Services))
		for i := range sn.services.Services {
			if _, dup := sn.idx[sn.services.Services[i].Name]; !dup {
				sn.idx[sn.services.Services[i].Name] = i
			}
		}
	})
	return sn.idx
}

// handleDetailJSON writes /api/service/NAME:
//
//	{"gathers": N, "debug": bool, "prober": bool, "end": the last
//	 gather's end, "ref": the gather interval (s), "status": code,
//	 "derived": bool, "smoke": [[min, max] (seconds) or null, one per
//	 history entry], "service": the service's /status entry}
func (s *Server) handleDetailJSON(w http.ResponseWriter, r *http.Request, name string) {
	if !s.pageSlot(w) {
		return
	}
	defer func() { <-s.pageSlots }()
	sn := s.cur.Load()
	i, ok := sn.index()[name]
	if !ok {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "no such service", http.StatusNotFound)
		return
	}
	sv := &sn.services.Services[i]
	var le *serviceError
	if k, found := slices.BinarySearchFunc(sn.errs, i, func(e serviceError, i int) int { return e.i - i }); found {
		le = &sn.errs[k]
	}
	b := make([]byte, 0, 4<<10)
	b = append(b, `{"gathers":`...)
	b = strconv.AppendInt(b, sn.gathers, 10)
	b = append(b, `,"debug":`...)
	b = strconv.AppendBool(b, s.set.Debug)
	b = append(b, `,"prober":`...)
	b = strconv.AppendBool(b, s.prober.Load() != nil)
	if r := sn.report; r != nil {
		b = append(b, `,"end":`...)
		b, _ = appendTime(b, r.End.UTC())
	}
	b = append(b, `,"ref":`...)
	b = strconv.AppendFloat(b, sn.ref.Seconds(), 'f', -1, 64)
	code, derived := statusOf(sv.Fields)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"derived":`...)
	b = strconv.AppendBool(b, derived)
	b = append(b, `,"smoke":[`...)
	smoke := s.smoke.lookup(sv)
	for j := range sv.History {
		if j > 0 {
			b = append(b, ',')
		}
		if p := smoke[j]; p != nil {
			b = append(b, '[')
			b = strconv.AppendFloat(b, p[0], 'g', -1, 64)
			b = append(b, ',')
			b = strconv.AppendFloat(b, p[1], 'g', -1, 64)
			b = append(b, ']')
		} else {
			b = append(b, "null"...)
		}
	}
	b = append(b, "],\n  \"service\": "...)
	var e serviceEncoder
	b, err := e.appendService(b, sv, le)
	if err != nil {
		http.Error(w, "encoding the service: "+err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, "}\n"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// handleProbe runs GET /probe/NAME: off (404) without status_debug, 503
// until SetProber, 429 within ProbeEvery of the last one (or while one
// runs); else the trace as text, redacted, with the exit status in
// X-Probe-Exit-Status (404 when there is no such service).
func (s *Server) handleProbe(w http.ResponseWriter, r *http.Request, name string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if !s.set.Debug {
		http.Error(w, "the debug probe is off: set status_debug = true to serve GET /probe/NAME", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet {
		h.Set("Allow", "GET")
		http.Error(w, "GET runs the probe", http.StatusMethodNotAllowed)
		return
	}
	pr := s.prober.Load()
	if pr == nil {
		http.Error(w, "the debug probe is not available in this build (no prober is wired)", http.StatusServiceUnavailable)
		return
	}
	now := time.Now()
	s.probeMu.Lock()
	if s.probing || now.Sub(s.lastProbe) < ProbeEvery {
		s.probeMu.Unlock()
		h.Set("Retry-After", "1")
		http.Error(w, "too many debug probes: one per second, retry in a second", http.StatusTooManyRequests)
		return
	}
	s.probing, s.lastProbe = true, now
	s.probeMu.Unlock()
	defer func() {
		s.probeMu.Lock()
		s.probing = false
		s.lastProbe = time.Now()
		s.probeMu.Unlock()
	}()

	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(probeTimeout + writeTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	defer cancel()
	var buf limitedBuffer
	exit := (*pr)(ctx, name, &buf)
	body := redact.Text(buf.b.String())
	if buf.cut {
		body += "\n… (trace cut at 1 MiB)\n"
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Probe-Exit-Status", strconv.Itoa(exit))
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if exit == 2 {
		w.WriteHeader(http.StatusNotFound)
	}
	_, _ = io.WriteString(w, body)
}

// limitedBuffer keeps the first maxTrace bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex // the prober's steps may write from several goroutines
	b   bytes.Buffer
	cut bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := maxTrace - l.b.Len(); len(p) > room {
		l.b.Write(p[:max(room, 0)])
		l.cut = true
		return len(p), nil
	}
	return l.b.Write(p)
}

// smokeMemory remembers the smoke (round_min, round_max) of the rounds the
// page has rendered, per service: a Report's history has each round's
// latency (the median) only, and the fields the smoke of the last round
// only. A round rendered while nobody looked has no smoke: the chart
// draws its latency alone. Bounded: gather.HistoryLen rounds per service
// of the last render; a service no longer reported is forgotten.
type smokeMemory struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]*smokeRing
}

type smokeRing struct {
	gen  uint64
	next int
	r    [gather.HistoryLen]smokeRound
}

type smokeRound struct {
	at      int64 // UnixNano; 0 for an empty slot
	lo, hi  float64
	present bool
}

// smokeRender is one render's hold on the memory (its lock).
type smokeRender struct{ m *smokeMemory }

func (sm *smokeMemory) begin() smokeRender {
	sm.mu.Lock()
	sm.gen++
	if sm.m == nil {
		sm.m = make(map[string]*smokeRing)
	}
	return smokeRender{sm}
}

// record notes sv's last round's smoke and returns sv's ring.
func (r smokeRender) record(sv *gather.Service) *smokeRing {
	sm := r.m
	ring := sm.m[sv.Name]
	lo, okLo := num(sv.Fields, "round_min")
	hi, okHi := num(sv.Fields, "round_max")
	if ring == nil {
		if !okLo || !okHi {
			return nil
		}
		ring = &smokeRing{}
		sm.m[sv.Name] = ring
	}
	ring.gen = sm.gen
	if okLo && okHi && !sv.At.IsZero() {
		ring.put(sv.At.UnixNano(), lo, hi)
	}
	return ring
}

// end forgets the services the render did not see and releases the lock.
func (r smokeRender) end() {
	sm := r.m
	for k, ring := range sm.m {
		if ring.gen != sm.gen {
			delete(sm.m, k)
		}
	}
	sm.mu.Unlock()
}

func (g *smokeRing) put(at int64, lo, hi float64) {
	for i := range g.r {
		if g.r[i].present && g.r[i].at == at {
			return
		}
	}
	g.r[g.next] = smokeRound{at: at, lo: lo, hi: hi, present: true}
	g.next = (g.next + 1) % len(g.r)
}

func (g *smokeRing) find(at time.Time) (lo, hi float64, ok bool) {
	if g == nil {
		return 0, 0, false
	}
	ns := at.UnixNano()
	for i := range g.r {
		if g.r[i].present && g.r[i].at == ns {
			return g.r[i].lo, g.r[i].hi, true
		}
	}
	return 0, 0, false
}

// lookup returns the smoke of each of sv's history entries (nil: none),
// the last round's from its fields.
func (sm *smokeMemory) lookup(sv *gather.Service) [][]float64 {
	out := make([][]float64, len(sv.History))
	lo, okLo := num(sv.Fields, "round_min")
	hi, okHi := num(sv.Fields, "round_max")
	sm.mu.Lock()
	ring := sm.m[sv.Name]
	for j, h := range sv.History {
		if h.Result != "success" {
			continue
		}
		if j == 0 && okLo && okHi && h.At.Equal(sv.At) {
			out[j] = []float64{lo, hi}
		} else if l, u, ok := ring.find(h.At); ok {
			out[j] = []float64{l, u}
		}
	}
	sm.mu.Unlock()
	return out
}
