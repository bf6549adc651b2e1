package store

import (
	"testing"

	"go.uber.org/goleak"
)

// Every store releases its goroutines on Close (the Redis client's
// included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
