package probe

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// knownKeys are the keys New's errors may name: every option's, and the
// service's url and timeout.
func knownKeys() map[string]bool {
	keys := map[string]bool{"url": true, "timeout": true}
	for _, f := range optionFields {
		for _, k := range f.keys {
			keys[k] = true
		}
	}
	return keys
}

// FuzzProbeNew feeds arbitrary targets and options to New, the URL/target
// parser behind every [[inputs.service_latency.service]]. It must never
// panic nor touch the network; an error is a *keyerr.Error naming a toml
// key (its text starts with it) and, like redactURL, never shows the URL's
// password; a prober's Kind matches the scheme. Seeds:
// testdata/fuzz/FuzzProbeNew.
func FuzzProbeNew(f *testing.F) {
	known := knownKeys()
	f.Add("http://user:pw@127.0.0.1:8080/health?x=1", "GET", "X-Probe", "1", "200,3xx", "^ok", "", "", false)
	f.Fuzz(func(t *testing.T, rawURL, method, header, value, expected, regex, send, proxyURL string, tls bool) {
		o := Options{
			Method:      method,
			BodyRegex:   regex,
			ExpectRegex: regex,
			Send:        send,
		}
		if header != "" {
			o.Headers = map[string]string{header: value}
		}
		if expected != "" {
			o.ExpectedStatus = strings.Split(expected, ",")
		}
		if proxyURL != "" {
			o.HTTPProxyURL = proxyURL
		}
		if tls {
			o.TLS = &tls
			o.Password = config.NewSecret([]byte("pw"))
			defer o.Password.Destroy()
		}
		// As the plugin does: plugin-wide options reach only the schemes
		// they apply to.
		o = Options{}.WithDefaults(o.ApplicableTo(rawURL))

		password := ""
		if u, err := url.Parse(rawURL); err == nil && u.User != nil {
			password, _ = u.User.Password()
		}
		redacted := redactURL(rawURL)
		if password != "" {
			if u, err := url.Parse(redacted); err == nil {
				if _, has := u.User.Password(); has {
					t.Fatalf("redactURL(%q) = %q keeps a password", rawURL, redacted)
				}
			} else if strings.Contains(redacted, ":"+password+"@") {
				t.Fatalf("redactURL(%q) = %q shows the password", rawURL, redacted)
			}
		}
		// leaks: s shows the password as userinfo, or shows a distinctive
		// password at all (one that cannot come from the redacted URL,
		// e.g. through the escaping of the user name)
		leaks := func(s string) bool {
			if password == "" {
				return false
			}
			if strings.Contains(s, ":"+password+"@") {
				return true
			}
			return len(password) >= 8 && strings.Count(rawURL, password) == 1 &&
				!strings.Contains(redacted, password) && strings.Contains(s, password)
		}

		p, err := New(rawURL, time.Second, o)
		if err != nil {
			msg := err.Error()
			var ke *keyerr.Error
			if !errors.As(err, &ke) {
				t.Fatalf("error is not a *keyerr.Error: %q", msg)
			}
			if key := keyerr.Key(err); !known[key] || !strings.HasPrefix(msg, key+": ") {
				t.Fatalf("error names key %q, not a known toml key at its start: %q", key, msg)
			}
			if leaks(msg) {
				t.Fatalf("error shows the URL's password: %q", msg)
			}
			if p != nil {
				t.Fatal("an error with a prober")
			}
			return
		}
		defer p.Close()
		u, err := url.Parse(rawURL)
		if err != nil {
			t.Fatalf("New accepted %q that url.Parse rejects: %v", rawURL, err)
		}
		want := map[string]string{"http": "http", "https": "http", "tcp": "tcp", "dns": "dns", "icmp": "icmp", "grpc": "grpc", "grpcs": "grpc"}[u.Scheme]
		if p.Kind() != want {
			t.Fatalf("scheme %q gave a %q prober", u.Scheme, p.Kind())
		}
	})
}
