package config

import (
	"errors"
	"fmt"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
)

// Error is a configuration error that names the key and, for a service,
// its index, so that the loader can point at the line.
type Error struct {
	// Service is the index of the [[inputs.service_latency.service]] table,
	// or -1 for a plugin-level key.
	Service int
	// Name is the service's name, when known.
	Name string
	// Key is the offending toml key, dotted for a sub-table ("redis.url");
	// "" when the whole table is at fault.
	Key string
	Err error
}

func (e *Error) Error() string {
	var where string
	if e.Service >= 0 {
		if e.Name != "" {
			where = fmt.Sprintf("service %q: ", e.Name)
		} else {
			where = fmt.Sprintf("service #%d: ", e.Service+1)
		}
	}
	msg := redact.Text(e.Err.Error())
	if e.Key != "" {
		return where + e.Key + ": " + msg
	}
	return where + msg
}

func (e *Error) Unwrap() error { return e.Err }

// pluginErr is an error about a plugin-level key.
func pluginErr(key string, err error) error { return &Error{Service: -1, Key: key, Err: err} }

// nested turns an error of a package that names its own key (a
// *keyerr.Error) into an Error about prefix+key.
func nested(service int, name, prefix string, err error) error {
	var ke *keyerr.Error
	if errors.As(err, &ke) {
		key := ke.Key
		if key != "" {
			key = prefix + key
		} else if prefix != "" {
			key = prefix[:len(prefix)-1]
		}
		return &Error{Service: service, Name: name, Key: key, Err: ke.Err}
	}
	key := ""
	if prefix != "" {
		key = prefix[:len(prefix)-1]
	}
	return &Error{Service: service, Name: name, Key: key, Err: err}
}

// Nested is nested for a plugin-level table (e.g. "redis."): for the
// errors of what Init opens from a Spec.
func Nested(prefix string, err error) error { return nested(-1, "", prefix, err) }
