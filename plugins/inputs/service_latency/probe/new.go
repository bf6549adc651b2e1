package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// UserAgent is the User-Agent header of HTTP probes, read when New builds a
// prober. The plugin sets it to "service_latency/<version>" at start-up; a
// "User-Agent" entry in headers overrides it.
var UserAgent = "service_latency"

// New validates rawURL and o and returns the prober for the URL's scheme:
// http and https → HTTP, tcp → TCP (tcp://host:port), dns → DNS
// (dns://[server[:port]]/name?type=A&transport=udp), icmp → ICMP
// (icmp://host), grpc and grpcs → the gRPC health check
// (grpc://host:port[/service]). It sends nothing over the network; it
// opens and closes sockets to check what it must (an ICMP socket of the
// kind privileged picks, a UDP socket bound to source_address). Every error is a *keyerr.Error whose Key is the toml key at fault
// ("url", "body_regex", "timeout", "tls_ca", ...); no error contains a
// password. On error the Prober is nil.
//
// timeout bounds every probe (together with the context given to Probe).
// o should already carry the plugin-wide defaults (see Options.WithDefaults).
func New(rawURL string, timeout time.Duration, o Options) (Prober, error) {
	return NewShared(rawURL, timeout, &o)
}

// NewShared is New with the options by reference, for callers that pass
// the same options to many probers (a config's defaults for a scheme):
// no copy of Options per prober. o is only read, by concurrent calls too.
func NewShared(rawURL string, timeout time.Duration, o *Options) (Prober, error) {
	if timeout <= 0 {
		return nil, keyerr.Errorf("timeout", "must be > 0, got %s", timeout)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, keyerr.Errorf("url", "cannot parse %q: %w", redactURL(rawURL), err)
	}
	if _, known := schemeGroups[u.Scheme]; !known {
		if u.Scheme == "" {
			return nil, keyerr.Errorf("url", "missing scheme in %q (want %s)", redactURL(rawURL), schemeList)
		}
		return nil, keyerr.Errorf("url", "unsupported scheme %q (want %s)", u.Scheme, schemeList)
	}
	if err := o.misplacedKey(u.Scheme); err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http", "https":
		return checked(newHTTP(u, timeout, o))
	case "tcp":
		return checked(newTCP(u, timeout, o))
	case "icmp":
		return checked(newICMP(u, timeout, o))
	case "grpc", "grpcs":
		return checked(newGRPC(u, timeout, o))
	default: // "dns"
		return checked(newDNS(u, timeout, o))
	}
}

// checked returns a nil Prober (not a typed nil pointer in a non-nil
// interface) with an error.
func checked[P Prober](p P, err error) (Prober, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// redactURL is redact.URL, also for a scheme-relative URL
// ("//user:pw@host/", which url.Parse reads with a password but
// redact.URL, seeing no "://", leaves as it is).
func redactURL(rawURL string) string {
	if strings.HasPrefix(rawURL, "//") {
		return strings.TrimPrefix(redact.URL("x:"+rawURL), "x:")
	}
	return redact.URL(rawURL)
}

// hostPort returns the host and port of u, the one check of a URL's port:
// it must be 1..65535. A URL without a port gets defaultPort; with
// defaultPort "" the port is required.
func hostPort(u *url.URL, defaultPort string) (host, port string, err error) {
	host = u.Hostname()
	if host == "" {
		return "", "", keyerr.Errorf("url", "missing host in %q", redactURL(u.String()))
	}
	port = u.Port()
	if port == "" {
		if defaultPort == "" {
			return "", "", keyerr.Errorf("url", "missing port in %q", redactURL(u.String()))
		}
		return host, defaultPort, nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", keyerr.Errorf("url", "invalid port %q", port)
	}
	return host, port, nil
}

// dialTLS is the TLS configuration of a prober that does its own
// handshake (tcp with TLS, grpcs): buildTLS's, else a bare one, with host
// as ServerName unless set.
func dialTLS(c *telegraftls.ClientConfig, host string) (*tls.Config, error) {
	cfg, err := buildTLS(c)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	return cfg, nil
}

// buildTLS validates c key by key (so the error names the key) and returns
// its tls.Config, which may be nil when c configures nothing.
func buildTLS(c *telegraftls.ClientConfig) (*tls.Config, error) {
	if c.TLSCA != "" {
		part := telegraftls.ClientConfig{TLSCA: c.TLSCA}
		if _, err := part.TLSConfig(); err != nil {
			return nil, keyerr.New("tls_ca", err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		if c.TLSCert != "" {
			return nil, keyerr.Errorf("tls_cert", "requires tls_key")
		}
		return nil, keyerr.Errorf("tls_key", "requires tls_cert")
	}
	if c.TLSCert != "" {
		part := telegraftls.ClientConfig{TLSCert: c.TLSCert, TLSKey: c.TLSKey, TLSKeyPwd: c.TLSKeyPwd}
		if _, err := part.TLSConfig(); err != nil {
			return nil, keyerr.New("tls_cert", err)
		}
	}
	if c.TLSMinVersion != "" {
		if _, err := telegraftls.ParseTLSVersion(c.TLSMinVersion); err != nil {
			return nil, keyerr.New("tls_min_version", err)
		}
	}
	if len(c.TLSCipherSuites) != 0 {
		if _, err := telegraftls.ParseCiphers(c.TLSCipherSuites); err != nil {
			return nil, keyerr.New("tls_cipher_suites", err)
		}
	}
	switch c.RenegotiationMethod {
	case "", "never", "once", "freely":
	default:
		return nil, keyerr.Errorf("tls_renegotiation_method", "%q is not one of never, once, freely", c.RenegotiationMethod)
	}
	cfg, err := c.TLSConfig()
	if err != nil {
		// Unreachable after the checks above: blame the first key set.
		return nil, keyerr.New((&Options{ClientConfig: *c}).keySet(groupTLS), err)
	}
	if cfg != nil && cfg.MinVersion == 0 {
		// tls_enable = true alone: Telegraf returns a bare config.
		cfg.MinVersion = telegraftls.TLSMinVersionDefault
	}
	return cfg, nil
}

// phases collects the timings of one probe from httptrace hooks. The hooks
// run on the transport's goroutines (and a losing parallel dial may report
// after the probe returned), hence the mutex.
type phases struct {
	mu                                          sync.Mutex
	dnsStart, connStart, tlsStart, wrote, first time.Time
	dns, connect, handshake, ttfb               time.Duration
	did                                         uint8
	tlsFailed                                   bool
	remote                                      string // remote_address
	// traced: the probe reports its steps to its context's tracer (set
	// before the probe starts, read-only then).
	traced bool
}

const (
	didDNS uint8 = 1 << iota
	didConnect
	didTLS
	didTTFB
)

// trace returns hooks that fill ph. A phase that happens several times
// (redirects) is summed. For parallel dials (happy eyeballs) tcp_connect
// runs from the first connect attempt to the first established connection.
func (ph *phases) trace() *httptrace.ClientTrace {
	t := ph.dialTrace()
	t.TLSHandshakeStart = func() {
		ph.mu.Lock()
		ph.tlsStart = time.Now()
		ph.mu.Unlock()
	}
	t.TLSHandshakeDone = func(_ tls.ConnectionState, err error) {
		ph.mu.Lock()
		if !ph.tlsStart.IsZero() {
			ph.handshake += time.Since(ph.tlsStart)
			ph.tlsStart = time.Time{}
			ph.did |= didTLS
		}
		if err != nil {
			ph.tlsFailed = true
		}
		ph.mu.Unlock()
	}
	t.GotConn = func(info httptrace.GotConnInfo) {
		if info.Conn == nil {
			return
		}
		ip := remoteIP(info.Conn.RemoteAddr())
		ph.mu.Lock()
		ph.remote = ip
		ph.mu.Unlock()
	}
	t.WroteRequest = func(httptrace.WroteRequestInfo) {
		ph.mu.Lock()
		ph.wrote = time.Now()
		ph.mu.Unlock()
	}
	t.GotFirstResponseByte = func() {
		ph.mu.Lock()
		now := time.Now()
		if !ph.wrote.IsZero() {
			ph.ttfb += now.Sub(ph.wrote)
			ph.wrote = time.Time{}
			ph.did |= didTTFB
		}
		ph.first = now
		ph.mu.Unlock()
	}
	return t
}

// traceTransport adds to t (ph.trace's hooks) the steps of a traced
// probe on the Transport path: the TLS handshake, each request header
// written, the request sent, the first response byte. The hooks run on
// the Transport's goroutines; the tracer serializes. serverName is the
// TLS server name of the first request (SNI is not sent for an IP).
func traceTransport(ctx context.Context, t *httptrace.ClientTrace, serverName string) {
	tlsDone := t.TLSHandshakeDone
	t.TLSHandshakeStart = chain0(t.TLSHandshakeStart, func() { tracef(ctx, "tls", "handshake start") })
	t.TLSHandshakeDone = func(st tls.ConnectionState, err error) {
		tlsDone(st, err)
		name := st.ServerName
		if name == "" {
			name = serverName
		}
		traceTLS(ctx, name, &st, err)
	}
	t.WroteHeaderField = func(key string, values []string) {
		for _, v := range values {
			traceHeader(ctx, "send", key, v)
		}
	}
	wrote := t.WroteRequest
	t.WroteRequest = func(info httptrace.WroteRequestInfo) {
		wrote(info)
		if info.Err != nil {
			tracef(ctx, "sent", "request failed: %v", info.Err)
		} else {
			tracef(ctx, "sent", "request written")
		}
	}
	t.GotFirstResponseByte = chain0(t.GotFirstResponseByte, func() { tracef(ctx, "first byte", "of the response") })
	t.Got1xxResponse = func(code int, _ textproto.MIMEHeader) error {
		tracef(ctx, "response", "%d %s (interim, skipped)", code, http.StatusText(code))
		return nil
	}
}

func chain0(a, b func()) func() {
	return func() { a(); b() }
}

// dialTrace returns the DNS and connect hooks only (for net.Dialer).
func (ph *phases) dialTrace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		DNSStart: func(httptrace.DNSStartInfo) {
			ph.mu.Lock()
			ph.dnsStart = time.Now()
			ph.mu.Unlock()
		},
		DNSDone: func(httptrace.DNSDoneInfo) {
			ph.mu.Lock()
			if !ph.dnsStart.IsZero() {
				ph.dns += time.Since(ph.dnsStart)
				ph.dnsStart = time.Time{}
				ph.did |= didDNS
			}
			ph.mu.Unlock()
		},
		ConnectStart: func(string, string) {
			ph.mu.Lock()
			if ph.connStart.IsZero() {
				ph.connStart = time.Now()
			}
			ph.mu.Unlock()
		},
		ConnectDone: func(_, _ string, err error) {
			ph.mu.Lock()
			if err == nil && !ph.connStart.IsZero() {
				ph.connect += time.Since(ph.connStart)
				ph.connStart = time.Time{}
				ph.did |= didConnect
			}
			ph.mu.Unlock()
		},
	}
}

// appendDial appends dns_lookup and tcp_connect (those that happened).
func (ph *phases) appendDial(f []Field) []Field {
	if ph.did&didDNS != 0 {
		f = append(f, Field{"dns_lookup", ph.dns.Seconds()})
	}
	if ph.did&didConnect != 0 {
		f = append(f, Field{"tcp_connect", ph.connect.Seconds()})
	}
	return f
}

// tlsFields appends tls_cert_expiry and tls_version for an established
// TLS connection. The expiry is that of the verified chain that lasts
// longest, each chain expiring with its earliest NotAfter; without
// verification (insecure_skip_verify) the presented chain is used.
func tlsFields(f []Field, st *tls.ConnectionState, now time.Time) []Field {
	var expiry time.Time
	for _, chain := range st.VerifiedChains {
		if e := earliest(chain); e.After(expiry) {
			expiry = e
		}
	}
	if expiry.IsZero() {
		expiry = earliest(st.PeerCertificates)
	}
	if !expiry.IsZero() {
		f = append(f, Field{"tls_cert_expiry", expiry.Sub(now).Seconds()})
	}
	return append(f, Field{"tls_version", tlsVersion(st.Version)})
}

func earliest(chain []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range chain {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return strings.TrimPrefix(tls.VersionName(v), "TLS ")
}

// classify maps a network error to an outcome. ctx is the probe's own
// context: once it is done, whatever failed failed for lack of time.
func classify(ctx context.Context, err error, tlsFailed bool) Outcome {
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return Timeout
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsTimeout {
			return Timeout
		}
		return DNSError
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return Timeout
	}
	if tlsFailed || isTLSError(err) {
		return TLSError
	}
	return ConnectionFailed
}

func isTLSError(err error) bool {
	var (
		verr  *tls.CertificateVerificationError
		rerr  tls.RecordHeaderError
		aerr  tls.AlertError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cerr  x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &rerr) || errors.As(err, &aerr) ||
		errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cerr)
}

// pastDeadline is a deadline that has passed; setting it aborts blocked I/O.
var pastDeadline = time.Unix(1, 0)
