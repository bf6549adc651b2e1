package config

import (
	"reflect"

	"github.com/influxdata/telegraf/config"
)

// StoreDiff returns the first store key ("state", "state_file",
// "redis.url", "redis.tls_ca", ...) whose value differs between a and b,
// or "" when they ask for the same store. It walks the structs, so a key
// added to the Redis table later is compared without being listed here.
// Secrets are compared without being revealed.
func StoreDiff(a, b *Config) string {
	if normState(a.State) != normState(b.State) {
		return "state"
	}
	if a.StateFile != b.StateFile {
		return "state_file"
	}
	if (a.StateSaveInterval == nil) != (b.StateSaveInterval == nil) ||
		a.StateSaveInterval != nil && *a.StateSaveInterval != *b.StateSaveInterval {
		return "state_save_interval"
	}
	if (a.Redis == nil) != (b.Redis == nil) {
		return "redis"
	}
	if a.Redis == nil {
		return ""
	}
	return diffStruct(reflect.ValueOf(a.Redis).Elem(), reflect.ValueOf(b.Redis).Elem(), "redis")
}

func normState(s string) string {
	if s == "" {
		return "memory"
	}
	return s
}

// diffStruct compares two values of one struct type field by field; the
// key of an embedded struct's fields is the parent's (tls.ClientConfig's
// keys are keys of the redis table).
func diffStruct(a, b reflect.Value, prefix string) string {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			if k := diffStruct(fa, fb, prefix); k != "" {
				return k
			}
			continue
		}
		key := tomlKey(t, sf)
		if key == "-" {
			continue
		}
		if !sameValue(fa, fb) {
			return prefix + "." + key
		}
	}
	return ""
}

func sameValue(a, b reflect.Value) bool {
	if a.Type() == secretType {
		sa := a.Addr().Interface().(*config.Secret)
		sb := b.Addr().Interface().(*config.Secret)
		return sameSecret(sa, sb)
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func sameSecret(a, b *config.Secret) bool {
	if a.Empty() || b.Empty() {
		return a.Empty() == b.Empty()
	}
	buf, err := b.Get()
	if err != nil {
		return false
	}
	defer buf.Destroy()
	eq, err := a.EqualTo(buf.Bytes())
	return err == nil && eq
}
