// Package debugprobe runs one service's probe once and writes a readable
// trace of it: the binary's -probe NAME, blackbox_exporter's debug=true.
// It probes with the service's compiled target and an in-memory state of
// its own: the state file and Redis are never touched.
package debugprobe

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	telegrafconfig "github.com/influxdata/telegraf/config"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// Exit statuses of Run.
const (
	OK        = 0 // the probe succeeded
	Failed    = 1 // it ran and failed
	BadConfig = 2 // no such service
)

// RunService compiles, from c, only the service called name (probers of
// its own: a running engine's are never borrowed) and runs it as Run does.
func RunService(ctx context.Context, c *config.Config, name string, w io.Writer) int {
	one := *c
	one.Services = nil
	var names []string
	for _, s := range c.Services {
		if s == nil {
			continue
		}
		n := serviceName(s)
		names = append(names, n)
		if n == name {
			one.Services = append(one.Services, s)
		}
	}
	if len(one.Services) == 0 {
		fmt.Fprintf(w, "no service named %q; the services are:\n", name)
		for _, n := range names {
			fmt.Fprintf(w, "  %s\n", n)
		}
		return BadConfig
	}
	spec, err := config.Compile(&one)
	if err != nil {
		fmt.Fprintf(w, "config: %s\n", redact.Text(err.Error()))
		return BadConfig
	}
	defer spec.Close()
	return Run(ctx, &one, spec, name, w)
}

// serviceName is the name config.Compile gives a service: its own, else
// its URL without credentials.
func serviceName(s *config.Service) string {
	if s.Name != "" {
		return s.Name
	}
	return redact.URL(s.URL)
}

// Run probes the service called name of a compiled config once, writes
// the trace to w and returns the exit status.
func Run(ctx context.Context, c *config.Config, spec *config.Spec, name string, w io.Writer) int {
	var t *gather.Target
	for _, tg := range spec.Targets {
		if tg.Name == name {
			t = tg
		}
	}
	if t == nil {
		fmt.Fprintf(w, "no service named %q; the services are:\n", name)
		for _, tg := range spec.Targets {
			fmt.Fprintf(w, "  %s\n", tg.Name)
		}
		return BadConfig
	}
	tr := &trace{w: w, start: time.Now()}
	fmt.Fprintf(w, "service %q\n", t.Name)
	writeOptions(w, c, t)
	fmt.Fprintln(w, "\ntrace:")

	e := gather.New(store.NewMemory(), store.NopLogger{})
	// The target is the spec's own; the engine borrows it for one round.
	e.SetTargets([]*gather.Target{t}, gather.Settings{MaxConcurrency: 1, Shape: spec.Engine.Shape})
	var got *gather.Service
	tr.step("round", fmt.Sprintf("%d sample(s), timeout %s", max(t.Schedule.Samples, 1), t.Schedule.Timeout))
	e.Gather(probe.WithTracer(ctx, tr.step), time.Now(), func(s *gather.Service) { got = s })
	tr.step("done", "")
	if got == nil {
		fmt.Fprintln(w, "\nno result (interrupted)")
		return Failed
	}
	writeOutcome(w, got)
	if got.Error != "" {
		return Failed
	}
	return OK
}

// trace writes steps with their offset from the start.
type trace struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (t *trace) step(step, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	off := time.Since(t.start).Seconds()
	if detail == "" {
		fmt.Fprintf(t.w, "  +%.6fs %s\n", off, step)
		return
	}
	fmt.Fprintf(t.w, "  +%.6fs %-14s %s\n", off, step, redact.Text(detail))
}

// writeOptions lists the options in effect for the service (secrets
// redacted): the service table over the plugin-wide defaults.
func writeOptions(w io.Writer, c *config.Config, t *gather.Target) {
	fmt.Fprintln(w, "\noptions in effect:")
	fmt.Fprintf(w, "  url = %q\n", t.Server)
	fmt.Fprintf(w, "  timeout = %q\n", t.Schedule.Timeout)
	if t.Schedule.Interval > 0 {
		fmt.Fprintf(w, "  interval = %q\n", t.Schedule.Interval)
	}
	if t.Schedule.Samples > 1 {
		fmt.Fprintf(w, "  samples = %d\n  sample_interval = %q\n", t.Schedule.Samples, t.Schedule.SampleInterval)
	}
	for _, s := range c.Services {
		if s == nil {
			continue
		}
		if serviceName(s) != t.Name {
			continue
		}
		opts := s.Options.WithDefaults(c.Options.ApplicableTo(s.URL))
		var lines []string
		walk(reflect.ValueOf(opts), func(key string, v reflect.Value) {
			if h, ok := v.Interface().(map[string]string); ok && key == "headers" {
				lines = append(lines, fmt.Sprintf("  %s = %s", key, showHeaders(h)))
				return
			}
			lines = append(lines, fmt.Sprintf("  %s = %s", key, show(v)))
		})
		sort.Strings(lines)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
		if len(s.Tags) > 0 {
			fmt.Fprintf(w, "  tags = %v\n", s.Tags)
		}
	}
}

var secretType = reflect.TypeOf(telegrafconfig.Secret{})

// walk calls fn for every set (non-zero) field with a toml key.
func walk(v reflect.Value, fn func(string, reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		f := v.Field(i)
		if sf.Anonymous && f.Kind() == reflect.Struct {
			walk(f, fn)
			continue
		}
		key, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if key == "" || key == "-" {
			continue
		}
		if f.Type() == secretType {
			s := f.Interface().(telegrafconfig.Secret)
			if !s.Empty() {
				fn(key, reflect.ValueOf("<redacted>"))
			}
			continue
		}
		if !f.IsZero() {
			fn(key, f)
		}
	}
}

// showHeaders renders the headers option with credential values
// redacted (probe.HeaderValue: Authorization, X-Api-Key, "Bearer ...").
func showHeaders(h map[string]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q = %q", k, probe.HeaderValue(k, h[k]))
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func show(v reflect.Value) string {
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case string:
		return fmt.Sprintf("%q", redact.Text(x))
	case telegrafconfig.Duration:
		return fmt.Sprintf("%q", time.Duration(x))
	}
	return redact.Text(fmt.Sprint(v.Interface()))
}

// writeOutcome writes the result and the metric the round would emit.
func writeOutcome(w io.Writer, s *gather.Service) {
	fmt.Fprintln(w, "\noutcome:")
	if s.Error == "" {
		fmt.Fprintln(w, "  success")
	} else {
		fmt.Fprintf(w, "  %s\n", s.Error)
	}
	fmt.Fprintln(w, "\nmetric (service_latency):")
	keys := make([]string, 0, len(s.Tags))
	for k := range s.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  tag   %s = %s\n", k, s.Tags[k])
	}
	keys = keys[:0]
	for k := range s.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  field %s = %v\n", k, s.Fields[k])
	}
}
