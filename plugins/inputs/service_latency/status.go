package service_latency

// The operator's window into the running plugin: an HTTP status server
// (status_listen) with GET /status (every service's current state and the
// build), GET /healthz (are gathers running on schedule) and, with
// pprof = true, /debug/pprof/. It is a telegraf.ServiceInput concern: the
// address is validated in Init, the listener opens in Start (a bind
// failure is Start's error) and closes in Stop.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
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

	statusReadHeaderTimeout = 5 * time.Second
	statusWriteTimeout      = 10 * time.Second
	// With pprof, a CPU profile or trace streams for ?seconds=N (30 by
	// default) and must fit in the write timeout.
	statusPprofWriteTimeout = 5 * time.Minute
	statusIdleTimeout       = time.Minute
	statusMaxHeaderBytes    = 16 << 10
	statusShutdownTimeout   = 2 * time.Second
)

// ops holds the plugin's own bookkeeping: the gather history behind
// /healthz and service_latency_internal, the services' last results behind
// /status, and the status server.
type ops struct {
	// Probes in flight now and the most at once in this gather (written by
	// the probe workers).
	inFlight, inFlightMax atomic.Int64
	// storeErrors counts failed store Updates (the store's own counters,
	// when it has any, are added to it).
	storeErrors int64
	// pending collects the services' status during a gather (under the
	// plugin's mutex); it becomes current when the gather ends.
	pending []serviceStatus

	mu       sync.Mutex // guards what the HTTP handlers read
	services []serviceStatus
	lastErr  map[string]lastError
	gathers  int64
	start    time.Time // of the last completed gather
	end      time.Time
	gErr     string
	interval [healthIntervals]time.Duration
	nInt     int
	internal *internalStats // of the last gather

	srv     *http.Server
	addr    string
	served  chan struct{}
	started bool
	now     func() time.Time // time.Now; replaced in tests
}

type lastError struct {
	msg string
	at  time.Time
}

func (o *ops) clock() time.Time {
	if o.now != nil {
		return o.now()
	}
	return time.Now()
}

// statusEnabled reports whether the per-service status is collected.
func (p *ServiceLatency) statusEnabled() bool { return p.StatusListen != "" }

// validateOps checks the status_* and pprof keys (no network I/O).
func (p *ServiceLatency) validateOps() error {
	plugin := func(key string, err error) error { return &ConfigError{Service: -1, Key: key, Err: err} }
	if p.StatusListen == "" {
		if p.Pprof {
			return plugin("pprof", errors.New("needs status_listen (pprof is served by the status server)"))
		}
		return nil
	}
	host, port, err := net.SplitHostPort(p.StatusListen)
	if err != nil {
		return plugin("status_listen", fmt.Errorf("want host:port, e.g. \"127.0.0.1:9115\": %w", err))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return plugin("status_listen", fmt.Errorf("invalid port %q", port))
	}
	if p.StatusAllowRemote {
		return nil
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		return plugin("status_listen", fmt.Errorf("%q listens on every interface: give a loopback address (127.0.0.1:%s, [::1]:%s) or set status_allow_remote = true", p.StatusListen, port, port))
	case host == "localhost":
	case ip == nil:
		return plugin("status_listen", fmt.Errorf("host %q cannot be checked to be a loopback address: use 127.0.0.1 or [::1], or set status_allow_remote = true", host))
	case !ip.IsLoopback():
		return plugin("status_listen", fmt.Errorf("%s is not a loopback address; the status endpoint exposes the plugin's internals: set status_allow_remote = true to serve it there", host))
	}
	return nil
}

// startStatus opens the status server's listener (Start's job).
func (p *ServiceLatency) startStatus() error {
	o := &p.ops
	o.mu.Lock()
	defer o.mu.Unlock()
	if p.StatusListen == "" || o.started {
		return nil
	}
	ln, err := net.Listen("tcp", p.StatusListen)
	if err != nil {
		return fmt.Errorf("status_listen: %w", err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !p.StatusAllowRemote && !ta.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("status_listen: %q bound to %s, which is not a loopback address; set status_allow_remote = true to serve it there", p.StatusListen, ta)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", p.handleStatus)
	mux.HandleFunc("/healthz", p.handleHealthz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "service_latency: GET /status, GET /healthz")
	})
	write := statusWriteTimeout
	if p.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		write = statusPprofWriteTimeout
	}
	o.srv = &http.Server{
		Handler:           getOnly(mux),
		ReadHeaderTimeout: statusReadHeaderTimeout,
		ReadTimeout:       statusReadHeaderTimeout,
		WriteTimeout:      write,
		IdleTimeout:       statusIdleTimeout,
		MaxHeaderBytes:    statusMaxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	o.addr = ln.Addr().String()
	o.served = make(chan struct{})
	o.started = true
	srv, served := o.srv, o.served
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	extra := ""
	if p.Pprof {
		extra = ", /debug/pprof/"
	}
	p.Log.Infof("status endpoint listening on http://%s/status (/healthz%s)", o.addr, extra)
	return nil
}

// stopStatus shuts the status server down (Stop's job).
func (p *ServiceLatency) stopStatus() {
	o := &p.ops
	o.mu.Lock()
	srv, served := o.srv, o.served
	o.srv = nil
	o.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
	<-served
}

// StatusAddr returns the address the status server listens on ("" when it
// does not run).
func (p *ServiceLatency) StatusAddr() string {
	p.ops.mu.Lock()
	defer p.ops.mu.Unlock()
	if p.ops.srv == nil {
		return ""
	}
	return p.ops.addr
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

// ---- per-service status -------------------------------------------------

// serviceStatus is one service's entry in GET /status: the tags and fields
// of its last metric, plus its last success/failure and last error.
type serviceStatus struct {
	Name        string            `json:"name"`
	Tags        map[string]string `json:"tags"`
	Fields      map[string]any    `json:"fields"`
	Histogram   map[string]int64  `json:"histogram,omitempty"`
	LastSuccess *time.Time        `json:"last_success"`
	LastFailure *time.Time        `json:"last_failure"`
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt *time.Time        `json:"last_error_at,omitempty"`

	err *lastError // this gather's failure, if any
}

// noteStatus records a service's metric for GET /status (only when the
// status server is configured). tags and fields are not modified after.
func (p *ServiceLatency) noteStatus(t *target, r *probe.Result, st *stats.State, tags map[string]string, fields map[string]any, now time.Time) {
	if !p.statusEnabled() {
		return
	}
	s := serviceStatus{
		Name:        t.name,
		Tags:        tags,
		Fields:      fields,
		LastSuccess: unixTime(st.LastSuccess),
		LastFailure: unixTime(st.LastFailure),
	}
	if n := len(p.snap.Cumulative); n > 0 {
		s.Histogram = make(map[string]int64, n)
		for i, c := range p.snap.Cumulative {
			s.Histogram[t.le[i]] = c
		}
	}
	if r.Outcome != probe.Success {
		msg := r.Outcome.String()
		if r.Err != nil {
			msg += ": " + r.Err.Error()
		}
		s.err = &lastError{msg: scrubURLPasswords(msg), at: now}
	}
	p.ops.pending = append(p.ops.pending, s)
}

func unixTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

// userinfoRE matches the password of a URL's userinfo ("://user:pw@").
var userinfoRE = regexp.MustCompile(`(://[^/@:\s"]*):[^/@\s"]*@`)

// scrubURLPasswords removes URL passwords from a message, a second line of
// defence: the probes' errors carry no credentials to begin with.
func scrubURLPasswords(s string) string {
	return userinfoRE.ReplaceAllString(s, "$1@")
}

// publishGather makes the gather that began at start and ended at end
// current for the handlers.
func (p *ServiceLatency) publishGather(start, end time.Time, gerr error, in *internalStats) {
	o := &p.ops
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.start.IsZero() {
		if d := start.Sub(o.start); d > 0 {
			copy(o.interval[1:], o.interval[:healthIntervals-1])
			o.interval[0] = d
			o.nInt = min(o.nInt+1, healthIntervals)
		}
	}
	o.gathers++
	o.start, o.end = start, end
	o.gErr = ""
	if gerr != nil {
		o.gErr = scrubURLPasswords(gerr.Error())
	}
	o.internal = in
	if !p.statusEnabled() {
		o.pending = o.pending[:0]
		return
	}
	if gerr != nil && len(o.pending) == 0 {
		return // nothing emitted: keep the last known state
	}
	if o.lastErr == nil {
		o.lastErr = make(map[string]lastError)
	}
	names := make(map[string]bool, len(o.pending))
	for i := range o.pending {
		s := &o.pending[i]
		names[s.Name] = true
		if s.err != nil {
			o.lastErr[s.Name] = *s.err
			s.err = nil
		}
		if le, ok := o.lastErr[s.Name]; ok {
			s.LastError = le.msg
			at := le.at.UTC()
			s.LastErrorAt = &at
		}
	}
	for name := range o.lastErr {
		if !names[name] {
			delete(o.lastErr, name)
		}
	}
	o.services = o.pending
	o.pending = make([]serviceStatus, 0, len(o.services))
}

// health reports whether gathers run on schedule: a gather has completed,
// and the last one ended no longer ago than healthFactor × the largest of
// the last healthIntervals intervals between gathers (healthDefaultInterval
// until two gathers have run, and at least healthMinInterval). o.mu must
// be held.
func (o *ops) health(now time.Time) (ok bool, msg string) {
	if o.gathers == 0 {
		return false, "no gather has completed yet"
	}
	ref := healthDefaultInterval
	if o.nInt > 0 {
		ref = healthMinInterval
		for _, d := range o.interval[:o.nInt] {
			ref = max(ref, d)
		}
	}
	age := now.Sub(o.end)
	limit := healthFactor * ref
	if age > limit {
		return false, fmt.Sprintf("late: the last gather ended %s ago, more than %d × the gather interval (%s)", age.Round(time.Millisecond), healthFactor, ref.Round(time.Millisecond))
	}
	return true, fmt.Sprintf("ok: the last gather ended %s ago (gather interval %s)", age.Round(time.Millisecond), ref.Round(time.Millisecond))
}

func (p *ServiceLatency) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	o := &p.ops
	o.mu.Lock()
	ok, msg := o.health(o.clock())
	o.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, msg)
}

type statusDoc struct {
	Build      buildInfo       `json:"build"`
	Healthy    bool            `json:"healthy"`
	Health     string          `json:"health"`
	Gathers    int64           `json:"gathers"`
	LastGather *gatherInfo     `json:"last_gather,omitempty"`
	Internal   map[string]any  `json:"internal,omitempty"`
	Services   []serviceStatus `json:"services"`
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

func (p *ServiceLatency) handleStatus(w http.ResponseWriter, _ *http.Request) {
	o := &p.ops
	o.mu.Lock()
	doc := statusDoc{
		Build: buildInfo{
			Version:   Version,
			Commit:    Commit,
			GoVersion: runtime.Version(),
			StartTime: processStart.UTC(),
		},
		Gathers:  o.gathers,
		Services: make([]serviceStatus, len(o.services)),
	}
	doc.Healthy, doc.Health = o.health(o.clock())
	if o.gathers > 0 {
		doc.LastGather = &gatherInfo{
			Start:           o.start.UTC(),
			End:             o.end.UTC(),
			DurationSeconds: o.end.Sub(o.start).Seconds(),
			Error:           o.gErr,
		}
	}
	if o.internal != nil {
		doc.Internal = o.internal.fields()
	}
	for i, s := range o.services {
		s.Fields = finiteFields(s.Fields)
		doc.Services[i] = s
	}
	o.mu.Unlock()

	body, err := json.MarshalIndent(&doc, "", "  ")
	if err != nil {
		http.Error(w, "encoding the status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
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

// reconfigureOps applies a reloaded config's operations keys:
// collect_internal takes effect at once; status_listen,
// status_allow_remote and pprof at the next restart (the status server
// keeps running as it is).
func (p *ServiceLatency) reconfigureOps(next *ServiceLatency) {
	p.CollectInternal = next.CollectInternal
	if next.StatusListen != p.StatusListen || next.StatusAllowRemote != p.StatusAllowRemote || next.Pprof != p.Pprof {
		p.Log.Warnf("status_listen, status_allow_remote and pprof take effect at the next restart; the status server keeps its current settings")
	}
}
