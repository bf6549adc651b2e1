// Package probe runs one probe of one service and reports what happened.
//
// One file per protocol (http.go, tcp.go, dns.go, icmp.go, grpc.go)
// implements Prober; net.go holds what every network probe shares; New
// picks one by the URL's scheme. A probe owns its deadline: it never runs
// longer than the timeout it was built with, nor past the context's
// deadline, whichever comes first. A probe that runs out of time (or whose
// context is canceled) ends with Timeout.
package probe

import (
	"context"
	"time"
)

// Outcome is the result of one probe. Its String form is the `result` tag and
// its integer value the `result_code` field. Values 0..6 are the names and
// numbers of Telegraf's inputs.http_response, so dashboards and alerts carry
// over; new outcomes take 7 and up. Never renumber.
type Outcome int

const (
	// Success: the probe got the expected answer; Latency is a sample.
	Success Outcome = 0
	// ResponseStringMismatch: the HTTP body missed body_contains/body_regex.
	ResponseStringMismatch Outcome = 1
	// BodyReadError: the HTTP body could not be read or exceeded max_body_size.
	BodyReadError Outcome = 2
	// ConnectionFailed: refused, reset, unreachable or another network error.
	ConnectionFailed Outcome = 3
	// Timeout: the deadline (or a cancellation) ended the probe.
	Timeout Outcome = 4
	// DNSError: the target's host name could not be resolved.
	DNSError Outcome = 5
	// ResponseStatusCodeMismatch: the HTTP status is not in expected_status.
	ResponseStatusCodeMismatch Outcome = 6
	// TLSError: certificate verification or the TLS handshake failed.
	TLSError Outcome = 7
	// ReadFailed: a TCP probe read nothing before EOF or an error.
	ReadFailed Outcome = 8
	// StringMismatch: a TCP probe's answer missed expect/expect_regex.
	StringMismatch Outcome = 9
	// DNSNXDomain: a DNS probe got NXDOMAIN.
	DNSNXDomain Outcome = 10
	// DNSServFail: a DNS probe got SERVFAIL.
	DNSServFail Outcome = 11
	// DNSNoAnswer: a DNS probe got NOERROR without answer records.
	DNSNoAnswer Outcome = 12
	// DNSRcodeError: a DNS probe got another error rcode (REFUSED, ...).
	DNSRcodeError Outcome = 13
	// GRPCNotServing: a gRPC health check answered NOT_SERVING.
	GRPCNotServing Outcome = 14
	// GRPCUnknown: a gRPC health check answered UNKNOWN.
	GRPCUnknown Outcome = 15
	// GRPCServiceUnknown: the gRPC server does not know the service
	// (SERVICE_UNKNOWN, or the NotFound code).
	GRPCServiceUnknown Outcome = 16
	// GRPCUnimplemented: the gRPC server has no health service.
	GRPCUnimplemented Outcome = 17
	// GRPCError: the health check call ended with another gRPC code.
	GRPCError Outcome = 18
)

var outcomeNames = [...]string{
	Success:                    "success",
	ResponseStringMismatch:     "response_string_mismatch",
	BodyReadError:              "body_read_error",
	ConnectionFailed:           "connection_failed",
	Timeout:                    "timeout",
	DNSError:                   "dns_error",
	ResponseStatusCodeMismatch: "response_status_code_mismatch",
	TLSError:                   "tls_error",
	ReadFailed:                 "read_failed",
	StringMismatch:             "string_mismatch",
	DNSNXDomain:                "dns_nxdomain",
	DNSServFail:                "dns_servfail",
	DNSNoAnswer:                "dns_no_answer",
	DNSRcodeError:              "dns_rcode_error",
	GRPCNotServing:             "grpc_not_serving",
	GRPCUnknown:                "grpc_unknown",
	GRPCServiceUnknown:         "grpc_service_unknown",
	GRPCUnimplemented:          "grpc_unimplemented",
	GRPCError:                  "grpc_error",
}

// String returns the `result` tag value.
func (o Outcome) String() string {
	if o >= 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// Field is one probe-specific field (http_response_code, a phase timing, ...).
type Field struct {
	Key   string
	Value interface{}
}

// Result is what one probe observed.
type Result struct {
	// Outcome of the probe; Success means Latency is a valid sample.
	Outcome Outcome
	// Latency is the measured time (see each prober for what it spans). It
	// is only a sample when Outcome is Success.
	Latency time.Duration
	// Err is the cause of a failure, for logs and the status endpoint. It
	// never contains credentials.
	Err error
	// Fields are extra, protocol-specific fields. Durations are float64
	// seconds; a phase that did not happen is absent, not 0.
	Fields []Field
	// Samples is set by a prober that runs a round of its own (ICMP: one
	// echo request per sample): every sample of the round, in order, each
	// counted into the service's state. Outcome is then the round's
	// (Success when at least one sample succeeded), Latency the median of
	// the successful samples. Nil for a prober that takes one sample per
	// Probe call; the engine runs rounds of those itself (samples =).
	Samples []Sample
}

// Sample is one sample of a round.
type Sample struct {
	// OK: the sample succeeded and Latency is a sample of the state.
	OK      bool
	Latency time.Duration
	// Offset is when the sample was taken, from the round's start (the
	// time-based EWMA needs each sample at its own time).
	Offset time.Duration
}

// Prober probes one target. Implementations are safe for concurrent use,
// hold no per-probe state between calls, and return by their deadline.
type Prober interface {
	// Probe runs one probe, bounded by the prober's timeout and by ctx.
	Probe(ctx context.Context) Result
	// Kind is the `probe` tag: "http", "tcp", "dns", "icmp", "grpc".
	Kind() string
	// Close releases idle connections and other resources.
	Close()
}
