package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

func runProbe(t *testing.T, conf, name string) (string, int) {
	t.Helper()
	out, err := exec.Command(binPath, "-config", writeConf(t, conf), "-probe", name).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

// -probe NAME probes one service once and prints its trace: exit 0 on
// success, 1 on a failed probe, 2 on a bad config or name; secrets never
// appear.
func TestBinaryProbeTrace(t *testing.T) {
	srv := target(t)
	refused := refusedAddr(t)
	conf := `[[inputs.service_latency]]
[[inputs.service_latency.service]]
  name = "ok"
  url = "` + strings.Replace(srv.URL, "http://", "http://u:SECRETPW@", 1) + `/health"
  bearer_token = "SECRETBT"
[[inputs.service_latency.service]]
  name = "down"
  url = "tcp://` + refused + `"
`
	valid := strings.Replace(conf, `  bearer_token = "SECRETBT"`+"\n", "", 1)
	out, code := runProbe(t, valid, "ok")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "options in effect")
	require.Contains(t, out, "outcome:\n  success")
	require.Contains(t, out, "field latency = ")
	require.Contains(t, out, "tag   result = success")
	require.NotContains(t, out, "SECRETPW")

	out, code = runProbe(t, conf, "ok")
	require.Equal(t, 2, code, "bearer token and URL credentials together are a config error: %s", out)
	require.Contains(t, out, "bearer_token")
	require.NotContains(t, out, "SECRETBT")
	require.NotContains(t, out, "SECRETPW")

	out, code = runProbe(t, valid, "down")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "connection_failed")
	require.Contains(t, out, "field result_code = 3")

	out, code = runProbe(t, valid, "nope")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, `no service named "nope"`)

	out, code = runProbe(t, "[[inputs.service_latency]]\n  bogus = 1\n", "ok")
	require.Equal(t, 2, code, out)
	require.Contains(t, out, `"bogus"`)
	for _, s := range []string{"SECRETPW", "SECRETBT"} {
		require.NotContains(t, out, s)
	}
}

// requireStep asserts that the trace has a step with a time offset whose
// detail contains detail.
func requireStep(t *testing.T, out, step, detail string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^  \+\d+\.\d{6}s ` + regexp.QuoteMeta(step) + ` +.*` + regexp.QuoteMeta(detail))
	require.Regexpf(t, re, out, "step %q with %q", step, detail)
}

// The trace of an HTTPS service whose certificate fails verification
// names the certificate presented (subject, issuer, NotAfter) and the
// verification error; exit status 1.
func TestBinaryProbeTLSVerificationFailure(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	t.Cleanup(srv.Close)
	leaf := srv.Certificate()
	out, code := runProbe(t, `[[inputs.service_latency]]
[[inputs.service_latency.service]]
  name = "bad-cert"
  url = "`+srv.URL+`/health"
`, "bad-cert")
	require.Equal(t, 1, code, out)
	notAfter := leaf.NotAfter.UTC().Format(time.RFC3339)
	requireStep(t, out, "request", "GET "+srv.URL+"/health HTTP/1.1")
	requireStep(t, out, "connected", "127.0.0.1:")
	requireStep(t, out, "tls", `handshake failed (server name "127.0.0.1"): tls: failed to verify certificate: x509: certificate signed by unknown authority`)
	requireStep(t, out, "tls cert", fmt.Sprintf("#0 subject %q, issuer %q, not before ", leaf.Subject.String(), leaf.Issuer.String()))
	requireStep(t, out, "tls cert", "not after "+notAfter)
	requireStep(t, out, "tls verify", fmt.Sprintf("FAILED at certificate #0 (subject %q, issuer %q, not after %s): x509: certificate signed by unknown authority (self-signed",
		leaf.Subject.String(), leaf.Issuer.String(), notAfter))
	require.Contains(t, out, "outcome:\n  tls_error: ")
	require.Contains(t, out, "tag   result = tls_error")
	require.Contains(t, out, "field result_code = 7")
}

// A successful HTTP trace: request line and headers sent, status line and
// headers received, the body's first bytes, each assertion's verdict; a
// bearer token, basic auth, a URL password, a credential query parameter
// or header never appear.
func TestBinaryProbeHTTPTrace(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Served-By", "loopback")
		w.Header().Set("Set-Cookie", "session=SECRETCOOKIE")
		fmt.Fprint(w, "{\"status\":\"up\"}\x00\n")
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	conf := `[[inputs.service_latency]]
  body_contains = "up"
  body_regex = "status.:.up"
  expected_status = ["200"]
  headers = { "X-Api-Key" = "SECRETKEY", "X-Request" = "debug" }
[[inputs.service_latency.service]]
  name = "bearer"
  url = "` + srv.URL + `/health?x=1&token=SECRETQUERY"
  bearer_token = "SECRETBT"
[[inputs.service_latency.service]]
  name = "basic"
  url = "` + srv.URL + `/health?x=1&token=SECRETQUERY"
  username = "bob"
  password = "SECRETBASIC"
  keep_alive = true
[[inputs.service_latency.service]]
  name = "userinfo"
  url = "` + strings.Replace(srv.URL, "http://", "http://alice:SECRETPW@", 1) + `/health?x=1&token=SECRETQUERY"
`
	for _, name := range []string{"bearer", "basic", "userinfo"} {
		t.Run(name, func(t *testing.T) {
			out, code := runProbe(t, conf, name)
			require.Equal(t, 0, code, out)
			requireStep(t, out, "request", "GET "+srv.URL+"/health?x=1&token=REDACTED HTTP/1.1")
			requireStep(t, out, "address", "127.0.0.1 (literal, no lookup)")
			requireStep(t, out, "connect", "tcp "+host)
			requireStep(t, out, "send", "Host: "+host)
			requireStep(t, out, "send", "Authorization: <redacted>")
			requireStep(t, out, "send", "X-Api-Key: <redacted>")
			requireStep(t, out, "send", "X-Request: debug")
			requireStep(t, out, "response", "HTTP/1.1 200 OK")
			requireStep(t, out, "recv", "Content-Length: 17")
			requireStep(t, out, "recv", "X-Served-By: loopback")
			requireStep(t, out, "recv", "Set-Cookie: <redacted>")
			requireStep(t, out, "assert", "expected_status 200: got 200 → pass")
			requireStep(t, out, "body", `17 bytes (read to its end): {"status":"up"}\x00\n`)
			requireStep(t, out, "assert", "max_body_size 1048576: 17 bytes → pass")
			requireStep(t, out, "assert", `body_contains "up" → pass`)
			requireStep(t, out, "assert", `body_regex "status.:.up" → pass`)
			require.Contains(t, out, "outcome:\n  success")
			for _, s := range []string{"SECRETBT", "SECRETBASIC", "SECRETPW", "SECRETQUERY", "SECRETKEY", "SECRETCOOKIE",
				base64.StdEncoding.EncodeToString([]byte("bob:SECRETBASIC")), base64.StdEncoding.EncodeToString([]byte("alice:SECRETPW"))} {
				require.NotContains(t, out, s)
			}
		})
	}
}

// A DNS trace shows the query and every RR of the reply.
func TestBinaryProbeDNSTrace(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		for _, rr := range []string{"svc.test. 30 IN CNAME web.test.", "web.test. 30 IN A 192.0.2.10", "web.test. 30 IN A 192.0.2.11"} {
			r, err := dns.NewRR(rr)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, r)
		}
		ns, _ := dns.NewRR("test. 30 IN NS ns.test.")
		m.Ns = append(m.Ns, ns)
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	addr := pc.LocalAddr().String()

	out, code := runProbe(t, `[[inputs.service_latency]]
[[inputs.service_latency.service]]
  name = "dns"
  url = "dns://`+addr+`/svc.test"
`, "dns")
	require.Equal(t, 0, code, out)
	requireStep(t, out, "connect", "udp "+addr)
	requireStep(t, out, "query", "svc.test. IN A (id ")
	requireStep(t, out, "reply", "NOERROR in ")
	requireStep(t, out, "reply", "flags qr aa rd; answer 3, authority 1, additional 0)")
	requireStep(t, out, "answer", "svc.test. 30 IN CNAME web.test.")
	requireStep(t, out, "answer", "web.test. 30 IN A 192.0.2.10")
	requireStep(t, out, "answer", "web.test. 30 IN A 192.0.2.11")
	requireStep(t, out, "authority", "test. 30 IN NS ns.test.")
	requireStep(t, out, "assert", "rcode NOERROR, 2 answer(s) of type A → pass")
	require.Contains(t, out, "field dns_answers = 2")
}

// A TCP trace shows what was sent, what came back and the expect verdict.
func TestBinaryProbeTCPTrace(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			fmt.Fprintf(c, "+PONG %s", buf[:n])
			c.Close()
		}
	}()
	out, code := runProbe(t, `[[inputs.service_latency]]
[[inputs.service_latency.service]]
  name = "tcp"
  url = "tcp://`+ln.Addr().String()+`"
  send = "PING\r\n"
  expect = "+PONG"
`, "tcp")
	require.Equal(t, 0, code, out)
	requireStep(t, out, "connect", "tcp "+ln.Addr().String())
	requireStep(t, out, "send", `6 bytes: PING\r\n`)
	requireStep(t, out, "recv", `12 bytes: +PONG PING\r\n`)
	requireStep(t, out, "assert", `expect "+PONG" → pass`)
}
