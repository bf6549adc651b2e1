package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http/httptrace"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
)

// UserAgent is the User-Agent header of HTTP probes, read when New builds a
// prober. The plugin sets it to "service_latency/<version>" at start-up; a
// "User-Agent" entry in headers overrides it.
var UserAgent = "service_latency"

// New validates rawURL and o and returns the prober for the URL's scheme:
// http and https → HTTP, tcp → TCP (tcp://host:port), dns → DNS
// (dns://[server[:port]]/name?type=A&transport=udp). It does no network
// I/O. Every error's text starts with the toml key at fault ("url: ...",
// "body_regex: ...", "timeout: ..."), and never contains a password.
//
// timeout bounds every probe (together with the context given to Probe).
// o should already carry the plugin-wide defaults (see Options.WithDefaults).
func New(rawURL string, timeout time.Duration, o Options) (Prober, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("timeout: must be > 0, got %s", timeout)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("url: cannot parse %q: %w", Redact(rawURL), err)
	}
	switch u.Scheme {
	case "http", "https":
		if k := o.tcpKeySet(); k != "" {
			return nil, fmt.Errorf("%s: not supported for %s probes (tcp only)", k, u.Scheme)
		}
		return checked(newHTTP(u, timeout, &o))
	case "tcp":
		if k := o.httpKeySet(); k != "" {
			return nil, fmt.Errorf("%s: not supported for tcp probes (http only)", k)
		}
		return checked(newTCP(u, timeout, &o))
	case "dns":
		if k := o.httpKeySet(); k != "" {
			return nil, fmt.Errorf("%s: not supported for dns probes (http only)", k)
		}
		if k := o.tcpKeySet(); k != "" {
			return nil, fmt.Errorf("%s: not supported for dns probes (tcp only)", k)
		}
		if k := tlsKeySet(&o.ClientConfig); k != "" {
			return nil, fmt.Errorf("%s: not supported for dns probes", k)
		}
		return checked(newDNS(u, timeout))
	case "":
		return nil, fmt.Errorf("url: missing scheme in %q (want http, https, tcp, dns)", Redact(rawURL))
	default:
		return nil, fmt.Errorf("url: unsupported scheme %q (want http, https, tcp, dns)", u.Scheme)
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

// Redact returns rawURL without the password of its userinfo
// ("http://user:pw@host/" → "http://user@host/"), for tags and messages. A
// URL that does not parse is redacted textually.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err == nil {
		if u.User == nil {
			return rawURL
		}
		if _, has := u.User.Password(); !has {
			return rawURL
		}
		u.User = url.User(u.User.Username())
		return u.String()
	}
	// Unparsable: drop everything between the first ':' of the userinfo and
	// the last '@' of the authority.
	i := strings.Index(rawURL, "://")
	if i < 0 {
		return rawURL
	}
	auth := rawURL[i+3:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	at := strings.LastIndexByte(auth, '@')
	if at < 0 {
		return rawURL
	}
	c := strings.IndexByte(auth[:at], ':')
	if c < 0 {
		return rawURL
	}
	return rawURL[:i+3+c] + rawURL[i+3+at:]
}

// hostPort validates the host (and optional port) of u. needPort makes a
// missing port an error.
func hostPort(u *url.URL, needPort bool) (host, port string, err error) {
	host = u.Hostname()
	if host == "" {
		return "", "", fmt.Errorf("url: missing host in %q", Redact(u.String()))
	}
	port = u.Port()
	if port == "" {
		if needPort {
			return "", "", fmt.Errorf("url: missing port in %q", Redact(u.String()))
		}
		return host, "", nil
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("url: invalid port %q", port)
	}
	return host, port, nil
}

// tlsKeySet returns the toml key of the first tls.ClientConfig field set in
// c, or "".
func tlsKeySet(c *telegraftls.ClientConfig) string {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if !v.Field(i).IsZero() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			return name
		}
	}
	return ""
}

// buildTLS validates c key by key (so the error names the key) and returns
// its tls.Config, which may be nil when c configures nothing.
func buildTLS(c *telegraftls.ClientConfig) (*tls.Config, error) {
	if c.TLSCA != "" {
		part := telegraftls.ClientConfig{TLSCA: c.TLSCA}
		if _, err := part.TLSConfig(); err != nil {
			return nil, fmt.Errorf("tls_ca: %w", err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		if c.TLSCert != "" {
			return nil, errors.New("tls_cert: requires tls_key")
		}
		return nil, errors.New("tls_key: requires tls_cert")
	}
	if c.TLSCert != "" {
		part := telegraftls.ClientConfig{TLSCert: c.TLSCert, TLSKey: c.TLSKey, TLSKeyPwd: c.TLSKeyPwd}
		if _, err := part.TLSConfig(); err != nil {
			return nil, fmt.Errorf("tls_cert: %w", err)
		}
	}
	if c.TLSMinVersion != "" {
		if _, err := telegraftls.ParseTLSVersion(c.TLSMinVersion); err != nil {
			return nil, fmt.Errorf("tls_min_version: %w", err)
		}
	}
	if len(c.TLSCipherSuites) != 0 {
		if _, err := telegraftls.ParseCiphers(c.TLSCipherSuites); err != nil {
			return nil, fmt.Errorf("tls_cipher_suites: %w", err)
		}
	}
	switch c.RenegotiationMethod {
	case "", "never", "once", "freely":
	default:
		return nil, fmt.Errorf("tls_renegotiation_method: %q is not one of never, once, freely", c.RenegotiationMethod)
	}
	cfg, err := c.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
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
