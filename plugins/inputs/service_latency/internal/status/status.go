// Package status is the plugin's operator window: an HTTP server
// (status_listen) with GET /status (the services' current state, a page
// at a time or one by name, and the build, as JSON), GET /healthz (are gathers running on schedule), the
// operator's page for a browser (GET /, /service/NAME, /api/services,
// /api/service/NAME and, with status_debug, /probe/NAME: page.go) and,
// with pprof = true, /debug/pprof/. The plugin validates the Settings in Init,
// calls Start and Stop from its own, and hands the server every gather's
// Report with Publish; the server has its own lock and clock and never
// reads the plugin.
//
// # The server must not cost the prober
//
// Serving /status must never slow a gather or distort a probe (issue
// 12.12: marshalling the whole document on every request took 2,000
// services from 67 to 290 MB RSS and a gather from 0.2 to 3.2 s). So:
//
//   - Publish is O(1) apart from the last-error bookkeeping (a scan for
//     failed services, and map work only while some service has an error
//     on record). It swaps an immutable snapshot in with an atomic store
//     and never waits for a render: a render in progress finishes for the
//     snapshot it began with and serves the requests that asked for it.
//     With status_listen unset Publish returns at once.
//   - The first page of a snapshot (GET /status without parameters) is
//     rendered once, lazily, by the first such request after Publish;
//     every later request for it writes the same bytes. Lazily, not at
//     Publish: rendering at Publish would put the work on the gather's
//     goroutine (or a goroutine racing the next gather's probes) for
//     every gather, whether or not anyone reads it; lazily it costs
//     nothing when nobody polls and at most one render per gather when
//     someone does. Only "healthy" and "health", which depend on the
//     time of the request, are written per request (a few hundred bytes).
//   - Other pages (?limit=N, ?after=NAME) and one service (?service=NAME)
//     are rendered per request from the snapshot, at most MaxLimit
//     services each (listing.go): a page costs its own services, never
//     the 100,000 of the gather. One page renders at a time (up to ~0.1 s
//     of CPU; four at once would take both cores of a small machine from
//     the probes); the others wait for it within their slots.
//   - At most MaxConcurrent /status requests render or write at once; one
//     more gets 503 with "Retry-After: 1" at once instead of queueing.
//     /healthz and / are small and constant-size and are not counted, so
//     a busy /status never makes a health check fail. A slow reader holds
//     its slot at most the write timeout (10 s).
//   - The services are written by a hand-written encoder that produces
//     encoding/json's bytes (tested against it): a render of 2,000
//     services takes ~15 ms and 65 allocations where MarshalIndent took
//     ~70 ms and 156,000 (and today's handler paid that per request).
//   - A body is at most MaxBodyBytes: a page that would be larger ends
//     early. Every body says how it relates to the whole:
//     "services_total" (every service of the gather),
//     "services_truncated" (true when "services" is not all of them) and
//     "next_after" (the after= of the next page, null on the last one),
//     written before "services". The order is config order, the
//     Report's.
package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// Build information shown by GET /status. The binary sets Version and
// Commit at start-up (from its -ldflags); a custom Telegraf leaves the
// defaults.
var (
	Version = "dev"
	Commit  = ""
)

// processStart is when the process (this package) started.
var processStart = time.Now()

// Limits of /status.
const (
	// MaxConcurrent is how many /status requests may render or write at
	// once; more get 503 with Retry-After: 1.
	MaxConcurrent = 4
	// MaxBodyBytes bounds a /status body (about 3,000 services with
	// their 20-round history): a page that would be larger ends early,
	// its next_after naming the last service it holds.
	MaxBodyBytes = 8 << 20
	// DefaultLimit is how many services a /status request without
	// limit= lists (the first page).
	DefaultLimit = 1000
	// MaxLimit is the largest limit= a /status request may ask for.
	MaxLimit = 10000
)

// Status server settings.
const (
	// healthIntervals is how many recent gather intervals /healthz
	// remembers; the largest one is the reference.
	healthIntervals = 5
	// healthDefaultInterval is the reference interval until two gathers
	// have run (and the interval between them is known).
	healthDefaultInterval = time.Minute
	// healthMinInterval is the smallest reference interval (gathers
	// triggered back to back must not make /healthz flap).
	healthMinInterval = time.Second
	// healthFactor: /healthz fails once the last gather finished longer
	// ago than healthFactor × the reference interval.
	healthFactor = 2

	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 10 * time.Second
	// With pprof, a CPU profile or trace streams for ?seconds=N (30 by
	// default) and must fit in the write timeout.
	pprofWriteTimeout = 5 * time.Minute
	idleTimeout       = time.Minute
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 2 * time.Second
)

// Settings are the status server's configuration keys.
type Settings struct {
	Listen      string // status_listen: host:port, "" for no server
	AllowRemote bool   // status_allow_remote: serve on a non-loopback address
	Pprof       bool   // pprof: serve /debug/pprof/
	// Debug (status_debug) serves GET /probe/NAME: run that service's
	// probe now and return its trace (see SetProber).
	Debug bool
}

// Validate checks the settings without I/O. Its errors are *keyerr.Error
// with Key "status_listen", "pprof" or "status_debug".
func (s Settings) Validate() error {
	if s.Listen == "" {
		if s.Pprof {
			return keyerr.New("pprof", errors.New("needs status_listen (pprof is served by the status server)"))
		}
		if s.Debug {
			return keyerr.New("status_debug", errors.New("needs status_listen (GET /probe/NAME is served by the status server)"))
		}
		return nil
	}
	bad := func(err error) error { return keyerr.New("status_listen", err) }
	host, port, err := net.SplitHostPort(s.Listen)
	if err != nil {
		return bad(fmt.Errorf("want host:port, e.g. \"127.0.0.1:9115\": %w", err))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return bad(fmt.Errorf("invalid port %q", port))
	}
	if s.AllowRemote {
		return nil
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		return bad(fmt.Errorf("%q listens on every interface: give a loopback address (127.0.0.1:%s, [::1]:%s) or set status_allow_remote = true", s.Listen, port, port))
	case host == "localhost":
	case ip == nil:
		return bad(fmt.Errorf("host %q cannot be checked to be a loopback address: use 127.0.0.1 or [::1], or set status_allow_remote = true", host))
	case !ip.IsLoopback():
		return bad(fmt.Errorf("%s is not a loopback address; the status endpoint exposes the plugin's internals: set status_allow_remote = true to serve it there", host))
	}
	return nil
}

// checkBound checks the address a listener bound to (localhost may
// resolve to anything).
func (s Settings) checkBound(a net.Addr) error {
	if ta, ok := a.(*net.TCPAddr); ok && !s.AllowRemote && !ta.IP.IsLoopback() {
		return fmt.Errorf("status_listen: %q bound to %s, which is not a loopback address; set status_allow_remote = true to serve it there", s.Listen, ta)
	}
	return nil
}

// Server is the status server. Its methods are safe for concurrent use.
type Server struct {
	set Settings
	log telegraf.Logger

	// cur is what the handlers serve; replaced whole by Publish.
	cur atomic.Pointer[snapshot]
	now atomic.Pointer[func() time.Time]
	// slots bounds the /status requests in progress.
	slots chan struct{}
	// pageRender lets one page render at a time (a token): up to 10,000
	// services is ~0.1 s of CPU, and four at once on a 2-core machine
	// would take both cores from the probes. Waiting is bounded by the
	// slots.
	pageRender chan struct{}
	// maxBody is MaxBodyBytes (smaller in tests).
	maxBody int
	// renders counts renders (tests).
	renders atomic.Int64
	// Test hooks, set before Start: onServe runs in a /status request
	// holding a slot, onRender at the start of a render.
	onServe, onRender func()

	pmu       sync.Mutex // serialises Publish
	lastStart time.Time
	interval  [healthIntervals]time.Duration
	nInt      int
	lastErr   map[string]lastError
	gen       uint64

	// The operator's page (page.go): its /api requests in progress,
	// the smoke of past rounds and the debug probe.
	pageSlots chan struct{}
	smoke     smokeMemory
	prober    atomic.Pointer[Prober]
	probeMu   sync.Mutex
	lastProbe time.Time
	probing   bool

	lmu    sync.Mutex // guards the listener
	srv    *http.Server
	addr   string
	served chan struct{}
}

type lastError struct {
	msg string
	at  time.Time
	gen uint64 // the last report that had the service
}

// New returns a server for s (already validated). It does not listen
// until Start. log gets the "listening on" line; nil discards it.
func New(s Settings, log telegraf.Logger) *Server {
	srv := &Server{
		set:        s,
		log:        log,
		slots:      make(chan struct{}, MaxConcurrent),
		pageRender: make(chan struct{}, 1),
		pageSlots:  make(chan struct{}, MaxConcurrent),
		maxBody:    MaxBodyBytes,
	}
	srv.cur.Store(&snapshot{})
	return srv
}

// SetClock replaces the clock of /healthz and of "healthy" in /status
// (tests); nil restores time.Now.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		s.now.Store(nil)
		return
	}
	s.now.Store(&now)
}

func (s *Server) clock() time.Time {
	if f := s.now.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// Start opens the listener and serves. A bind failure is its error. It
// does nothing when Listen is "" or the server is already listening.
func (s *Server) Start() error {
	if s.set.Listen == "" {
		return nil
	}
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.set.Listen)
	if err != nil {
		return fmt.Errorf("status_listen: %w", err)
	}
	if err := s.set.checkBound(ln.Addr()); err != nil {
		ln.Close()
		return err
	}
	write := writeTimeout
	if s.set.Pprof {
		write = pprofWriteTimeout
	}
	srv := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		WriteTimeout:      write,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	served := make(chan struct{})
	s.srv, s.addr, s.served = srv, ln.Addr().String(), served
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	if s.log != nil {
		extra := ""
		if s.set.Pprof {
			extra = ", /debug/pprof/"
		}
		s.log.Infof("status endpoint listening on http://%s/status (/healthz%s)", s.addr, extra)
	}
	return nil
}

// Stop shuts the server down: requests in progress get shutdownTimeout
// to finish, then the connections are closed. It does nothing when the
// server does not listen; Start may open it again.
func (s *Server) Stop() {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.served
	s.srv, s.addr, s.served = nil, "", nil
}

// Addr returns the address the server listens on, "" when it does not.
func (s *Server) Addr() string {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.addr
}

// Publish makes r the current gather. r is not modified after (it is
// read by the handlers until the next Publish).
func (s *Server) Publish(r *gather.Report) {
	if r == nil || s.set.Listen == "" {
		return
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	prev := s.cur.Load()
	if prev.gathers > 0 {
		if d := r.Start.Sub(s.lastStart); d > 0 {
			copy(s.interval[1:], s.interval[:healthIntervals-1])
			s.interval[0] = d
			s.nInt = min(s.nInt+1, healthIntervals)
		}
	}
	s.lastStart = r.Start
	next := &snapshot{
		gathers:  prev.gathers + 1,
		ref:      s.reference(),
		report:   r,
		services: prev.services,
		errs:     prev.errs,
	}
	if r.Err != nil {
		next.gErr = redact.Text(r.Err.Error())
	}
	if r.Err == nil || len(r.Services) > 0 {
		next.services = r
		next.errs = s.bookkeep(r)
	}
	s.cur.Store(next)
}

// reference is the interval /healthz compares against: the largest of
// the last healthIntervals, at least healthMinInterval;
// healthDefaultInterval until one is known. s.pmu is held.
func (s *Server) reference() time.Duration {
	if s.nInt == 0 {
		return healthDefaultInterval
	}
	ref := healthMinInterval
	for _, d := range s.interval[:s.nInt] {
		ref = max(ref, d)
	}
	return ref
}

// bookkeep records r's errors and returns the last error of each of r's
// services that has one (in r's order). A service keeps its last error
// until it fails again, and loses it once it is no longer in a report.
// s.pmu is held.
func (s *Server) bookkeep(r *gather.Report) []serviceError {
	failed := 0
	for i := range r.Services {
		if r.Services[i].Error != "" {
			failed++
		}
	}
	if failed == 0 && len(s.lastErr) == 0 {
		return nil // nothing on record, nothing to record
	}
	if s.lastErr == nil {
		s.lastErr = make(map[string]lastError)
	}
	s.gen++
	at := r.Start.UTC()
	out := make([]serviceError, 0, min(len(r.Services), failed+len(s.lastErr)))
	for i := range r.Services {
		sv := &r.Services[i]
		e, ok := s.lastErr[sv.Name]
		switch {
		case sv.Error != "":
			e = lastError{msg: redact.Text(sv.Error), at: at}
			if !sv.At.IsZero() {
				e.at = sv.At.UTC() // when that probe ran (it may be an earlier gather's)
			}
		case !ok:
			continue
		}
		e.gen = s.gen
		s.lastErr[sv.Name] = e
		out = append(out, serviceError{i: i, msg: e.msg, at: e.at})
	}
	for name, e := range s.lastErr {
		if e.gen != s.gen {
			delete(s.lastErr, name)
		}
	}
	return out
}

// health reports whether gathers run on schedule at now: a gather has
// completed, and the last one ended no longer ago than healthFactor × the
// reference interval.
func (sn *snapshot) health(now time.Time) (ok bool, msg string) {
	if sn.gathers == 0 {
		return false, "no gather has completed yet"
	}
	age := now.Sub(sn.report.End)
	if age > healthFactor*sn.ref {
		return false, fmt.Sprintf("late: the last gather ended %s ago, more than %d × the gather interval (%s)", age.Round(time.Millisecond), healthFactor, sn.ref.Round(time.Millisecond))
	}
	return true, fmt.Sprintf("ok: the last gather ended %s ago (gather interval %s)", age.Round(time.Millisecond), sn.ref.Round(time.Millisecond))
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", s.handleStatus)
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/api/services", s.handlePageJSON)
	mux.HandleFunc("/ui/", handleAsset)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		// a browser gets the operator's page, curl and scripts the
		// one-line index
		w.Header().Set("Vary", "Accept")
		if wantsHTML(r) {
			servePage(w, r)
			return
		}
		fmt.Fprintln(w, "service_latency: GET /status, GET /healthz")
	})
	if s.set.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return getOnly(s.named(mux))
}

func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	ok, msg := s.cur.Load().health(s.clock())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, msg)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	q, err := parseStatusQuery(r.URL.RawQuery)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy: too many /status requests at once, retry in a second", http.StatusServiceUnavailable)
		return
	}
	defer func() { <-s.slots }()
	if s.onServe != nil {
		s.onServe()
	}
	sn := s.cur.Load()
	frame := sn.framed()
	if frame.err != nil {
		http.Error(w, "encoding the status: "+frame.err.Error(), http.StatusInternalServerError)
		return
	}
	ls, refused := s.listingFor(r.Context(), sn, frame, q)
	if refused != nil {
		writeJSONError(w, refused.code, refused.msg)
		return
	}
	if ls.err != nil {
		http.Error(w, "encoding the status: "+ls.err.Error(), http.StatusInternalServerError)
		return
	}
	health := appendHealth(make([]byte, 0, 256), sn, s.clock())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(frame.head)+len(health)+len(frame.mid)+ls.size()))
	if r.Method == http.MethodHead {
		return
	}
	for _, b := range [...][]byte{frame.head, health, frame.mid, ls.keys, ls.list} {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}
