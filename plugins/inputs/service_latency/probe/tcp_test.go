package probe

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	telegraftls "github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
)

// lineServer answers each line it reads with reply(line) after delay.
func lineServer(t *testing.T, delay time.Duration, reply func(string) string) string {
	return testpeer.Serve(t, func(c net.Conn, done <-chan struct{}) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(delay):
			}
			if _, err := io.WriteString(c, reply(strings.TrimSpace(line))); err != nil {
				return
			}
		}
	})
}

func pong(line string) string {
	if line == "PING" {
		return "+PONG\r\n"
	}
	return "-ERR unknown\r\n"
}

func TestTCPConnect(t *testing.T) {
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	r := mustNew(t, "tcp://"+addr, time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, Success, r)
	require.NoError(t, r.Err)
	require.Less(t, r.Latency, 50*time.Millisecond)
	connect := requireField(t, r, "tcp_connect").(float64)
	require.Greater(t, connect, 0.0)
	require.LessOrEqual(t, connect, r.Latency.Seconds())
	requireNoField(t, r, "dns_lookup")
	requireNoField(t, r, "tls_handshake")

	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	r = mustNew(t, "tcp://localhost:"+port, time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, Success, r)
	requireField(t, r, "dns_lookup")
}

func TestTCPConnectionRefused(t *testing.T) {
	r, elapsed := probeTimed(mustNew(t, "tcp://"+freePort(t), time.Second, Options{}))
	requireOutcome(t, ConnectionFailed, r)
	require.ErrorContains(t, r.Err, "refused")
	require.Less(t, elapsed, 500*time.Millisecond)
	requireNoField(t, r, "tcp_connect")
}

func TestTCPSendExpect(t *testing.T) {
	const delay = 100 * time.Millisecond
	addr := lineServer(t, delay, pong)
	cases := []struct {
		name string
		opts Options
		want Outcome
	}{
		{"expect hit", Options{Send: "PING\n", Expect: "+PONG"}, Success},
		{"expect miss", Options{Send: "HELLO\n", Expect: "+PONG"}, StringMismatch},
		{"regex hit", Options{Send: "PING\n", ExpectRegex: `^\+P[A-Z]+\r\n`}, Success},
		{"regex miss", Options{Send: "PING\n", ExpectRegex: `^-ERR`}, StringMismatch},
		{"both hit", Options{Send: "PING\n", Expect: "PONG", ExpectRegex: `^\+`}, Success},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A mismatch waits for more data until the deadline: the
			// line server keeps the connection open.
			const timeout = 400 * time.Millisecond
			r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, timeout, tc.opts))
			if tc.want == Success {
				requireOutcome(t, Success, r)
				require.GreaterOrEqual(t, r.Latency, delay)
				require.Less(t, r.Latency, delay+50*time.Millisecond)
				return
			}
			// Data came but never matched; the server keeps the
			// connection open, so the deadline ends the read.
			requireOutcome(t, StringMismatch, r)
			require.ErrorContains(t, r.Err, "before the deadline")
			requireByDeadline(t, elapsed, timeout)
		})
	}
}

func TestTCPStringMismatchOnClose(t *testing.T) {
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) {
		_, _ = io.WriteString(c, "220 wrong banner\r\n")
	})
	r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, 2*time.Second, Options{Expect: "SSH-2.0"}))
	requireOutcome(t, StringMismatch, r)
	require.ErrorContains(t, r.Err, "expect")
	require.Less(t, elapsed, time.Second)

	r = mustNew(t, "tcp://"+addr, 2*time.Second, Options{Expect: "220", ExpectRegex: `^SSH`}).Probe(context.Background())
	requireOutcome(t, StringMismatch, r)
	require.ErrorContains(t, r.Err, "expect_regex")
}

func TestTCPExpectAcrossReads(t *testing.T) {
	// The expected string arrives split over two writes.
	addr := testpeer.Serve(t, func(c net.Conn, done <-chan struct{}) {
		_, _ = io.WriteString(c, "SSH-2")
		select {
		case <-done:
			return
		case <-time.After(30 * time.Millisecond):
		}
		_, _ = io.WriteString(c, ".0-OpenSSH\r\n")
		_, _ = io.Copy(io.Discard, c)
	})
	r := mustNew(t, "tcp://"+addr, 2*time.Second, Options{Expect: "SSH-2.0-", ExpectRegex: `OpenSSH\r\n$`}).Probe(context.Background())
	requireOutcome(t, Success, r)
	require.GreaterOrEqual(t, r.Latency, 30*time.Millisecond)
}

func TestTCPReadFailed(t *testing.T) {
	// Closes without a byte.
	addr := testpeer.Serve(t, func(net.Conn, <-chan struct{}) {})
	r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, 2*time.Second, Options{Send: "PING\n", Expect: "PONG"}))
	requireOutcome(t, ReadFailed, r)
	require.Less(t, elapsed, time.Second)
}

func TestTCPSilentServerTimesOut(t *testing.T) {
	t.Parallel()
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	const timeout = 300 * time.Millisecond
	r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, timeout, Options{Send: "PING\n", Expect: "PONG"}))
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
	requireField(t, r, "tcp_connect")
}

func TestTCPReadLimit(t *testing.T) {
	// 100 KiB without a match and the connection kept open: the probe
	// gives up after 64 KiB instead of waiting for the deadline.
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) {
		_, _ = c.Write(bytes.Repeat([]byte("x"), 100<<10))
		_, _ = io.Copy(io.Discard, c)
	})
	r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, 5*time.Second, Options{Expect: "PONG"}))
	requireOutcome(t, StringMismatch, r)
	require.ErrorContains(t, r.Err, "65536 bytes")
	require.Less(t, elapsed, time.Second)
}

func TestTCPTLS(t *testing.T) {
	cert := selfSigned(t, time.Hour)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.cert}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// One connection at a time is enough here.
			br := bufio.NewReader(c)
			if line, err := br.ReadString('\n'); err == nil {
				_, _ = io.WriteString(c, pong(strings.TrimSpace(line)))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	addr := ln.Addr().String()

	t.Run("trusted", func(t *testing.T) {
		r := mustNew(t, "tcp://"+addr, 2*time.Second, Options{
			TLS:          ptr(true),
			Send:         "PING\n",
			Expect:       "+PONG",
			ClientConfig: telegraftls.ClientConfig{TLSCA: cert.caFile},
		}).Probe(context.Background())
		requireOutcome(t, Success, r)
		requireField(t, r, "tcp_connect")
		require.Greater(t, requireField(t, r, "tls_handshake").(float64), 0.0)
		require.Equal(t, "1.3", requireField(t, r, "tls_version"))
		require.InDelta(t, time.Until(cert.leaf.NotAfter).Seconds(), requireField(t, r, "tls_cert_expiry").(float64), 2)
	})
	t.Run("untrusted", func(t *testing.T) {
		r := mustNew(t, "tcp://"+addr, 2*time.Second, Options{TLS: ptr(true)}).Probe(context.Background())
		requireOutcome(t, TLSError, r)
		requireField(t, r, "tls_handshake")
		requireNoField(t, r, "tls_version")
	})
	t.Run("tls to plain server", func(t *testing.T) {
		plain := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.WriteString(c, "220 hello\r\n") })
		r := mustNew(t, "tcp://"+plain, 2*time.Second, Options{TLS: ptr(true)}).Probe(context.Background())
		requireOutcome(t, TLSError, r)
	})
}

func TestTCPTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	addr := testpeer.Serve(t, func(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) })
	const timeout = 300 * time.Millisecond
	r, elapsed := probeTimed(mustNew(t, "tcp://"+addr, timeout, Options{TLS: ptr(true)}))
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
}
