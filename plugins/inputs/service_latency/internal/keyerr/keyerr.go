// Package keyerr is the one way a package says which configuration key an
// error is about. probe, stats and store return a *keyerr.Error naming the
// toml key (relative to their own table); the config compiler finds the
// key — never by reading the message — and from it the line to show.
package keyerr

import (
	"errors"
	"fmt"
)

// Error is an error about one configuration key.
type Error struct {
	// Key is the toml key, e.g. "window", "url", "tls_ca"; "" when the
	// whole table is at fault.
	Key string
	Err error
}

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Err.Error()
	}
	return e.Key + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error about key.
func New(key string, err error) error { return &Error{Key: key, Err: err} }

// Errorf returns an error about key with a formatted message.
func Errorf(key, format string, args ...any) error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// Key returns the key err is about ("" when none says).
func Key(err error) string {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Key
	}
	return ""
}
