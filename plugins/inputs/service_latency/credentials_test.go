package service_latency

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// TestCredentialsNeverLeak: passwords and tokens, from URL userinfo and
// from config.Secret keys, appear in no metric (name, tag or field), no log
// line (debug included), no config error and nothing the status server
// serves, whether the probes succeed or fail.
func TestCredentialsNeverLeak(t *testing.T) {
	const (
		urlPass   = "urlpass-S3CRET"
		urlPass2  = "urlpass2-S3CRET"
		cfgPass   = "cfgpass-S3CRET"
		bearer    = "bearer-S3CRET"
		proxyPass = "proxypass-S3CRET"
	)
	secrets := []string{urlPass, urlPass2, cfgPass, bearer, proxyPass, "S3CRET",
		base64.StdEncoding.EncodeToString([]byte("alice:" + urlPass)),
		base64.StdEncoding.EncodeToString([]byte("bob:" + cfgPass)),
	}
	authOK := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, pw, ok := r.BasicAuth()
		if !ok || u != "bob" || pw != cfgPass {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(authOK.Close)
	failing := newDelayServer(t, 0)
	failing.status.Store(http.StatusServiceUnavailable)
	slow := newDelayServer(t, 5*time.Second)
	refused := refusedAddr(t)
	host := strings.TrimPrefix(failing.URL, "http://")

	p, log := startPlugin(t, conf(fmt.Sprintf(`
status_listen = "127.0.0.1:0"
collect_internal = true
[[inputs.service_latency.service]]
  url = "http://alice:%[1]s@%[2]s/userinfo"
[[inputs.service_latency.service]]
  name = "userinfo-refused"
  url = "http://carol:%[3]s@%[4]s/"
[[inputs.service_latency.service]]
  name = "basic-ok"
  url = "%[5]s/basic"
  username = "bob"
  password = "%[6]s"
[[inputs.service_latency.service]]
  name = "basic-refused"
  url = "http://%[4]s/basic"
  username = "bob"
  password = "%[6]s"
[[inputs.service_latency.service]]
  name = "bearer-timeout"
  url = "%[7]s/bearer"
  bearer_token = "%[8]s"
  timeout = "200ms"
[[inputs.service_latency.service]]
  name = "proxy"
  url = "http://%[2]s/via-proxy"
  http_proxy_url = "http://proxyuser:%[9]s@%[4]s"
`, urlPass, host, urlPass2, refused, authOK.URL, cfgPass, slow.URL, bearer, proxyPass)))

	var acc testutil.Accumulator
	for range 3 {
		require.NoError(t, p.Gather(&acc))
	}
	// the credentials were used: the server that checks them said yes
	results := map[string]string{}
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == Measurement {
			results[m.Tags()["service"]] = m.Tags()["result"]
		}
	}
	require.Equal(t, "success", results["basic-ok"])
	require.Equal(t, "response_status_code_mismatch", results["http://alice@"+host+"/userinfo"])
	require.Equal(t, "timeout", results["bearer-timeout"])
	require.Equal(t, "connection_failed", results["basic-refused"])

	var out strings.Builder
	for _, m := range acc.GetTelegrafMetrics() {
		fmt.Fprintf(&out, "%s %v %v\n", m.Name(), m.Tags(), m.Fields())
	}
	require.NotEmpty(t, log.Messages())
	for _, e := range log.Messages() {
		out.WriteString(e.String() + "\n")
	}
	for _, path := range []string{"/status", "/healthz", "/"} {
		code, body := httpGet(t, "http://"+p.StatusAddr()+path)
		require.Equal(t, http.StatusOK, code, path)
		out.WriteString(body)
	}
	all := out.String()
	require.Contains(t, all, "alice", "the user name is not a secret (a sanity check of the haystack)")
	for _, s := range secrets {
		require.NotContains(t, all, s)
	}

	// config errors do not show them either
	for _, bad := range []string{
		`url = "http://alice:` + urlPass + `@127.0.0.1:99999/"`,
		`url = "http://alice:` + urlPass + `@127.0.0.1/%zz"`,
		`url = "tcp://alice:` + urlPass + `@127.0.0.1:80"`,
		`url = "dns://alice:` + urlPass + `@127.0.0.1/x.test"`,
		`url = "http://alice:` + urlPass + `@127.0.0.1/"` + "\n  bearer_token = \"" + bearer + "\"",
		`url = "http://127.0.0.1/"` + "\n  http_proxy_url = \"ftp://u:" + proxyPass + "@127.0.0.1\"",
	} {
		_, err := ParseConfig([]byte(conf("[[inputs.service_latency.service]]\n  " + bad + "\n")))
		require.Error(t, err, bad)
		for _, s := range secrets {
			require.NotContains(t, err.Error(), s)
		}
	}
}
