package probe

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// traceLog records a probe's trace as "step: detail" lines.
type traceLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *traceLog) tracer(step, detail string) {
	l.mu.Lock()
	l.lines = append(l.lines, step+": "+detail)
	l.mu.Unlock()
}

func (l *traceLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// traced runs one traced probe and returns its result and trace.
func traced(p Prober) (Result, string) {
	var l traceLog
	r := p.Probe(WithTracer(context.Background(), l.tracer))
	return r, l.String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// requireSameResult: a traced probe ends as the untraced one does (same
// outcome, error and fields).
func requireSameResult(t *testing.T, untraced, traced Result) {
	t.Helper()
	require.Equal(t, untraced.Outcome, traced.Outcome, "untraced err %v, traced err %v", untraced.Err, traced.Err)
	require.Equal(t, errString(untraced.Err), errString(traced.Err))
	require.Equal(t, fieldKeys(untraced), fieldKeys(traced))
	require.Equal(t, len(untraced.Samples), len(traced.Samples))
	for i, f := range untraced.Fields {
		if s, ok := f.Value.(string); ok {
			require.Equal(t, s, traced.Fields[i].Value, f.Key)
		}
		if n, ok := f.Value.(int64); ok && f.Key != "icmp_unexpected" {
			require.Equal(t, n, traced.Fields[i].Value, f.Key)
		}
	}
}

// tcpPeer answers "PONG <what it read>" on every connection.
func tcpPeer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				_, _ = fmt.Fprintf(c, "PONG %s\x01", buf[:n])
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// The traced probe takes the same path as the untraced one and ends the
// same way, for every kind of prober and both HTTP paths.
func TestTracedOutcomeUnchanged(t *testing.T) {
	cert := selfSigned(t, time.Hour)
	plain, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500":
			w.WriteHeader(http.StatusInternalServerError)
		case "/redirect":
			http.Redirect(w, r, "/", http.StatusFound)
		default:
			_, _ = io.WriteString(w, "hello world")
		}
	})
	secure := newHTTPSServer(t, cert.cert, ok)
	udp, _ := dnsServer(t)
	tcpAddr := tcpPeer(t)
	grpcAddr, hs := grpcHealthServer(t, nil, false)
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)

	https := []struct {
		name string
		url  string
		o    Options
	}{
		{"ok", plain.URL + "/", Options{BodyContains: "hello"}},
		{"body mismatch", plain.URL + "/", Options{BodyContains: "bye", BodyRegex: "h.llo"}},
		{"regex mismatch", plain.URL + "/", Options{BodyRegex: "^bye"}},
		{"too large", plain.URL + "/", Options{MaxBodySize: 3}},
		{"status", plain.URL + "/500", Options{}},
		{"redirect not followed", plain.URL + "/redirect", Options{ExpectedStatus: StatusList{"302"}}},
		{"untrusted", secure.URL + "/", Options{}},
		{"trusted", secure.URL + "/", Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}}},
		{"refused", "http://" + freePort(t) + "/", Options{}},
	}
	for _, c := range https {
		t.Run("http "+c.name, func(t *testing.T) {
			fast, transport := bothPaths(t, c.url, 2*time.Second, c.o)
			for _, p := range []*httpProber{fast, transport} {
				r, trace := traced(p)
				require.NotEmpty(t, trace)
				requireSameResult(t, p.Probe(context.Background()), r)
			}
			// The traced fast path ends as the untraced Transport path.
			r, _ := traced(fast)
			requireSameResult(t, transport.Probe(context.Background()), r)
		})
	}
	others := []struct {
		name string
		url  string
		o    Options
	}{
		{"tcp connect", "tcp://" + tcpAddr, Options{}},
		{"tcp expect", "tcp://" + tcpAddr, Options{Send: "PING", Expect: "PONG PING"}},
		{"tcp expect mismatch", "tcp://" + tcpAddr, Options{Send: "PING", Expect: "NOPE"}},
		{"dns", "dns://" + udp + "/a.test", Options{}},
		{"dns nxdomain", "dns://" + udp + "/nx.test", Options{}},
		{"grpc", "grpc://" + grpcAddr + "/svc", Options{}},
		{"grpc unknown service", "grpc://" + grpcAddr + "/other", Options{}},
	}
	for _, c := range others {
		t.Run(c.name, func(t *testing.T) {
			p := mustNew(t, c.url, 2*time.Second, c.o)
			r, trace := traced(p)
			require.NotEmpty(t, trace)
			requireSameResult(t, p.Probe(context.Background()), r)
		})
	}
}

// countingCtx counts the lookups of the tracer key.
type countingCtx struct {
	context.Context
	n atomic.Int32
}

func (c *countingCtx) Value(key any) any {
	if _, ok := key.(tracerKey); ok {
		c.n.Add(1)
	}
	return c.Context.Value(key)
}

// An untraced probe looks for a tracer once and formats nothing.
func TestUntracedProbeLooksUpTracerOnce(t *testing.T) {
	plain, _ := newHTTPServer(t, ok)
	udp, _ := dnsServer(t)
	tcpAddr := tcpPeer(t)
	grpcAddr, _ := grpcHealthServer(t, nil, false)
	fast, transport := bothPaths(t, plain.URL+"/", 2*time.Second, Options{BodyContains: "ok"})
	for name, p := range map[string]Prober{
		"http fast":      fast,
		"http transport": transport,
		"tcp":            mustNew(t, "tcp://"+tcpAddr, 2*time.Second, Options{Send: "PING", Expect: "PONG"}),
		"dns":            mustNew(t, "dns://"+udp+"/a.test", 2*time.Second, Options{}),
		"grpc":           mustNew(t, "grpc://"+grpcAddr, 2*time.Second, Options{}),
	} {
		ctx := &countingCtx{Context: context.Background()}
		requireOutcome(t, Success, p.Probe(ctx))
		require.EqualValues(t, 1, ctx.n.Load(), name)
	}
}

// The trace of an HTTPS probe whose certificate fails verification shows
// the chain presented and which certificate failed, and why.
func TestTraceTLSVerificationFailure(t *testing.T) {
	for _, c := range []struct {
		name     string
		validFor time.Duration
		o        func(caFile string) Options
		why      string
	}{
		{"untrusted", time.Hour, func(string) Options { return Options{} }, "x509: certificate signed by unknown authority (self-signed"},
		{"expired", -time.Hour, func(ca string) Options {
			return Options{ClientConfig: telegraftls.ClientConfig{TLSCA: ca}}
		}, "has expired"},
		{"wrong name", time.Hour, func(ca string) Options {
			return Options{ClientConfig: telegraftls.ClientConfig{TLSCA: ca, ServerName: "other.example"}}
		}, "certificate is valid for localhost, not other.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := selfSigned(t, c.validFor)
			srv := newHTTPSServer(t, cert.cert, ok)
			fast, transport := bothPaths(t, srv.URL+"/", 2*time.Second, c.o(cert.caFile))
			for _, p := range []*httpProber{fast, transport} {
				r, trace := traced(p)
				requireOutcome(t, TLSError, r)
				leaf := cert.leaf
				require.Contains(t, trace, fmt.Sprintf("tls cert: #0 subject %q, issuer %q", leaf.Subject.String(), leaf.Issuer.String()), trace)
				require.Contains(t, trace, "not after "+leaf.NotAfter.UTC().Format(time.RFC3339))
				require.Contains(t, trace, fmt.Sprintf("tls verify: FAILED at certificate #0 (subject %q, issuer %q, not after %s): ",
					leaf.Subject.String(), leaf.Issuer.String(), leaf.NotAfter.UTC().Format(time.RFC3339)), trace)
				require.Contains(t, trace, c.why, trace)
				require.NotContains(t, trace, "http_response", trace)
			}
		})
	}

	t.Run("verified", func(t *testing.T) {
		cert := selfSigned(t, time.Hour)
		srv := newHTTPSServer(t, cert.cert, ok)
		fast, transport := bothPaths(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
		for _, p := range []*httpProber{fast, transport} {
			r, trace := traced(p)
			requireOutcome(t, Success, r)
			require.Regexp(t, `tls: handshake done: TLS 1\.3, cipher TLS_\w+, ALPN \w+, server name "127.0.0.1"`, trace)
			require.Contains(t, trace, `tls verify: ok: chain 0: "CN=service_latency probe test"`)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		cert := selfSigned(t, time.Hour)
		srv := newHTTPSServer(t, cert.cert, ok)
		r, trace := traced(mustNew(t, "tcp://"+srv.Listener.Addr().String(), 2*time.Second, Options{TLS: ptr(true)}))
		requireOutcome(t, TLSError, r)
		require.Contains(t, trace, "tls verify: FAILED at certificate #0")
	})
	t.Run("grpcs", func(t *testing.T) {
		cert := selfSigned(t, time.Hour)
		addr, _ := grpcHealthServer(t, &cert.cert, false)
		r, trace := traced(mustNew(t, "grpcs://"+addr, 2*time.Second, Options{}))
		requireOutcome(t, TLSError, r)
		require.Contains(t, trace, "tls verify: FAILED at certificate #0", trace)
		r, trace = traced(mustNew(t, "grpcs://"+addr, 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}}))
		requireOutcome(t, Success, r)
		require.Contains(t, trace, "tls: handshake done: TLS 1.3", trace)
		require.Contains(t, trace, "ALPN h2", trace)
		require.Contains(t, trace, "reply: gRPC status OK, health status SERVING", trace)
		require.Contains(t, trace, "assert: health status SERVING → pass", trace)
	})
}

// A successful HTTP trace: the request line and headers sent (credentials
// redacted), the status line and headers received, the body's first bytes
// (escaped) and each assertion's verdict. No credential appears.
func TestTraceHTTP(t *testing.T) {
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "session=COOKIESECRET")
		w.Header().Set("X-Served-By", "test")
		_, _ = io.WriteString(w, "hello\x00\xff\n"+strings.Repeat("x", 600))
	})
	secrets := []string{"URLSECRET", "BEARERSECRET", "BASICSECRET", "QUERYSECRET", "APIKEYSECRET", "COOKIESECRET"}
	basic := base64.StdEncoding.EncodeToString([]byte("bob:BASICSECRET"))
	withURLPassword := strings.Replace(srv.URL, "http://", "http://alice:URLSECRET@", 1)
	for _, c := range []struct {
		name string
		url  string
		o    Options
	}{
		{"url password", withURLPassword + "/health?x=1&token=QUERYSECRET", Options{}},
		{"bearer", srv.URL + "/health?x=1&token=QUERYSECRET", Options{BearerToken: config.NewSecret([]byte("BEARERSECRET"))}},
		{"basic", srv.URL + "/health?x=1&token=QUERYSECRET", Options{Username: config.NewSecret([]byte("bob")), Password: config.NewSecret([]byte("BASICSECRET"))}},
	} {
		c.o.Headers = map[string]string{"X-Api-Key": "APIKEYSECRET", "X-Request": "probe"}
		c.o.BodyContains = "hello"
		c.o.BodyRegex = "x{600}"
		c.o.ExpectedStatus = StatusList{"2xx"}
		t.Run(c.name, func(t *testing.T) {
			fast, transport := bothPaths(t, c.url, 2*time.Second, c.o)
			for _, p := range []*httpProber{fast, transport} {
				r, trace := traced(p)
				requireOutcome(t, Success, r)
				host := strings.TrimPrefix(srv.URL, "http://")
				require.Contains(t, trace, "request: GET http://"+host+"/health?x=1&token=REDACTED HTTP/1.1", trace)
				if p.fast != nil {
					require.Contains(t, trace, "send: GET /health?x=1&token=REDACTED HTTP/1.1\n", trace)
				}
				for _, want := range []string{
					"address: 127.0.0.1 (literal, no lookup)",
					"connect: tcp " + host,
					"connected: 127.0.0.1:",
					"send: Host: " + host,
					"send: Authorization: <redacted>",
					"send: X-Api-Key: <redacted>",
					"send: X-Request: probe",
					"response: HTTP/1.1 200 OK",
					"recv: Set-Cookie: <redacted>",
					"recv: X-Served-By: test",
					"recv: Content-Length: 608",
					"assert: expected_status 2xx: got 200 → pass",
					`body: 608 bytes (read to its end): hello\x00\xff\n` + strings.Repeat("x", 512-8) + " …",
					"assert: max_body_size 1048576: 608 bytes → pass",
					`assert: body_contains "hello" → pass`,
					`assert: body_regex "x{600}" → pass`,
				} {
					require.Contains(t, trace, want, trace)
				}
				for _, s := range append(secrets, basic) {
					require.NotContains(t, trace, s)
				}
			}
		})
	}

	t.Run("verdicts", func(t *testing.T) {
		fast, transport := bothPaths(t, srv.URL+"/", 2*time.Second, Options{BodyContains: "nope", BodyRegex: "hello"})
		for _, p := range []*httpProber{fast, transport} {
			r, trace := traced(p)
			requireOutcome(t, ResponseStringMismatch, r)
			require.Contains(t, trace, `assert: body_contains "nope" → FAIL`, trace)
			require.Contains(t, trace, `assert: body_regex "hello": not checked (body_contains failed)`, trace)
		}
		fast, transport = bothPaths(t, srv.URL+"/", 2*time.Second, Options{ExpectedStatus: StatusList{"201"}})
		for _, p := range []*httpProber{fast, transport} {
			r, trace := traced(p)
			requireOutcome(t, ResponseStatusCodeMismatch, r)
			require.Contains(t, trace, "assert: expected_status 201: got 200 → FAIL", trace)
			require.NotContains(t, trace, "body:", trace)
		}
		fast, transport = bothPaths(t, srv.URL+"/", 2*time.Second, Options{MaxBodySize: 100})
		for _, p := range []*httpProber{fast, transport} {
			r, trace := traced(p)
			requireOutcome(t, BodyReadError, r)
			require.Contains(t, trace, "assert: max_body_size 100: Content-Length 608 → FAIL (body not read)", trace)
		}
	})

	t.Run("redirects followed", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc("/a", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/b?token=QUERYSECRET", http.StatusFound)
		})
		mux.HandleFunc("/b", ok)
		rs, _ := newHTTPServer(t, mux.ServeHTTP)
		r, trace := traced(mustNew(t, rs.URL+"/a", 2*time.Second, Options{FollowRedirects: ptr(true)}))
		requireOutcome(t, Success, r)
		require.Contains(t, trace, "response: HTTP/1.1 302 Found", trace)
		require.Contains(t, trace, "redirect: 1 of at most 10: GET "+rs.URL+"/b?token=REDACTED", trace)
		require.Contains(t, trace, "response: HTTP/1.1 200 OK", trace)
		require.NotContains(t, trace, "QUERYSECRET")
	})
}

func TestTraceDNS(t *testing.T) {
	udp, tcp := dnsServer(t)
	r, trace := traced(mustNew(t, "dns://"+udp+"/a.test", 2*time.Second, Options{}))
	requireOutcome(t, Success, r)
	for _, want := range []string{
		"address: 127.0.0.1 (literal, no lookup)",
		"connect: udp " + udp,
		"query: a.test. IN A (id ",
		"udp to " + udp,
		"reply: NOERROR in ",
		"flags qr rd; answer 2, authority 0, additional 0)",
		"answer: a.test. 60 IN A 127.0.0.1",
		"answer: a.test. 60 IN A 127.0.0.2",
		"assert: rcode NOERROR, 2 answer(s) of type A → pass",
	} {
		require.Contains(t, trace, want, trace)
	}
	r, trace = traced(mustNew(t, "dns://"+tcp+"/a.test?type=TXT&transport=tcp", 2*time.Second, Options{}))
	requireOutcome(t, Success, r)
	require.Contains(t, trace, `answer: a.test. 60 IN TXT "v=spf1 -all"`, trace)
	require.Contains(t, trace, "tcp to "+tcp, trace)

	r, trace = traced(mustNew(t, "dns://"+udp+"/nx.test", 2*time.Second, Options{}))
	requireOutcome(t, DNSNXDomain, r)
	require.Contains(t, trace, "reply: NXDOMAIN", trace)
	require.Contains(t, trace, "assert: rcode NXDOMAIN, 0 answer(s) of type A → FAIL", trace)
}

func TestTraceTCP(t *testing.T) {
	addr := tcpPeer(t)
	r, trace := traced(mustNew(t, "tcp://"+addr, 2*time.Second, Options{Send: "PING\r\n", Expect: "PONG", ExpectRegex: `PING\s`}))
	requireOutcome(t, Success, r)
	for _, want := range []string{
		"connect: tcp " + addr,
		"connected: 127.0.0.1:",
		`send: 6 bytes: PING\r\n`,
		`recv: 12 bytes: PONG PING\r\n\x01`,
		`assert: expect "PONG" → pass`,
		`assert: expect_regex "PING\\s" → pass`,
	} {
		require.Contains(t, trace, want, trace)
	}
	r, trace = traced(mustNew(t, "tcp://"+addr, 2*time.Second, Options{Send: "x", Expect: "NOPE"}))
	requireOutcome(t, StringMismatch, r)
	require.Contains(t, trace, `assert: expect "NOPE" → FAIL`, trace)

	r, trace = traced(mustNew(t, "tcp://localhost:"+portOf(t, freePort(t)), 2*time.Second, Options{}))
	requireOutcome(t, ConnectionFailed, r)
	require.Regexp(t, `resolve: localhost → \S+`, trace)
	require.Contains(t, trace, "connection refused", trace)
}

func TestTraceICMP(t *testing.T) {
	requireICMPTools(t)
	r, trace := traced(mustNew(t, "icmp://127.0.0.1", 2*time.Second, icmpOpts(3, 10*time.Millisecond, PrivilegedTrue)))
	requireOutcome(t, Success, r)
	require.Contains(t, trace, "ping: 3 echo request(s) to 127.0.0.1, 10ms apart, payload 56 bytes, ttl 64, raw (privileged) socket", trace)
	for seq := 0; seq < 3; seq++ {
		require.Regexp(t, fmt.Sprintf(`echo: seq %d \(sent at \+\S+\): reply from 127\.0\.0\.1, rtt \S+, ttl 64`, seq), trace)
	}
}

func TestPrintable(t *testing.T) {
	require.Equal(t, `ok \x00\xff\n\r\t\\ é`, printable([]byte("ok \x00\xff\n\r\t\\ é")))
	require.Equal(t, strings.Repeat("a", previewBytes)+" …", preview([]byte(strings.Repeat("a", previewBytes+1))))
}

func TestHeaderValue(t *testing.T) {
	for name, value := range map[string]string{
		"Authorization": "Basic x", "Proxy-Authorization": "x", "Cookie": "a=b", "Set-Cookie": "a=b",
		"X-Api-Key": "k", "X-Auth-Token": "t", "apikey": "k", "X-Custom": "Bearer abc", "X-Client-Secret": "s",
	} {
		require.Equal(t, "<redacted>", HeaderValue(name, value), name)
	}
	require.Equal(t, "text/plain", HeaderValue("Content-Type", "text/plain"))
	require.Equal(t, "https://u@h/?token=REDACTED", HeaderValue("Location", "https://u:pw@h/?token=abc"))
}
