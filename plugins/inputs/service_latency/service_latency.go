// Package service_latency is a Telegraf input plugin that probes the
// services an operator lists and keeps a per-service latency state across
// gathers: the current sample, the running average and count, EWMA, window
// percentiles, spread, failures and availability.
//
// This package is Telegraf glue: the toml struct (config.Config),
// Init (compile the config into a Spec, open the store, build the engine
// and the status server), Start/Stop, Gather (run the engine, add its
// Report to the accumulator, publish it to the status server), Get/SetState
// and Reconfigure. Data flows one way:
//
//	config → Spec → engine (internal/gather) → observations → store →
//	snapshot → fields → Report → accumulator, status server (internal/status)
package service_latency

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/inputs"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/debugprobe"
	engine "github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/status"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

//go:embed sample.conf
var sampleConfig string

// Measurement names.
const (
	Measurement          = "service_latency"
	HistogramMeasurement = "service_latency_histogram"
	InternalMeasurement  = "service_latency_internal"
)

// ServiceLatency is the plugin: its configuration and what Init built.
type ServiceLatency struct {
	config.Config

	Log telegraf.Logger `toml:"-"`

	mu              sync.Mutex // serializes Gather, Reconfigure and Stop
	collectInternal bool
	engine          *engine.Engine
	store           store.Store
	fleet           *store.Fleet // probe_replicas > 0 with Redis
	status          *status.Server
	ctx             context.Context
	cancel          context.CancelFunc
	// current is the config in force, for /probe (read without waiting
	// for a gather to end).
	current atomic.Pointer[config.Config]
}

// SetBuildInfo sets the version and commit GET /status shows (the binary
// calls it at start-up with its -ldflags; a custom Telegraf leaves "dev").
func SetBuildInfo(version, commit string) { status.Version, status.Commit = version, commit }

// SampleConfig returns the embedded sample configuration.
func (*ServiceLatency) SampleConfig() string { return sampleConfig }

// New returns a plugin with its defaults set.
func New() *ServiceLatency { return &ServiceLatency{Config: config.Default()} }

func init() {
	inputs.Add("service_latency", func() telegraf.Input { return New() })
}

// Init compiles the configuration, opens the store (loading a state
// file; no network I/O) and builds the engine and the status server. The
// logger must be set before (Telegraf and the shim do). Errors are
// *config.Error values naming the key.
func (p *ServiceLatency) Init() error {
	if p.Log == nil {
		p.Log = store.NopLogger{}
	}
	spec, err := config.Compile(&p.Config)
	if err != nil {
		return err
	}
	st, err := openStore(spec.Store, p.Log)
	if err != nil {
		spec.Close()
		return err
	}
	var fleet *store.Fleet
	if spec.Store.Kind == "redis" && spec.Store.Fleet.Replicas > 0 {
		fo := spec.Store.Fleet
		fo.Log, fo.Version = p.Log, status.Version
		ro := spec.Store.Redis
		ro.AgentID = st.(*store.Redis).AgentID() // the store's and the fleet's agent are one
		if fleet, err = store.NewFleet(ro, fo); err != nil {
			_ = st.Close()
			spec.Close()
			return config.Nested("redis.", err)
		}
	}
	p.store, p.fleet = st, fleet
	p.engine = engine.New(st, p.Log)
	if fleet != nil {
		p.engine.SetOwnership(fleet)
	}
	p.engine.SetTargets(spec.Targets, spec.Engine)
	p.collectInternal = spec.CollectInternal
	p.status = status.New(spec.Status, p.Log)
	if spec.Status.Debug {
		p.status.SetProber(p.debugProbe)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	cfg := p.Config
	p.current.Store(&cfg)
	return nil
}

// openStore opens the store a Spec asks for.
func openStore(s config.StoreSpec, log telegraf.Logger) (store.Store, error) {
	if s.Kind == "redis" {
		s.Redis.Log = log
		r, err := store.NewRedis(s.Redis)
		if err != nil {
			return nil, config.Nested("redis.", err)
		}
		return r, nil
	}
	if s.StateFile == "" {
		return store.NewMemory(), nil
	}
	f, err := store.NewFile(s.StateFile, log)
	if err != nil {
		return nil, config.Nested("", err)
	}
	f.SetSaveInterval(s.SaveInterval)
	return f, nil
}

// Start implements telegraf.ServiceInput: it starts the status server
// (status_listen); probing happens in Gather.
func (p *ServiceLatency) Start(telegraf.Accumulator) error { return p.status.Start() }

// Stop implements telegraf.ServiceInput: it cancels probes in flight,
// closes the probes and flushes the store.
func (p *ServiceLatency) Stop() {
	if p.engine == nil {
		return // Init failed or never ran
	}
	p.status.Stop()
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.engine.Close()
	if p.fleet != nil {
		_ = p.fleet.Close() // gives up the lease: the others take its share at once
	}
	if err := p.store.Close(); err != nil {
		p.Log.Errorf("closing the state store: %v", err)
	}
}

// Interrupt cancels the probes in flight at once: a gather in progress
// returns without emitting, so that Stop (which the shim calls only after
// Gather returns) can save the state and the process can exit. The
// binary calls it on SIGTERM, SIGINT and stdin EOF.
func (p *ServiceLatency) Interrupt() {
	if p.cancel != nil {
		p.cancel()
	}
}

// Gather probes every service due and emits its metric (and histogram)
// as soon as its round is in the state, timestamped with the round's
// start; then service_latency_internal with collect_internal.
func (p *ServiceLatency) Gather(acc telegraf.Accumulator) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rep := p.engine.Gather(p.ctx, time.Now(), func(s *engine.Service) { addService(acc, s) })
	if rep == nil {
		return nil // shutting down
	}
	if p.collectInternal {
		acc.AddFields(InternalMeasurement, rep.Internal.Fields(), nil, rep.Start)
	}
	p.status.Publish(rep)
	if rep.Err != nil {
		return fmt.Errorf("updating the state store: %w", rep.Err)
	}
	return nil
}

// addService adds one service's metric and its histogram.
func addService(acc telegraf.Accumulator, s *engine.Service) {
	acc.AddFields(Measurement, s.Fields, s.Tags, s.At)
	for _, b := range s.Histogram {
		tags := make(map[string]string, len(s.HistogramTags)+1)
		for k, v := range s.HistogramTags {
			tags[k] = v
		}
		tags["le"] = b.LE
		acc.AddFields(HistogramMeasurement, map[string]any{"count": b.Count}, tags, s.At)
	}
}

// Reconfigure replaces the services and settings of a running plugin with
// next (a config loaded from the same file on SIGHUP). It compiles next
// and swaps its targets in; the state of every service whose name remains
// is kept, that of services gone is dropped. It waits for a gather in
// progress to end. A change of the store settings is refused with an
// error naming the key and changes nothing: the store is not rebuilt on
// reload. The status server keeps its settings until a restart.
func (p *ServiceLatency) Reconfigure(next *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if key := config.StoreDiff(&p.Config, next); key != "" {
		return &config.Error{Service: -1, Key: key, Err: errors.New("the state store settings changed; they are not applied on reload (the store keeps running as it is): restart the process to change them")}
	}
	spec, err := config.Compile(next)
	if err != nil {
		return err
	}
	if spec.Status != (status.Settings{Listen: p.StatusListen, AllowRemote: p.StatusAllowRemote, Pprof: p.Pprof, Debug: p.StatusDebug}) {
		p.Log.Warnf("status_listen, status_allow_remote, pprof and status_debug take effect at the next restart; the status server keeps its current settings")
	}
	for _, t := range p.engine.SetTargets(spec.Targets, spec.Engine) {
		t.Prober.Close()
	}
	p.collectInternal = spec.CollectInternal
	p.Config = *next
	cfg := *next
	p.current.Store(&cfg)
	return nil
}

// debugProbe runs GET /probe/NAME: one probe of the service as the config
// now stands, on probers of its own (never the running engine's).
func (p *ServiceLatency) debugProbe(ctx context.Context, name string, w io.Writer) int {
	return debugprobe.RunService(ctx, p.current.Load(), name, w)
}

// ServiceNames lists the configured service names in config order.
func (p *ServiceLatency) ServiceNames() []string {
	targets := p.engine.Targets()
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	return names
}

// StatusAddr returns the address the status server listens on ("" when it
// does not run).
func (p *ServiceLatency) StatusAddr() string { return p.status.Addr() }

// GetState implements telegraf.StatefulPlugin: the state of every service,
// when the store keeps it in the process (the memory store). With Redis
// the state lives in Redis and an empty dump is returned.
func (p *ServiceLatency) GetState() interface{} {
	if ps, ok := p.store.(store.Persister); ok {
		return ps.Export()
	}
	return &store.Dump{Version: store.DumpVersion, Services: map[string]json.RawMessage{}}
}

// SetState implements telegraf.StatefulPlugin: it restores a state
// returned by GetState (Telegraf's [agent] statefile). With a state file,
// the state file wins when it holds a state. A malformed service entry
// makes that service start over with a warning; the others are restored.
func (p *ServiceLatency) SetState(state interface{}) error {
	ps, ok := p.store.(store.Persister)
	if !ok {
		p.Log.Debug("the Redis state store keeps no local state: the state restored by Telegraf is ignored")
		return nil
	}
	var dump *store.Dump
	switch s := state.(type) {
	case *store.Dump:
		dump = s
	case store.Dump:
		dump = &s
	default: // e.g. a generic map: round-trip through JSON
		data, err := json.Marshal(state)
		if err != nil {
			return fmt.Errorf("restoring the state: %w", err)
		}
		dump = &store.Dump{}
		if err := json.Unmarshal(data, dump); err != nil {
			return fmt.Errorf("restoring the state: %w", err)
		}
	}
	if err := ps.Import(dump); err != nil {
		return fmt.Errorf("restoring the state: %w", err)
	}
	return nil
}
