package probe

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
)

// TestNoGoroutineOutlivesProbe runs probes of every kind, successful and
// failing (timeouts included), then closes the probers: nothing they
// started may keep running.
func TestNoGoroutineOutlivesProbe(t *testing.T) {
	httpSrv, _ := newHTTPServer(t, ok)
	slowSrv, _ := newHTTPServer(t, func(_ http.ResponseWriter, r *http.Request) { waitDone(r) })
	silent := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	udp, tcp := dnsServer(t)
	refused := freePort(t)
	grpcAddr, _ := grpcHealthServer(t, nil, false)
	ignore := goleak.IgnoreCurrent()

	const timeout = 150 * time.Millisecond
	urls := map[string]Options{
		httpSrv.URL + "/":                           {},
		httpSrv.URL + "/ka":                         {KeepAlive: ptr(true)},
		slowSrv.URL + "/":                           {},
		slowSrv.URL + "/ka":                         {KeepAlive: ptr(true)},
		"http://" + refused + "/":                   {},
		localhostURL(httpSrv.URL) + "/name":         {},
		"https://" + silent + "/":                   {},
		"https://" + silent + "/ka":                 {KeepAlive: ptr(true)},
		"tcp://" + silent:                           {},
		"tcp://" + silent + "/":                     {Expect: "x"},
		"tcp://" + refused:                          {},
		"dns://" + udp + "/a.test":                  {},
		"dns://" + tcp + "/a.test?transport=tcp":    {},
		"dns://" + silent + "/a.test?transport=tcp": {},
		"grpc://" + silent:                          {},
		"grpcs://" + silent + "/svc":                {KeepAlive: ptr(true)},
		"grpc://" + refused:                         {},
		"grpc://" + grpcAddr:                        {},
		"grpc://" + grpcAddr + "/ka":                {KeepAlive: ptr(true)},
		"icmp://127.0.0.1":                          {Count: ptr(2), PingInterval: config.Duration(10 * time.Millisecond)},
		"icmp://[::1]":                              {Count: ptr(2), PingInterval: config.Duration(10 * time.Millisecond), Privileged: PrivilegedTrue},
	}
	var probers []Prober
	for u, o := range urls {
		p, err := New(u, timeout, o)
		require.NoError(t, err, u)
		probers = append(probers, p)
	}
	for i := 0; i < 2; i++ {
		for _, p := range probers {
			start := time.Now()
			p.Probe(context.Background())
			require.Less(t, time.Since(start), timeout+deadlineSlack)
		}
	}
	for _, p := range probers {
		p.Close()
	}
	goleak.VerifyNone(t, ignore)
}

func benchmarkProbe(b *testing.B, p Prober) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r := p.Probe(context.Background()); r.Outcome != Success {
			b.Fatal(r.Outcome, r.Err)
		}
	}
}

func BenchmarkHTTPProbe(b *testing.B) {
	srv, _ := newHTTPServer(b, ok)
	for _, ka := range []bool{false, true} {
		name := "fresh_connection"
		if ka {
			name = "keep_alive"
		}
		b.Run(name, func(b *testing.B) {
			p, err := New(srv.URL+"/", time.Second, Options{KeepAlive: ptr(ka), BodyContains: "ok"})
			require.NoError(b, err)
			defer p.Close()
			benchmarkProbe(b, p)
		})
	}
}

// localhostURL replaces the 127.0.0.1 of a test server's URL by localhost
// (resolved from /etc/hosts: a DNS lookup that stays on the machine).
func localhostURL(u string) string { return strings.Replace(u, "127.0.0.1", "localhost", 1) }
