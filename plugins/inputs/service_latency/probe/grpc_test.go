package probe

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
)

// grpcHealthServer serves grpc-go's health service on 127.0.0.1 (with
// TLS when cert is set; without the health service when noHealth).
func grpcHealthServer(t *testing.T, cert *tls.Certificate, noHealth bool) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var opts []grpc.ServerOption
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewServerTLSFromCert(cert)))
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	if !noHealth {
		healthpb.RegisterHealthServer(srv, hs)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String(), hs
}

func TestGRPCHealth(t *testing.T) {
	addr, hs := grpcHealthServer(t, nil, false)
	hs.SetServingStatus("svc.A", healthpb.HealthCheckResponse_SERVING)

	p := mustNew(t, "grpc://"+addr, time.Second, Options{})
	require.Equal(t, "grpc", p.Kind())
	r := p.Probe(context.Background())
	requireOutcome(t, Success, r)
	require.Greater(t, r.Latency, time.Duration(0))
	require.Equal(t, "SERVING", requireField(t, r, "grpc_status"))
	connect := requireField(t, r, "tcp_connect").(float64)
	require.Less(t, connect, r.Latency.Seconds(), "the connect is part of latency")
	require.Equal(t, "127.0.0.1", requireField(t, r, "remote_address"))
	requireNoField(t, r, "tls_handshake")
	requireNoField(t, r, "dns_lookup")

	svc := mustNew(t, "grpc://"+addr+"/svc.A", time.Second, Options{})
	requireOutcome(t, Success, svc.Probe(context.Background()))

	for _, c := range []struct {
		st     healthpb.HealthCheckResponse_ServingStatus
		want   Outcome
		status string
	}{
		{healthpb.HealthCheckResponse_NOT_SERVING, GRPCNotServing, "NOT_SERVING"},
		{healthpb.HealthCheckResponse_UNKNOWN, GRPCUnknown, "UNKNOWN"},
		{healthpb.HealthCheckResponse_SERVICE_UNKNOWN, GRPCServiceUnknown, "SERVICE_UNKNOWN"},
		{healthpb.HealthCheckResponse_SERVING, Success, "SERVING"},
	} {
		hs.SetServingStatus("svc.A", c.st)
		r := svc.Probe(context.Background())
		requireOutcome(t, c.want, r)
		require.Equal(t, c.status, requireField(t, r, "grpc_status"))
	}

	r = mustNew(t, "grpc://"+addr+"/svc.Missing", time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, GRPCServiceUnknown, r)
	require.Equal(t, "NOT_FOUND", requireField(t, r, "grpc_status"))

	r = mustNew(t, "grpc://localhost:"+portOf(t, addr), time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, Success, r)
	requireField(t, r, "dns_lookup")
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	return port
}

func TestGRPCNoHealthService(t *testing.T) {
	addr, _ := grpcHealthServer(t, nil, true)
	r := mustNew(t, "grpc://"+addr, time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, GRPCUnimplemented, r)
	require.Equal(t, "UNIMPLEMENTED", requireField(t, r, "grpc_status"))
}

func TestGRPCS(t *testing.T) {
	cert := selfSigned(t, time.Hour)
	addr, hs := grpcHealthServer(t, &cert.cert, false)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	trusted := Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}}

	r := mustNew(t, "grpcs://"+addr, 2*time.Second, trusted).Probe(context.Background())
	requireOutcome(t, Success, r)
	hsTime := requireField(t, r, "tls_handshake").(float64)
	require.Greater(t, hsTime, 0.0)
	require.Less(t, hsTime+requireField(t, r, "tcp_connect").(float64), r.Latency.Seconds())
	require.Equal(t, "1.3", requireField(t, r, "tls_version"))
	require.InDelta(t, time.Until(cert.leaf.NotAfter).Seconds(), requireField(t, r, "tls_cert_expiry").(float64), 2)

	r = mustNew(t, "grpcs://"+addr, 2*time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, TLSError, r)
	require.ErrorContains(t, r.Err, "certificate")
	requireField(t, r, "tls_handshake")

	r = mustNew(t, "grpcs://"+addr, 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile, ServerName: "other.example"}}).Probe(context.Background())
	requireOutcome(t, TLSError, r)

	// grpcs to a plaintext server, grpc to a TLS server.
	plain, _ := grpcHealthServer(t, nil, false)
	requireOutcome(t, TLSError, mustNew(t, "grpcs://"+plain, 2*time.Second, trusted).Probe(context.Background()))
	requireOutcome(t, ConnectionFailed, mustNew(t, "grpc://"+addr, 2*time.Second, Options{}).Probe(context.Background()))
}

func TestGRPCKeepAlive(t *testing.T) {
	cert := selfSigned(t, time.Hour)
	addr, hs := grpcHealthServer(t, &cert.cert, false)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	p := mustNew(t, "grpcs://"+addr, 2*time.Second, Options{KeepAlive: ptr(true), ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
	first := p.Probe(context.Background())
	requireOutcome(t, Success, first)
	requireField(t, first, "tcp_connect")
	requireField(t, first, "tls_handshake")
	second := p.Probe(context.Background())
	requireOutcome(t, Success, second)
	requireNoField(t, second, "tcp_connect")
	requireNoField(t, second, "tls_handshake")
	require.Equal(t, "1.3", requireField(t, second, "tls_version"), "TLS fields come from the connection, reused or not")
	require.Equal(t, "127.0.0.1", requireField(t, second, "remote_address"))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	requireOutcome(t, GRPCNotServing, p.Probe(context.Background()))
}

func TestGRPCFailures(t *testing.T) {
	refused := freePort(t)
	r := mustNew(t, "grpc://"+refused, time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, ConnectionFailed, r)
	require.ErrorContains(t, r.Err, "refused")
	require.Equal(t, "UNAVAILABLE", requireField(t, r, "grpc_status"))

	// A peer that accepts and never speaks HTTP/2.
	silent := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	const timeout = 300 * time.Millisecond
	for _, u := range []string{"grpc://" + silent, "grpcs://" + silent} {
		r, elapsed := probeTimed(mustNew(t, u, timeout, Options{}))
		requireOutcome(t, Timeout, r)
		requireByDeadline(t, elapsed, timeout)
	}
	r = mustNew(t, "grpc://nonexistent.invalid:50051", time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, DNSError, r)
}

func TestGRPCNewErrors(t *testing.T) {
	for u, msg := range map[string]string{
		"grpc://127.0.0.1":          "missing port",
		"grpc://127.0.0.1:1?x=1":    "grpc URLs are grpc://host:port[/service]",
		"grpc://u:pw@127.0.0.1:1":   "grpc URLs are grpc://host:port[/service]",
		"grpc://127.0.0.1:1/a/b":    "invalid service name",
		"grpcs://127.0.0.1:99999/x": "invalid port",
	} {
		_, err := New(u, time.Second, Options{})
		require.ErrorContains(t, err, "url: "+msg, u)
		require.NotContains(t, err.Error(), "pw")
	}
	p, err := New("grpcs://127.0.0.1/x", time.Second, Options{})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:443", p.(*grpcProber).target)
	_, err = New("grpc://127.0.0.1:1", time.Second, Options{Method: "GET"})
	require.EqualError(t, err, "method: not supported for grpc probes (http only)")
}
