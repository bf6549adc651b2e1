// gRPC health prober (grpc://host:port[/service], grpcs://host[:port][/service]).
//
// One probe is one call of the standard grpc.health.v1.Health/Check for
// the service named by the URL's path (none: the server as a whole).
// grpcs:// speaks TLS, configured by the usual tls_* keys (port 443 by
// default); grpc:// is plaintext HTTP/2 and needs a port.
//
// Latency spans, on the monotonic clock, the call on a fresh connection:
// the DNS lookup of a host name, the TCP connect, the TLS handshake
// (grpcs), the HTTP/2 connection preface and the RPC until its reply.
// With keep_alive = true the connection is kept between probes (and
// re-established by gRPC when it breaks): latency is then the RPC alone,
// plus the reconnect of a probe that had to make one.
//
// Outcomes: SERVING → Success; NOT_SERVING → GRPCNotServing; UNKNOWN →
// GRPCUnknown; SERVICE_UNKNOWN, or the NotFound code (grpc-go's answer for
// a service it does not know) → GRPCServiceUnknown; the Unimplemented
// code (no health service) → GRPCUnimplemented; a connection that could
// not be made → ConnectionFailed, DNSError, TLSError or Timeout as for the
// other probes; the deadline → Timeout; another gRPC status code →
// GRPCError.
//
// Fields: grpc_status (string) — the health status of a reply
// ("SERVING", "NOT_SERVING", ...) or the gRPC code of a failed call
// ("UNIMPLEMENTED", "UNAVAILABLE", ...); dns_lookup, tcp_connect and
// tls_handshake (seconds) when the probe connected; remote_address; and
// for grpcs tls_version and tls_cert_expiry.

package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

type grpcProber struct {
	target  string // host:port
	host    string
	port    string
	service string
	timeout time.Duration
	net     netConfig
	dialer  net.Dialer
	tlsCfg  *tls.Config // nil for grpc://
	keep    bool

	// With keep_alive: the shared connection and what its dials recorded
	// since the last probe took it.
	mu  sync.Mutex
	cc  *grpc.ClientConn
	rec *grpcRecorder

	// running counts calls and closes that outlive Probe (a call still
	// unwinding after the deadline, the close of a fresh connection);
	// Close waits for them.
	running sync.WaitGroup
}

func newGRPC(u *url.URL, timeout time.Duration, o *Options) (*grpcProber, error) {
	def := ""
	if u.Scheme == "grpcs" {
		def = "443"
	}
	host, port, err := hostPort(u, def)
	if err != nil {
		return nil, err
	}
	if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, keyerr.Errorf("url", "grpc URLs are %s://host:port[/service], got %q", u.Scheme, redactURL(u.String()))
	}
	service := strings.TrimPrefix(u.Path, "/")
	if strings.ContainsAny(service, "/ \t\r\n") {
		return nil, keyerr.Errorf("url", "invalid service name %q (want grpc://host:port/package.Service)", service)
	}
	nc, err := newNetConfig(o)
	if err != nil {
		return nil, err
	}
	p := &grpcProber{
		target: net.JoinHostPort(host, port), host: host, port: port, service: service,
		timeout: timeout, net: nc, dialer: nc.dialer(timeout, "tcp"),
		keep: o.KeepAlive != nil && *o.KeepAlive,
	}
	if u.Scheme == "grpcs" {
		if p.tlsCfg, err = dialTLS(&o.ClientConfig, host); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Kind returns "grpc" (for grpc and grpcs URLs).
func (*grpcProber) Kind() string { return "grpc" }

// Close closes the kept connection (keep_alive).
func (p *grpcProber) Close() {
	p.mu.Lock()
	cc := p.cc
	p.cc, p.rec = nil, nil
	p.mu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
	p.running.Wait()
}

// grpcRecorder collects what the dials and handshakes of a connection did.
type grpcRecorder struct {
	ph        phases
	dialErr   error
	tlsErr    error
	handshake bool
	// tracer is the tracer of the probe in progress, if it is traced
	// (the dials and handshakes run on gRPC's goroutines, under contexts
	// of gRPC's own). Under ph.mu.
	tracer Tracer
}

// traceCtx returns ctx with the tracer of the probe in progress and
// whether there is one.
func (r *grpcRecorder) traceCtx(ctx context.Context) (context.Context, bool) {
	r.ph.mu.Lock()
	t := r.tracer
	r.ph.mu.Unlock()
	if t == nil {
		return ctx, false
	}
	return WithTracer(ctx, t), true
}

func (r *grpcRecorder) setTracer(t Tracer) {
	r.ph.mu.Lock()
	r.tracer = t
	r.ph.mu.Unlock()
}

// take returns the phases and errors recorded so far and resets them.
func (r *grpcRecorder) take() (f []Field, dialErr, tlsErr error) {
	r.ph.mu.Lock()
	defer r.ph.mu.Unlock()
	f = r.ph.appendDial(nil)
	if r.handshake {
		f = append(f, Field{"tls_handshake", r.ph.handshake.Seconds()})
	}
	dialErr, tlsErr = r.dialErr, r.tlsErr
	r.ph.dns, r.ph.connect, r.ph.handshake, r.ph.did = 0, 0, 0, 0
	r.dialErr, r.tlsErr, r.handshake = nil, nil, false
	return f, dialErr, tlsErr
}

// timedCreds times the TLS handshake of the wrapped credentials.
type timedCreds struct {
	credentials.TransportCredentials
	rec *grpcRecorder
}

func (c *timedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tctx, traced := c.rec.traceCtx(ctx)
	if traced {
		tracef(tctx, "tls", "handshake start (authority %q)", authority)
	}
	start := time.Now()
	conn, ai, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	d := time.Since(start)
	if traced {
		if ti, ok := ai.(credentials.TLSInfo); ok && err == nil {
			traceTLS(tctx, "", &ti.State, nil)
		} else {
			traceTLS(tctx, "", nil, err)
		}
	}
	c.rec.ph.mu.Lock()
	c.rec.ph.handshake += d
	c.rec.handshake = true
	if err != nil {
		c.rec.tlsErr = err
	}
	c.rec.ph.mu.Unlock()
	return conn, ai, err
}

func (c *timedCreds) Clone() credentials.TransportCredentials {
	return &timedCreds{TransportCredentials: c.TransportCredentials.Clone(), rec: c.rec}
}

// connect returns a new ClientConn (no I/O until the first call) whose
// dials and handshakes rec records.
func (p *grpcProber) connect(rec *grpcRecorder) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if p.tlsCfg != nil {
		creds = &timedCreds{TransportCredentials: credentials.NewTLS(p.tlsCfg), rec: rec}
	}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		ctx, traced := rec.traceCtx(ctx)
		c, err := p.net.dialPhases(ctx, p.dialer, p.host, p.port, &rec.ph, traced)
		if err != nil {
			rec.ph.mu.Lock()
			rec.dialErr = err
			rec.ph.mu.Unlock()
		}
		return c, err
	}
	return grpc.NewClient("passthrough:///"+p.target,
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(dial),
		grpc.WithNoProxy(),
		grpc.WithUserAgent(UserAgent),
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			// Longer than the probe: the probe's deadline ends a
			// connect, and reports it as a timeout.
			MinConnectTimeout: p.timeout + time.Second,
		}),
	)
}

// Probe calls Health/Check; see the file comment.
func (p *grpcProber) Probe(parent context.Context) Result {
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()

	var (
		cc  *grpc.ClientConn
		rec *grpcRecorder
		err error
	)
	if p.keep {
		p.mu.Lock()
		if p.cc == nil {
			p.rec = new(grpcRecorder)
			p.cc, err = p.connect(p.rec)
		}
		cc, rec = p.cc, p.rec
		p.mu.Unlock()
	} else {
		rec = new(grpcRecorder)
		cc, err = p.connect(rec)
	}
	if err != nil {
		return Result{Outcome: ConnectionFailed, Err: err}
	}
	traced := Traced(parent)
	if traced {
		rec.setTracer(tracerOf(parent))
		defer rec.setTracer(nil)
		how := "a fresh connection"
		if p.keep {
			how = "the kept connection (keep_alive), " + cc.GetState().String()
		}
		tracef(ctx, "call", "grpc.health.v1.Health/Check service %q on %s to %s", p.service, how, p.target)
	}

	// The call runs on a goroutine of its own so that Probe returns at
	// its deadline even when gRPC takes a moment to unwind; a fresh
	// connection is closed there too (Close waits for both).
	type reply struct {
		resp *healthpb.HealthCheckResponse
		pr   peer.Peer
		err  error
	}
	replies := make(chan reply, 1)
	start := time.Now()
	p.running.Add(1)
	go func() {
		defer p.running.Done()
		var rp reply
		rp.resp, rp.err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service}, grpc.Peer(&rp.pr))
		replies <- rp
		if !p.keep {
			_ = cc.Close()
		}
	}()
	var rp reply
	select {
	case rp = <-replies:
	case <-ctx.Done():
		rp.err = status.FromContextError(ctx.Err()).Err()
	}
	end := time.Now()
	resp, err, pr := rp.resp, rp.err, rp.pr
	fields, dialErr, tlsErr := rec.take()
	if pr.Addr != nil {
		if ip := remoteIP(pr.Addr); ip != "" {
			fields = append(fields, Field{"remote_address", ip})
		}
	}
	if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
		fields = tlsFields(fields, &ti.State, end)
	}
	res := Result{Latency: end.Sub(start)}
	if traced {
		if err != nil {
			st := status.Convert(err)
			tracef(ctx, "reply", "gRPC status %s: %s", codeName(st.Code()), st.Message())
		} else {
			tracef(ctx, "reply", "gRPC status OK, health status %s", resp.GetStatus())
		}
		tracef(ctx, "assert", "health status SERVING → %s", verdict(err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING))
	}
	if err != nil {
		st := status.Convert(err)
		fields = append(fields, Field{"grpc_status", codeName(st.Code())})
		res.Fields, res.Err = fields, err
		switch st.Code() {
		case codes.Unimplemented:
			res.Outcome = GRPCUnimplemented
		case codes.NotFound:
			res.Outcome = GRPCServiceUnknown
		case codes.DeadlineExceeded, codes.Canceled:
			res.Outcome = Timeout
		case codes.Unavailable:
			switch {
			case ctx.Err() != nil:
				res.Outcome = Timeout
			case tlsErr != nil:
				res.Outcome, res.Err = classify(ctx, tlsErr, true), tlsErr
			case dialErr != nil:
				res.Outcome, res.Err = classify(ctx, dialErr, false), dialErr
			default:
				res.Outcome = ConnectionFailed
			}
		default:
			res.Outcome = GRPCError
		}
		if deadline, _ := ctx.Deadline(); ctx.Err() != nil || !end.Before(deadline) {
			res.Outcome = Timeout
		}
		return res
	}
	s := resp.GetStatus()
	fields = append(fields, Field{"grpc_status", s.String()})
	res.Fields = fields
	switch s {
	case healthpb.HealthCheckResponse_SERVING:
		res.Outcome = Success
	case healthpb.HealthCheckResponse_NOT_SERVING:
		res.Outcome, res.Err = GRPCNotServing, errNotServing
	case healthpb.HealthCheckResponse_SERVICE_UNKNOWN:
		res.Outcome, res.Err = GRPCServiceUnknown, errServiceUnknown
	default:
		res.Outcome, res.Err = GRPCUnknown, fmt.Errorf("health status %s", s)
	}
	return res
}

var (
	errNotServing     = errors.New("health status NOT_SERVING")
	errServiceUnknown = errors.New("health status SERVICE_UNKNOWN")
)

// grpcCodeNames are the gRPC status codes as the gRPC specification
// spells them (statuscodes.md).
var grpcCodeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(grpcCodeNames) {
		return grpcCodeNames[c]
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}
