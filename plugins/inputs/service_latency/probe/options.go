package probe

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/proxy"
	"github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// Options are the probe settings an operator can give plugin-wide (as
// defaults) and per service. They are embedded in the plugin's config
// structs, so their toml keys are the plugin's keys. A zero/nil value means
// "not set": the service inherits the plugin-wide value, then the default.
//
// Which keys apply: the HTTP group and the proxy keys (proxy.HTTPProxy) to
// http/https URLs; the TCP group to tcp URLs; the ICMP group to icmp URLs;
// the gRPC group to grpc/grpcs URLs; the net group (ip_protocol,
// source_address) to every scheme; the tls_* keys (tls.ClientConfig) to
// http/https and grpcs URLs and to tcp URLs with tls = true (or tls_enable
// = true). New rejects a key set on a URL none of its groups applies to
// (send on an http URL, count on a tcp URL, tls_ca on a dns, icmp or
// grpc URL); tls_* keys on a tcp URL without TLS are ignored.
//
// Each field's `probe` tag lists its groups ("http", "tcp", "tls", "icmp",
// "grpc", "net"; "http,grpc" for a key of both): the one place
// WithDefaults, ApplicableTo and New learn which keys exist and where they
// apply (see optionFields). An embedded struct is one unit: inherited
// wholesale, its keys in its own toml tags.
type Options struct {
	// HTTP
	Method          string            `toml:"method" probe:"http"`
	Headers         map[string]string `toml:"headers" probe:"http"`
	Body            string            `toml:"body" probe:"http"`
	FollowRedirects *bool             `toml:"follow_redirects" probe:"http"`
	ExpectedStatus  StatusList        `toml:"expected_status" probe:"http"`
	BodyContains    string            `toml:"body_contains" probe:"http"`
	BodyRegex       string            `toml:"body_regex" probe:"http"`
	MaxBodySize     config.Size       `toml:"max_body_size" probe:"http"`
	KeepAlive       *bool             `toml:"keep_alive" probe:"http,grpc"`
	Username        config.Secret     `toml:"username" probe:"http"`
	Password        config.Secret     `toml:"password" probe:"http"`
	BearerToken     config.Secret     `toml:"bearer_token" probe:"http"`

	// TCP
	Send        string `toml:"send" probe:"tcp"`
	Expect      string `toml:"expect" probe:"tcp"`
	ExpectRegex string `toml:"expect_regex" probe:"tcp"`
	TLS         *bool  `toml:"tls" probe:"tcp"`

	// ICMP (icmp.go): a round of Count echo requests PingInterval apart.
	Count        *int            `toml:"count" probe:"icmp"`
	PingInterval config.Duration `toml:"ping_interval" probe:"icmp"`
	PayloadSize  *int            `toml:"payload_size" probe:"icmp"`
	TTL          *int            `toml:"ttl" probe:"icmp"`
	Privileged   Privileged      `toml:"privileged" probe:"icmp"`

	// Every network probe (net.go).
	IPProtocol    string `toml:"ip_protocol" probe:"net"`
	SourceAddress string `toml:"source_address" probe:"net"`

	tls.ClientConfig `probe:"tls"`
	proxy.HTTPProxy  `probe:"http"`
}

// group is the set of URL schemes a group of options applies to.
type group string

const (
	groupHTTP group = "http" // http and https URLs
	groupTCP  group = "tcp"  // tcp URLs
	groupTLS  group = "tls"  // http, https, grpcs, and tcp with TLS
	groupICMP group = "icmp" // icmp URLs
	groupGRPC group = "grpc" // grpc and grpcs URLs
	groupNet  group = "net"  // every network probe
)

// groupOrder is the order in which New reports misplaced keys (by a key's
// first group), and the name a group adds to the note of a misplaced key
// ("(http only)"; none for tls and net).
var groupOrder = []struct {
	g    group
	name string
}{
	{groupHTTP, "http"},
	{groupTCP, "tcp"},
	{groupTLS, ""},
	{groupICMP, "icmp"},
	{groupGRPC, "grpc"},
	{groupNet, ""},
}

// schemeGroups are the groups that apply to each scheme.
var schemeGroups = map[string][]group{
	"http":  {groupHTTP, groupTLS, groupNet},
	"https": {groupHTTP, groupTLS, groupNet},
	"tcp":   {groupTCP, groupTLS, groupNet},
	"dns":   {groupNet},
	"icmp":  {groupICMP, groupNet},
	"grpc":  {groupGRPC, groupNet},
	"grpcs": {groupGRPC, groupTLS, groupNet},
}

// schemeList is the list of schemes for error messages.
const schemeList = "http, https, tcp, dns, icmp, grpc, grpcs"

// optionField is one field of Options: a setting, or an embedded struct
// taken as one unit.
type optionField struct {
	index int
	// groups are the field's groups, from its `probe` tag, in tag order.
	groups []group
	// keys are the toml keys: one for a setting, one per field of an
	// embedded struct (in declaration order).
	keys     []string
	embedded bool
}

// in reports whether f belongs to g.
func (f *optionField) in(g group) bool { return slices.Contains(f.groups, g) }

// appliesTo reports whether one of f's groups is in applies.
func (f *optionField) appliesTo(applies []group) bool {
	for _, g := range f.groups {
		if slices.Contains(applies, g) {
			return true
		}
	}
	return false
}

// note is what a misplaced key's error adds: " (http only)", " (http,
// grpc only)", or "" for a key of the tls or net group.
func (f *optionField) note() string {
	var names []string
	for _, g := range groupOrder {
		if g.name != "" && f.in(g.g) {
			names = append(names, g.name)
		}
	}
	if len(names) == 0 || f.in(groupTLS) || f.in(groupNet) {
		return ""
	}
	return " (" + strings.Join(names, ", ") + " only)"
}

func validGroup(g group) bool {
	for _, o := range groupOrder {
		if o.g == g {
			return true
		}
	}
	return false
}

// optionFields are Options' fields, read once from the struct tags. A
// field without a valid `probe` tag panics here, so that no test passes
// with it.
var optionFields = func() []optionField {
	t := reflect.TypeOf(Options{})
	out := make([]optionField, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		f := optionField{index: i, embedded: sf.Anonymous}
		for _, g := range strings.Split(sf.Tag.Get("probe"), ",") {
			if !validGroup(group(g)) || f.in(group(g)) {
				panic(fmt.Sprintf("probe: Options.%s has no valid `probe` tag (http, tcp, tls, icmp, grpc, net, comma separated)", sf.Name))
			}
			f.groups = append(f.groups, group(g))
		}
		if f.embedded {
			for j := 0; j < sf.Type.NumField(); j++ {
				f.keys = append(f.keys, tomlKey(sf.Type.Field(j)))
			}
		} else {
			f.keys = []string{tomlKey(sf)}
		}
		for _, k := range f.keys {
			if k == "" || k == "-" {
				panic(fmt.Sprintf("probe: Options.%s has a field without a toml key", sf.Name))
			}
		}
		out = append(out, f)
	}
	return out
}()

func tomlKey(sf reflect.StructField) string {
	name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
	return name
}

// unset reports whether v, a field of Options, is not set: nil pointer,
// empty string, empty map or slice, zero number, empty secret; an embedded
// struct (and each of its fields) when it is all zero.
func unset(v reflect.Value, embedded bool) bool {
	if embedded {
		return v.IsZero()
	}
	if e, ok := v.Addr().Interface().(interface{ Empty() bool }); ok {
		return e.Empty()
	}
	switch v.Kind() {
	case reflect.Map, reflect.Slice:
		return v.Len() == 0
	}
	return v.IsZero()
}

// keySet returns the toml key of the first option of group g set in o, or
// "".
func (o *Options) keySet(g group) string {
	v := reflect.ValueOf(o).Elem()
	for i := range optionFields {
		if f := &optionFields[i]; f.in(g) {
			if k := f.keySet(v); k != "" {
				return k
			}
		}
	}
	return ""
}

// keySet returns f's key (the first of an embedded struct's) set in v, an
// Options, or "".
func (f *optionField) keySet(v reflect.Value) string {
	fv := v.Field(f.index)
	if !f.embedded {
		if !unset(fv, false) {
			return f.keys[0]
		}
		return ""
	}
	for j, k := range f.keys {
		if !unset(fv.Field(j), true) {
			return k
		}
	}
	return ""
}

// misplacedKey returns an error naming the first key set in o that does
// not apply to scheme, or nil. Keys are taken in groupOrder of their first
// group, then in declaration order.
func (o *Options) misplacedKey(scheme string) error {
	v := reflect.ValueOf(o).Elem()
	for _, f := range misplacedPlans()[scheme] {
		if k := f.keySet(v); k != "" {
			return keyerr.Errorf(k, "not supported for %s probes%s", scheme, f.note())
		}
	}
	return nil
}

// misplacedPlans are, per scheme, the fields that do not apply to it in
// the order misplacedKey reports them: made once, not per prober (100,000
// services start with 100,000 checks).
var misplacedPlans = sync.OnceValue(func() map[string][]*optionField {
	plans := make(map[string][]*optionField, len(schemeGroups))
	for scheme, applies := range schemeGroups {
		var plan []*optionField
		for _, g := range groupOrder {
			for i := range optionFields {
				f := &optionFields[i]
				if f.groups[0] == g.g && !f.appliesTo(applies) {
					plan = append(plan, f)
				}
			}
		}
		plans[scheme] = plan
	}
	return plans
})

// tomlValue parses raw, the TOML source of one value as the decoder hands
// it to an Unmarshaler. Its errors name key; want is the error when raw
// is not a value.
func tomlValue(raw []byte, key, want string) (ast.Value, error) {
	src := make([]byte, 0, len(raw)+4)
	src = append(src, "v = "...)
	src = append(src, raw...)
	tbl, err := toml.Parse(src)
	if err != nil {
		return nil, keyerr.New(key, err)
	}
	kv, ok := tbl.Fields["v"].(*ast.KeyValue)
	if !ok {
		return nil, keyerr.Errorf(key, "%s", want)
	}
	return kv.Value, nil
}

// Privileged is the privileged setting of ICMP probes: "auto" (the
// default), true or false. In TOML it accepts a boolean or one of the
// strings "auto", "true", "false".
type Privileged string

// The values of Privileged ("" is unset: auto).
const (
	PrivilegedAuto  Privileged = "auto"
	PrivilegedTrue  Privileged = "true"
	PrivilegedFalse Privileged = "false"
)

// UnmarshalTOML implements the github.com/influxdata/toml Unmarshaler
// interface: a boolean, or a string (validated by New).
func (p *Privileged) UnmarshalTOML(raw []byte) error {
	value, err := tomlValue(raw, "privileged", `want true, false or "auto"`)
	if err != nil {
		return err
	}
	switch v := value.(type) {
	case *ast.Boolean:
		*p = Privileged(v.Value)
	case *ast.String:
		*p = Privileged(v.Value)
	default:
		return keyerr.Errorf("privileged", `%s is not true, false or "auto"`, v.Source())
	}
	return nil
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
	value, err := tomlValue(raw, "expected_status", "want an integer, a string or an array of them")
	if err != nil {
		return err
	}
	values := []ast.Value{value}
	if arr, ok := value.(*ast.Array); ok {
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
			return keyerr.Errorf("expected_status", "%s is not a status code or class", v.Source())
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
	ov, dv := reflect.ValueOf(&o).Elem(), reflect.ValueOf(&d).Elem()
	for _, f := range optionFields {
		if unset(ov.Field(f.index), f.embedded) {
			ov.Field(f.index).Set(dv.Field(f.index))
		}
	}
	return o
}

// ApplicableTo returns a copy of o without the settings that do not apply
// to rawURL's scheme: for an http/https URL it drops send, expect,
// expect_regex, tls and the ICMP settings; for a tcp URL the HTTP, ICMP
// and proxy settings; for a dns URL everything but ip_protocol and
// source_address; and so on by the groups of schemeGroups. Use it on
// plugin-wide defaults before
// WithDefaults, so that New still rejects a misplaced per-service key while
// a plugin-wide key meant for other schemes is ignored. If rawURL does not
// parse, o is returned unchanged (New reports the URL error).
func (o Options) ApplicableTo(rawURL string) Options {
	u, err := url.Parse(rawURL)
	if err != nil {
		return o
	}
	applies, known := schemeGroups[strings.ToLower(u.Scheme)]
	if !known {
		return o
	}
	v := reflect.ValueOf(&o).Elem()
	for i := range optionFields {
		if f := &optionFields[i]; !f.appliesTo(applies) {
			fv := v.Field(f.index)
			fv.Set(reflect.Zero(fv.Type()))
		}
	}
	return o
}
