// Package service_latency is a Telegraf input plugin that probes the
// services an operator lists and keeps a per-service latency state across
// gathers: the current sample, the running average and count, EWMA, window
// percentiles, spread, failures and availability.
//
// Data flows one way: config → probes → observations → store → snapshot →
// fields. The plugin only wires the probe, stats and store packages.
package service_latency

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

//go:embed sample.conf
var sampleConfig string

// Measurement names.
const (
	Measurement          = "service_latency"
	HistogramMeasurement = "service_latency_histogram"
)

// Defaults.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultMaxConcurrency = 64
	DefaultWindow         = 100
	DefaultHalfLife       = 5 * time.Minute
)

// DefaultPercentiles are the percentiles emitted when none are configured.
var DefaultPercentiles = []float64{50, 90, 95, 99}

// builtinTags are the tags the plugin sets itself; a service's own tags may
// not reuse them.
var builtinTags = []string{"service", "probe", "server", "result", "le"}

// ServiceLatency is the plugin and its configuration.
type ServiceLatency struct {
	// Timeout bounds every probe.
	Timeout config.Duration `toml:"timeout"`
	// MaxConcurrency is the number of probes in flight at once.
	MaxConcurrency int `toml:"max_concurrency"`

	// Statistics (plugin-wide; a service may override window, percentiles
	// and the half-life).
	Window           int             `toml:"window"`
	Percentiles      []float64       `toml:"percentiles"`
	EWMAHalfLife     config.Duration `toml:"ewma_half_life"`
	HistogramBuckets []float64       `toml:"histogram_buckets"`

	// Probe options, defaults for every service.
	probe.Options

	Services []*Service `toml:"service"`

	// State: "memory" (default, optionally persisted to StateFile) or
	// "redis" (shared by every agent with the same Redis).
	State     string       `toml:"state"`
	StateFile string       `toml:"state_file"`
	Redis     *RedisConfig `toml:"redis"`

	// Operations (status.go, internal.go): the status server and the
	// plugin's own metrics.
	StatusListen      string `toml:"status_listen"`
	StatusAllowRemote bool   `toml:"status_allow_remote"`
	Pprof             bool   `toml:"pprof"`
	CollectInternal   bool   `toml:"collect_internal"`

	Log telegraf.Logger `toml:"-"`

	// built by Init
	targets  []*target
	store    store.Store
	memStore *store.Memory
	cancel   context.CancelFunc
	ctx      context.Context
	mu       sync.Mutex // serializes Gather (and later reloads)

	obs     []store.Observation
	results []probe.Result
	snap    stats.Snapshot
	ops     ops
}

// Service is one probed service.
type Service struct {
	// Name is the stable key of the service's state; defaults to the URL.
	Name string `toml:"name"`
	URL  string `toml:"url"`
	// Tags are added to this service's metrics.
	Tags map[string]string `toml:"tags"`

	Timeout      config.Duration `toml:"timeout"`
	Window       int             `toml:"window"`
	Percentiles  []float64       `toml:"percentiles"`
	EWMAHalfLife config.Duration `toml:"ewma_half_life"`

	probe.Options
}

// target is a service ready to probe.
type target struct {
	name        string
	server      string
	prober      probe.Prober
	params      stats.Params
	percentiles []float64
	fieldNames  percentileNames
	// le are the histogram's `le` tag values, one per bucket and "+Inf".
	le   []string
	tags map[string]string

	// down and failedRun track this agent's own view of the service for
	// logging transitions (the state may be shared with other agents).
	down      bool
	failedRun int64
}

type percentileNames struct {
	window, lifetime []string
}

// ConfigError is a configuration error that names the key and, for a
// service, its index (so the config loader can point at the line).
type ConfigError struct {
	// Service is the index of the [[inputs.service_latency.service]] table,
	// or -1 for a plugin-level key.
	Service int
	// Name is the service's name, when known.
	Name string
	// Key is the offending toml key ("" when the whole table is at fault).
	Key string
	Err error
}

func (e *ConfigError) Error() string {
	var where string
	if e.Service >= 0 {
		if e.Name != "" {
			where = fmt.Sprintf("service %q: ", e.Name)
		} else {
			where = fmt.Sprintf("service #%d: ", e.Service+1)
		}
	}
	if e.Key != "" {
		return where + e.Key + ": " + e.Err.Error()
	}
	return where + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// SampleConfig returns the embedded sample configuration.
func (*ServiceLatency) SampleConfig() string { return sampleConfig }

// New returns a plugin with its defaults set.
func New() *ServiceLatency {
	return &ServiceLatency{
		Timeout:        config.Duration(DefaultTimeout),
		MaxConcurrency: DefaultMaxConcurrency,
		Window:         DefaultWindow,
		EWMAHalfLife:   config.Duration(DefaultHalfLife),
	}
}

func init() {
	inputs.Add("service_latency", func() telegraf.Input { return New() })
}

// Init validates the configuration and builds the probes and the store. It
// does no network I/O.
func (p *ServiceLatency) Init() error {
	if err := p.validateOps(); err != nil {
		return err
	}
	targets, err := p.buildTargets()
	if err != nil {
		return err
	}
	for _, t := range p.targets {
		t.prober.Close()
	}
	p.targets = targets
	if p.store == nil {
		if err := p.initStore(); err != nil {
			for _, t := range targets {
				t.prober.Close()
			}
			p.targets = nil
			return err
		}
	}
	if p.ctx == nil {
		p.ctx, p.cancel = context.WithCancel(context.Background())
	}
	return nil
}

func (p *ServiceLatency) buildTargets() ([]*target, error) {
	plugin := func(key string, err error) error { return &ConfigError{Service: -1, Key: key, Err: err} }
	if p.Timeout <= 0 {
		return nil, plugin("timeout", fmt.Errorf("must be positive, got %s", time.Duration(p.Timeout)))
	}
	if p.MaxConcurrency <= 0 {
		return nil, plugin("max_concurrency", fmt.Errorf("must be positive, got %d", p.MaxConcurrency))
	}
	if p.Percentiles == nil {
		p.Percentiles = DefaultPercentiles
	}
	if err := stats.ValidatePercentiles(p.Percentiles); err != nil {
		return nil, plugin("", err)
	}
	base := stats.Params{Window: p.Window, HalfLife: time.Duration(p.EWMAHalfLife), Buckets: p.HistogramBuckets}
	if err := base.Validate(); err != nil {
		return nil, plugin("", err)
	}
	if len(p.Services) == 0 {
		return nil, plugin("service", errors.New("no services configured: add at least one [[inputs.service_latency.service]] with a url"))
	}

	seen := make(map[string]int, len(p.Services))
	targets := make([]*target, 0, len(p.Services))
	for i, s := range p.Services {
		svcErr := func(key string, err error) error { return &ConfigError{Service: i, Name: s.Name, Key: key, Err: err} }
		if s == nil {
			return nil, svcErr("", errors.New("empty service table"))
		}
		if s.URL == "" {
			return nil, svcErr("url", errors.New("missing or empty"))
		}
		name := s.Name
		if name == "" {
			name = probe.Redact(s.URL)
		}
		if j, dup := seen[name]; dup {
			return nil, svcErr("name", fmt.Errorf("duplicate service name %q (also service #%d); names key the state and must be unique", name, j+1))
		}
		seen[name] = i

		timeout := time.Duration(p.Timeout)
		if s.Timeout != 0 {
			timeout = time.Duration(s.Timeout)
		}
		if timeout <= 0 {
			return nil, svcErr("timeout", fmt.Errorf("must be positive, got %s", timeout))
		}
		params := base
		if s.Window != 0 {
			params.Window = s.Window
		}
		if s.EWMAHalfLife != 0 {
			params.HalfLife = time.Duration(s.EWMAHalfLife)
		}
		if err := params.Validate(); err != nil {
			return nil, svcErr("", err)
		}
		pcts := p.Percentiles
		if s.Percentiles != nil {
			pcts = s.Percentiles
			if err := stats.ValidatePercentiles(pcts); err != nil {
				return nil, svcErr("", err)
			}
		}
		for k := range s.Tags {
			for _, b := range builtinTags {
				if k == b {
					return nil, svcErr("tags", fmt.Errorf("tag %q is set by the plugin itself; pick another name", k))
				}
			}
		}
		prober, err := probe.New(s.URL, timeout, s.Options.WithDefaults(p.Options.ApplicableTo(s.URL)))
		if err != nil {
			for _, t := range targets {
				t.prober.Close()
			}
			return nil, svcErr("", err)
		}
		t := &target{
			name:        name,
			server:      probe.Redact(s.URL),
			prober:      prober,
			params:      params,
			percentiles: pcts,
			tags:        s.Tags,
		}
		if n := len(params.Buckets); n > 0 {
			t.le = make([]string, 0, n+1)
			for _, b := range params.Buckets {
				t.le = append(t.le, strconv.FormatFloat(b, 'f', -1, 64))
			}
			t.le = append(t.le, "+Inf")
		}
		for _, pc := range pcts {
			sfx := stats.PercentileFieldSuffix(pc)
			t.fieldNames.window = append(t.fieldNames.window, "latency_"+sfx)
			t.fieldNames.lifetime = append(t.fieldNames.lifetime, "latency_lifetime_"+sfx)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// Start implements telegraf.ServiceInput: it starts the status server
// (status_listen); probing happens in Gather.
func (p *ServiceLatency) Start(telegraf.Accumulator) error { return p.startStatus() }

// Stop implements telegraf.ServiceInput: it cancels probes in flight,
// closes the probes and flushes the store.
func (p *ServiceLatency) Stop() {
	p.stopStatus()
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		t.prober.Close()
	}
	if p.store != nil {
		if err := p.store.Close(); err != nil {
			p.Log.Errorf("closing the state store: %v", err)
		}
	}
}

// Gather probes every service concurrently and emits one metric per service.
func (p *ServiceLatency) Gather(acc telegraf.Accumulator) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.probeAll(p.ctx)
	if p.ctx.Err() != nil {
		return nil // shutting down
	}

	targets := p.targets
	p.obs = p.obs[:0]
	for i, t := range targets {
		r := &p.results[i]
		p.obs = append(p.obs, store.Observation{
			Service: t.name,
			Params:  t.params,
			OK:      r.Outcome == probe.Success,
			Latency: r.Latency.Seconds(),
		})
	}
	res, err := p.store.Update(p.ctx, now, p.obs)
	if err != nil {
		p.endGather(acc, now, err)
		return fmt.Errorf("updating the state store: %w", err)
	}
	for i, t := range targets {
		if res[i].Warning != nil {
			p.Log.Warn(res[i].Warning.Error())
		}
		p.logTransition(t, &p.results[i])
		p.emit(acc, now, t, &p.results[i], res[i].State)
	}
	p.endGather(acc, now, nil)
	return nil
}

// logTransition logs a service going down (one warning on its first
// failure) and coming back (one info line), not every failed probe.
func (p *ServiceLatency) logTransition(t *target, r *probe.Result) {
	if r.Outcome != probe.Success {
		t.failedRun++
		if !t.down {
			t.down = true
			p.Log.Warnf("service %q (%s) failing: %s: %v", t.name, t.server, r.Outcome, r.Err)
		} else {
			p.Log.Debugf("service %q: %s: %v", t.name, r.Outcome, r.Err)
		}
		return
	}
	if t.down {
		t.down = false
		p.Log.Infof("service %q recovered after %d failed probes", t.name, t.failedRun)
	}
	t.failedRun = 0
}

// probeAll runs every target's probe, at most MaxConcurrency at once, and
// leaves the results in p.results (same order as p.targets).
func (p *ServiceLatency) probeAll(ctx context.Context) {
	targets := p.targets
	if cap(p.results) < len(targets) {
		p.results = make([]probe.Result, len(targets))
	}
	p.results = p.results[:len(targets)]
	workers := min(p.MaxConcurrency, len(targets))
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(targets) {
					return
				}
				p.results[i] = p.trackProbe(ctx, targets[i].prober)
			}
		}()
	}
	wg.Wait()
}

// runProbe runs one probe and turns a panic in it into a failed result, so
// one bad target can never take the agent down.
func runProbe(ctx context.Context, pr probe.Prober) (r probe.Result) {
	defer func() {
		if v := recover(); v != nil {
			buf := make([]byte, 4096)
			buf = buf[:runtime.Stack(buf, false)]
			r = probe.Result{Outcome: probe.ConnectionFailed, Err: fmt.Errorf("probe panicked: %v\n%s", v, buf)}
		}
	}()
	return pr.Probe(ctx)
}

// Reconfigure replaces the services and settings of a running plugin with
// those of next (a plugin decoded and validated from a new config, never
// started). The state of every service whose name remains is kept; the
// state of services that are gone is dropped. It waits for a gather in
// progress to end. A change of the state store settings (state,
// state_file, the redis table) is refused with an error and changes
// nothing: the store is not rebuilt on reload.
func (p *ServiceLatency) Reconfigure(next *ServiceLatency) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkStoreUnchanged(next); err != nil {
		next.discard() // refused: p keeps running unchanged
		return err
	}
	old := p.targets
	p.Timeout = next.Timeout
	p.MaxConcurrency = next.MaxConcurrency
	p.Window = next.Window
	p.Percentiles = next.Percentiles
	p.EWMAHalfLife = next.EWMAHalfLife
	p.HistogramBuckets = next.HistogramBuckets
	p.reconfigureOps(next)
	p.Options = next.Options
	p.Services = next.Services
	p.targets = next.targets
	next.targets = nil // adopted: discard must not close them
	next.discard()
	keep := make(map[string]bool, len(p.targets))
	for _, t := range p.targets {
		keep[t.name] = true
	}
	p.store.Retain(func(name string) bool { return keep[name] })
	for _, t := range old {
		t.prober.Close()
	}
	return nil
}

// discard releases what Init built for a plugin that never ran (a reload
// candidate): its probes, its store and its context.
func (p *ServiceLatency) discard() {
	for _, t := range p.targets {
		t.prober.Close()
	}
	p.targets = nil
	if p.store != nil {
		_ = p.store.Close()
	}
	if p.cancel != nil {
		p.cancel()
	}
}

// ServiceNames lists the configured service names in config order.
func (p *ServiceLatency) ServiceNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make([]string, len(p.targets))
	for i, t := range p.targets {
		names[i] = t.name
	}
	return names
}
