package probe

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// wantOptionKeys pins every Options key to its group. A field added to
// Options fails this test until it is listed here — with the group that
// says where it applies — so that no key is forgotten by WithDefaults,
// ApplicableTo or New's checks (which all read optionFields).
var wantOptionKeys = map[group][]string{
	groupHTTP: {
		"method", "headers", "body", "follow_redirects", "expected_status", "body_contains", "body_regex",
		"max_body_size", "keep_alive", "username", "password", "bearer_token",
		"use_system_proxy", "http_proxy_url",
	},
	groupTCP: {"send", "expect", "expect_regex", "tls"},
	groupTLS: {
		"tls_ca", "tls_cert", "tls_key", "tls_key_pwd", "tls_min_version", "tls_cipher_suites",
		"insecure_skip_verify", "tls_server_name", "tls_renegotiation_method", "tls_enable",
	},
}

func TestOptionKeys(t *testing.T) {
	got := map[group][]string{}
	for _, f := range optionFields {
		got[f.group] = append(got[f.group], f.keys...)
	}
	require.Equal(t, wantOptionKeys, got)
}

// optionLeaf is one settable key of Options: the field path and its key.
type optionLeaf struct {
	path  []int
	key   string
	group group
}

// optionLeaves walks Options by reflection, independently of
// optionFields: every field, and every field of an embedded struct.
func optionLeaves(t *testing.T) []optionLeaf {
	t.Helper()
	typ := reflect.TypeOf(Options{})
	var out []optionLeaf
	for i := 0; i < typ.NumField(); i++ {
		sf := typ.Field(i)
		g := group(sf.Tag.Get("probe"))
		require.Containsf(t, []group{groupHTTP, groupTCP, groupTLS}, g, "Options.%s: no valid probe tag", sf.Name)
		if sf.Anonymous {
			for j := 0; j < sf.Type.NumField(); j++ {
				out = append(out, optionLeaf{[]int{i, j}, tomlKey(sf.Type.Field(j)), g})
			}
			continue
		}
		out = append(out, optionLeaf{[]int{i}, tomlKey(sf), g})
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
			require.Equal(t, l.key, d.keySet(l.group), "keySet")

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
				require.Equal(t, slices.Contains(applies, l.group), isSet, "ApplicableTo(%s)", scheme)

				err := d.misplacedKey(scheme)
				if slices.Contains(applies, l.group) {
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
