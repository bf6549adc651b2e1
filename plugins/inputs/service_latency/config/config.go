// Package config is the plugin's configuration: the toml structs an
// operator writes, the strict loader of the binary's -config file, and the
// compiler that turns a Config into a validated Spec the gather engine
// runs. It does no I/O besides reading the file it is asked to load.
//
// Errors are values that carry the key (and the service) they are about;
// the loader turns them into "file:line: ..." by looking the key up in the
// file's syntax tree, never by reading message text.
package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// Defaults.
const (
	DefaultTimeout        = 5 * time.Second
	DefaultMaxConcurrency = 64
	DefaultWindow         = 100
	DefaultHalfLife       = 5 * time.Minute
	DefaultSampleInterval = 100 * time.Millisecond
	// MaxSamples bounds a round.
	MaxSamples = 100
)

// DefaultPercentiles are the percentiles emitted when none are configured.
var DefaultPercentiles = Percentiles{50, 90, 95, 99}

// Limits on what becomes a tag or a log line (see the README's Limits).
const (
	// MaxNameBytes bounds a service name (the `service` tag, the key of
	// its state, and part of every log line about it).
	MaxNameBytes = 1024
	// MaxTagKeyBytes and MaxTagValueBytes bound a service's own tags.
	MaxTagKeyBytes   = 128
	MaxTagValueBytes = 1024
	// MaxURLBytes bounds a service URL (the `server` tag).
	MaxURLBytes = 4096
)

// Config is the [[inputs.service_latency]] table.
type Config struct {
	// Timeout bounds every probe.
	Timeout config.Duration `toml:"timeout"`
	// MaxConcurrency is the number of probes in flight at once.
	MaxConcurrency int `toml:"max_concurrency"`

	// Statistics (plugin-wide; a service may override window, percentiles
	// and the half-life).
	Window           int             `toml:"window"`
	Percentiles      Percentiles     `toml:"percentiles"`
	EWMAHalfLife     config.Duration `toml:"ewma_half_life"`
	HistogramBuckets []float64       `toml:"histogram_buckets"`

	// Scheduling (internal/gather): the probes of a gather start spread
	// over Spread, each service at a stable offset; a service is probed
	// every Interval (0: every gather), in rounds of Samples probes
	// SampleInterval apart.
	Spread         Spread          `toml:"spread"`
	SpreadSeed     string          `toml:"spread_seed"`
	Interval       config.Duration `toml:"interval"`
	Samples        int             `toml:"samples"`
	SampleInterval config.Duration `toml:"sample_interval"`

	// The verdict (status): failed rounds in a row before down, good
	// rounds in a row before up again, and an optional latency objective
	// (0: none) on a statistic ("p95" when empty) above which the service
	// is degraded. A service may override each.
	FailureThreshold  int             `toml:"failure_threshold"`
	SuccessThreshold  int             `toml:"success_threshold"`
	DegradedLatency   config.Duration `toml:"degraded_latency"`
	DegradedStatistic string          `toml:"degraded_statistic"`

	// Probe options, defaults for every service.
	probe.Options

	Services []*Service `toml:"service"`

	// State: "memory" (default, optionally persisted to StateFile) or
	// "redis" (shared by every agent with the same Redis).
	State     string      `toml:"state"`
	StateFile string      `toml:"state_file"`
	Redis     *RedisTable `toml:"redis"`
	// StateSaveInterval is the time between saves of the state file
	// (nil: store.DefaultSaveInterval; "0s": after every update).
	StateSaveInterval *config.Duration `toml:"state_save_interval"`

	// Shape of the metrics: result_tag = false drops the `result` tag
	// (result_code carries it) and string_fields = false the string fields,
	// so that a service is one series in Prometheus.
	ResultTag    *bool `toml:"result_tag"`
	StringFields *bool `toml:"string_fields"`

	// Operations: the status server and the plugin's own metrics.
	StatusListen      string `toml:"status_listen"`
	StatusAllowRemote bool   `toml:"status_allow_remote"`
	Pprof             bool   `toml:"pprof"`
	// StatusDebug serves GET /probe/NAME (runs that probe now).
	StatusDebug     bool `toml:"status_debug"`
	CollectInternal bool `toml:"collect_internal"`
}

// RedisTable is the [inputs.service_latency.redis] table: the Redis
// store's settings and the fleet's (probe_replicas, lease).
type RedisTable struct {
	store.RedisConfig
	store.FleetConfig
}

// Service is one [[inputs.service_latency.service]] table.
type Service struct {
	// Name is the stable key of the service's state; defaults to the URL
	// (with any password removed).
	Name string `toml:"name"`
	URL  string `toml:"url"`
	// Tags are added to this service's metrics.
	Tags map[string]string `toml:"tags"`

	Timeout      config.Duration `toml:"timeout"`
	Window       int             `toml:"window"`
	Percentiles  Percentiles     `toml:"percentiles"`
	EWMAHalfLife config.Duration `toml:"ewma_half_life"`

	Interval       config.Duration `toml:"interval"`
	Samples        int             `toml:"samples"`
	SampleInterval config.Duration `toml:"sample_interval"`

	// Verdict overrides (0 / "": the plugin-wide value). DegradedLatency
	// is a pointer so that "0s" can turn off a plugin-wide objective.
	FailureThreshold  int              `toml:"failure_threshold"`
	SuccessThreshold  int              `toml:"success_threshold"`
	DegradedLatency   *config.Duration `toml:"degraded_latency"`
	DegradedStatistic string           `toml:"degraded_statistic"`

	probe.Options
}

// Default returns a Config with the defaults set.
func Default() Config {
	return Config{
		Timeout:        config.Duration(DefaultTimeout),
		MaxConcurrency: DefaultMaxConcurrency,
		Window:         DefaultWindow,
		EWMAHalfLife:   config.Duration(DefaultHalfLife),
		Spread:         Spread{Auto: true},
		Samples:        1,
		SampleInterval: config.Duration(DefaultSampleInterval),

		FailureThreshold: stats.DefaultFailureThreshold,
		SuccessThreshold: stats.DefaultSuccessThreshold,
	}
}

// Spread is the spread setting: "auto" or a duration ("0s" = every probe
// of a gather starts at once).
type Spread struct {
	Auto bool
	D    time.Duration
}

// UnmarshalTOML implements the influxdata/toml Unmarshaler.
func (s *Spread) UnmarshalTOML(raw []byte) error {
	v := strings.Trim(strings.TrimSpace(string(raw)), `"'`)
	if v == "auto" {
		*s = Spread{Auto: true}
		return nil
	}
	var d config.Duration
	if err := d.UnmarshalText([]byte(v)); err != nil {
		return fmt.Errorf(`want "auto" or a duration such as "10s": %w`, err)
	}
	if d < 0 {
		return fmt.Errorf("must not be negative, got %s", time.Duration(d))
	}
	*s = Spread{D: time.Duration(d)}
	return nil
}

// Percentiles is a list of percentiles. In TOML it accepts integers and
// floats alike (percentiles = [50, 95, 99.9]); an array that mixes them is
// rejected by the TOML parser itself, with the key named.
type Percentiles []float64

// UnmarshalTOML implements the influxdata/toml Unmarshaler: the decoder
// hands over the raw TOML of the value.
func (p *Percentiles) UnmarshalTOML(raw []byte) error {
	src := append([]byte("v = "), raw...)
	tbl, err := toml.Parse(src)
	if err != nil {
		return err
	}
	kv, ok := tbl.Fields["v"].(*ast.KeyValue)
	if !ok {
		return errors.New("want an array of numbers")
	}
	arr, ok := kv.Value.(*ast.Array)
	if !ok {
		return errors.New("want an array of numbers, e.g. [50, 95, 99.9]")
	}
	out := make(Percentiles, 0, len(arr.Value))
	for _, v := range arr.Value {
		switch n := v.(type) {
		case *ast.Integer:
			i, err := n.Int()
			if err != nil {
				return err
			}
			out = append(out, float64(i))
		case *ast.Float:
			f, err := n.Float()
			if err != nil {
				return err
			}
			out = append(out, f)
		default:
			return fmt.Errorf("%s is not a number", v.Source())
		}
	}
	*p = out
	return nil
}
