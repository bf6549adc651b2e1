// The HTTP prober's fast path: one fresh connection per probe, no proxy,
// redirects not followed — the default configuration, and the one that
// thousands of services per gather use.
//
// net/http's Transport runs every connection on goroutines of its own (the
// dial, a read loop and a write loop) and hands the request and the
// response between them and the caller over channels; for a connection
// that carries exactly one request that machinery is most of the client's
// CPU beyond the kernel's. The fast path does the whole probe on the
// calling goroutine instead: resolve the host (host names only), dial,
// TLS handshake, write the request (rendered once, by the first probe, with
// net/http's own Request.Write; credentials added per probe), read the response with
// http.ReadResponse from a pooled bufio.Reader, read the body, close. It
// starts no goroutine; a cancellation of the context aborts blocked I/O
// through context.AfterFunc, which Probe waits for.
//
// What it measures and reports is what the Transport path reports (see
// http.go): the same phases taken at the same points, the same fields, the
// same outcomes, the same wire behaviour (Connection: close, Accept-Encoding:
// gzip with transparent decompression, the 256 KiB limit on response
// headers, 1xx responses skipped), and errors read as http.Client's
// (`Get "http://host/": dial tcp ...`). The differences: the resolved
// addresses of a host name are tried one after another (each with its
// share of the remaining time, as net.Dialer does; the Transport path does
// the same since it dials through netConfig too) instead of racing the
// second address family after 300 ms; a TLS connection is closed without
// sending close_notify (as the TCP prober does); and a DNS lookup or TLS
// handshake cut short by the deadline is always reported (dns_lookup,
// tls_handshake), where the Transport reports it only if its hook fires
// before Probe returns.
//
// New uses the Transport path instead when keep_alive = true, with a proxy
// (http_proxy_url, use_system_proxy), with follow_redirects = true, and for
// the rare requests whose semantics the Transport handles specially: a
// non-ASCII host, a Connection, Upgrade, Transfer-Encoding, Trailer or
// Expect header, or a header value net/http would refuse.

package probe

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// fastHTTP is the request and the dial target of the fast path.
type fastHTTP struct {
	https  bool
	host   string // to resolve (a host name) or dial (an IP literal)
	port   string
	tlsCfg *tls.Config
	// The request is rendered once, by the first probe (see rendered):
	// base, header and reqBody are what it is rendered from; head, body
	// and errURL (or renderErr) what it gives.
	render    sync.Once
	base      *http.Request
	header    http.Header
	reqBody   string
	renderErr error
	head      []byte // request line and headers, each ending in CRLF; no blank line
	body      []byte // the request body, sent after the blank line
	gzip      bool   // Accept-Encoding: gzip was added (transparent decompression)
	errOp     string // url.Error's Op, as http.Client reports it ("Get")
	errURL    string // url.Error's URL (no userinfo), set with head
	dialer    net.Dialer
	net       netConfig
	maxHead   int64
}

// fastExcluded are request headers whose semantics net/http's Transport
// handles itself; with any of them the prober keeps the Transport path.
var fastExcluded = [...]string{"Connection", "Upgrade", "Transfer-Encoding", "Trailer", "Expect"}

// newFastHTTP returns the fast path for base, or nil when base needs the
// Transport (see the file comment). u is the probe's URL, host and port
// its checked host and port (hostPort), tlsCfg the prober's TLS
// configuration (nil: Go's defaults).
func newFastHTTP(u *url.URL, host, port string, base *http.Request, body string, auth authKind, tlsCfg *tls.Config, timeout time.Duration, nc netConfig) *fastHTTP {
	if host == "" || !isPrintableASCII(host) {
		return nil
	}
	for _, k := range fastExcluded {
		if _, has := base.Header[k]; has {
			return nil
		}
	}
	for _, vs := range base.Header {
		for _, v := range vs {
			if !validHeaderValue(v) {
				return nil // the Transport refuses it; keep its error
			}
		}
	}

	f := &fastHTTP{
		https:   u.Scheme == "https",
		host:    host,
		port:    port,
		errOp:   urlErrorOp(base.Method),
		dialer:  nc.dialer(timeout, "tcp"),
		net:     nc,
		maxHead: maxResponseHeaderBytes,
	}
	if f.https {
		// What the Transport does per connection: a clone of the
		// configuration with the URL's host as ServerName unless set.
		if tlsCfg == nil {
			f.tlsCfg = &tls.Config{}
		} else {
			f.tlsCfg = tlsCfg.Clone()
		}
		if f.tlsCfg.ServerName == "" {
			f.tlsCfg.ServerName = host
		}
	}

	f.base, f.reqBody = base, body
	f.header, f.gzip = fastHeaders(base, auth)
	if !writeCannotFail(base) {
		// Render it now: if net/http refuses it, the Transport path
		// reports that per probe.
		if f.rendered() != nil {
			return nil
		}
	}
	return f
}

// writeCannotFail: Request.Write cannot fail for base (rendered without a
// proxy into memory): its Host is ASCII (no IDNA conversion to fail) and
// nothing its request URI is made of holds a control character. The
// request can then be rendered at its first probe rather than in New — a
// tenth of the start-up at 100,000 services.
func writeCannotFail(base *http.Request) bool {
	host := base.Host
	if host == "" {
		host = base.URL.Host
	}
	u := base.URL
	return isASCII(host) && !hasCTL(u.Opaque) && !hasCTL(u.Path) && !hasCTL(u.RawPath) && !hasCTL(u.RawQuery)
}

// rendered renders the request once, with net/http's own writer and the
// headers the Transport adds to a request on a connection without
// keep-alive; head and body are set unless it returns an error.
func (f *fastHTTP) rendered() error {
	f.render.Do(func() {
		f.errURL = f.base.URL.String()
		f.head, f.body, f.renderErr = renderRequest(f.base, f.header, f.reqBody)
	})
	return f.renderErr
}

// renderRequest renders base with header h and body: the head (request
// line and headers) and the body.
func renderRequest(base *http.Request, h http.Header, body string) (head, rest []byte, err error) {
	req := &http.Request{
		Method:     base.Method,
		URL:        base.URL,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       base.Host,
		Close:      true,
	}
	if body != "" {
		req.Body = io.NopCloser(strings.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	buf := renderPool.Get().(*bytes.Buffer)
	defer renderPool.Put(buf)
	buf.Reset()
	if err := req.Write(buf); err != nil {
		return nil, nil, err // e.g. an invalid Host
	}
	i := bytes.Index(buf.Bytes(), []byte("\r\n\r\n"))
	if i < 0 {
		return nil, nil, errors.New("net/http rendered a request without the blank line")
	}
	out := bytes.Clone(buf.Bytes()) // kept for the prober's life: no spare capacity
	return out[: i+2 : i+2], out[i+4:], nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hasCTL: s holds an ASCII control character.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// renderPool holds the buffers requests are rendered into.
var renderPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// fastHeaders are the headers the fast path renders for base: base's,
// without Authorization when it comes from the secrets (added per probe),
// with Accept-Encoding: gzip unless base has an Accept-Encoding or a
// Range, or is a HEAD (as the Transport does; gzip says whether it was
// added). A request with the default headers only gets the shared set.
func fastHeaders(base *http.Request, auth authKind) (h http.Header, gzip bool) {
	gzip = base.Header.Get("Accept-Encoding") == "" && base.Header.Get("Range") == "" && base.Method != http.MethodHead
	if ua := base.Header["User-Agent"]; gzip && len(base.Header) == 1 && len(ua) == 1 {
		return sharedHeaders(ua[0]).gzip, true
	}
	h = base.Header.Clone()
	if auth != authNone {
		h.Del("Authorization") // added per probe from the secrets
	}
	if gzip {
		h.Set("Accept-Encoding", "gzip")
	}
	return h, gzip
}

// fastBuffers are the per-probe buffers of the fast path, pooled.
type fastBuffers struct {
	lr   limitedConn
	br   *bufio.Reader
	wbuf []byte
}

// maxPooledWrite bounds the request buffer kept in the pool.
const maxPooledWrite = 64 << 10

var fastPool = sync.Pool{New: func() any {
	b := &fastBuffers{wbuf: make([]byte, 0, 1024)}
	b.br = bufio.NewReaderSize(&b.lr, 4096)
	return b
}}

func (b *fastBuffers) release() {
	clear(b.wbuf) // it held the credentials
	b.wbuf = b.wbuf[:0]
	if cap(b.wbuf) > maxPooledWrite {
		b.wbuf = make([]byte, 0, 1024)
	}
	b.lr.r, b.lr.err = nil, nil
	b.br.Reset(&b.lr)
	fastPool.Put(b)
}

// limitedConn reads from r at most n bytes (the header-size limit the
// Transport applies to everything read while the headers are read) and
// keeps the first read error: bufio.Reader.ReadLine, under http.ReadResponse,
// returns a partial line without the error that cut it (a deadline in the
// middle of the status line surfaces as "malformed HTTP response").
type limitedConn struct {
	r   io.Reader
	n   int64
	err error
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err != nil && l.err == nil {
		l.err = err
	}
	return n, err
}

var (
	errHeaderLimit  = errors.New("read limit of response header bytes exhausted")
	errHeaderTooBig = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", maxResponseHeaderBytes)
	errInvalidAuth  = fmt.Errorf("net/http: invalid header field value for %q", "Authorization")
)

// probeFast is Probe on the fast path; see the file comment.
func (p *httpProber) probeFast(parent context.Context) Result {
	f := p.fast
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	traced := Traced(parent)
	if err := f.rendered(); err != nil {
		// Not reached: New renders a request that might fail at once.
		return Result{Outcome: ConnectionFailed, Err: f.urlError(err)}
	}
	if traced {
		tracef(ctx, "request", "%s %s HTTP/1.1", p.base.Method, redactURL(f.errURL))
	}
	b := fastPool.Get().(*fastBuffers)
	defer b.release()
	b.wbuf = append(b.wbuf, f.head...)
	if p.auth != authNone {
		b.wbuf = append(b.wbuf, "Authorization: "...)
		var err error
		if b.wbuf, err = p.appendAuthorization(b.wbuf); err != nil {
			if errors.Is(err, errInvalidAuth) { // as the Transport refuses it
				return Result{Outcome: ConnectionFailed, Err: f.urlError(err), Fields: make([]Field, 0, 8)}
			}
			return Result{Outcome: ConnectionFailed, Err: err}
		}
		b.wbuf = append(b.wbuf, "\r\n"...)
	}
	b.wbuf = append(b.wbuf, "\r\n"...)
	b.wbuf = append(b.wbuf, f.body...)

	var (
		ph    phases
		start time.Time
	)
	fail := func(err error, tlsFailed bool) Result {
		now := time.Now()
		if traced {
			tracef(ctx, "error", "%v", err)
		}
		outcome := classify(ctx, err, tlsFailed)
		if !now.Before(deadline) {
			// The connection's deadline fired a moment before the
			// context's timer (the Transport path sees the context).
			outcome = Timeout
		}
		return Result{
			Outcome: outcome,
			Latency: now.Sub(start),
			Err:     f.urlError(err),
			Fields:  ph.httpFields(nil, time.Time{}, now),
		}
	}

	start = time.Now()
	raw, err := f.dial(ctx, &ph, traced)
	if err != nil {
		return fail(err, false)
	}
	defer raw.Close() // the raw conn: no close_notify that could block
	_ = raw.SetDeadline(deadline)
	// A cancellation aborts blocked I/O; Probe waits for the callback so
	// that nothing it started outlives it.
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = raw.SetDeadline(pastDeadline)
		close(aborted)
	})
	defer func() {
		if !stop() {
			<-aborted
		}
	}()

	var (
		conn     net.Conn = raw
		tlsState *tls.ConnectionState
	)
	if f.https {
		hsStart := time.Now()
		tc := tls.Client(raw, f.tlsCfg)
		if traced {
			tracef(ctx, "tls", "handshake start (server name %q)", f.tlsCfg.ServerName)
		}
		err := tc.Handshake() // bounded by the deadline and the AfterFunc
		// Reported also when it failed or ran out of time (as the TCP
		// prober does; the Transport reports it unless its caller has
		// already returned).
		ph.handshake, ph.did = time.Since(hsStart), ph.did|didTLS
		if err != nil {
			if traced {
				traceTLS(ctx, f.tlsCfg.ServerName, nil, err)
			}
			return fail(err, true)
		}
		st := tc.ConnectionState()
		if traced {
			traceTLS(ctx, f.tlsCfg.ServerName, &st, nil)
		}
		tlsState, conn = &st, tc
	}

	if traced {
		f.traceRequest(ctx, p.auth != authNone)
	}
	if _, err := conn.Write(b.wbuf); err != nil {
		return fail(err, false)
	}
	ph.wrote = time.Now()
	if traced {
		tracef(ctx, "sent", "request written (%d bytes)", len(b.wbuf))
	}

	b.lr.r, b.lr.n = conn, f.maxHead
	if _, err := b.br.Peek(1); err == nil {
		ph.first = time.Now()
		ph.ttfb, ph.did = ph.first.Sub(ph.wrote), ph.did|didTTFB
		if traced {
			tracef(ctx, "first byte", "of the response")
		}
	}
	resp, err := f.readResponse(b.br, p.base)
	if err != nil {
		switch {
		case b.lr.n <= 0:
			err = errHeaderTooBig
		case b.lr.err != nil && !errors.Is(b.lr.err, io.EOF):
			err = b.lr.err // what cut the headers short (a deadline, a reset)
		}
		return fail(err, false)
	}
	b.lr.n = math.MaxInt64 // no limit for the body
	resp.TLS = tlsState
	if traced {
		traceResponse(ctx, resp)
		p.traceStatus(ctx, resp.StatusCode)
	}

	if !p.expected.has(resp.StatusCode) {
		return statusMismatch(resp, start, &ph)
	}

	body := io.Reader(resp.Body)
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols && isProtocolSwitch(resp.Header):
		body = b.br // the Transport hands over the connection's stream
	case f.gzip && p.base.Method != http.MethodHead && resp.ContentLength != 0 &&
		strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip"):
		gz := &gzipBody{body: resp.Body}
		defer gz.close()
		body = gz
	}
	declared := resp.ContentLength
	if body != io.Reader(resp.Body) {
		declared = -1 // decompressed or switched: the header does not bound what is read
	}
	outcome, end, err := p.readBodyBy(ctx, deadline, body, declared, traced)
	return Result{
		Outcome: outcome,
		Latency: end.Sub(start),
		Err:     err,
		Fields:  ph.httpFields(resp, end, end),
	}
}

// readResponse reads the response, skipping 1xx responses other than 101
// as the Transport does (the header limit covers them all).
func (f *fastHTTP) readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if c := resp.StatusCode; c >= 100 && c <= 199 && c != http.StatusSwitchingProtocols {
			continue
		}
		return resp, nil
	}
}

// dial resolves a host name and connects, filling the dns_lookup and
// tcp_connect phases as the Transport's trace hooks do, and the remote
// address (netConfig.dialPhases).
func (f *fastHTTP) dial(ctx context.Context, ph *phases, traced bool) (net.Conn, error) {
	return f.net.dialPhases(ctx, f.dialer, f.host, f.port, ph, traced)
}

// traceRequest reports the request as it is sent: the request line and
// each header of the rendered head (credential values redacted), the
// Authorization added from the secrets, and the body.
func (f *fastHTTP) traceRequest(ctx context.Context, auth bool) {
	lines := strings.Split(strings.TrimSuffix(string(f.head), "\r\n"), "\r\n")
	tracef(ctx, "send", "%s", redact.Text(lines[0]))
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		traceHeader(ctx, "send", k, strings.TrimLeft(v, " \t"))
	}
	if auth {
		traceHeader(ctx, "send", "Authorization", "")
	}
	if len(f.body) > 0 {
		tracef(ctx, "send", "body %d bytes: %s", len(f.body), redact.Text(preview(f.body)))
	}
}

// urlError wraps err as http.Client.Do does.
func (f *fastHTTP) urlError(err error) error {
	return &url.Error{Op: f.errOp, URL: f.errURL, Err: err}
}

// gzipBody decompresses a response body as the Transport's gzipReader
// does: the gzip reader is made on the first Read, and its error (io.EOF
// for an empty body) is sticky.
type gzipBody struct {
	body io.Reader
	zr   *gzip.Reader
	zerr error
}

var gzipPool sync.Pool

func (g *gzipBody) Read(p []byte) (int, error) {
	if g.zerr != nil {
		return 0, g.zerr
	}
	if g.zr == nil {
		zr, _ := gzipPool.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		if err := zr.Reset(g.body); err != nil {
			gzipPool.Put(zr)
			g.zerr = err
			return 0, err
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

func (g *gzipBody) close() {
	if g.zr != nil {
		_ = g.zr.Reset(eofReader{}) // drop the reference to the connection
		gzipPool.Put(g.zr)
		g.zr = nil
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
func (eofReader) ReadByte() (byte, error)  { return 0, io.EOF }

// isProtocolSwitch reports whether h (of a 101 response) switches
// protocols: an Upgrade header and the token "upgrade" in Connection.
func isProtocolSwitch(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// validHeaderValue reports whether net/http accepts v as a header field
// value: no control characters but horizontal tab.
func validHeaderValue[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// urlErrorOp is http.Client's Op for a url.Error: "Get" for GET.
func urlErrorOp(method string) string {
	switch method { // the common ones without an allocation per prober
	case "", http.MethodGet:
		return "Get"
	case http.MethodHead:
		return "Head"
	case http.MethodPost:
		return "Post"
	}
	return method[:1] + strings.ToLower(method[1:])
}
