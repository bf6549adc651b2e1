package service_latency

import (
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

// newPlugin parses a config the way the binary does and gives it a logger.
func newPlugin(t *testing.T, conf string) (*ServiceLatency, *testutil.CaptureLogger) {
	t.Helper()
	p, err := ParseConfig([]byte(conf))
	require.NoError(t, err)
	log := &testutil.CaptureLogger{}
	p.Log = log
	t.Cleanup(p.Stop)
	return p, log
}

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
