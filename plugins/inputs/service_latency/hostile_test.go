package service_latency

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/testpeer"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// silentUDP reads and drops every datagram: a DNS server that never
// answers.
func silentUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// The hostile peers, as handlers.

// neverAnswer accepts, reads whatever comes and never writes.
func neverAnswer(c net.Conn, _ <-chan struct{}) { _, _ = io.Copy(io.Discard, c) }

// readRequest reads until the end of an HTTP request's headers.
func readRequest(c net.Conn) bool {
	var buf [4096]byte
	var got []byte
	for !strings.Contains(string(got), "\r\n\r\n") {
		n, err := c.Read(buf[:])
		if err != nil {
			return false
		}
		got = append(got, buf[:n]...)
	}
	return true
}

// drain reads and discards in the background (so writes never block on a
// full receive window of the peer's requests).
func drain(c net.Conn) { go func() { _, _ = io.Copy(io.Discard, c) }() }

// oneByteASecond answers a valid response one byte a second.
func oneByteASecond(c net.Conn, done <-chan struct{}) {
	if !readRequest(c) {
		return
	}
	drain(c)
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for i := range len(resp) {
		select {
		case <-done:
			return
		case <-time.After(time.Second):
		}
		if _, err := c.Write([]byte{resp[i]}); err != nil {
			return
		}
	}
}

// endlessBody answers 200 with a chunked body that never ends, as fast as
// the peer reads.
func endlessBody(c net.Conn, done <-chan struct{}) {
	if !readRequest(c) {
		return
	}
	drain(c)
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		return
	}
	chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 8192, strings.Repeat("x", 8192)))
	for {
		select {
		case <-done:
			return
		default:
		}
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// trickleBody answers 200 with an endless chunked body, 1 KiB every 20 ms:
// never over max_body_size before the deadline.
func trickleBody(c net.Conn, done <-chan struct{}) {
	if !readRequest(c) {
		return
	}
	drain(c)
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		return
	}
	chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 1024, strings.Repeat("x", 1024)))
	for {
		select {
		case <-done:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// gigabyteBody declares a 1 GiB body and streams zeros.
func gigabyteBody(c net.Conn, done <-chan struct{}) {
	if !readRequest(c) {
		return
	}
	drain(c)
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"); err != nil {
		return
	}
	zeros := make([]byte, 64<<10)
	for sent := 0; sent < 1<<30; sent += len(zeros) {
		select {
		case <-done:
			return
		default:
		}
		if _, err := c.Write(zeros); err != nil {
			return
		}
	}
}

// redirectLoop redirects every request to itself.
func redirectLoop(c net.Conn, _ <-chan struct{}) {
	for readRequest(c) {
		if _, err := io.WriteString(c, "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n"); err != nil {
			return
		}
	}
}

// resetOnAccept resets the connection right after accepting it.
func resetOnAccept(c net.Conn, _ <-chan struct{}) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// timedProber measures the wall time of every Probe call.
type timedProber struct {
	probe.Prober
	d atomic.Int64
}

func (p *timedProber) Probe(ctx context.Context) probe.Result {
	start := time.Now()
	r := p.Prober.Probe(ctx)
	p.d.Store(int64(time.Since(start)))
	return r
}

func (p *timedProber) last() time.Duration { return time.Duration(p.d.Load()) }

type hostileCase struct {
	name    string
	url     string
	timeout time.Duration
	extra   string // more keys of the service table
	want    string // result tag
	// alt is another acceptable result: a reset can land during the
	// connect (connection_failed) or after it (read_failed).
	alt string
	// fast: the probe must end well before its timeout (it has an answer
	// to give), not just by it.
	fast bool
}

// TestHostilePeers gathers once over a config that holds every hostile
// peer at once: each probe ends by its timeout (+100 ms) with the right
// result, the gather returns within the largest timeout + 200 ms, and the
// next gather is on time too.
func TestHostilePeers(t *testing.T) {
	silent := testpeer.Serve(t, neverAnswer)
	slow := testpeer.Serve(t, oneByteASecond)
	endless := testpeer.Serve(t, endlessBody)
	trickle := testpeer.Serve(t, trickleBody)
	gig := testpeer.Serve(t, gigabyteBody)
	loop := testpeer.Serve(t, redirectLoop)
	reset := testpeer.Serve(t, resetOnAccept)
	dnsSilent := silentUDP(t)

	cases := []hostileCase{
		{name: "accepts_never_answers", url: "http://" + silent + "/", timeout: 300 * time.Millisecond, want: "timeout"},
		{name: "tcp_accepts_never_answers", url: "tcp://" + silent, timeout: 300 * time.Millisecond, extra: `send = "PING\n"` + "\n" + `expect = "PONG"`, want: "timeout"},
		{name: "headers_one_byte_a_second", url: "http://" + slow + "/", timeout: 1200 * time.Millisecond, want: "timeout"},
		{name: "endless_body", url: "http://" + endless + "/", timeout: 1000 * time.Millisecond, want: "body_read_error", fast: true},
		{name: "endless_trickle_body", url: "http://" + trickle + "/", timeout: 400 * time.Millisecond, want: "timeout"},
		{name: "declared_1GiB_body", url: "http://" + gig + "/", timeout: 1000 * time.Millisecond, want: "body_read_error", fast: true},
		{name: "redirect_loop", url: "http://" + loop + "/", timeout: 1000 * time.Millisecond, extra: "follow_redirects = true", want: "response_status_code_mismatch", fast: true},
		{name: "tls_handshake_stalls", url: "https://" + silent + "/", timeout: 350 * time.Millisecond, want: "timeout"},
		{name: "tcp_tls_handshake_stalls", url: "tcp://" + silent, timeout: 350 * time.Millisecond, extra: "tls = true", want: "timeout"},
		{name: "reset_after_accept", url: "http://" + reset + "/", timeout: 1000 * time.Millisecond, want: "connection_failed", fast: true},
		{name: "tcp_reset_after_accept", url: "tcp://" + reset, timeout: 1000 * time.Millisecond, extra: `expect = "220"`, want: "connection_failed", alt: "read_failed", fast: true},
		{name: "dns_never_answers", url: "dns://" + dnsSilent + "/a.test", timeout: 300 * time.Millisecond, want: "timeout"},
		{name: "dns_tcp_never_answers", url: "dns://" + silent + "/a.test?transport=tcp", timeout: 300 * time.Millisecond, want: "timeout"},
	}
	var b strings.Builder
	b.WriteString("timeout = \"5s\"\ncollect_internal = true\n")
	var largest time.Duration
	for _, c := range cases {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = %q\n  url = %q\n  timeout = %q\n  %s\n", c.name, c.url, c.timeout, c.extra)
		largest = max(largest, c.timeout)
	}
	p, _ := newPlugin(t, conf(b.String()))
	timed := make([]*timedProber, len(p.targets()))
	for i, tg := range p.targets() {
		timed[i] = &timedProber{Prober: tg.Prober}
		tg.Prober = timed[i]
	}

	const (
		probeSlack  = 100 * time.Millisecond
		gatherSlack = 200 * time.Millisecond
	)
	for round := 1; round <= 2; round++ {
		var acc testutil.Accumulator
		start := time.Now()
		require.NoError(t, p.Gather(&acc))
		elapsed := time.Since(start)
		require.Less(t, elapsed, largest+gatherSlack, "gather %d took %s; the largest timeout is %s", round, elapsed, largest)

		got := map[string]string{}
		var timeouts any
		for _, m := range acc.GetTelegrafMetrics() {
			if m.Name() == Measurement {
				got[m.Tags()["service"]] = m.Tags()["result"]
			}
			if m.Name() == InternalMeasurement {
				timeouts, _ = m.GetField("timeouts")
			}
		}
		wantTimeouts := int64(0)
		for i, c := range cases {
			if c.alt == "" || got[c.name] != c.alt {
				require.Equalf(t, c.want, got[c.name], "gather %d, %s", round, c.name)
			}
			if c.want == "timeout" {
				wantTimeouts++
			}
			require.Equal(t, c.name, p.targets()[i].Name)
			d := timed[i].last()
			require.Lessf(t, d, c.timeout+probeSlack, "gather %d, %s: the probe took %s (timeout %s)", round, c.name, d, c.timeout)
			if c.fast {
				require.Lessf(t, d, c.timeout/2, "gather %d, %s: %s has its answer early but took %s", round, c.name, c.want, d)
			}
			if c.want == "timeout" {
				require.GreaterOrEqualf(t, d, c.timeout-5*time.Millisecond, "gather %d, %s: timed out before the deadline", round, c.name)
			}
		}
		require.Equal(t, wantTimeouts, timeouts, "service_latency_internal timeouts")
	}
}
