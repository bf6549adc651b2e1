package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/status"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// Spec is a validated config, ready to run: what the engine probes, the
// store to open and the operations settings.
type Spec struct {
	Targets []*gather.Target
	// Engine are the engine's plugin-wide settings (concurrency, spread).
	Engine gather.Settings
	Store  StoreSpec
	Status status.Settings
	// CollectInternal: emit service_latency_internal every gather.
	CollectInternal bool
}

// StoreSpec says which store to open. Opening it (reading a state file,
// connecting to Redis) is Init's I/O, not the compiler's.
type StoreSpec struct {
	// Kind is "memory" or "redis".
	Kind string
	// StateFile persists the memory store ("" = not persisted).
	StateFile string
	// SaveInterval is the time between saves of the state file (0: after
	// every update).
	SaveInterval time.Duration
	// Redis are the validated options of the Redis store.
	Redis store.RedisOptions
	// Fleet shares the probes among the agents of the Redis
	// (Fleet.Replicas 0: every agent probes every service).
	Fleet store.FleetOptions
}

// Close releases what a Spec that will not run holds (its probers).
func (s *Spec) Close() {
	for _, t := range s.Targets {
		t.Prober.Close()
	}
}

// builtinTags are the tags the plugin sets itself; a service's own tags may
// not reuse them.
var builtinTags = []string{"service", "probe", "server", "result", "le"}

// Compile validates a Config and builds its Spec: every service's prober
// (no network I/O), its statistics parameters and field names, the store
// and status settings. The Config is not modified. On error nothing is
// left open.
func Compile(c *Config) (*Spec, error) {
	ops := status.Settings{Listen: c.StatusListen, AllowRemote: c.StatusAllowRemote, Pprof: c.Pprof, Debug: c.StatusDebug}
	if err := ops.Validate(); err != nil {
		return nil, nested(-1, "", "", err)
	}
	st, err := compileStore(c)
	if err != nil {
		return nil, err
	}
	targets, err := compileTargets(c)
	if err != nil {
		return nil, err
	}
	seed := c.SpreadSeed
	if seed == "" {
		seed, _ = os.Hostname() // "" when unknown: still stable
	}
	return &Spec{
		Targets: targets,
		Engine: gather.Settings{
			MaxConcurrency: c.MaxConcurrency,
			Spread:         c.Spread.D,
			SpreadAuto:     c.Spread.Auto,
			Seed:           seed,
			History:        c.StatusListen != "",
			Shape: gather.Shape{
				NoResultTag:    c.ResultTag != nil && !*c.ResultTag,
				NoStringFields: c.StringFields != nil && !*c.StringFields,
			},
		},
		Store:           st,
		Status:          ops,
		CollectInternal: c.CollectInternal,
	}, nil
}

func compileStore(c *Config) (StoreSpec, error) {
	switch c.State {
	case "", "memory":
		if c.Redis != nil {
			return StoreSpec{}, pluginErr("redis", errors.New(`an [inputs.service_latency.redis] table needs state = "redis"`))
		}
		every := store.DefaultSaveInterval
		if c.StateSaveInterval != nil {
			every = time.Duration(*c.StateSaveInterval)
			if c.StateFile == "" {
				return StoreSpec{}, pluginErr("state_save_interval", errors.New("needs a state_file: without one nothing is saved"))
			}
			if every < 0 {
				return StoreSpec{}, pluginErr("state_save_interval", fmt.Errorf("must not be negative, got %s (0s: save after every gather)", every))
			}
		}
		return StoreSpec{Kind: "memory", StateFile: c.StateFile, SaveInterval: every}, nil
	case "redis":
		if c.StateFile != "" {
			return StoreSpec{}, pluginErr("state_file", errors.New(`only for state = "memory": with Redis the state lives in Redis`))
		}
		if c.StateSaveInterval != nil {
			return StoreSpec{}, pluginErr("state_save_interval", errors.New(`only for state = "memory" with a state_file: with Redis the state lives in Redis`))
		}
		if c.Redis == nil {
			return StoreSpec{}, pluginErr("state", errors.New(`state = "redis" needs an [inputs.service_latency.redis] table with an address or a url`))
		}
		opts, err := c.Redis.RedisConfig.Options()
		if err != nil {
			return StoreSpec{}, nested(-1, "", "redis.", err)
		}
		fleet, err := c.Redis.FleetConfig.Options()
		if err != nil {
			return StoreSpec{}, nested(-1, "", "redis.", err)
		}
		return StoreSpec{Kind: "redis", Redis: opts, Fleet: fleet}, nil
	}
	return StoreSpec{}, pluginErr("state", fmt.Errorf("unknown store %q (want \"memory\" or \"redis\")", c.State))
}

func compileTargets(c *Config) (targets []*gather.Target, err error) {
	defer func() {
		if err != nil {
			for _, t := range targets {
				t.Prober.Close()
			}
			targets = nil
		}
	}()
	if c.Timeout <= 0 {
		return nil, pluginErr("timeout", fmt.Errorf("must be positive, got %s", time.Duration(c.Timeout)))
	}
	if c.MaxConcurrency <= 0 {
		return nil, pluginErr("max_concurrency", fmt.Errorf("must be positive, got %d", c.MaxConcurrency))
	}
	pcts := []float64(c.Percentiles)
	if pcts == nil {
		pcts = DefaultPercentiles
	}
	if err := stats.ValidatePercentiles(pcts); err != nil {
		return nil, nested(-1, "", "", err)
	}
	base := stats.Params{Window: c.Window, HalfLife: time.Duration(c.EWMAHalfLife), Buckets: c.HistogramBuckets}
	if err := base.Validate(); err != nil {
		return nil, nested(-1, "", "", err)
	}
	if err := checkSchedule(time.Duration(c.Interval), c.Samples, time.Duration(c.SampleInterval), time.Duration(c.Timeout), "timeout"); err != nil {
		return nil, nested(-1, "", "", err)
	}
	vbase := verdictConfig{
		failure: c.FailureThreshold, success: c.SuccessThreshold,
		latency: time.Duration(c.DegradedLatency), statistic: c.DegradedStatistic,
	}
	if _, err := vbase.compile(pcts); err != nil {
		return nil, nested(-1, "", "", err)
	}
	if len(c.Services) == 0 {
		return nil, pluginErr("service", errors.New("no services configured: add at least one [[inputs.service_latency.service]] with a url"))
	}
	// Which earlier service each one's name duplicates (-1: none). The
	// services are then compiled in parallel; the error reported is that
	// of the first service in the file that has one, as one after the
	// other would find it (a service's checks depend on itself and on the
	// names before it only).
	first := make(map[string]int, len(c.Services))
	dupOf := make([]int, len(c.Services))
	for i, s := range c.Services {
		dupOf[i] = -1
		if s == nil {
			continue
		}
		name := serviceName(s)
		if j, dup := first[name]; dup {
			dupOf[i] = j
		} else {
			first[name] = i
		}
	}
	defaults := &schemeDefaults{o: c.Options}
	targets = make([]*gather.Target, len(c.Services))
	errs := make([]error, len(c.Services))
	compileRange := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			targets[i], errs[i] = compileService(c, i, c.Services[i], base, pcts, vbase, dupOf[i], defaults)
		}
	}
	const perWorker = 1024
	if workers := min(runtime.GOMAXPROCS(0), (len(c.Services)+perWorker-1)/perWorker); workers <= 1 {
		compileRange(0, len(c.Services))
	} else {
		var wg sync.WaitGroup
		step := (len(c.Services) + workers - 1) / workers
		for lo := 0; lo < len(c.Services); lo += step {
			wg.Add(1)
			go func(lo, hi int) {
				defer wg.Done()
				compileRange(lo, hi)
			}(lo, min(lo+step, len(c.Services)))
		}
		wg.Wait()
	}
	for _, err := range errs {
		if err != nil {
			for i, t := range targets {
				if t == nil {
					continue
				}
				t.Prober.Close()
				targets[i] = nil
			}
			return nil, err
		}
	}
	return targets, nil
}

// serviceName is a service's name: its own, else its URL without
// credentials.
func serviceName(s *Service) string {
	if s.Name != "" {
		return s.Name
	}
	return redact.URL(s.URL)
}

func compileService(c *Config, i int, s *Service, base stats.Params, pcts []float64, vc verdictConfig, dupOf int, defaults *schemeDefaults) (*gather.Target, error) {
	if s == nil {
		return nil, &Error{Service: i, Err: errors.New("empty service table")}
	}
	fail := func(key string, err error) error {
		return &Error{Service: i, Name: boundedName(s.Name), Key: key, Err: err}
	}
	if s.URL == "" {
		return nil, fail("url", errors.New("missing or empty"))
	}
	if len(s.URL) > MaxURLBytes {
		return nil, fail("url", fmt.Errorf("%d bytes, more than the limit of %d", len(s.URL), MaxURLBytes))
	}
	name := serviceName(s)
	if err := checkTagValue(name, MaxNameBytes); err != nil {
		return nil, fail("name", err)
	}
	if dupOf >= 0 {
		return nil, fail("name", fmt.Errorf("duplicate service name %q (also service #%d); names key the state and must be unique", name, dupOf+1))
	}

	timeout := time.Duration(c.Timeout)
	if s.Timeout != 0 {
		timeout = time.Duration(s.Timeout)
	}
	if timeout <= 0 {
		return nil, fail("timeout", fmt.Errorf("must be positive, got %s", timeout))
	}
	sched := gather.Schedule{
		Timeout:        timeout,
		Interval:       time.Duration(c.Interval),
		Samples:        c.Samples,
		SampleInterval: time.Duration(c.SampleInterval),
	}
	if s.Interval != 0 {
		sched.Interval = time.Duration(s.Interval)
	}
	if s.Samples != 0 {
		sched.Samples = s.Samples
	}
	if s.SampleInterval != 0 {
		sched.SampleInterval = time.Duration(s.SampleInterval)
	}
	if err := checkSchedule(sched.Interval, sched.Samples, sched.SampleInterval, timeout, "timeout"); err != nil {
		return nil, nested(i, boundedName(s.Name), "", err)
	}
	params := base
	if s.Window != 0 {
		params.Window = s.Window
	}
	if s.EWMAHalfLife != 0 {
		params.HalfLife = time.Duration(s.EWMAHalfLife)
	}
	if err := params.Validate(); err != nil {
		return nil, nested(i, boundedName(s.Name), "", err)
	}
	if s.Percentiles != nil {
		pcts = s.Percentiles
		if err := stats.ValidatePercentiles(pcts); err != nil {
			return nil, nested(i, boundedName(s.Name), "", err)
		}
	}
	if s.FailureThreshold != 0 {
		vc.failure = s.FailureThreshold
	}
	if s.SuccessThreshold != 0 {
		vc.success = s.SuccessThreshold
	}
	if s.DegradedLatency != nil {
		vc.latency = time.Duration(*s.DegradedLatency)
	}
	if s.DegradedStatistic != "" {
		vc.statistic = s.DegradedStatistic
	}
	vp, err := vc.compile(pcts)
	if err != nil {
		return nil, nested(i, boundedName(s.Name), "", err)
	}
	params.Verdict = vp
	if err := checkTags(s.Tags); err != nil {
		return nil, fail("tags", err)
	}
	prober, err := probe.NewShared(s.URL, timeout, defaults.forService(s))
	if err != nil {
		return nil, nested(i, boundedName(s.Name), "", err)
	}
	server := name // a service without a name is named by its redacted URL
	if s.Name != "" {
		server = redact.URL(s.URL)
	}
	t := gather.NewTarget(name, server, prober, params, pcts, s.Tags)
	t.Schedule = sched
	return t, nil
}

// schemeDefaults are the plugin-wide probe options applicable to each
// URL scheme, computed once per scheme (ApplicableTo parses the URL and
// copies the options by reflection: once per service was a tenth of the
// start-up at 100,000 services).
type schemeDefaults struct {
	o  probe.Options
	mu sync.Mutex
	by map[string]*probe.Options
}

// forService is s.Options.WithDefaults(plugin options.ApplicableTo(url)).
// A service that sets no option of its own gets the defaults themselves
// (WithDefaults fills every unset field of Options from them), shared:
// the result is only read (probe.NewShared).
func (d *schemeDefaults) forService(s *Service) *probe.Options {
	scheme, ok := urlScheme(s.URL)
	if !ok {
		o := s.Options.WithDefaults(d.o.ApplicableTo(s.URL))
		return &o
	}
	d.mu.Lock()
	def, ok := d.by[scheme]
	if !ok {
		o := d.o.ApplicableTo(scheme + "://x/") // it depends on the scheme only
		def = &o
		if d.by == nil {
			d.by = map[string]*probe.Options{}
		}
		d.by[scheme] = def
	}
	d.mu.Unlock()
	if reflect.ValueOf(&s.Options).Elem().IsZero() {
		return def
	}
	o := s.Options.WithDefaults(*def)
	return &o
}

// urlScheme is the lower-cased scheme of a URL that has one ("http" of
// "HTTP://x"); ok is false when rawURL does not start with a scheme and
// "://" (url.Parse, in ApplicableTo and probe.New, decides those).
func urlScheme(rawURL string) (string, bool) {
	i := strings.Index(rawURL, "://")
	if i <= 0 {
		return "", false
	}
	for k := 0; k < i; k++ {
		c := rawURL[k]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case k > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return "", false
		}
	}
	return strings.ToLower(rawURL[:i]), true
}

// verdictConfig are a service's verdict settings as configured.
type verdictConfig struct {
	failure, success int
	latency          time.Duration
	statistic        string
}

// compile validates the settings against the percentiles the service
// computes: errors are *keyerr.Error naming failure_threshold,
// success_threshold, degraded_latency or degraded_statistic.
func (vc verdictConfig) compile(pcts []float64) (stats.VerdictParams, error) {
	vp := stats.VerdictParams{
		FailureThreshold: vc.failure,
		SuccessThreshold: vc.success,
		DegradedLatency:  vc.latency.Seconds(),
		Statistic:        stats.DefaultStatistic,
	}
	if vc.latency < 0 {
		return vp, keyerr.Errorf("degraded_latency", "must not be negative, got %s (0 or unset: no latency objective)", vc.latency)
	}
	if err := vp.Validate(); err != nil {
		return vp, err
	}
	if vc.statistic != "" || vc.latency > 0 {
		st := vc.statistic
		if st == "" {
			st = vp.Statistic.String()
		}
		var err error
		if vp.Statistic, err = stats.ParseStatistic(st, pcts); err != nil {
			return vp, err
		}
	}
	return vp, nil
}

// checkSchedule validates an interval and a round against the timeout
// that bounds the round.
func checkSchedule(interval time.Duration, samples int, sampleInterval, timeout time.Duration, timeoutKey string) error {
	if interval < 0 || (interval > 0 && (interval < time.Second || interval%time.Second != 0)) {
		return keyerr.Errorf("interval", "must be whole seconds, at least 1s (or unset: every gather), got %s", interval)
	}
	if samples < 1 || samples > MaxSamples {
		return keyerr.Errorf("samples", "must be between 1 and %d, got %d", MaxSamples, samples)
	}
	if samples == 1 {
		return nil
	}
	if sampleInterval <= 0 {
		return keyerr.Errorf("sample_interval", "must be positive, got %s", sampleInterval)
	}
	if round := time.Duration(samples) * sampleInterval; round > timeout {
		return keyerr.Errorf("samples", "%d samples %s apart (%s) do not fit in the round's %s = %s: the timeout bounds the whole round; lower samples or sample_interval, or raise %s", samples, sampleInterval, round, timeoutKey, timeout, timeoutKey)
	}
	return nil
}

// checkTags refuses tags the plugin sets itself and tags past the limits.
func checkTags(tags map[string]string) error {
	for k, v := range tags {
		for _, b := range builtinTags {
			if k == b {
				return fmt.Errorf("tag %q is set by the plugin itself; pick another name", k)
			}
		}
		if k == "" {
			return errors.New("a tag key may not be empty")
		}
		if err := checkTagValue(k, MaxTagKeyBytes); err != nil {
			return fmt.Errorf("key %q: %w", boundedName(k), err)
		}
		if err := checkTagValue(v, MaxTagValueBytes); err != nil {
			return fmt.Errorf("%q: %w", boundedName(k), err)
		}
	}
	return nil
}

// checkTagValue bounds what becomes a tag. A trailing backslash cannot be
// carried by line protocol (it escapes the separator after it: the value
// arrives cut, and "x\" merges with "x"), so it is refused.
func checkTagValue(v string, limit int) error {
	if len(v) > limit {
		return fmt.Errorf("%d bytes, more than the limit of %d", len(v), limit)
	}
	if strings.HasSuffix(v, `\`) {
		return fmt.Errorf("%q ends with a backslash, which line protocol cannot carry at the end of a tag", v)
	}
	return nil
}

// boundedName is a name short enough to be shown in an error.
func boundedName(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "…"
}
