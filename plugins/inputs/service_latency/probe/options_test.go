package probe

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// wantOptionKeys pins every Options key to its group. A field added to
// Options fails this test until it is listed here — with the group that
// says where it applies — so that no key is forgotten by WithDefaults,
// ApplicableTo or New's checks (which all read optionFields).
var wantOptionKeys = map[string][]string{
	"http": {
		"method", "headers", "body", "follow_redirects", "expected_status", "body_contains", "body_regex",
		"max_body_size", "username", "password", "bearer_token",
		"use_system_proxy", "http_proxy_url",
	},
	"http,grpc": {"keep_alive"},
	"tcp":       {"send", "expect", "expect_regex", "tls"},
	"icmp":      {"count", "ping_interval", "payload_size", "ttl", "privileged"},
	"net":       {"ip_protocol", "source_address"},
	"tls": {
		"tls_ca", "tls_cert", "tls_key", "tls_key_pwd", "tls_min_version", "tls_cipher_suites",
		"insecure_skip_verify", "tls_server_name", "tls_renegotiation_method", "tls_enable",
	},
}

func groupsTag(gs []group) string {
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = string(g)
	}
	return strings.Join(s, ",")
}

func TestOptionKeys(t *testing.T) {
	got := map[string][]string{}
	for _, f := range optionFields {
		got[groupsTag(f.groups)] = append(got[groupsTag(f.groups)], f.keys...)
	}
	require.Equal(t, wantOptionKeys, got)
}

func TestMisplacedNote(t *testing.T) {
	_, err := New("tcp://127.0.0.1:1", time.Second, Options{KeepAlive: ptr(true)})
	require.EqualError(t, err, "keep_alive: not supported for tcp probes (http, grpc only)")
	_, err = New("tcp://127.0.0.1:1", time.Second, Options{Count: ptr(3)})
	require.EqualError(t, err, "count: not supported for tcp probes (icmp only)")
	_, err = New("icmp://127.0.0.1", time.Second, Options{Send: "x"})
	require.EqualError(t, err, "send: not supported for icmp probes (tcp only)")
	_, err = New("grpc://127.0.0.1:1", time.Second, Options{ClientConfig: telegraftls.ClientConfig{TLSCA: "x"}})
	require.EqualError(t, err, "tls_ca: not supported for grpc probes")
}

// optionLeaf is one settable key of Options: the field path and its key.
type optionLeaf struct {
	path   []int
	key    string
	groups []group
}

// optionLeaves walks Options by reflection, independently of
// optionFields: every field, and every field of an embedded struct.
func optionLeaves(t *testing.T) []optionLeaf {
	t.Helper()
	typ := reflect.TypeOf(Options{})
	var out []optionLeaf
	for i := 0; i < typ.NumField(); i++ {
		sf := typ.Field(i)
		var gs []group
		for _, g := range strings.Split(sf.Tag.Get("probe"), ",") {
			require.Containsf(t, []group{groupHTTP, groupTCP, groupTLS, groupICMP, groupGRPC, groupNet}, group(g), "Options.%s: no valid probe tag", sf.Name)
			gs = append(gs, group(g))
		}
		if sf.Anonymous {
			for j := 0; j < sf.Type.NumField(); j++ {
				out = append(out, optionLeaf{[]int{i, j}, tomlKey(sf.Type.Field(j)), gs})
			}
			continue
		}
		out = append(out, optionLeaf{[]int{i}, tomlKey(sf), gs})
	}
	return out
}

// sampleValue sets v to a set (non-default) value of its type; variants
// 0 and 1 differ where the type allows. A field of a new type fails here
// until the test learns it.
func sampleValue(t *testing.T, key string, v reflect.Value, variant int) {
	t.Helper()
	s := []string{"x", "y"}[variant]
	switch v.Interface().(type) {
	case string:
		v.SetString(s)
	case bool:
		v.SetBool(true)
	case *bool:
		v.Set(reflect.ValueOf(ptr(variant == 1))) // a false pointer is set, too
	case map[string]string:
		v.Set(reflect.ValueOf(map[string]string{"X-A": s}))
	case []string:
		v.Set(reflect.ValueOf([]string{s}))
	case StatusList:
		v.Set(reflect.ValueOf(StatusList{[]string{"2xx", "404"}[variant]}))
	case config.Size:
		v.Set(reflect.ValueOf(config.Size(7 + variant)))
	case config.Secret:
		v.Set(reflect.ValueOf(config.NewSecret([]byte(s))))
	case *int:
		v.Set(reflect.ValueOf(ptr(3 + variant)))
	case config.Duration:
		v.Set(reflect.ValueOf(config.Duration(time.Millisecond * time.Duration(7+variant))))
	case Privileged:
		v.Set(reflect.ValueOf([]Privileged{PrivilegedTrue, PrivilegedFalse}[variant]))
	default:
		t.Fatalf("%s: no sample value for a %s: teach sampleValue (and check that WithDefaults treats it right)", key, v.Type())
	}
}

// TestOptionsEveryFieldCovered sets each key alone and checks every place
// that handles Options field by field: WithDefaults inherits it (and a
// service's own value wins), ApplicableTo keeps or drops it by scheme, and
// New names it when it is set where it does not apply.
func TestOptionsEveryFieldCovered(t *testing.T) {
	leaves := optionLeaves(t)
	var keys []string
	for _, l := range leaves {
		keys = append(keys, l.key)
	}
	var listed []string
	for _, ks := range wantOptionKeys {
		listed = append(listed, ks...)
	}
	require.ElementsMatch(t, listed, keys, "Options keys and wantOptionKeys differ")

	for _, l := range leaves {
		t.Run(l.key, func(t *testing.T) {
			var d Options
			sampleValue(t, l.key, reflect.ValueOf(&d).Elem().FieldByIndex(l.path), 0)
			for _, g := range l.groups {
				require.Equal(t, l.key, d.keySet(g), "keySet")
			}

			// Inherited when unset.
			got := Options{}.WithDefaults(d)
			require.Equal(t, fmt.Sprint(reflect.ValueOf(d).FieldByIndex(l.path)),
				fmt.Sprint(reflect.ValueOf(got).FieldByIndex(l.path)), "WithDefaults did not inherit it")

			// The service's own value wins: its whole field (an embedded
			// struct is taken wholesale) stays as it is.
			var own Options
			sampleValue(t, l.key, reflect.ValueOf(&own).Elem().FieldByIndex(l.path), 1)
			top := l.path[:1]
			require.Equal(t, fmt.Sprint(reflect.ValueOf(own).FieldByIndex(top)),
				fmt.Sprint(reflect.ValueOf(own.WithDefaults(d)).FieldByIndex(top)), "WithDefaults overrode the service's value")

			for scheme, applies := range schemeGroups {
				rawURL := scheme + "://127.0.0.1:1/example.com"
				kept := d.ApplicableTo(rawURL)
				isSet := !reflect.ValueOf(kept).FieldByIndex(l.path).IsZero()
				applied := slices.ContainsFunc(l.groups, func(g group) bool { return slices.Contains(applies, g) })
				require.Equal(t, applied, isSet, "ApplicableTo(%s)", scheme)

				err := d.misplacedKey(scheme)
				if applied {
					require.NoError(t, err, scheme)
					continue
				}
				require.Equal(t, l.key, keyerr.Key(err), "%s: %v", scheme, err)
				_, err = New(rawURL, time.Second, d)
				require.Equal(t, l.key, keyerr.Key(err), "New on %s: %v", scheme, err)
				require.ErrorContains(t, err, l.key+": not supported for "+scheme+" probes")
			}
		})
	}
}

func TestOptionsUnsetRules(t *testing.T) {
	d := Options{Headers: map[string]string{"X-A": "1"}, ExpectedStatus: StatusList{"200"}, Username: config.NewSecret([]byte("u"))}
	// Empty (non-nil) maps and slices and empty secrets are unset.
	o := Options{Headers: map[string]string{}, ExpectedStatus: StatusList{}, Username: config.NewSecret(nil)}
	got := o.WithDefaults(d)
	require.Equal(t, d.Headers, got.Headers)
	require.Equal(t, d.ExpectedStatus, got.ExpectedStatus)
	require.False(t, got.Username.Empty())
	require.Empty(t, o.keySet(groupHTTP))
}
