package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/toml"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

func TestMain(m *testing.M) {
	// memguard (behind config.Secret) keeps one global goroutine.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/awnumar/memguard/core.NewCoffer.func1"))
}

// ---- helpers ----------------------------------------------------------

func ptr[T any](v T) *T { return &v }

func mustNew(t *testing.T, rawURL string, timeout time.Duration, o Options) Prober {
	t.Helper()
	p, err := New(rawURL, timeout, o)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func field(r Result, key string) (interface{}, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

func requireField(t *testing.T, r Result, key string) interface{} {
	t.Helper()
	v, ok := field(r, key)
	require.Truef(t, ok, "field %q missing in %v", key, r.Fields)
	return v
}

func requireNoField(t *testing.T, r Result, key string) {
	t.Helper()
	v, ok := field(r, key)
	require.Falsef(t, ok, "field %q present (%v), want absent", key, v)
}

func requireOutcome(t *testing.T, want Outcome, r Result) {
	t.Helper()
	require.Equalf(t, want, r.Outcome, "outcome %s, want %s (err: %v, fields: %v)", r.Outcome, want, r.Err, r.Fields)
}

// probeTimed runs one probe and returns its result and wall time.
func probeTimed(p Prober) (Result, time.Duration) {
	start := time.Now()
	r := p.Probe(context.Background())
	return r, time.Since(start)
}

// deadlineSlack is how late after its timeout a probe may return.
const deadlineSlack = 200 * time.Millisecond // a -race build on a loaded 2-core machine

func requireByDeadline(t *testing.T, elapsed, timeout time.Duration) {
	t.Helper()
	require.GreaterOrEqual(t, elapsed, timeout-5*time.Millisecond, "returned before the deadline")
	require.Less(t, elapsed, timeout+deadlineSlack, "returned too long after the deadline")
}

// freePort returns a loopback address where nothing listens.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

type testCert struct {
	cert   tls.Certificate
	leaf   *x509.Certificate
	caFile string // PEM of the self-signed certificate
}

// selfSigned makes a certificate for 127.0.0.1, ::1 and localhost that
// expires in validFor, written as PEM to a temp dir.
func selfSigned(t *testing.T, validFor time.Duration) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	now := time.Now()
	notBefore := now.Add(-time.Minute)
	if validFor < 0 { // already expired
		notBefore = now.Add(validFor - time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "service_latency probe test"},
		NotBefore:             notBefore,
		NotAfter:              now.Add(validFor),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return testCert{
		cert:   tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		leaf:   leaf,
		caFile: caFile,
	}
}

// ---- New, redactURL, Options -------------------------------------------

// allOutcomes lists every outcome in code order (test-only; it was probe.Outcomes).
func allOutcomes() []Outcome {
	out := make([]Outcome, len(outcomeNames))
	for i := range out {
		out[i] = Outcome(i)
	}
	return out
}

func TestOutcomeNames(t *testing.T) {
	want := []string{
		"success", "response_string_mismatch", "body_read_error", "connection_failed", "timeout",
		"dns_error", "response_status_code_mismatch", "tls_error", "read_failed", "string_mismatch",
		"dns_nxdomain", "dns_servfail", "dns_no_answer", "dns_rcode_error",
		"grpc_not_serving", "grpc_unknown", "grpc_service_unknown", "grpc_unimplemented", "grpc_error",
	}
	outcomes := allOutcomes()
	require.Len(t, outcomes, len(want))
	for i, o := range outcomes {
		require.Equal(t, i, int(o))
		require.Equal(t, want[i], o.String())
	}
	require.Equal(t, "unknown", Outcome(99).String())
}

func TestNewKinds(t *testing.T) {
	for rawURL, kind := range map[string]string{
		"http://127.0.0.1/":                                  "http",
		"HTTPS://example.com:8443/x":                         "http",
		"tcp://127.0.0.1:22":                                 "tcp",
		"dns://127.0.0.1/example.com":                        "dns",
		"dns://[::1]:5353/example.com?type=mx&transport=TCP": "dns",
	} {
		p, err := New(rawURL, time.Second, Options{})
		require.NoError(t, err, rawURL)
		require.Equal(t, kind, p.Kind(), rawURL)
		p.Close()
	}
}

func TestNewErrors(t *testing.T) {
	badCA := filepath.Join(t.TempDir(), "missing.pem")
	ca := func(c telegraftls.ClientConfig) Options { return Options{ClientConfig: c} }
	secret := func(s string) config.Secret { return config.NewSecret([]byte(s)) }
	cases := []struct {
		name    string
		url     string
		timeout time.Duration
		opts    Options
		key     string // keyerr.Key(err)
		prefix  string // err.Error() starts with it
	}{
		{"zero timeout", "http://127.0.0.1/", 0, Options{}, "timeout", "timeout: must be > 0"},
		{"unsupported scheme", "ftp://127.0.0.1/", time.Second, Options{}, "url", `url: unsupported scheme "ftp" (want http, https, tcp, dns, icmp, grpc, grpcs)`},
		{"missing scheme", "127.0.0.1:80", time.Second, Options{}, "url", "url: "},
		{"no scheme", "example.com/x", time.Second, Options{}, "url", "url: missing scheme"},
		{"no scheme userinfo", "//user:hunter2@127.0.0.1/", time.Second, Options{}, "url", `url: missing scheme in "//user@127.0.0.1/"`},
		{"unparsable", "http://user:hunter2@127.0.0.1/%zz", time.Second, Options{}, "url", `url: cannot parse "http://user@127.0.0.1/%zz"`},
		{"http no host", "http:///path", time.Second, Options{}, "url", "url: missing host"},
		{"bad port", "http://127.0.0.1:99999/", time.Second, Options{}, "url", "url: invalid port"},
		{"bad regex", "http://127.0.0.1/", time.Second, Options{BodyRegex: "a("}, "body_regex", "body_regex: error parsing regexp"},
		{"bad method", "http://127.0.0.1/", time.Second, Options{Method: "GE T"}, "method", "method: invalid method"},
		{"bad status", "http://127.0.0.1/", time.Second, Options{ExpectedStatus: StatusList{"abc"}}, "expected_status", "expected_status: invalid entry"},
		{"status too big", "http://127.0.0.1/", time.Second, Options{ExpectedStatus: StatusList{"200", "600"}}, "expected_status", "expected_status: invalid entry \"600\""},
		{"bad class", "http://127.0.0.1/", time.Second, Options{ExpectedStatus: StatusList{"6xx"}}, "expected_status", "expected_status: invalid entry"},
		{"negative size", "http://127.0.0.1/", time.Second, Options{MaxBodySize: -1}, "max_body_size", "max_body_size: must be >= 0"},
		{"bad header name", "http://127.0.0.1/", time.Second, Options{Headers: map[string]string{"Bad Header": "x"}}, "headers", "headers: invalid header name"},
		{"bad header value", "http://127.0.0.1/", time.Second, Options{Headers: map[string]string{"X-A": "a\r\nB: c"}}, "headers", "headers: invalid value"},
		{"send on http", "http://127.0.0.1/", time.Second, Options{Send: "PING"}, "send", "send: not supported for http probes (tcp only)"},
		{"expect on https", "https://127.0.0.1/", time.Second, Options{Expect: "x"}, "expect", "expect: not supported for https probes (tcp only)"},
		{"expect_regex on http", "http://127.0.0.1/", time.Second, Options{ExpectRegex: "x"}, "expect_regex", "expect_regex: not supported"},
		{"tls on http", "http://127.0.0.1/", time.Second, Options{TLS: ptr(true)}, "tls", "tls: not supported"},
		{"bearer and basic", "http://127.0.0.1/", time.Second, Options{BearerToken: secret("t"), Username: secret("u")}, "bearer_token", "bearer_token: cannot be combined"},
		{"bearer and userinfo", "http://u:hunter2@127.0.0.1/", time.Second, Options{BearerToken: secret("t")}, "bearer_token", "bearer_token: cannot be combined"},
		{"proxy scheme", "http://127.0.0.1/", time.Second, Options{HTTPProxy: proxy.HTTPProxy{HTTPProxyURL: "ftp://127.0.0.1:1"}}, "http_proxy_url", "http_proxy_url: unsupported scheme"},
		{"proxy no host", "http://127.0.0.1/", time.Second, Options{HTTPProxy: proxy.HTTPProxy{HTTPProxyURL: "http://"}}, "http_proxy_url", "http_proxy_url: missing host"},
		{"proxy unparsable", "http://127.0.0.1/", time.Second, Options{HTTPProxy: proxy.HTTPProxy{HTTPProxyURL: "http://p:hunter2@127.0.0.1:%zz"}}, "http_proxy_url", `http_proxy_url: cannot parse "http://p@127.0.0.1:%zz"`},
		{"missing ca", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSCA: badCA}), "tls_ca", "tls_ca: "},
		{"cert without key", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSCert: badCA}), "tls_cert", "tls_cert: requires tls_key"},
		{"key without cert", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSKey: badCA}), "tls_key", "tls_key: requires tls_cert"},
		{"missing cert", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSCert: badCA, TLSKey: badCA}), "tls_cert", "tls_cert: "},
		{"bad tls version", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSMinVersion: "TLS99"}), "tls_min_version", "tls_min_version: "},
		{"bad ciphers", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{TLSCipherSuites: []string{"nope"}}), "tls_cipher_suites", "tls_cipher_suites: "},
		{"bad renegotiation", "https://127.0.0.1/", time.Second, ca(telegraftls.ClientConfig{RenegotiationMethod: "always"}), "tls_renegotiation_method", "tls_renegotiation_method: "},
		{"tcp no port", "tcp://127.0.0.1", time.Second, Options{}, "url", "url: missing port"},
		{"tcp bad port", "tcp://127.0.0.1:0", time.Second, Options{}, "url", `url: invalid port "0"`},
		{"tcp no host", "tcp://:22", time.Second, Options{}, "url", "url: missing host"},
		{"tcp path", "tcp://127.0.0.1:22/x", time.Second, Options{}, "url", "url: tcp URLs are tcp://host:port"},
		{"tcp userinfo", "tcp://u:hunter2@127.0.0.1:22", time.Second, Options{}, "url", `url: tcp URLs are tcp://host:port, got "tcp://u@127.0.0.1:22"`},
		{"method on tcp", "tcp://127.0.0.1:22", time.Second, Options{Method: "GET"}, "method", "method: not supported for tcp probes (http only)"},
		{"headers on tcp", "tcp://127.0.0.1:22", time.Second, Options{Headers: map[string]string{"a": "b"}}, "headers", "headers: not supported for tcp probes"},
		{"proxy on tcp", "tcp://127.0.0.1:22", time.Second, Options{HTTPProxy: proxy.HTTPProxy{HTTPProxyURL: "http://127.0.0.1:3128"}}, "http_proxy_url", "http_proxy_url: not supported for tcp probes"},
		{"system proxy on tcp", "tcp://127.0.0.1:22", time.Second, Options{HTTPProxy: proxy.HTTPProxy{UseSystemProxy: true}}, "use_system_proxy", "use_system_proxy: not supported for tcp probes"},
		{"password on tcp", "tcp://127.0.0.1:22", time.Second, Options{Password: secret("hunter2")}, "password", "password: not supported for tcp probes"},
		{"bad expect_regex", "tcp://127.0.0.1:22", time.Second, Options{ExpectRegex: "["}, "expect_regex", "expect_regex: error parsing regexp"},
		{"tls conflict", "tcp://127.0.0.1:22", time.Second, Options{TLS: ptr(true), ClientConfig: telegraftls.ClientConfig{Enable: ptr(false)}}, "tls", "tls: tls = true conflicts"},
		{"tcp bad ca", "tcp://127.0.0.1:22", time.Second, Options{TLS: ptr(true), ClientConfig: telegraftls.ClientConfig{TLSCA: badCA}}, "tls_ca", "tls_ca: "},
		{"tcp_enable bad ca", "tcp://127.0.0.1:22", time.Second, ca(telegraftls.ClientConfig{Enable: ptr(true), TLSCA: badCA}), "tls_ca", "tls_ca: "},
		{"dns bad type", "dns://127.0.0.1/example.com?type=ANY", time.Second, Options{}, "url", `url: unsupported query type "ANY"`},
		{"dns bad param", "dns://127.0.0.1/example.com?typ=A", time.Second, Options{}, "url", `url: unknown query parameter "typ"`},
		{"dns bad transport", "dns://127.0.0.1/example.com?transport=quic", time.Second, Options{}, "url", `url: unsupported transport "quic"`},
		{"dns no name", "dns://127.0.0.1/", time.Second, Options{}, "url", "url: missing the name to query"},
		{"dns bad name", "dns://127.0.0.1/a..b", time.Second, Options{}, "url", "url: invalid domain name"},
		{"dns bad port", "dns://127.0.0.1:0/example.com", time.Second, Options{}, "url", "url: invalid port"},
		{"dns no host", "dns://:53/example.com", time.Second, Options{}, "url", "url: missing host"},
		{"dns userinfo", "dns://u:hunter2@127.0.0.1/example.com", time.Second, Options{}, "url", `url: dns URLs take no user info, got "dns://u@127.0.0.1/example.com"`},
		{"send on dns", "dns://127.0.0.1/example.com", time.Second, Options{Send: "x"}, "send", "send: not supported for dns probes (tcp only)"},
		{"method on dns", "dns://127.0.0.1/example.com", time.Second, Options{Method: "GET"}, "method", "method: not supported for dns probes (http only)"},
		{"tls on dns", "dns://127.0.0.1/example.com", time.Second, ca(telegraftls.ClientConfig{TLSCA: badCA}), "tls_ca", "tls_ca: not supported for dns probes"},
		{"insecure on dns", "dns://127.0.0.1/example.com", time.Second, ca(telegraftls.ClientConfig{InsecureSkipVerify: true}), "insecure_skip_verify", "insecure_skip_verify: not supported for dns probes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.url, tc.timeout, tc.opts)
			require.Error(t, err)
			require.Nil(t, p)
			var ke *keyerr.Error
			require.ErrorAs(t, err, &ke)
			require.Equal(t, tc.key, keyerr.Key(err), "error %q", err)
			require.Truef(t, strings.HasPrefix(err.Error(), tc.prefix), "error %q does not start with %q", err, tc.prefix)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestNewErrorsNoResolvConf(t *testing.T) {
	old := resolvConf
	t.Cleanup(func() { resolvConf = old })
	resolvConf = filepath.Join(t.TempDir(), "resolv.conf")
	_, err := New("dns:///example.com", time.Second, Options{})
	require.Equal(t, "url", keyerr.Key(err), "%v", err)
	require.ErrorContains(t, err, "url: no server given and ")

	require.NoError(t, os.WriteFile(resolvConf, []byte("# none\n"), 0o600))
	_, err = New("dns:///example.com", time.Second, Options{})
	require.Equal(t, "url", keyerr.Key(err), "%v", err)
	require.ErrorContains(t, err, "url: no server given and none in ")
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:hunter2@127.0.0.1:8080/x?y=1": "http://user@127.0.0.1:8080/x?y=1",
		"https://user@example.com/":                "https://user@example.com/",
		"http://example.com/a":                     "http://example.com/a",
		"tcp://127.0.0.1:22":                       "tcp://127.0.0.1:22",
		"http://user:hunter2@example.com/%zz":      "http://user@example.com/%zz",
		"http://:hunter2@example.com/":             "http://@example.com/",
		"not a url":                                "not a url",
		"//user:hunter2@example.com/":              "//user@example.com/",
		"//user:hunter2@example.com/%zz":           "//user@example.com/%zz",
	} {
		got := redactURL(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "hunter2")
	}
}

func TestWithDefaults(t *testing.T) {
	d := Options{
		Method:          "HEAD",
		Headers:         map[string]string{"X-A": "1"},
		FollowRedirects: ptr(true),
		ExpectedStatus:  StatusList{"2xx"},
		BodyContains:    "ok",
		MaxBodySize:     4096,
		KeepAlive:       ptr(true),
		Username:        config.NewSecret([]byte("alice")),
		Password:        config.NewSecret([]byte("pw")),
		Send:            "PING",
		Expect:          "PONG",
		TLS:             ptr(true),
		ClientConfig:    telegraftls.ClientConfig{TLSCA: "/ca.pem", InsecureSkipVerify: true},
		HTTPProxy:       proxy.HTTPProxy{HTTPProxyURL: "http://127.0.0.1:3128"},
	}

	// Nothing set: everything inherited.
	got := Options{}.WithDefaults(d)
	require.Equal(t, "HEAD", got.Method)
	require.Equal(t, d.Headers, got.Headers)
	require.True(t, *got.FollowRedirects)
	require.Equal(t, StatusList{"2xx"}, got.ExpectedStatus)
	require.Equal(t, "ok", got.BodyContains)
	require.Equal(t, config.Size(4096), got.MaxBodySize)
	require.True(t, *got.KeepAlive)
	require.False(t, got.Username.Empty())
	require.Equal(t, "PING", got.Send)
	require.Equal(t, d.ClientConfig, got.ClientConfig)
	require.Equal(t, d.HTTPProxy, got.HTTPProxy)

	// Set values win; false pointers are set values; TLS and proxy are
	// taken wholesale or not at all.
	svc := Options{
		Method:          "POST",
		FollowRedirects: ptr(false),
		MaxBodySize:     10,
		ClientConfig:    telegraftls.ClientConfig{ServerName: "svc.example"},
		HTTPProxy:       proxy.HTTPProxy{UseSystemProxy: true},
		Username:        config.NewSecret([]byte("bob")),
	}
	got = svc.WithDefaults(d)
	require.Equal(t, "POST", got.Method)
	require.False(t, *got.FollowRedirects)
	require.Equal(t, config.Size(10), got.MaxBodySize)
	require.Equal(t, telegraftls.ClientConfig{ServerName: "svc.example"}, got.ClientConfig)
	require.Equal(t, proxy.HTTPProxy{UseSystemProxy: true}, got.HTTPProxy)
	user, err := got.Username.Get()
	require.NoError(t, err)
	require.Equal(t, "bob", user.String())
	user.Destroy()
	require.Equal(t, "ok", got.BodyContains, "unset fields still inherited")
}

func TestApplicableTo(t *testing.T) {
	d := Options{
		Method:       "HEAD",
		BodyContains: "ok",
		Password:     config.NewSecret([]byte("pw")),
		Send:         "PING",
		TLS:          ptr(true),
		ClientConfig: telegraftls.ClientConfig{InsecureSkipVerify: true},
		HTTPProxy:    proxy.HTTPProxy{HTTPProxyURL: "http://127.0.0.1:3128"},
	}
	// Plugin-wide defaults for mixed schemes must not break any service.
	for _, u := range []string{"http://127.0.0.1/", "https://127.0.0.1/", "tcp://127.0.0.1:22", "dns://127.0.0.1/example.com"} {
		p, err := New(u, time.Second, Options{}.WithDefaults(d.ApplicableTo(u)))
		require.NoError(t, err, u)
		p.Close()
	}
	h := d.ApplicableTo("http://x/")
	require.Equal(t, "HEAD", h.Method)
	require.Empty(t, h.Send)
	require.Nil(t, h.TLS)
	tc := d.ApplicableTo("tcp://x:1")
	require.Empty(t, tc.Method)
	require.True(t, tc.Password.Empty())
	require.Equal(t, "PING", tc.Send)
	require.True(t, tc.InsecureSkipVerify)
	require.Empty(t, tc.HTTPProxyURL)
	// A misplaced per-service key is still an error.
	_, err := New("tcp://127.0.0.1:22", time.Second, Options{Method: "GET"}.WithDefaults(d.ApplicableTo("tcp://127.0.0.1:22")))
	require.ErrorContains(t, err, "method: ")
	require.Equal(t, "method", keyerr.Key(err))
}

func TestExpectedStatusTOML(t *testing.T) {
	type conf struct {
		Options
	}
	cases := map[string]StatusList{
		`expected_status = [200, "3xx"]`:              {"200", "3xx"},
		`expected_status = 204`:                       {"204"},
		`expected_status = "2xx"`:                     {"2xx"},
		`expected_status = ["2xx", '404']`:            {"2xx", "404"},
		"expected_status = [\n  200, # ok\n  201,\n]": {"200", "201"},
	}
	for src, want := range cases {
		var c conf
		require.NoError(t, toml.Unmarshal([]byte(src), &c), src)
		require.Equal(t, want, c.ExpectedStatus, src)
		_, err := New("http://127.0.0.1/", time.Second, c.Options)
		require.NoError(t, err, src)
	}
	var c conf
	require.Error(t, toml.Unmarshal([]byte(`expected_status = [true]`), &c))

	// The other keys decode as the plugin will decode them.
	src := `
method = "POST"
follow_redirects = true
max_body_size = "2KiB"
username = "alice"
send = "PING"
tls_ca = "/etc/ca.pem"
http_proxy_url = "http://127.0.0.1:3128"
[headers]
  Host = "vhost"
`
	c = conf{}
	require.NoError(t, toml.Unmarshal([]byte(src), &c))
	require.Equal(t, "POST", c.Method)
	require.True(t, *c.FollowRedirects)
	require.Equal(t, config.Size(2048), c.MaxBodySize)
	require.False(t, c.Username.Empty())
	require.Equal(t, "/etc/ca.pem", c.TLSCA)
	require.Equal(t, "http://127.0.0.1:3128", c.HTTPProxyURL)
	require.Equal(t, map[string]string{"Host": "vhost"}, c.Headers)
}

func TestClassify(t *testing.T) {
	live := context.Background()
	expired, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	cases := []struct {
		ctx  context.Context
		err  error
		tls  bool
		want Outcome
	}{
		{expired, errors.New("anything"), false, Timeout},
		{live, fmt.Errorf("wrapped: %w", context.DeadlineExceeded), false, Timeout},
		{live, &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false, Timeout},
		{live, &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, false, DNSError},
		{live, &net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}, false, Timeout},
		{live, &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false, TLSError},
		{live, tls.RecordHeaderError{Msg: "not tls"}, false, TLSError},
		{live, errors.New("EOF"), true, TLSError},
		{live, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false, ConnectionFailed},
	}
	for i, tc := range cases {
		require.Equal(t, tc.want, classify(tc.ctx, tc.err, tc.tls), "case %d: %v", i, tc.err)
	}
}

func TestHostPort(t *testing.T) {
	cases := []struct {
		url, defaultPort string
		host, port, err  string
	}{
		{"http://127.0.0.1/", "80", "127.0.0.1", "80", ""},
		{"https://[::1]/", "443", "::1", "443", ""},
		{"http://127.0.0.1:/", "80", "127.0.0.1", "80", ""},
		{"dns://127.0.0.1/x", "53", "127.0.0.1", "53", ""},
		{"tcp://127.0.0.1:65535", "", "127.0.0.1", "65535", ""},
		{"tcp://127.0.0.1:1", "", "127.0.0.1", "1", ""},
		{"tcp://127.0.0.1", "", "", "", `url: missing port in "tcp://127.0.0.1"`},
		{"tcp://127.0.0.1:0", "", "", "", `url: invalid port "0"`},
		{"tcp://127.0.0.1:65536", "", "", "", `url: invalid port "65536"`},
		{"http://127.0.0.1:0/", "80", "", "", `url: invalid port "0"`},
		{"tcp://u:hunter2@:1", "", "", "", `url: missing host in "tcp://u@:1"`},
	}
	for _, tc := range cases {
		u, err := url.Parse(tc.url)
		require.NoError(t, err, tc.url)
		host, port, err := hostPort(u, tc.defaultPort)
		if tc.err != "" {
			require.EqualError(t, err, tc.err, tc.url)
			require.Equal(t, "url", keyerr.Key(err))
			continue
		}
		require.NoError(t, err, tc.url)
		require.Equal(t, tc.host, host, tc.url)
		require.Equal(t, tc.port, port, tc.url)
	}
	for scheme, want := range map[string]string{"http://127.0.0.1/": "80", "https://127.0.0.1/": "443"} {
		p := mustNew(t, scheme, time.Second, Options{})
		require.Equal(t, want, p.(*httpProber).fast.port, "the fast path dials the checked port")
	}
}
