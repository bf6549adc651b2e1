package redistest

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Blob returns element i (1-based) of a service's packed state in the
// Redis store's layout 2 — the field "s" of <prefix>:{<service>}:state,
// a MessagePack array (store/redis.lua lists the elements: 4 count,
// 5 mean, 11 probes, 18 the failed rounds of the verdict, ...) — as Lua's
// tostring writes it. Tests read the stored state with it.
func Blob(ctx context.Context, c *redis.Client, stateKey string, i int) (string, error) {
	return c.Eval(ctx, `local t = cmsgpack.unpack(redis.call('HGET', KEYS[1], 's')) return tostring(t[tonumber(ARGV[1])])`, []string{stateKey}, i).Text()
}

// BlobInt is Blob for an integer element.
func BlobInt(ctx context.Context, c *redis.Client, stateKey string, i int) (int, error) {
	s, err := Blob(ctx, c, stateKey, i)
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(s, 64)
	return int(f), err
}

// BlobFloat is Blob for a float element.
func BlobFloat(ctx context.Context, c *redis.Client, stateKey string, i int) (float64, error) {
	s, err := Blob(ctx, c, stateKey, i)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(s, 64)
}
