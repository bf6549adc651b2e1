package service_latency

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	engine "github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// delayServer is a real loopback HTTP server whose delay and status can be
// changed between gathers.
type delayServer struct {
	*httptest.Server
	delay  atomic.Int64 // ns
	status atomic.Int64
	hits   atomic.Int64
}

func newDelayServer(t *testing.T, delay time.Duration) *delayServer {
	t.Helper()
	s := &delayServer{}
	s.delay.Store(int64(delay))
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if d := time.Duration(s.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(int(s.status.Load()))
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// newPlugin parses a config the way the binary does and initializes it
// with a capturing logger.
func newPlugin(t *testing.T, conf string) (*ServiceLatency, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	p, err := parseConfigLog([]byte(conf), log)
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	return p, log
}

// ParseConfig loads and initializes a config the way the binary does (a
// no-op logger); errors carry the line.
func ParseConfig(data []byte) (*ServiceLatency, error) { return parseConfigLog(data, nopLogger{}) }

func parseConfigLog(data []byte, log telegraf.Logger) (*ServiceLatency, error) {
	f, err := config.Parse(data)
	if err != nil {
		return nil, err
	}
	return initLoaded(f, log)
}

// LoadConfigFile is ParseConfig for a file: errors name it.
func LoadConfigFile(path string) (*ServiceLatency, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return initLoaded(f, nopLogger{})
}

func initLoaded(f *config.File, log telegraf.Logger) (*ServiceLatency, error) {
	p := New()
	p.Config = f.Config
	p.Log = log
	if err := p.Init(); err != nil {
		return nil, f.Locate(err)
	}
	return p, nil
}

// decodeConfig loads a config without initializing it (a reload's input).
func decodeConfig(t *testing.T, data string) *config.Config {
	t.Helper()
	f, err := config.Parse([]byte(data))
	require.NoError(t, err)
	return &f.Config
}

// dumpEntry returns a service's entry in the plugin's exported state (nil
// when it has none).
func dumpEntry(t *testing.T, p *ServiceLatency, name string) map[string]any {
	t.Helper()
	d, ok := p.GetState().(*store.Dump)
	require.True(t, ok)
	raw, ok := d.Services[name]
	if !ok {
		return nil
	}
	var e map[string]any
	require.NoError(t, json.Unmarshal(raw, &e))
	return e
}

// targets are the plugin's current targets.
func (p *ServiceLatency) targets() []*engine.Target { return p.engine.Targets() }

func gather(t *testing.T, p *ServiceLatency) map[string]telegraf.Metric {
	t.Helper()
	var acc testutil.Accumulator
	require.NoError(t, p.Gather(&acc))
	out := make(map[string]telegraf.Metric)
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() != Measurement {
			continue
		}
		name, _ := m.GetTag("service")
		require.NotContains(t, out, name, "one metric per service")
		out[name] = m
	}
	return out
}

func field[T any](t *testing.T, m telegraf.Metric, key string) T {
	t.Helper()
	v, ok := m.GetField(key)
	require.Truef(t, ok, "field %q missing in %s", key, m)
	tv, ok := v.(T)
	require.Truef(t, ok, "field %q is %T, want %T", key, v, *new(T))
	return tv
}

func conf(body string) string {
	return "[[inputs.service_latency]]\n" + strings.TrimLeft(body, "\n")
}
