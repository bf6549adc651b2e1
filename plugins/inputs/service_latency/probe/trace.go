package probe

import (
	"context"
	"fmt"
)

// Tracer receives the steps of a probe as they happen: the -probe debug
// trace. A context without one (every gather) costs a context lookup per
// step and nothing else.
type Tracer func(step, detail string)

type tracerKey struct{}

// WithTracer returns a context whose probes report their steps to t.
func WithTracer(ctx context.Context, t Tracer) context.Context {
	return context.WithValue(ctx, tracerKey{}, t)
}

// Traced reports whether ctx carries a tracer.
func Traced(ctx context.Context) bool {
	_, ok := ctx.Value(tracerKey{}).(Tracer)
	return ok
}

// tracef reports a step to ctx's tracer, if any.
func tracef(ctx context.Context, step, format string, args ...any) {
	if t, ok := ctx.Value(tracerKey{}).(Tracer); ok {
		t(step, fmt.Sprintf(format, args...))
	}
}
