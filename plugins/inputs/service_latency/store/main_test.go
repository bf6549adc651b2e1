package store

import (
	"testing"

	"go.uber.org/goleak"
)

// Every store releases its goroutines on Close (the Redis client's
// included). memguard (behind config.Secret, in RedisConfig's tests) keeps
// one global goroutine.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/awnumar/memguard/core.NewCoffer.func1"))
}
