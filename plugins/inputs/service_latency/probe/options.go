package probe

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	"github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"
)

// Options are the probe settings an operator can give plugin-wide (as
// defaults) and per service. They are embedded in the plugin's config
// structs, so their toml keys are the plugin's keys. A zero/nil value means
// "not set": the service inherits the plugin-wide value, then the default.
//
// Which keys apply: the HTTP group and the proxy keys (proxy.HTTPProxy) to
// http/https URLs; the TCP group to tcp URLs; the tls_* keys
// (tls.ClientConfig) to http/https URLs and to tcp URLs with tls = true (or
// tls_enable = true). New rejects HTTP and proxy keys on tcp/dns URLs, TCP
// keys on http/https/dns URLs and tls_* keys on dns URLs; tls_* keys on a
// tcp URL without TLS are ignored.
type Options struct {
	// HTTP
	Method          string            `toml:"method"`
	Headers         map[string]string `toml:"headers"`
	Body            string            `toml:"body"`
	FollowRedirects *bool             `toml:"follow_redirects"`
	ExpectedStatus  StatusList        `toml:"expected_status"`
	BodyContains    string            `toml:"body_contains"`
	BodyRegex       string            `toml:"body_regex"`
	MaxBodySize     config.Size       `toml:"max_body_size"`
	KeepAlive       *bool             `toml:"keep_alive"`
	Username        config.Secret     `toml:"username"`
	Password        config.Secret     `toml:"password"`
	BearerToken     config.Secret     `toml:"bearer_token"`

	// TCP
	Send        string `toml:"send"`
	Expect      string `toml:"expect"`
	ExpectRegex string `toml:"expect_regex"`
	TLS         *bool  `toml:"tls"`

	tls.ClientConfig
	proxy.HTTPProxy
}

// StatusList is the expected_status setting: HTTP status codes ("200") and
// classes ("2xx"). In TOML it accepts integers, strings, and arrays mixing
// both: expected_status = [200, "3xx"], expected_status = 204. Entries are
// validated by New.
type StatusList []string

// UnmarshalTOML implements the github.com/influxdata/toml Unmarshaler
// interface. That decoder hands over the raw TOML source of the value, which
// is parsed here so that an array may mix integers and strings (the decoder
// itself rejects mixed arrays).
func (s *StatusList) UnmarshalTOML(raw []byte) error {
	src := make([]byte, 0, len(raw)+4)
	src = append(src, "v = "...)
	src = append(src, raw...)
	tbl, err := toml.Parse(src)
	if err != nil {
		return fmt.Errorf("expected_status: %w", err)
	}
	kv, ok := tbl.Fields["v"].(*ast.KeyValue)
	if !ok {
		return errors.New("expected_status: want an integer, a string or an array of them")
	}
	values := []ast.Value{kv.Value}
	if arr, ok := kv.Value.(*ast.Array); ok {
		values = arr.Value
	}
	out := make(StatusList, 0, len(values))
	for _, v := range values {
		switch v := v.(type) {
		case *ast.Integer:
			out = append(out, v.Value)
		case *ast.String:
			out = append(out, v.Value)
		default:
			return fmt.Errorf("expected_status: %s is not a status code or class", v.Source())
		}
	}
	*s = out
	return nil
}

// WithDefaults returns o with every unset field taken from d (the
// plugin-wide options). Unset means: nil pointer, empty string, empty map or
// slice, zero size, empty secret. The embedded tls.ClientConfig and
// proxy.HTTPProxy are inherited wholesale: if o sets none of their keys, d's
// are used; if it sets any, o's are used as they are.
//
// New rejects options that do not apply to the URL's scheme (send on an
// http URL, ...). Plugin-wide defaults usually serve several schemes, so a
// plugin should pass them through ApplicableTo first:
//
//	opts := svc.Options.WithDefaults(plugin.Options.ApplicableTo(svc.URL))
func (o Options) WithDefaults(d Options) Options {
	if o.Method == "" {
		o.Method = d.Method
	}
	if len(o.Headers) == 0 {
		o.Headers = d.Headers
	}
	if o.Body == "" {
		o.Body = d.Body
	}
	if o.FollowRedirects == nil {
		o.FollowRedirects = d.FollowRedirects
	}
	if len(o.ExpectedStatus) == 0 {
		o.ExpectedStatus = d.ExpectedStatus
	}
	if o.BodyContains == "" {
		o.BodyContains = d.BodyContains
	}
	if o.BodyRegex == "" {
		o.BodyRegex = d.BodyRegex
	}
	if o.MaxBodySize == 0 {
		o.MaxBodySize = d.MaxBodySize
	}
	if o.KeepAlive == nil {
		o.KeepAlive = d.KeepAlive
	}
	if o.Username.Empty() {
		o.Username = d.Username
	}
	if o.Password.Empty() {
		o.Password = d.Password
	}
	if o.BearerToken.Empty() {
		o.BearerToken = d.BearerToken
	}
	if o.Send == "" {
		o.Send = d.Send
	}
	if o.Expect == "" {
		o.Expect = d.Expect
	}
	if o.ExpectRegex == "" {
		o.ExpectRegex = d.ExpectRegex
	}
	if o.TLS == nil {
		o.TLS = d.TLS
	}
	if tlsUnset(&o.ClientConfig) {
		o.ClientConfig = d.ClientConfig
	}
	if o.HTTPProxy == (proxy.HTTPProxy{}) {
		o.HTTPProxy = d.HTTPProxy
	}
	return o
}

// ApplicableTo returns a copy of o without the settings that do not apply
// to rawURL's scheme: for an http/https URL it drops send, expect,
// expect_regex and tls; for a tcp URL the HTTP settings and the proxy; for
// a dns URL everything (no option applies to DNS probes). Use it on
// plugin-wide defaults before
// WithDefaults, so that New still rejects a misplaced per-service key while
// a plugin-wide key meant for other schemes is ignored. If rawURL does not
// parse, o is returned unchanged (New reports the URL error).
func (o Options) ApplicableTo(rawURL string) Options {
	u, err := url.Parse(rawURL)
	if err != nil {
		return o
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		o.clearTCP()
	case "tcp":
		o.clearHTTP()
		o.HTTPProxy = proxy.HTTPProxy{}
	case "dns":
		o.clearHTTP()
		o.clearTCP()
		o.HTTPProxy = proxy.HTTPProxy{}
		o.ClientConfig = tls.ClientConfig{}
	}
	return o
}

func (o *Options) clearHTTP() {
	o.Method = ""
	o.Headers = nil
	o.Body = ""
	o.FollowRedirects = nil
	o.ExpectedStatus = nil
	o.BodyContains = ""
	o.BodyRegex = ""
	o.MaxBodySize = 0
	o.KeepAlive = nil
	o.Username = config.Secret{}
	o.Password = config.Secret{}
	o.BearerToken = config.Secret{}
}

func (o *Options) clearTCP() {
	o.Send = ""
	o.Expect = ""
	o.ExpectRegex = ""
	o.TLS = nil
}

// tlsUnset reports whether no tls_* / insecure_skip_verify key is set.
func tlsUnset(c *tls.ClientConfig) bool {
	return reflect.ValueOf(c).Elem().IsZero()
}

// httpKeySet returns the toml key of the first HTTP-only option set in o,
// or "".
func (o *Options) httpKeySet() string {
	switch {
	case o.Method != "":
		return "method"
	case len(o.Headers) != 0:
		return "headers"
	case o.Body != "":
		return "body"
	case o.FollowRedirects != nil:
		return "follow_redirects"
	case len(o.ExpectedStatus) != 0:
		return "expected_status"
	case o.BodyContains != "":
		return "body_contains"
	case o.BodyRegex != "":
		return "body_regex"
	case o.MaxBodySize != 0:
		return "max_body_size"
	case o.KeepAlive != nil:
		return "keep_alive"
	case !o.Username.Empty():
		return "username"
	case !o.Password.Empty():
		return "password"
	case !o.BearerToken.Empty():
		return "bearer_token"
	case o.UseSystemProxy:
		return "use_system_proxy"
	case o.HTTPProxyURL != "":
		return "http_proxy_url"
	}
	return ""
}

// tcpKeySet returns the toml key of the first TCP-only option set in o, or
// "".
func (o *Options) tcpKeySet() string {
	switch {
	case o.Send != "":
		return "send"
	case o.Expect != "":
		return "expect"
	case o.ExpectRegex != "":
		return "expect_regex"
	case o.TLS != nil:
		return "tls"
	}
	return ""
}
