package probe

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
)

// bothPaths returns a prober on the fast path and one on the Transport
// path for the same URL and options.
func bothPaths(t *testing.T, rawURL string, timeout time.Duration, o Options) (fast, transport *httpProber) {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	fast, err = buildHTTP(u, timeout, &o, true)
	require.NoError(t, err)
	require.NotNil(t, fast.fast, "expected the fast path")
	transport, err = buildHTTP(u, timeout, &o, false)
	require.NoError(t, err)
	require.Nil(t, transport.fast)
	t.Cleanup(fast.Close)
	t.Cleanup(transport.Close)
	return fast, transport
}

func fieldKeys(r Result) []string {
	keys := make([]string, 0, len(r.Fields))
	for _, f := range r.Fields {
		keys = append(keys, f.Key)
	}
	return keys
}

// readRequestHead reads one request's head (and a Content-Length body) so
// that closing the connection afterwards does not reset it.
func readRequestHead(c net.Conn) ([]byte, error) {
	br := bufio.NewReader(c)
	var head bytes.Buffer
	n := 0
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return head.Bytes(), err
		}
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, n)
	_, err := io.ReadFull(br, body)
	return append(head.Bytes(), body...), err
}

// rawHTTPServer answers every request with resp, then closes.
func rawHTTPServer(t *testing.T, resp string) string {
	return testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) {
		if _, err := readRequestHead(c); err != nil {
			return
		}
		_, _ = io.WriteString(c, resp)
	})
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, _ = io.WriteString(zw, s)
	_ = zw.Close()
	return b.Bytes()
}

// TestHTTPFastPathMatchesTransport runs the same probes on both paths:
// same outcome, same fields, same status code and TLS version.
func TestHTTPFastPathMatchesTransport(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", ok)
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/size", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = w.Write(bytes.Repeat([]byte("x"), n))
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i < 3; i++ {
			_, _ = fmt.Fprintf(w, "part %d ", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			_, _ = io.WriteString(w, "hello plain")
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(gzipped("hello gzip"))
	})
	mux.HandleFunc("/badgzip", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = io.WriteString(w, "this is not gzip")
	})
	mux.HandleFunc("/emptygzip", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.(http.Flusher).Flush() // chunked, no bytes
	})
	srv, _ := newHTTPServer(t, mux.ServeHTTP)

	cert := selfSigned(t, time.Hour)
	tlsSrv := newHTTPSServer(t, cert.cert, ok)

	huge := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 300<<10) + "\r\nContent-Length: 2\r\n\r\nok"
	silent := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	closer := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = readRequestHead(c) })
	// stalls answers with part of a response, then nothing until closed.
	stalls := func(part string) string {
		return testpeer.Serve(t, func(c net.Conn, done <-chan struct{}) {
			if _, err := readRequestHead(c); err != nil {
				return
			}
			_, _ = io.WriteString(c, part)
			<-done
		})
	}

	cases := []struct {
		name    string
		url     string
		opts    Options
		timeout time.Duration
		want    Outcome
	}{
		{"ok", srv.URL + "/ok", Options{BodyContains: "ok"}, 0, Success},
		{"404", srv.URL + "/status/404", Options{}, 0, ResponseStatusCodeMismatch},
		{"204", srv.URL + "/status/204", Options{}, 0, Success},
		{"304", srv.URL + "/status/304", Options{}, 0, Success},
		{"redirect not followed", srv.URL + "/redirect", Options{}, 0, Success},
		{"redirect, 2xx expected", srv.URL + "/redirect", Options{ExpectedStatus: StatusList{"2xx"}}, 0, ResponseStatusCodeMismatch},
		{"contains miss", srv.URL + "/ok", Options{BodyContains: "nope"}, 0, ResponseStringMismatch},
		{"regex hit", srv.URL + "/chunked", Options{BodyRegex: `part 0 part 1 part 2`}, 0, Success},
		{"at max_body_size", srv.URL + "/size?n=100", Options{MaxBodySize: 100}, 0, Success},
		{"over max_body_size", srv.URL + "/size?n=101", Options{MaxBodySize: 100}, 0, BodyReadError},
		{"gzip decoded", srv.URL + "/gzip", Options{BodyContains: "hello gzip"}, 0, Success},
		{"own Accept-Encoding: not decoded", srv.URL + "/gzip", Options{BodyContains: "hello plain", Headers: map[string]string{"Accept-Encoding": "identity"}}, 0, Success},
		{"bad gzip", srv.URL + "/badgzip", Options{}, 0, BodyReadError},
		{"empty gzip", srv.URL + "/emptygzip", Options{}, 0, Success},
		{"HEAD", srv.URL + "/size?n=50", Options{Method: "HEAD"}, 0, Success},
		{"POST with body", srv.URL + "/ok", Options{Method: "POST", Body: "a=1"}, 0, Success},
		{"1xx skipped", "http://" + rawHTTPServer(t, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") + "/", Options{BodyContains: "ok"}, 0, Success},
		{"close-delimited body", "http://" + rawHTTPServer(t, "HTTP/1.0 200 OK\r\n\r\nuntil close") + "/", Options{BodyContains: "until close"}, 0, Success},
		{"truncated body", "http://" + rawHTTPServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok") + "/", Options{}, 0, BodyReadError},
		{"headers over 256 KiB", "http://" + rawHTTPServer(t, huge) + "/", Options{}, 0, ConnectionFailed},
		{"garbage", "http://" + rawHTTPServer(t, "garbage\r\n\r\n") + "/", Options{}, 0, ConnectionFailed},
		{"closed without answer", "http://" + closer + "/", Options{}, 0, ConnectionFailed},
		{"refused", "http://" + freePort(t) + "/", Options{}, 0, ConnectionFailed},
		{"silent", "http://" + silent + "/", Options{}, 200 * time.Millisecond, Timeout},
		{"status line cut by the deadline", "http://" + stalls("HTTP/1.1 20") + "/", Options{}, 200 * time.Millisecond, Timeout},
		{"header cut by the deadline", "http://" + stalls("HTTP/1.1 200 OK\r\nContent-Le") + "/", Options{}, 200 * time.Millisecond, Timeout},
		{"body cut by the deadline", "http://" + stalls("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok") + "/", Options{}, 200 * time.Millisecond, Timeout},
		{"chunk cut by the deadline", "http://" + stalls("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n1") + "/", Options{}, 200 * time.Millisecond, Timeout},
		{"host name", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/ok", Options{}, 0, Success},
		{"https", tlsSrv.URL + "/", Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}}, 0, Success},
		{"https host name", strings.Replace(tlsSrv.URL, "127.0.0.1", "localhost", 1) + "/", Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}}, 0, Success},
		{"https untrusted", tlsSrv.URL + "/", Options{}, 0, TLSError},
		{"https wrong name", tlsSrv.URL + "/", Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile, ServerName: "other.example"}}, 0, TLSError},
		{"https to plain http", strings.Replace(srv.URL, "http://", "https://", 1) + "/ok", Options{}, 0, TLSError},
		{"https to silent", "https://" + silent + "/", Options{}, 200 * time.Millisecond, Timeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			fast, transport := bothPaths(t, tc.url, timeout, tc.opts)
			rf := fast.Probe(context.Background())
			rt := transport.Probe(context.Background())
			requireOutcome(t, tc.want, rf)
			requireOutcome(t, tc.want, rt)
			if tc.want == Timeout {
				// The Transport reports a phase cut short by the deadline
				// only if its hook fires before Probe returns (a race);
				// the fast path always does.
				require.Subset(t, fieldKeys(rf), fieldKeys(rt), "fields (fast ⊇ transport)")
			} else {
				require.Equal(t, fieldKeys(rt), fieldKeys(rf), "fields (transport, fast)")
			}
			for _, k := range []string{"http_response_code", "tls_version"} {
				vt, _ := field(rt, k)
				vf, _ := field(rf, k)
				require.Equal(t, vt, vf, k)
			}
			require.Equal(t, rt.Err == nil, rf.Err == nil)
			if tc.want == Timeout {
				requireByDeadline(t, rf.Latency, timeout)
			}
			if tc.want == Success {
				require.Greater(t, rf.Latency, time.Duration(0))
				for _, f := range rf.Fields {
					if v, isFloat := f.Value.(float64); isFloat && f.Key != "tls_cert_expiry" {
						require.GreaterOrEqual(t, v, 0.0, f.Key)
						require.LessOrEqual(t, v, rf.Latency.Seconds(), f.Key)
					}
				}
			}
		})
	}
}

// TestHTTPFastPathRequestBytes checks that both paths put the same request
// on the wire: request line, header lines (in any order) and body.
func TestHTTPFastPathRequestBytes(t *testing.T) {
	reqs := make(chan []byte, 4)
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) {
		b, err := readRequestHead(c)
		if err != nil {
			return
		}
		reqs <- b
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	split := func(b []byte) (line string, headers []string, body string) {
		head, body, _ := strings.Cut(string(b), "\r\n\r\n")
		lines := strings.Split(head, "\r\n")
		headers = lines[1:]
		sort.Strings(headers)
		return lines[0], headers, body
	}
	secret := func(s string) config.Secret { return config.NewSecret([]byte(s)) }
	cases := []struct {
		name string
		url  string
		opts Options
	}{
		{"GET", "http://" + addr + "/a/b?c=d&e=%20f", Options{}},
		{"POST", "http://" + addr + "/submit", Options{
			Method:  "POST",
			Body:    `{"a":1}`,
			Headers: map[string]string{"X-Probe": "yes", "host": "vhost.test", "Content-Type": "application/json", "User-Agent": "custom/1"},
		}},
		{"PUT without body", "http://" + addr + "/", Options{Method: "PUT"}},
		{"HEAD", "http://" + addr + "/", Options{Method: "HEAD"}},
		{"Range", "http://" + addr + "/", Options{Headers: map[string]string{"Range": "bytes=0-1"}}},
		{"basic", "http://" + addr + "/", Options{Username: secret("alice"), Password: secret("pw")}},
		{"basic over a header", "http://" + addr + "/", Options{Username: secret("alice"), Password: secret("pw"), Headers: map[string]string{"Authorization": "x"}}},
		{"bearer", "http://" + addr + "/", Options{BearerToken: secret("tok-1  ")}},
		{"userinfo", "http://bob:secret@" + addr + "/", Options{}},
		{"no path", "http://" + addr, Options{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fast, transport := bothPaths(t, tc.url, 2*time.Second, tc.opts)
			requireOutcome(t, Success, transport.Probe(context.Background()))
			lt, ht, bt := split(<-reqs)
			requireOutcome(t, Success, fast.Probe(context.Background()))
			lf, hf, bf := split(<-reqs)
			require.Equal(t, lt, lf)
			require.Equal(t, ht, hf)
			require.Equal(t, bt, bf)
			require.Contains(t, hf, "Connection: close")
		})
	}
}

func TestHTTPFastPathChosen(t *testing.T) {
	cases := []struct {
		url  string
		opts Options
		fast bool
	}{
		{"http://127.0.0.1/", Options{}, true},
		{"https://localhost:8443/x", Options{BodyContains: "x", BearerToken: config.NewSecret([]byte("t"))}, true},
		{"http://127.0.0.1/", Options{KeepAlive: ptr(false)}, true},
		{"http://127.0.0.1/", Options{KeepAlive: ptr(true)}, false},
		{"http://127.0.0.1/", Options{FollowRedirects: ptr(true)}, false},
		{"http://127.0.0.1/", Options{HTTPProxy: proxy.HTTPProxy{HTTPProxyURL: "http://127.0.0.1:3128"}}, false},
		{"http://127.0.0.1/", Options{HTTPProxy: proxy.HTTPProxy{UseSystemProxy: true}}, false},
		{"http://127.0.0.1/", Options{Headers: map[string]string{"connection": "keep-alive"}}, false},
		{"http://127.0.0.1/", Options{Headers: map[string]string{"Expect": "100-continue"}}, false},
		{"http://127.0.0.1/", Options{Headers: map[string]string{"X-A": "a\x01b"}}, false},
		{"http://bücher.example/", Options{}, false},
	}
	for _, tc := range cases {
		p, err := New(tc.url, time.Second, tc.opts)
		require.NoError(t, err, tc.url)
		hp := p.(*httpProber)
		require.Equal(t, tc.fast, hp.fast != nil, "%s %+v", tc.url, tc.opts)
		require.Equal(t, tc.fast, hp.transport == nil)
		p.Close()
	}
}

func TestHTTPFastPathInvalidBearer(t *testing.T) {
	srv, conns := newHTTPServer(t, ok)
	fast, transport := bothPaths(t, srv.URL+"/", time.Second, Options{BearerToken: config.NewSecret([]byte("tok\nsecret"))})
	for _, p := range []*httpProber{fast, transport} {
		r := p.Probe(context.Background())
		requireOutcome(t, ConnectionFailed, r)
		require.ErrorContains(t, r.Err, "invalid header field value")
		require.NotContains(t, r.Err.Error(), "secret")
	}
	require.Zero(t, conns.Load())
}

func TestHTTPFastPathCanceled(t *testing.T) {
	t.Parallel()
	srv, _ := newHTTPServer(t, func(_ http.ResponseWriter, r *http.Request) { waitDone(r) })
	cert := selfSigned(t, time.Hour)
	// A TLS server that never completes the handshake.
	silent := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	for _, u := range []string{srv.URL + "/", "https://" + silent + "/"} {
		p := mustNew(t, u, 5*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
		require.NotNil(t, p.(*httpProber).fast)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(150*time.Millisecond, cancel)
		start := time.Now()
		r := p.Probe(ctx)
		elapsed := time.Since(start)
		cancel()
		requireOutcome(t, Timeout, r)
		require.GreaterOrEqual(t, elapsed, 140*time.Millisecond, u)
		require.Less(t, elapsed, 150*time.Millisecond+deadlineSlack, u)
	}
}

func BenchmarkHTTPProbePaths(b *testing.B) {
	srv, _ := newHTTPServer(b, ok)
	u, err := url.Parse(srv.URL + "/")
	require.NoError(b, err)
	for _, fast := range []bool{true, false} {
		name := "fast"
		if !fast {
			name = "transport"
		}
		b.Run(name, func(b *testing.B) {
			o := Options{BodyContains: "ok"}
			p, err := buildHTTP(u, time.Second, &o, fast)
			require.NoError(b, err)
			defer p.Close()
			benchmarkProbe(b, p)
		})
	}
}

// TestHTTPAuthorizationOneRule checks the credentials of both paths: the
// value appendAuthorization builds, what each path puts on the wire, and
// that a value net/http would refuse fails both the same way before any
// connection.
func TestHTTPAuthorizationOneRule(t *testing.T) {
	heads := make(chan string, 1)
	var conns atomic.Int64
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) {
		conns.Add(1)
		b, err := readRequestHead(c)
		if err != nil {
			return
		}
		heads <- string(b)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	authLine := func(head string) string {
		for _, line := range strings.Split(head, "\r\n") {
			if v, found := strings.CutPrefix(line, "Authorization: "); found {
				return v
			}
		}
		return "(none)"
	}
	secret := func(s string) config.Secret { return config.NewSecret([]byte(s)) }
	cases := []struct {
		name string
		url  string
		opts Options
		want string // the header value; "" for errInvalidAuth
	}{
		{"basic", "http://" + addr + "/", Options{Username: secret("alice"), Password: secret("pw")}, "Basic YWxpY2U6cHc="},
		{"basic user only", "http://" + addr + "/", Options{Username: secret("alice")}, "Basic YWxpY2U6"},
		{"basic control bytes", "http://" + addr + "/", Options{Username: secret("a\nb"), Password: secret("\x00")}, "Basic YQpiOgA="},
		{"userinfo", "http://bob:pw@" + addr + "/", Options{}, "Basic Ym9iOnB3"},
		{"bearer", "http://" + addr + "/", Options{BearerToken: secret("tok-1")}, "Bearer tok-1"},
		{"bearer trailing space", "http://" + addr + "/", Options{BearerToken: secret("tok-1 \t ")}, "Bearer tok-1"},
		{"bearer inner tab", "http://" + addr + "/", Options{BearerToken: secret("a\tb")}, "Bearer a\tb"},
		{"bearer newline", "http://" + addr + "/", Options{BearerToken: secret("tok\nsecret")}, ""},
		{"bearer CR", "http://" + addr + "/", Options{BearerToken: secret("tok\rsecret")}, ""},
		{"bearer DEL", "http://" + addr + "/", Options{BearerToken: secret("tok\x7fsecret")}, ""},
		{"bearer NUL", "http://" + addr + "/", Options{BearerToken: secret("tok\x00secret")}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fast, transport := bothPaths(t, tc.url, 2*time.Second, tc.opts)

			if fast.auth != authNone {
				v, err := fast.appendAuthorization([]byte("prefix:"))
				if tc.want == "" {
					require.ErrorIs(t, err, errInvalidAuth)
					require.Equal(t, "prefix:", string(v), "nothing appended")
				} else {
					require.NoError(t, err)
					require.Equal(t, "prefix:"+tc.want, string(v))
				}
			}

			before := conns.Load()
			var errs []string
			for _, p := range []*httpProber{transport, fast} {
				r := p.Probe(context.Background())
				if tc.want == "" {
					requireOutcome(t, ConnectionFailed, r)
					require.ErrorIs(t, r.Err, errInvalidAuth)
					require.NotContains(t, r.Err.Error(), "secret")
					errs = append(errs, r.Err.Error())
					continue
				}
				requireOutcome(t, Success, r)
				require.Equal(t, tc.want, authLine(<-heads))
			}
			if tc.want == "" {
				require.Equal(t, errs[0], errs[1], "both paths fail alike")
				require.Equal(t, `Get "http://`+addr+`/": net/http: invalid header field value for "Authorization"`, errs[0])
				require.Equal(t, before, conns.Load(), "no connection for a refused Authorization")
			}
		})
	}
}
