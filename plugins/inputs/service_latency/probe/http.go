// HTTP/HTTPS prober.
//
// Latency spans, on the monotonic clock, from just before the request is
// handed to the HTTP client until the response body has been read to its
// end (or to max_body_size). It therefore includes, for a fresh connection,
// the DNS lookup, the TCP connect, a proxy's CONNECT and the TLS handshake,
// then writing the request, the server's think time and the body transfer.
// With follow_redirects it spans the whole chain of requests; the bodies of
// intermediate redirects are discarded by the client and only the final
// body is read. On a status mismatch the body is not read (the verdict is
// known from the status line) and latency stops at the response headers;
// either way latency is only a sample when the outcome is Success.
//
// Fields (float64 seconds, summed over redirects; a phase that did not
// happen is absent): dns_lookup, tcp_connect, tls_handshake,
// time_to_first_byte (request written → first response byte),
// body_transfer (final first byte → body read). Also http_response_code
// (int64, whenever a response came), remote_address (string, the IP the
// connection went to — the proxy's with a proxy — once connected; see
// net.go for ip_protocol and source_address) and, for a TLS connection,
// tls_cert_expiry (seconds until the verified chain expires, negative once
// expired) and tls_version ("1.3").
//
// Redirects: follow_redirects = false (default) returns the 3xx itself as
// the answer. With follow_redirects = true at most 10 redirects are
// followed; the 11th is not, and the probe ends with
// ResponseStatusCodeMismatch (http_response_code = the last 3xx, Err
// "stopped after 10 redirects"), whatever expected_status says. A slow
// redirect loop ends at the deadline with Timeout.
//
// Requests use HTTP/1.1. Without keep_alive every probe opens (and closes)
// its own connection. In the default configuration — no keep_alive, no
// proxy, follow_redirects = false — the probe runs on the calling goroutine
// without net/http's Transport (http_fast.go), measuring the same phases at
// the same points; otherwise each prober owns one http.Transport.

package probe

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/influxdata/telegraf/config"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

const (
	// DefaultMaxBodySize is the max_body_size when none is set.
	DefaultMaxBodySize = 1 << 20
	// MaxRedirects is how many redirects follow_redirects follows.
	MaxRedirects = 10

	maxResponseHeaderBytes = 256 << 10
	idleConnTimeout        = 90 * time.Second
)

var errTooManyRedirects = fmt.Errorf("stopped after %d redirects", MaxRedirects)

// defaultPort is the port of an http or https URL without one.
var defaultPort = map[string]string{"http": "80", "https": "443"}

type authKind uint8

const (
	authNone   authKind = iota // nothing, or URL userinfo baked into the header
	authBasic                  // username/password secrets
	authBearer                 // bearer_token secret
)

type httpProber struct {
	// fast is the fast path (http_fast.go), nil when the prober uses the
	// Transport: then client and transport are set.
	fast      *fastHTTP
	client    *http.Client
	transport *http.Transport
	// base carries method, URL, headers and Host; it is shared read-only
	// by concurrent probes (each gets a shallow copy via WithContext).
	base     *http.Request
	body     string
	getBody  func() (io.ReadCloser, error)
	timeout  time.Duration
	expected statusSet
	// expectedText is expected_status as the trace shows it.
	expectedText string
	contains     []byte
	re           *regexp.Regexp
	maxBody      int64

	auth                       authKind
	username, password, bearer config.Secret
}

func newHTTP(u *url.URL, timeout time.Duration, o *Options) (*httpProber, error) {
	return buildHTTP(u, timeout, o, true)
}

// buildHTTP is newHTTP; without fastOK the prober always uses the Transport
// (for tests that compare both paths).
func buildHTTP(u *url.URL, timeout time.Duration, o *Options, fastOK bool) (*httpProber, error) {
	host, port, err := hostPort(u, defaultPort[u.Scheme])
	if err != nil {
		return nil, err
	}
	p := &httpProber{timeout: timeout, body: o.Body}

	method := o.Method
	if method == "" {
		method = http.MethodGet
	}
	if !isToken(method) {
		return nil, keyerr.Errorf("method", "invalid method %q", method)
	}

	var header http.Header
	if len(o.Headers) == 0 && u.User == nil {
		header = sharedHeaders(UserAgent).plain // nothing of the service's own
	} else {
		header = make(http.Header, len(o.Headers)+2)
		header.Set("User-Agent", UserAgent)
	}
	reqHost := ""
	for k, v := range o.Headers {
		if !isToken(k) {
			return nil, keyerr.Errorf("headers", "invalid header name %q", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, keyerr.Errorf("headers", "invalid value for header %q", k)
		}
		if strings.EqualFold(k, "Host") {
			reqHost = v
			continue
		}
		header.Set(k, v)
	}

	if err := p.expected.parse(o.ExpectedStatus); err != nil {
		return nil, err
	}
	p.expectedText = strings.Join(o.ExpectedStatus, ",")
	if len(o.ExpectedStatus) == 0 {
		p.expectedText = "2xx,3xx (default)"
	}
	if o.BodyContains != "" {
		p.contains = []byte(o.BodyContains)
	}
	if o.BodyRegex != "" {
		if p.re, err = regexp.Compile(o.BodyRegex); err != nil {
			return nil, keyerr.New("body_regex", err)
		}
	}
	switch {
	case o.MaxBodySize < 0:
		return nil, keyerr.Errorf("max_body_size", "must be >= 0, got %d", o.MaxBodySize)
	case o.MaxBodySize == 0:
		p.maxBody = DefaultMaxBodySize
	default:
		p.maxBody = int64(o.MaxBodySize)
	}

	// Credentials: bearer_token, else username/password, else URL userinfo.
	basic := !o.Username.Empty() || !o.Password.Empty()
	switch {
	case !o.BearerToken.Empty() && (basic || u.User != nil):
		return nil, keyerr.Errorf("bearer_token", "cannot be combined with username/password or URL credentials")
	case !o.BearerToken.Empty():
		p.auth, p.bearer = authBearer, o.BearerToken
	case basic:
		p.auth, p.username, p.password = authBasic, o.Username, o.Password
	case u.User != nil:
		pw, _ := u.User.Password()
		header.Set("Authorization", string(appendBasic(nil, []byte(u.User.Username()), []byte(pw))))
	}

	tlsCfg, err := buildTLS(&o.ClientConfig)
	if err != nil {
		return nil, err
	}
	nc, err := newNetConfig(o)
	if err != nil {
		return nil, err
	}

	if o.HTTPProxyURL != "" {
		pu, err := url.Parse(o.HTTPProxyURL)
		if err != nil {
			return nil, keyerr.Errorf("http_proxy_url", "cannot parse %q", redactURL(o.HTTPProxyURL))
		}
		switch pu.Scheme {
		case "http", "https", "socks5", "socks5h":
		default:
			return nil, keyerr.Errorf("http_proxy_url", "unsupported scheme %q (want http, https, socks5)", pu.Scheme)
		}
		if pu.Host == "" {
			return nil, keyerr.Errorf("http_proxy_url", "missing host in %q", redactURL(o.HTTPProxyURL))
		}
	}
	proxyFunc, err := o.HTTPProxy.Proxy()
	if err != nil {
		return nil, keyerr.Errorf("http_proxy_url", "cannot parse")
	}

	keepAlive := o.KeepAlive != nil && *o.KeepAlive
	follow := o.FollowRedirects != nil && *o.FollowRedirects

	target := u // u is this prober's own (NewShared parsed it)
	if u.User != nil {
		withoutUser := *u
		withoutUser.User = nil
		target = &withoutUser
	}
	p.base = &http.Request{
		Method:     method,
		URL:        target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     header,
		Host:       reqHost,
	}
	if fastOK && !keepAlive && !follow && proxyFunc == nil {
		if p.fast = newFastHTTP(u, host, port, p.base, p.body, p.auth, tlsCfg, timeout, nc); p.fast != nil {
			return p, nil
		}
	}

	dialer := nc.dialer(timeout, "tcp")
	if keepAlive {
		dialer.KeepAlive = 0 // Go's default TCP keep-alive
	}
	p.transport = &http.Transport{
		Proxy: proxyFunc,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ph, ok := ctx.Value(phasesKey{}).(*phases)
			c, err := nc.dial(ctx, dialer, network, host, port, ok && ph.traced)
			if ok && err == nil {
				// Also when TLS then fails (GotConn is not called then).
				ip := remoteIP(c.RemoteAddr())
				ph.mu.Lock()
				ph.remote = ip
				ph.mu.Unlock()
			}
			return c, err
		},
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    timeout,
		DisableKeepAlives:      !keepAlive,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        idleConnTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
	p.client = &http.Client{
		Transport: p.transport,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if !follow {
				return http.ErrUseLastResponse
			}
			traced := false
			if ph, ok := req.Context().Value(phasesKey{}).(*phases); ok && ph.traced {
				traced = true
				traceResponse(req.Context(), req.Response)
			}
			if len(via) > MaxRedirects {
				if traced {
					tracef(req.Context(), "redirect", "to %s: not followed, %v", redactURL(req.URL.String()), errTooManyRedirects)
				}
				return errTooManyRedirects
			}
			if traced {
				tracef(req.Context(), "redirect", "%d of at most %d: %s %s", len(via), MaxRedirects, req.Method, redactURL(req.URL.String()))
			}
			return nil
		},
	}

	if p.body != "" {
		p.getBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(p.body)), nil }
	}
	return p, nil
}

// defaultHeaders are the request headers of every prober that sets no
// header of its own, for one User-Agent: plain is what such a request
// carries, gzip the same with the Accept-Encoding the fast path adds.
// Probers share them read-only (nothing writes a request's Header: the
// Transport path clones it to add credentials), so 100,000 services are
// not 100,000 copies of the same two maps.
type defaultHeaders struct {
	plain, gzip http.Header
}

var sharedHeaderSets sync.Map // User-Agent → *defaultHeaders

// sharedHeaders returns the default headers for userAgent.
func sharedHeaders(userAgent string) *defaultHeaders {
	if d, ok := sharedHeaderSets.Load(userAgent); ok {
		return d.(*defaultHeaders)
	}
	d := &defaultHeaders{
		plain: http.Header{"User-Agent": {userAgent}},
		gzip:  http.Header{"User-Agent": {userAgent}, "Accept-Encoding": {"gzip"}},
	}
	actual, _ := sharedHeaderSets.LoadOrStore(userAgent, d)
	return actual.(*defaultHeaders)
}

// phasesKey carries a probe's *phases to the Transport's DialContext.
type phasesKey struct{}

// Kind returns "http" (for http and https URLs).
func (*httpProber) Kind() string { return "http" }

// Close closes the transport's idle (keep-alive) connections.
func (p *httpProber) Close() {
	if p.transport != nil {
		p.transport.CloseIdleConnections()
	}
}

// Probe sends one request and reads the answer; see the file comment.
func (p *httpProber) Probe(parent context.Context) Result {
	if p.fast != nil {
		return p.probeFast(parent)
	}
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()

	traced := Traced(parent)
	ph := &phases{traced: traced}
	ht := ph.trace()
	if traced {
		tracef(ctx, "request", "%s %s HTTP/1.1 (net/http Transport)", p.base.Method, redactURL(p.base.URL.String()))
		name := p.base.URL.Hostname()
		if c := p.transport.TLSClientConfig; c != nil && c.ServerName != "" {
			name = c.ServerName
		}
		traceTransport(ctx, ht, name)
		if p.body != "" {
			tracef(ctx, "send", "body %d bytes: %s", len(p.body), redact.Text(preview([]byte(p.body))))
		}
	}
	req := p.base.WithContext(httptrace.WithClientTrace(context.WithValue(ctx, phasesKey{}, ph), ht))
	if p.body != "" {
		req.Body, _ = p.getBody()
		req.GetBody = p.getBody
		req.ContentLength = int64(len(p.body))
	}
	if err := p.authorize(req); err != nil {
		if errors.Is(err, errInvalidAuth) { // as the Transport would refuse it
			return Result{Outcome: ConnectionFailed, Err: &url.Error{Op: urlErrorOp(req.Method), URL: req.URL.String(), Err: err}, Fields: make([]Field, 0, 8)}
		}
		return Result{Outcome: ConnectionFailed, Err: err}
	}

	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		now := time.Now()
		if traced {
			if resp != nil {
				tracef(ctx, "assert", "redirects: more than %d → FAIL", MaxRedirects)
			}
			tracef(ctx, "error", "%v", err)
		}
		ph.mu.Lock()
		defer ph.mu.Unlock()
		if resp != nil && errors.Is(err, errTooManyRedirects) {
			return Result{
				Outcome: ResponseStatusCodeMismatch,
				Latency: now.Sub(start),
				Err:     err,
				Fields:  ph.httpFields(resp, time.Time{}, now),
			}
		}
		return Result{
			Outcome: classify(ctx, err, ph.tlsFailed),
			Latency: now.Sub(start),
			Err:     err,
			Fields:  ph.httpFields(nil, time.Time{}, now),
		}
	}
	defer resp.Body.Close()
	if traced {
		traceResponse(ctx, resp)
		p.traceStatus(ctx, resp.StatusCode)
	}

	if !p.expected.has(resp.StatusCode) {
		ph.mu.Lock()
		defer ph.mu.Unlock()
		return statusMismatch(resp, start, ph)
	}
	deadline, _ := ctx.Deadline()
	outcome, end, err := p.readBodyBy(ctx, deadline, resp.Body, resp.ContentLength, traced)
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return Result{
		Outcome: outcome,
		Latency: end.Sub(start),
		Err:     err,
		Fields:  ph.httpFields(resp, end, end),
	}
}

// statusMismatch is the Result of an answer whose status is not an
// expected_status: the body is not read, latency ends now.
func statusMismatch(resp *http.Response, start time.Time, ph *phases) Result {
	now := time.Now()
	return Result{
		Outcome: ResponseStatusCodeMismatch,
		Latency: now.Sub(start),
		Err:     fmt.Errorf("status %d is not an expected_status", resp.StatusCode),
		Fields:  ph.httpFields(resp, time.Time{}, now),
	}
}

// readBodyBy reads and matches the body (readBody) and returns when it
// ended; a read cut short by the deadline is a Timeout, not a
// BodyReadError. traced: report the body and the verdicts to ctx's tracer.
func (p *httpProber) readBodyBy(ctx context.Context, deadline time.Time, body io.Reader, declared int64, traced bool) (Outcome, time.Time, error) {
	var cr *captureReader
	if traced {
		cr = &captureReader{r: body}
		body = cr
	}
	outcome, err := p.readBody(body, declared)
	end := time.Now()
	if outcome == BodyReadError && (ctx.Err() != nil || !end.Before(deadline) || classify(ctx, err, false) == Timeout) {
		outcome = Timeout
	}
	if traced {
		p.traceBody(ctx, cr, declared, outcome, err)
	}
	return outcome, end, err
}

// traceBody reports the body read (its size and first bytes) and the
// verdict of each body assertion.
func (p *httpProber) traceBody(ctx context.Context, cr *captureReader, declared int64, outcome Outcome, err error) {
	if declared > p.maxBody {
		tracef(ctx, "assert", "max_body_size %d: Content-Length %d → FAIL (body not read)", p.maxBody, declared)
		return
	}
	state := "read to its end"
	switch {
	case cr.n > p.maxBody:
		state = "cut at max_body_size"
	case err != nil && outcome != ResponseStringMismatch:
		state = fmt.Sprintf("read failed: %v", err)
	}
	tracef(ctx, "body", "%d bytes (%s): %s", cr.n, state, preview(cr.head))
	tracef(ctx, "assert", "max_body_size %d: %d bytes → %s", p.maxBody, cr.n, verdict(cr.n <= p.maxBody))
	if p.contains == nil && p.re == nil {
		return
	}
	if outcome != Success && outcome != ResponseStringMismatch {
		if p.contains != nil {
			tracef(ctx, "assert", "body_contains %q: not checked", p.contains)
		}
		if p.re != nil {
			tracef(ctx, "assert", "body_regex %q: not checked", p.re.String())
		}
		return
	}
	// The verdicts readBody reached: body_contains first, body_regex only
	// when it passed.
	if p.contains != nil {
		tracef(ctx, "assert", "body_contains %q → %s", p.contains, verdict(!errors.Is(err, errBodyContains)))
	}
	if p.re != nil {
		if errors.Is(err, errBodyContains) {
			tracef(ctx, "assert", "body_regex %q: not checked (body_contains failed)", p.re.String())
		} else {
			tracef(ctx, "assert", "body_regex %q → %s", p.re.String(), verdict(!errors.Is(err, errBodyRegex)))
		}
	}
}

// traceStatus reports the expected_status verdict.
func (p *httpProber) traceStatus(ctx context.Context, code int) {
	tracef(ctx, "assert", "expected_status %s: got %d → %s", p.expectedText, code, verdict(p.expected.has(code)))
}

// traceResponse reports a response's status line and headers.
func traceResponse(ctx context.Context, resp *http.Response) {
	tracef(ctx, "response", "%s %s", resp.Proto, resp.Status)
	traceHeaders(ctx, "recv", resp.Header)
}

var (
	errBodyTooLarge     = errors.New("body exceeds max_body_size")
	errBodyContains     = errors.New("body does not contain body_contains")
	errBodyRegex        = errors.New("body does not match body_regex")
	errSecretProtection = errors.New("cannot read secret")
)

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledBody = 256 << 10

// readBody reads body to its end (at most maxBody bytes) and matches it.
//
// A body whose declared Content-Length is over max_body_size fails at once,
// without reading it (a server that declares 1 GiB and then stalls must not
// hold the probe until its deadline).
func (p *httpProber) readBody(body io.Reader, declared int64) (Outcome, error) {
	if declared > p.maxBody {
		return BodyReadError, fmt.Errorf("%w: Content-Length %d", errBodyTooLarge, declared)
	}
	lr := &io.LimitedReader{R: body, N: p.maxBody + 1}
	if p.contains == nil && p.re == nil {
		if _, err := io.Copy(io.Discard, lr); err != nil {
			return BodyReadError, err
		}
		if lr.N <= 0 {
			return BodyReadError, errBodyTooLarge
		}
		return Success, nil
	}

	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledBody {
			bodyPool.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(lr); err != nil {
		return BodyReadError, err
	}
	if lr.N <= 0 {
		return BodyReadError, errBodyTooLarge
	}
	if p.contains != nil && !bytes.Contains(buf.Bytes(), p.contains) {
		return ResponseStringMismatch, errBodyContains
	}
	if p.re != nil && !p.re.Match(buf.Bytes()) {
		return ResponseStringMismatch, errBodyRegex
	}
	return Success, nil
}

// authorize adds the credentials that live in secrets (Transport path).
func (p *httpProber) authorize(req *http.Request) error {
	if p.auth == authNone {
		return nil
	}
	v, err := p.appendAuthorization(make([]byte, 0, 64))
	defer clear(v)
	if err != nil {
		return err
	}
	req.Header = req.Header.Clone()
	req.Header.Set("Authorization", string(v))
	return nil
}

// appendAuthorization appends to b the value of the Authorization header
// that lives in secrets ("Basic ...", "Bearer ..."; nothing for authNone:
// URL userinfo is baked into the request's headers by New). Both paths
// take their credentials from here, under one rule: the value must be a
// valid header field value (net/http's rule: no control character but
// tab), else errInvalidAuth (net/http's error, without the value); white
// space at its end is dropped, as net/http trims it. The plain text is
// held only for the duration of the call and in b, which the caller
// wipes.
func (p *httpProber) appendAuthorization(b []byte) ([]byte, error) {
	start := len(b)
	switch p.auth {
	case authNone:
		return b, nil
	case authBasic:
		user, err := p.username.Get()
		if err != nil {
			return b, keyerr.Errorf("username", "%w: %w", errSecretProtection, err)
		}
		defer user.Destroy()
		pass, err := p.password.Get()
		if err != nil {
			return b, keyerr.Errorf("password", "%w: %w", errSecretProtection, err)
		}
		defer pass.Destroy()
		b = appendBasic(b, user.Bytes(), pass.Bytes())
	case authBearer:
		tok, err := p.bearer.Get()
		if err != nil {
			return b, keyerr.Errorf("bearer_token", "%w: %w", errSecretProtection, err)
		}
		defer tok.Destroy()
		b = append(b, "Bearer "...)
		b = append(b, tok.Bytes()...)
	}
	if !validHeaderValue(b[start:]) {
		clear(b[start:])
		return b[:start], errInvalidAuth
	}
	for len(b) > start && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b, nil
}

// appendBasic appends the value of a Basic Authorization header for user
// and pw to b; the plain "user:pw" it builds is wiped.
func appendBasic(b, user, pw []byte) []byte {
	plain := make([]byte, len(user)+1+len(pw))
	copy(plain, user)
	plain[len(user)] = ':'
	copy(plain[len(user)+1:], pw)
	b = append(b, "Basic "...)
	b = base64.StdEncoding.AppendEncode(b, plain)
	clear(plain)
	return b
}

// httpFields builds the result fields; ph.mu must be held. resp is the
// final response (nil if none came); bodyEnd is when the body was read
// (zero if it was not).
func (ph *phases) httpFields(resp *http.Response, bodyEnd, now time.Time) []Field {
	f := make([]Field, 0, 8)
	f = ph.appendDial(f)
	if ph.did&didTLS != 0 {
		f = append(f, Field{"tls_handshake", ph.handshake.Seconds()})
	}
	if ph.did&didTTFB != 0 {
		f = append(f, Field{"time_to_first_byte", ph.ttfb.Seconds()})
	}
	if !bodyEnd.IsZero() && !ph.first.IsZero() {
		f = append(f, Field{"body_transfer", bodyEnd.Sub(ph.first).Seconds()})
	}
	if ph.remote != "" {
		f = append(f, Field{"remote_address", ph.remote})
	}
	if resp != nil {
		f = append(f, Field{"http_response_code", int64(resp.StatusCode)})
		if resp.TLS != nil {
			f = tlsFields(f, resp.TLS, now)
		}
	}
	return f
}

// statusSet is a bit set of the HTTP status codes 0..639.
type statusSet [10]uint64

func (s *statusSet) add(lo, hi int) {
	for c := lo; c <= hi; c++ {
		s[c>>6] |= 1 << (c & 63)
	}
}

func (s *statusSet) has(code int) bool {
	return code >= 0 && code < 640 && s[code>>6]&(1<<(code&63)) != 0
}

// parse fills s from expected_status entries; none means 2xx and 3xx.
func (s *statusSet) parse(list StatusList) error {
	if len(list) == 0 {
		s.add(200, 399)
		return nil
	}
	for _, e := range list {
		e = strings.TrimSpace(e)
		if len(e) == 3 && e[0] >= '1' && e[0] <= '5' && strings.EqualFold(e[1:], "xx") {
			lo := int(e[0]-'0') * 100
			s.add(lo, lo+99)
			continue
		}
		n, err := strconv.Atoi(e)
		if err != nil || n < 100 || n > 599 {
			return keyerr.Errorf("expected_status", "invalid entry %q (want a code like 200 or a class like 2xx)", e)
		}
		s.add(n, n)
	}
	return nil
}

// isToken reports whether s is a non-empty RFC 9110 token (method or header
// name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
