// TCP prober (tcp://host:port).
//
// Latency spans, on the monotonic clock, from just before the dial until
// the last configured step has completed. The steps, in order:
//
//  1. dial: the DNS lookup of a host name (none for an IP literal) and the
//     TCP connect;
//  2. with tls = true (or tls_enable = true): the TLS handshake;
//  3. with send: writing send (complete once the kernel accepted the bytes);
//  4. with expect and/or expect_regex: reading until the bytes received so
//     far contain expect and match expect_regex.
//
// So without send/expect it is the connect (+ handshake) time, with send
// and expect it is connect (+ handshake) + one request/response round trip.
// The tls_* keys only take effect when TLS is on.
//
// Reading stops at a match, at EOF or a read error, after 64 KiB, or at the
// deadline. Outcomes: refused/reset/unreachable → ConnectionFailed; host
// name not resolvable → DNSError; handshake failure → TLSError; nothing
// received before EOF/error → ReadFailed; data received but no match by
// EOF, error, 64 KiB or the deadline → StringMismatch (the server did
// answer, wrongly); the deadline before any data (or during connect,
// handshake or send) → Timeout.
//
// Fields (float64 seconds): dns_lookup (host names only), tcp_connect, and
// with TLS tls_handshake, tls_cert_expiry, tls_version; remote_address
// (string) once connected. ip_protocol and source_address: see net.go.

package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// MaxExpectRead is how many bytes a TCP probe reads at most to match
// expect / expect_regex.
const MaxExpectRead = 64 << 10

type tcpProber struct {
	host    string
	port    string
	net     netConfig
	timeout time.Duration
	dialer  net.Dialer
	tlsCfg  *tls.Config
	send    []byte
	expect  []byte
	re      *regexp.Regexp
}

func newTCP(u *url.URL, timeout time.Duration, o *Options) (*tcpProber, error) {
	host, port, err := hostPort(u, "")
	if err != nil {
		return nil, err
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, keyerr.Errorf("url", "tcp URLs are tcp://host:port, got %q", redactURL(u.String()))
	}
	nc, err := newNetConfig(o)
	if err != nil {
		return nil, err
	}
	p := &tcpProber{
		host:    host,
		port:    port,
		net:     nc,
		timeout: timeout,
		dialer:  nc.dialer(timeout, "tcp"),
	}
	if o.Send != "" {
		p.send = []byte(o.Send)
	}
	if o.Expect != "" {
		p.expect = []byte(o.Expect)
	}
	if o.ExpectRegex != "" {
		if p.re, err = regexp.Compile(o.ExpectRegex); err != nil {
			return nil, keyerr.New("expect_regex", err)
		}
	}

	enable := o.ClientConfig.Enable
	if o.TLS != nil && *o.TLS && enable != nil && !*enable {
		return nil, keyerr.Errorf("tls", "tls = true conflicts with tls_enable = false")
	}
	if (o.TLS != nil && *o.TLS) || (enable != nil && *enable) {
		if p.tlsCfg, err = dialTLS(&o.ClientConfig, host); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Kind returns "tcp".
func (*tcpProber) Kind() string { return "tcp" }

// Close does nothing: a TCP prober keeps no connection.
func (*tcpProber) Close() {}

var readPool = sync.Pool{New: func() any { return new([MaxExpectRead]byte) }}

// Probe connects, optionally handshakes, sends and reads; see the file
// comment.
func (p *tcpProber) Probe(parent context.Context) Result {
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()

	traced := Traced(parent)
	ph := new(phases)
	start := time.Now()
	conn, err := p.net.dial(httptrace.WithClientTrace(ctx, ph.dialTrace()), p.dialer, "tcp", p.host, p.port, traced)
	now := time.Now()
	ph.mu.Lock()
	fields := remoteField(ph.appendDial(make([]Field, 0, 6)), conn)
	ph.mu.Unlock()
	if err != nil {
		return Result{Outcome: classify(ctx, err, false), Latency: now.Sub(start), Err: err, Fields: fields}
	}
	defer conn.Close() // the raw conn: no close_notify that could block
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(pastDeadline) })
	defer stop()

	fail := func(o Outcome, err error) Result {
		return Result{Outcome: o, Latency: time.Since(start), Err: err, Fields: fields}
	}

	var rw io.ReadWriter = conn
	if p.tlsCfg != nil {
		hsStart := time.Now()
		tc := tls.Client(conn, p.tlsCfg)
		if traced {
			tracef(ctx, "tls", "handshake start (server name %q)", p.tlsCfg.ServerName)
		}
		err := tc.HandshakeContext(ctx)
		now := time.Now()
		fields = append(fields, Field{"tls_handshake", now.Sub(hsStart).Seconds()})
		if traced {
			if err != nil {
				traceTLS(ctx, p.tlsCfg.ServerName, nil, err)
			} else {
				st := tc.ConnectionState()
				traceTLS(ctx, p.tlsCfg.ServerName, &st, nil)
			}
		}
		if err != nil {
			if o := classify(ctx, err, false); o == Timeout {
				return fail(Timeout, err)
			}
			return fail(TLSError, err)
		}
		st := tc.ConnectionState()
		fields = tlsFields(fields, &st, now)
		rw = tc
	}

	if p.send != nil {
		if _, err := rw.Write(p.send); err != nil {
			if traced {
				tracef(ctx, "send", "%d bytes failed: %v", len(p.send), err)
			}
			return fail(classify(ctx, err, false), err)
		}
		if traced {
			tracef(ctx, "send", "%d bytes: %s", len(p.send), redact.Text(preview(p.send)))
		}
	}
	if p.expect != nil || p.re != nil {
		if o, err := p.readExpect(ctx, rw, traced); o != Success {
			return fail(o, err)
		}
	}
	return Result{Outcome: Success, Latency: time.Since(start), Fields: fields}
}

var (
	errNothingRead = errors.New("connection closed before any data was read")
	errExpect      = errors.New("response does not contain expect")
	errExpectRegex = errors.New("response does not match expect_regex")
)

// readExpect reads until the data matches (Success), or fails.
// traced: report what was read and the verdicts to ctx's tracer.
func (p *tcpProber) readExpect(ctx context.Context, r io.Reader, traced bool) (o Outcome, err error) {
	bufp := readPool.Get().(*[MaxExpectRead]byte)
	defer readPool.Put(bufp)
	buf := bufp[:]
	n, from := 0, 0
	found := p.expect == nil
	if traced {
		defer func() { p.traceExpect(ctx, buf[:n], found, o, err) }()
	}
	for {
		m, err := r.Read(buf[n:])
		n += m
		if m > 0 {
			if !found {
				// Earlier bytes were searched already; only the tail
				// that could start a match is searched again.
				found = bytes.Contains(buf[from:n], p.expect)
				if n >= len(p.expect) {
					from = n - len(p.expect) + 1
				}
			}
			if found && (p.re == nil || p.re.Match(buf[:n])) {
				return Success, nil
			}
		}
		if err != nil {
			switch {
			case n > 0 && classify(ctx, err, false) == Timeout:
				return StringMismatch, fmt.Errorf("%w before the deadline (%d bytes read)", p.mismatch(found), n)
			case classify(ctx, err, false) == Timeout:
				return Timeout, err
			case n == 0 && errors.Is(err, io.EOF):
				return ReadFailed, errNothingRead
			case n == 0:
				return ReadFailed, err
			}
			return StringMismatch, p.mismatch(found)
		}
		if n == len(buf) {
			return StringMismatch, fmt.Errorf("%w in the first %d bytes", p.mismatch(found), n)
		}
	}
}

// traceExpect reports the bytes read and the verdict of expect and
// expect_regex.
func (p *tcpProber) traceExpect(ctx context.Context, got []byte, found bool, o Outcome, err error) {
	if err != nil && o != StringMismatch {
		tracef(ctx, "recv", "%d bytes, then %v: %s", len(got), err, preview(got))
	} else {
		tracef(ctx, "recv", "%d bytes: %s", len(got), preview(got))
	}
	if o == Timeout || o == ReadFailed {
		return
	}
	if p.expect != nil {
		tracef(ctx, "assert", "expect %q → %s", p.expect, verdict(found))
	}
	if p.re != nil {
		tracef(ctx, "assert", "expect_regex %q → %s", p.re.String(), verdict(o == Success || p.re.Match(got)))
	}
}

func (p *tcpProber) mismatch(found bool) error {
	if !found {
		return errExpect
	}
	return errExpectRegex
}
