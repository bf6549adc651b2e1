package probe

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
)

// newHTTPServer starts a loopback HTTP server that counts new connections.
func newHTTPServer(t testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	conns := new(atomic.Int32)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, conns
}

func newHTTPSServer(t *testing.T, cert tls.Certificate, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func ok(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }

// waitDone blocks until the request is canceled (or 10 s, a safety net).
func waitDone(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func TestHTTPLatencyIncludesServerDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		ok(w, r)
	})
	p := mustNew(t, srv.URL+"/", 2*time.Second, Options{})
	r := p.Probe(context.Background())
	requireOutcome(t, Success, r)
	require.NoError(t, r.Err)
	require.GreaterOrEqual(t, r.Latency, delay)
	require.Less(t, r.Latency, delay+50*time.Millisecond)
	ttfb := requireField(t, r, "time_to_first_byte").(float64)
	require.InDelta(t, delay.Seconds(), ttfb, 0.05)
	require.Equal(t, int64(200), requireField(t, r, "http_response_code"))
}

func TestHTTPLatencyIncludesBody(t *testing.T) {
	const delay = 100 * time.Millisecond
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "first part ")
		w.(http.Flusher).Flush()
		time.Sleep(delay)
		_, _ = io.WriteString(w, "second part")
	})
	p := mustNew(t, srv.URL+"/", 2*time.Second, Options{BodyContains: "second part"})
	r := p.Probe(context.Background())
	requireOutcome(t, Success, r)
	require.GreaterOrEqual(t, r.Latency, delay)
	require.Less(t, r.Latency, delay+50*time.Millisecond)
	require.Less(t, requireField(t, r, "time_to_first_byte").(float64), 0.05)
	require.InDelta(t, delay.Seconds(), requireField(t, r, "body_transfer").(float64), 0.05)
}

func TestHTTPConnectionRefused(t *testing.T) {
	p := mustNew(t, "http://"+freePort(t)+"/", 2*time.Second, Options{})
	r, elapsed := probeTimed(p)
	requireOutcome(t, ConnectionFailed, r)
	require.Error(t, r.Err)
	require.Less(t, elapsed, time.Second)
	requireNoField(t, r, "http_response_code")
}

func TestHTTPSlowServerTimesOut(t *testing.T) {
	t.Parallel()
	srv, _ := newHTTPServer(t, func(_ http.ResponseWriter, r *http.Request) { waitDone(r) })
	const timeout = 300 * time.Millisecond
	p := mustNew(t, srv.URL+"/", timeout, Options{})
	r, elapsed := probeTimed(p)
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
	requireNoField(t, r, "http_response_code")
}

func TestHTTPContextDeadlineWins(t *testing.T) {
	t.Parallel()
	srv, _ := newHTTPServer(t, func(_ http.ResponseWriter, r *http.Request) { waitDone(r) })
	p := mustNew(t, srv.URL+"/", 5*time.Second, Options{})
	const ctxTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
	defer cancel()
	start := time.Now()
	r := p.Probe(ctx)
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, time.Since(start), ctxTimeout)
}

func TestHTTPAcceptNeverAnswer(t *testing.T) {
	t.Parallel()
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	const timeout = 300 * time.Millisecond
	p := mustNew(t, "http://"+addr+"/", timeout, Options{})
	r, elapsed := probeTimed(p)
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
}

func TestHTTPSlowHeaderTimesOut(t *testing.T) {
	t.Parallel()
	// Writes a valid response one byte a second.
	addr := testpeer.Serve(t, func(c net.Conn, done <-chan struct{}) {
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		for i := 0; i < len(resp); i++ {
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
			if _, err := c.Write([]byte{resp[i]}); err != nil {
				return
			}
		}
	})
	const timeout = 1500 * time.Millisecond
	p := mustNew(t, "http://"+addr+"/", timeout, Options{})
	r, elapsed := probeTimed(p)
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
}

func TestHTTPExpectedStatus(t *testing.T) {
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if code >= 300 && code < 400 {
			w.Header().Set("Location", "/200")
		}
		w.WriteHeader(code)
	})
	cases := []struct {
		code     int
		expected StatusList
		want     Outcome
	}{
		{200, nil, Success},
		{204, nil, Success},
		{302, nil, Success},
		{399, nil, Success},
		{404, nil, ResponseStatusCodeMismatch},
		{500, nil, ResponseStatusCodeMismatch},
		{400, nil, ResponseStatusCodeMismatch},
		{302, StatusList{"2xx"}, ResponseStatusCodeMismatch},
		{201, StatusList{"2XX"}, Success},
		{404, StatusList{"404"}, Success},
		{200, StatusList{"404"}, ResponseStatusCodeMismatch},
		{503, StatusList{"200", "5xx"}, Success},
		{401, StatusList{"200", "5xx", "403"}, ResponseStatusCodeMismatch},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d_%v", tc.code, tc.expected), func(t *testing.T) {
			p := mustNew(t, fmt.Sprintf("%s/%d", srv.URL, tc.code), time.Second, Options{ExpectedStatus: tc.expected})
			r := p.Probe(context.Background())
			requireOutcome(t, tc.want, r)
			require.Equal(t, int64(tc.code), requireField(t, r, "http_response_code"))
			if tc.want != Success {
				require.ErrorContains(t, r.Err, strconv.Itoa(tc.code))
			}
		})
	}
}

func TestHTTPPhases(t *testing.T) {
	srv, _ := newHTTPServer(t, ok)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)

	t.Run("ip literal", func(t *testing.T) {
		p := mustNew(t, "http://127.0.0.1:"+port+"/", time.Second, Options{})
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		requireNoField(t, r, "dns_lookup")
		requireNoField(t, r, "tls_handshake")
		requireNoField(t, r, "tls_version")
		requireNoField(t, r, "tls_cert_expiry")
		for _, k := range []string{"tcp_connect", "time_to_first_byte", "body_transfer"} {
			v := requireField(t, r, k).(float64)
			require.GreaterOrEqual(t, v, 0.0, k)
			require.Less(t, v, r.Latency.Seconds()+1e-9, k)
		}
	})
	t.Run("host name", func(t *testing.T) {
		p := mustNew(t, "http://localhost:"+port+"/", time.Second, Options{})
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		dns := requireField(t, r, "dns_lookup").(float64)
		require.Greater(t, dns, 0.0)
		requireField(t, r, "tcp_connect")
	})
}

func TestHTTPKeepAlive(t *testing.T) {
	t.Run("on", func(t *testing.T) {
		srv, conns := newHTTPServer(t, ok)
		p := mustNew(t, srv.URL+"/", time.Second, Options{KeepAlive: ptr(true)})
		r1 := p.Probe(context.Background())
		requireOutcome(t, Success, r1)
		requireField(t, r1, "tcp_connect")
		r2 := p.Probe(context.Background())
		requireOutcome(t, Success, r2)
		requireNoField(t, r2, "tcp_connect")
		requireField(t, r2, "time_to_first_byte")
		require.Equal(t, int32(1), conns.Load())
	})
	t.Run("off", func(t *testing.T) {
		srv, conns := newHTTPServer(t, ok)
		p := mustNew(t, srv.URL+"/", time.Second, Options{})
		for i := 0; i < 3; i++ {
			r := p.Probe(context.Background())
			requireOutcome(t, Success, r)
			requireField(t, r, "tcp_connect")
		}
		require.Equal(t, int32(3), conns.Load())
	})
}

func TestHTTPS(t *testing.T) {
	const validFor = time.Hour
	cert := selfSigned(t, validFor)
	srv := newHTTPSServer(t, cert.cert, ok)

	t.Run("trusted via tls_ca", func(t *testing.T) {
		p := mustNew(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		require.Greater(t, requireField(t, r, "tls_handshake").(float64), 0.0)
		require.Equal(t, "1.3", requireField(t, r, "tls_version"))
		expiry := requireField(t, r, "tls_cert_expiry").(float64)
		require.InDelta(t, time.Until(cert.leaf.NotAfter).Seconds(), expiry, 2)
		require.InDelta(t, validFor.Seconds(), expiry, 5)
	})
	t.Run("host name verified", func(t *testing.T) {
		u := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
		p := mustNew(t, u+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
		requireOutcome(t, Success, p.Probe(context.Background()))
	})
	t.Run("untrusted", func(t *testing.T) {
		p := mustNew(t, srv.URL+"/", 2*time.Second, Options{})
		r := p.Probe(context.Background())
		requireOutcome(t, TLSError, r)
		require.ErrorContains(t, r.Err, "certificate")
		requireField(t, r, "tls_handshake")
		requireNoField(t, r, "http_response_code")
	})
	t.Run("wrong server name", func(t *testing.T) {
		p := mustNew(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile, ServerName: "other.example"}})
		requireOutcome(t, TLSError, p.Probe(context.Background()))
	})
	t.Run("insecure_skip_verify", func(t *testing.T) {
		p := mustNew(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{InsecureSkipVerify: true}})
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		require.InDelta(t, time.Until(cert.leaf.NotAfter).Seconds(), requireField(t, r, "tls_cert_expiry").(float64), 2)
	})
	t.Run("https to plain http", func(t *testing.T) {
		plain, _ := newHTTPServer(t, ok)
		u := strings.Replace(plain.URL, "http://", "https://", 1)
		requireOutcome(t, TLSError, mustNew(t, u+"/", 2*time.Second, Options{}).Probe(context.Background()))
	})
}

func TestHTTPSExpiredCertificate(t *testing.T) {
	cert := selfSigned(t, -time.Hour)
	srv := newHTTPSServer(t, cert.cert, ok)
	p := mustNew(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{InsecureSkipVerify: true}})
	r := p.Probe(context.Background())
	requireOutcome(t, Success, r)
	require.InDelta(t, -time.Hour.Seconds(), requireField(t, r, "tls_cert_expiry").(float64), 5)

	p = mustNew(t, srv.URL+"/", 2*time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile}})
	r = p.Probe(context.Background())
	requireOutcome(t, TLSError, r)
	require.ErrorContains(t, r.Err, "expired")
}

func TestHTTPRedirects(t *testing.T) {
	var okHits, loopHits atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		okHits.Add(1)
		ok(w, r)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		loopHits.Add(1)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/slowloop", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		http.Redirect(w, r, "/slowloop", http.StatusFound)
	})
	srv, _ := newHTTPServer(t, mux.ServeHTTP)

	t.Run("not followed by default", func(t *testing.T) {
		okHits.Store(0)
		r := mustNew(t, srv.URL+"/redirect", time.Second, Options{}).Probe(context.Background())
		requireOutcome(t, Success, r)
		require.Equal(t, int64(302), requireField(t, r, "http_response_code"))
		require.Zero(t, okHits.Load())
	})
	t.Run("not followed, 2xx expected", func(t *testing.T) {
		r := mustNew(t, srv.URL+"/redirect", time.Second, Options{ExpectedStatus: StatusList{"2xx"}}).Probe(context.Background())
		requireOutcome(t, ResponseStatusCodeMismatch, r)
	})
	t.Run("followed", func(t *testing.T) {
		okHits.Store(0)
		p := mustNew(t, srv.URL+"/redirect", time.Second, Options{FollowRedirects: ptr(true), BodyContains: "ok"})
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		require.Equal(t, int64(200), requireField(t, r, "http_response_code"))
		require.Equal(t, int32(1), okHits.Load())
	})
	t.Run("loop stops after 10 redirects", func(t *testing.T) {
		loopHits.Store(0)
		const timeout = 2 * time.Second
		p := mustNew(t, srv.URL+"/loop", timeout, Options{FollowRedirects: ptr(true)})
		r, elapsed := probeTimed(p)
		requireOutcome(t, ResponseStatusCodeMismatch, r)
		require.ErrorContains(t, r.Err, "stopped after 10 redirects")
		require.Equal(t, int64(302), requireField(t, r, "http_response_code"))
		require.Equal(t, int32(MaxRedirects+1), loopHits.Load())
		require.Less(t, elapsed, timeout+deadlineSlack)
		// 11 fresh connections, summed.
		requireField(t, r, "tcp_connect")
	})
	t.Run("slow loop ends at the deadline", func(t *testing.T) {
		t.Parallel()
		const timeout = 350 * time.Millisecond
		p := mustNew(t, srv.URL+"/slowloop", timeout, Options{FollowRedirects: ptr(true)})
		r, elapsed := probeTimed(p)
		requireOutcome(t, Timeout, r)
		requireByDeadline(t, elapsed, timeout)
	})
}

func TestHTTPBodySizeLimit(t *testing.T) {
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = w.Write(make([]byte, n))
	})
	cases := []struct {
		n, max int
		want   Outcome
	}{
		{1024, 1024, Success},
		{1025, 1024, BodyReadError},
		{64 << 10, 1024, BodyReadError},
		{DefaultMaxBodySize, 0, Success},
		{DefaultMaxBodySize + 1, 0, BodyReadError},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d_of_%d", tc.n, tc.max), func(t *testing.T) {
			p := mustNew(t, fmt.Sprintf("%s/?n=%d", srv.URL, tc.n), 5*time.Second, Options{MaxBodySize: config.Size(tc.max)})
			r, elapsed := probeTimed(p)
			requireOutcome(t, tc.want, r)
			require.Less(t, elapsed, time.Second)
			require.Equal(t, int64(200), requireField(t, r, "http_response_code"))
			if tc.want == BodyReadError {
				require.ErrorContains(t, r.Err, "max_body_size")
			}
		})
	}
}

func TestHTTPEndlessBody(t *testing.T) {
	t.Parallel()
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 1024)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	t.Run("slow endless body times out", func(t *testing.T) {
		t.Parallel()
		const timeout = 500 * time.Millisecond
		r, elapsed := probeTimed(mustNew(t, srv.URL+"/", timeout, Options{}))
		requireOutcome(t, Timeout, r)
		requireByDeadline(t, elapsed, timeout)
		require.Equal(t, int64(200), requireField(t, r, "http_response_code"))
	})
	t.Run("endless body over max_body_size fails fast", func(t *testing.T) {
		t.Parallel()
		r, elapsed := probeTimed(mustNew(t, srv.URL+"/", 5*time.Second, Options{MaxBodySize: 4096}))
		requireOutcome(t, BodyReadError, r)
		require.Less(t, elapsed, time.Second)
	})
}

// A server that declares a body larger than max_body_size and then stalls:
// the declared length decides at once, on both HTTP paths.
func TestHTTPDeclaredHugeBodyFailsFast(t *testing.T) {
	t.Parallel()
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<30))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	for _, keepAlive := range []bool{false, true} {
		r, elapsed := probeTimed(mustNew(t, srv.URL+"/", 5*time.Second, Options{KeepAlive: ptr(keepAlive)}))
		requireOutcome(t, BodyReadError, r)
		require.Less(t, elapsed, time.Second, "keep_alive=%v", keepAlive)
		require.ErrorContains(t, r.Err, "Content-Length 1073741824")
	}
}

func TestHTTPBodyMatch(t *testing.T) {
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "status: green, build 1234\n")
	})
	cases := []struct {
		name string
		opts Options
		want Outcome
	}{
		{"contains hit", Options{BodyContains: "green"}, Success},
		{"contains miss", Options{BodyContains: "red"}, ResponseStringMismatch},
		{"regex hit", Options{BodyRegex: `build \d+`}, Success},
		{"regex miss", Options{BodyRegex: `build [a-z]+`}, ResponseStringMismatch},
		{"both hit", Options{BodyContains: "green", BodyRegex: `^status:`}, Success},
		{"contains hit regex miss", Options{BodyContains: "green", BodyRegex: `^build`}, ResponseStringMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustNew(t, srv.URL+"/", time.Second, tc.opts).Probe(context.Background())
			requireOutcome(t, tc.want, r)
			require.Equal(t, int64(200), requireField(t, r, "http_response_code"))
		})
	}
}

func TestHTTPBasicAuth(t *testing.T) {
	const user, pass = "alice", "s3cret-pw"
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		u, p, found := r.BasicAuth()
		if !found || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ok(w, r)
	})
	secret := func(s string) config.Secret { return config.NewSecret([]byte(s)) }
	hostURL, err := url.Parse(srv.URL)
	require.NoError(t, err)

	cases := []struct {
		name string
		url  string
		opts Options
		want Outcome
	}{
		{"accepted", srv.URL + "/", Options{Username: secret(user), Password: secret(pass)}, Success},
		{"wrong password", srv.URL + "/", Options{Username: secret(user), Password: secret("nope")}, ResponseStatusCodeMismatch},
		{"no credentials", srv.URL + "/", Options{}, ResponseStatusCodeMismatch},
		{"url userinfo", "http://" + user + ":" + pass + "@" + hostURL.Host + "/", Options{}, Success},
		{"options override userinfo", "http://" + user + ":wrong@" + hostURL.Host + "/", Options{Username: secret(user), Password: secret(pass)}, Success},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, tc.url, time.Second, tc.opts)
			for i := 0; i < 2; i++ { // secrets are read anew for every probe
				r := p.Probe(context.Background())
				requireOutcome(t, tc.want, r)
				if tc.want != Success {
					require.Equal(t, int64(401), requireField(t, r, "http_response_code"))
					require.NotContains(t, r.Err.Error(), pass)
				}
			}
		})
	}
}

func TestHTTPCredentialsNotInErrors(t *testing.T) {
	p := mustNew(t, "http://alice:hunter2@"+freePort(t)+"/", time.Second, Options{})
	r := p.Probe(context.Background())
	requireOutcome(t, ConnectionFailed, r)
	require.NotContains(t, r.Err.Error(), "hunter2")
}

func TestHTTPBearerToken(t *testing.T) {
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ok(w, r)
	})
	r := mustNew(t, srv.URL+"/", time.Second, Options{BearerToken: config.NewSecret([]byte("tok-123"))}).Probe(context.Background())
	requireOutcome(t, Success, r)
	r = mustNew(t, srv.URL+"/", time.Second, Options{BearerToken: config.NewSecret([]byte("tok-999"))}).Probe(context.Background())
	requireOutcome(t, ResponseStatusCodeMismatch, r)
	require.NotContains(t, r.Err.Error(), "tok-999")
}

func TestHTTPRequestShape(t *testing.T) {
	type seen struct {
		method, host, probe, ua, ctype, body string
	}
	got := make(chan seen, 1)
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Host, r.Header.Get("X-Probe"), r.Header.Get("User-Agent"), r.Header.Get("Content-Type"), string(body)}
		ok(w, r)
	})

	p := mustNew(t, srv.URL+"/submit", time.Second, Options{
		Method:  "POST",
		Body:    `{"a":1}`,
		Headers: map[string]string{"X-Probe": "yes", "host": "vhost.test", "Content-Type": "application/json"},
	})
	for i := 0; i < 2; i++ { // the body is sent anew each time
		requireOutcome(t, Success, p.Probe(context.Background()))
		require.Equal(t, seen{"POST", "vhost.test", "yes", UserAgent, "application/json", `{"a":1}`}, <-got)
	}

	p = mustNew(t, srv.URL+"/", time.Second, Options{Headers: map[string]string{"User-Agent": "custom/1"}})
	requireOutcome(t, Success, p.Probe(context.Background()))
	s := <-got
	require.Equal(t, "custom/1", s.ua)
	require.Equal(t, "GET", s.method)
	require.Empty(t, s.body)
}

func TestHTTPProxy(t *testing.T) {
	backend, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "backend saw host "+r.Host)
	})
	backendURL, err := url.Parse(backend.URL)
	require.NoError(t, err)

	var proxied atomic.Int32
	fwd := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(fwd.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Transport: fwd,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backendURL)
			pr.Out.Host = pr.In.Host
		},
	}
	proxySrv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() { // not a forward-proxy request
			http.Error(w, "not a proxy request", http.StatusBadRequest)
			return
		}
		proxied.Add(1)
		rp.ServeHTTP(w, r)
	})

	// service.test is never resolved here: the proxy gets the absolute URI.
	p := mustNew(t, "http://service.test/hello", 2*time.Second, Options{
		BodyContains: "backend saw host service.test",
		HTTPProxy:    proxy.HTTPProxy{HTTPProxyURL: proxySrv.URL},
	})
	for i := int32(1); i <= 2; i++ {
		r := p.Probe(context.Background())
		requireOutcome(t, Success, r)
		require.Equal(t, i, proxied.Load())
		requireNoField(t, r, "dns_lookup")
	}
}

func TestHTTPConcurrentProbes(t *testing.T) {
	srv, _ := newHTTPServer(t, ok)
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_alive=%v", keepAlive), func(t *testing.T) {
			p := mustNew(t, srv.URL+"/", 2*time.Second, Options{KeepAlive: ptr(keepAlive), BodyContains: "ok", BearerToken: config.NewSecret([]byte("t"))})
			var wg sync.WaitGroup
			results := make(chan Result, 16*5)
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 5; i++ {
						results <- p.Probe(context.Background())
					}
				}()
			}
			wg.Wait()
			close(results)
			for r := range results {
				requireOutcome(t, Success, r)
			}
		})
	}
}
