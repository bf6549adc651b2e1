package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// Tracer receives the steps of a probe as they happen: the -probe debug
// trace. A context without one (every gather) costs a context lookup per
// step and nothing else.
type Tracer func(step, detail string)

type tracerKey struct{}

// WithTracer returns a context whose probes report their steps to t.
func WithTracer(ctx context.Context, t Tracer) context.Context {
	return context.WithValue(ctx, tracerKey{}, t)
}

// Traced reports whether ctx carries a tracer.
func Traced(ctx context.Context) bool {
	_, ok := ctx.Value(tracerKey{}).(Tracer)
	return ok
}

// tracef reports a step to ctx's tracer, if any.
func tracef(ctx context.Context, step, format string, args ...any) {
	if t, ok := ctx.Value(tracerKey{}).(Tracer); ok {
		t(step, fmt.Sprintf(format, args...))
	}
}

// tracerOf returns ctx's tracer (nil when there is none).
func tracerOf(ctx context.Context) Tracer {
	t, _ := ctx.Value(tracerKey{}).(Tracer)
	return t
}

// The helpers below are called only when the probe is traced (callers
// check Traced once per probe and keep the answer): they format freely.

// previewBytes is how much of a body or a TCP answer a trace shows.
const previewBytes = 512

// printable renders b as one line: printable UTF-8 as it is, \n, \r, \t
// and \\ escaped, every other byte as \xHH.
func printable(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == '\\':
			sb.WriteString(`\\`)
		case r == utf8.RuneError && size <= 1, !unicode.IsPrint(r):
			for _, c := range b[:size] {
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		default:
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String()
}

// preview is printable of b's first previewBytes bytes, marked when cut.
func preview(b []byte) string {
	if len(b) > previewBytes {
		return printable(b[:previewBytes]) + " …"
	}
	return printable(b)
}

// credentialHeaders are request and response headers whose values are
// credentials, beyond those redact.IsCredentialName recognizes
// (Authorization, X-Api-Key, X-Auth-Token, ...).
var credentialHeaders = map[string]bool{
	"cookie": true, "set-cookie": true, "proxy-authorization": true,
}

// HeaderValue is what a trace shows of an HTTP header's value:
// "<redacted>" for a header that looks like a credential (by its name —
// Authorization, Cookie, X-Api-Key, X-Auth-Token, ... — or a value that
// starts with an authentication scheme such as "Bearer "), else the value
// with URL credentials redacted.
func HeaderValue(name, value string) string {
	return headerValue(name, value)
}

func headerValue(name, value string) string {
	if credentialHeaders[strings.ToLower(name)] || redact.IsCredentialName(name) {
		return "<redacted>"
	}
	if scheme, _, ok := strings.Cut(value, " "); ok {
		switch strings.ToLower(scheme) {
		case "basic", "bearer", "digest", "token", "negotiate", "aws4-hmac-sha256":
			return "<redacted>"
		}
	}
	return redact.Text(value)
}

// traceHeader reports one header line sent or received (step "send" or
// "recv").
func traceHeader(ctx context.Context, step, name, value string) {
	tracef(ctx, step, "%s: %s", name, headerValue(name, value))
}

// traceHeaders reports h sorted by name.
func traceHeaders(ctx context.Context, step string, h map[string][]string) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range h[k] {
			traceHeader(ctx, step, k, v)
		}
	}
}

// traceResolved reports what a host name resolved to and the order the
// addresses are tried in.
func traceResolved(ctx context.Context, n *netConfig, host string, first, second []netip.Addr, err error) {
	if err != nil {
		tracef(ctx, "resolve", "%s: %v", host, err)
		return
	}
	fam := n.family
	if fam == "" {
		fam = "auto"
	}
	if len(second) == 0 {
		tracef(ctx, "resolve", "%s → %s (ip_protocol %s)", host, addrList(first), fam)
		return
	}
	tracef(ctx, "resolve", "%s → %s, then %s (ip_protocol %s)", host, addrList(first), addrList(second), fam)
}

func addrList(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// traceTLS reports a TLS handshake: on success the version, cipher suite,
// ALPN and the presented chain; on failure the error, the chain the
// server presented (a verification error carries it) and which
// certificate failed verification, and why.
func traceTLS(ctx context.Context, serverName string, st *tls.ConnectionState, err error) {
	var chain []*x509.Certificate
	if st != nil {
		chain = st.PeerCertificates
		if serverName == "" {
			serverName = st.ServerName
		}
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) && len(verr.UnverifiedCertificates) > 0 {
		chain = verr.UnverifiedCertificates
	}
	if err == nil && st != nil {
		alpn := st.NegotiatedProtocol
		if alpn == "" {
			alpn = "none"
		}
		tracef(ctx, "tls", "handshake done: TLS %s, cipher %s, ALPN %s, server name %q, resumed %t",
			tlsVersion(st.Version), tls.CipherSuiteName(st.CipherSuite), alpn, serverName, st.DidResume)
	} else if err != nil {
		tracef(ctx, "tls", "handshake failed (server name %q): %v", serverName, err)
	}
	for i, c := range chain {
		tracef(ctx, "tls cert", "#%d subject %q, issuer %q, not before %s, not after %s%s",
			i, c.Subject.String(), c.Issuer.String(), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), certNames(c))
	}
	switch {
	case err != nil && verr != nil:
		i, c, why := failedCert(chain, verr.Err)
		if c == nil {
			tracef(ctx, "tls verify", "FAILED: %s", why)
			return
		}
		tracef(ctx, "tls verify", "FAILED at certificate #%d (subject %q, issuer %q, not after %s): %s",
			i, c.Subject.String(), c.Issuer.String(), c.NotAfter.UTC().Format(time.RFC3339), why)
	case err != nil:
	case st != nil && len(st.VerifiedChains) > 0:
		for j, vc := range st.VerifiedChains {
			names := make([]string, len(vc))
			for i, c := range vc {
				names[i] = strconv.Quote(c.Subject.String())
			}
			tracef(ctx, "tls verify", "ok: chain %d: %s", j, strings.Join(names, " → "))
		}
	case st != nil:
		tracef(ctx, "tls verify", "not verified (insecure_skip_verify)")
	}
}

// certNames lists a certificate's DNS and IP SANs.
func certNames(c *x509.Certificate) string {
	var n []string
	n = append(n, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 {
		return ""
	}
	if len(n) > 8 {
		n = append(n[:8], "…")
	}
	return ", names " + strings.Join(n, " ")
}

// failedCert finds the certificate a verification error is about and its
// index in chain (-1 when it is not in it), and says why.
func failedCert(chain []*x509.Certificate, err error) (int, *x509.Certificate, string) {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		c   *x509.Certificate
		why = fmt.Sprint(err)
	)
	switch {
	case errors.As(err, &ua):
		c = ua.Cert
		if c != nil && bytes.Equal(c.RawIssuer, c.RawSubject) {
			why += " (self-signed, not in the trusted roots: set tls_ca, or insecure_skip_verify)"
		} else if c != nil {
			why += fmt.Sprintf(" (its issuer %q is not in the trusted roots: set tls_ca)", c.Issuer.String())
		}
	case errors.As(err, &he):
		c = he.Certificate
	case errors.As(err, &ci):
		c = ci.Cert
		if ci.Reason == x509.Expired && c != nil {
			now := time.Now()
			switch {
			case now.After(c.NotAfter):
				why += fmt.Sprintf(" (expired %s ago)", now.Sub(c.NotAfter).Round(time.Second))
			case now.Before(c.NotBefore):
				why += fmt.Sprintf(" (valid only in %s)", c.NotBefore.Sub(now).Round(time.Second))
			}
		}
	}
	if c == nil {
		return -1, nil, why
	}
	for i, x := range chain {
		if x.Equal(c) {
			return i, c, why
		}
	}
	return -1, c, why
}

// captureReader passes reads through, counting the bytes and keeping the
// first previewBytes of them (a traced probe's body or TCP answer).
type captureReader struct {
	r    io.Reader
	n    int64
	head []byte
}

func (c *captureReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if room := previewBytes + 1 - len(c.head); room > 0 && n > 0 {
		c.head = append(c.head, p[:min(n, room)]...)
	}
	return n, err
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}
