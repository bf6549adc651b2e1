// ICMP prober (icmp://host, icmp://[::1]).
//
// One Probe is a round: count echo requests (default 5), ping_interval
// apart (default 200 ms), each with payload_size bytes of payload (default
// 56, as ping(8)) and the IP TTL / hop limit ttl (default 64), sent with
// github.com/prometheus-community/pro-bing (as Telegraf's inputs.ping
// does). Every echo request is a Sample of the round: OK with its round
// trip when its reply came, not OK when none came by the end of the
// round. The round ends when every request has been answered, or at the
// probe's timeout: a lost echo request holds the round until then. New
// checks that the round fits: count × ping_interval ≤ timeout (the last
// request then has at least one ping_interval to be answered).
//
// A sample's round trip is measured on the monotonic clock, from just
// after the request was handed to the kernel to the processing of its
// reply (pro-bing's own Rtt subtracts wall-clock timestamps carried in
// the payload; a clock step would distort it).
//
// Outcome: Success when at least one reply came, Latency the median of
// the round trips (the mean of the middle two for an even number);
// Timeout when none came; DNSError when the host name does not resolve;
// ConnectionFailed when not even the first request could be sent (no
// route, a socket error). Replies to a request already answered
// (icmp_duplicates) and echo replies of the round from another address
// than the target (icmp_unexpected) are counted, never samples.
//
// Fields: round_samples (int64, requests sent), round_failures (int64,
// requests without reply), round_loss (float64 0..1), round_min and
// round_max (seconds; only with a reply), ttl (int64, the TTL / hop limit
// of the first reply, when the kernel reports it), icmp_duplicates and
// icmp_unexpected (int64), remote_address (the IP pinged), dns_lookup (a
// host name only).
//
// Sockets: privileged = true sends from a raw ICMP socket (root or
// CAP_NET_RAW); false from an unprivileged datagram ICMP socket (the
// process's group must be inside net.ipv4.ping_group_range, which also
// governs ICMPv6); "auto" (the default) takes the datagram socket when it
// is allowed — it needs no privilege and the kernel hands each socket only
// its own replies — and the raw socket otherwise. New opens (and closes
// at once) a socket of the kind it picked, so that a process allowed
// neither fails at start with one error that says how to fix it, instead
// of failing every probe (CheckICMP).
//
// The pinger's receive goroutine notices the end of a round within its
// read poll (at most ~100 ms) and then closes the socket; Probe returns at
// the round's end without waiting for it, Close waits for it.

package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	probing "github.com/prometheus-community/pro-bing"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// Defaults and bounds of the ICMP options.
const (
	// DefaultICMPCount is count when none is set.
	DefaultICMPCount = 5
	// DefaultPingInterval is ping_interval when none is set: ping(8)'s
	// smallest interval for an unprivileged user, so a round is no harsher
	// on the network than a user's ping -i 0.2; 5 × 200 ms fits a 1 s
	// timeout.
	DefaultPingInterval = 200 * time.Millisecond
	// DefaultPayloadSize is payload_size when none is set (ping(8)'s 56).
	DefaultPayloadSize = 56
	// DefaultICMPTTL is ttl when none is set.
	DefaultICMPTTL = 64

	// MaxICMPCount bounds count.
	MaxICMPCount = 1000
	// MinPingInterval bounds ping_interval.
	MinPingInterval = time.Millisecond
	// MinPayloadSize is pro-bing's least payload: an 8-byte timestamp and
	// a 16-byte tracker.
	MinPayloadSize = 24
	// MaxPayloadSize is the largest ICMP payload in an IPv4 packet.
	MaxPayloadSize = 65535 - 20 - 8
)

type icmpProber struct {
	host     string
	net      netConfig
	timeout  time.Duration
	count    int
	interval time.Duration
	size     int
	ttl      int
	raw      bool // raw sockets (privileged) or datagram sockets

	// running counts pinger runs that may outlive Probe by the pinger's
	// read poll; Close waits for them.
	running sync.WaitGroup
}

func newICMP(u *url.URL, timeout time.Duration, o *Options) (*icmpProber, error) {
	host := u.Hostname()
	if host == "" {
		return nil, keyerr.Errorf("url", "missing host in %q (want icmp://host)", redactURL(u.String()))
	}
	if u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, keyerr.Errorf("url", "icmp URLs are icmp://host, got %q", redactURL(u.String()))
	}
	nc, err := newNetConfig(o)
	if err != nil {
		return nil, err
	}
	p := &icmpProber{
		host: host, net: nc, timeout: timeout,
		count: DefaultICMPCount, interval: DefaultPingInterval,
		size: DefaultPayloadSize, ttl: DefaultICMPTTL,
	}
	if o.Count != nil {
		if p.count = *o.Count; p.count < 1 || p.count > MaxICMPCount {
			return nil, keyerr.Errorf("count", "must be 1..%d, got %d", MaxICMPCount, p.count)
		}
	}
	if o.PingInterval != 0 {
		if p.interval = time.Duration(o.PingInterval); p.interval < MinPingInterval {
			return nil, keyerr.Errorf("ping_interval", "must be at least %s, got %s", MinPingInterval, p.interval)
		}
	}
	if need := time.Duration(p.count) * p.interval; need > timeout {
		key := "count"
		if o.PingInterval != 0 {
			key = "ping_interval"
		}
		return nil, keyerr.Errorf(key, "%d echo requests %s apart need count × ping_interval = %s, more than the timeout %s: lower count or ping_interval, or raise timeout",
			p.count, p.interval, need, timeout)
	}
	if o.PayloadSize != nil {
		if p.size = *o.PayloadSize; p.size < MinPayloadSize || p.size > MaxPayloadSize {
			return nil, keyerr.Errorf("payload_size", "must be %d..%d bytes, got %d", MinPayloadSize, MaxPayloadSize, p.size)
		}
	}
	if o.TTL != nil {
		if p.ttl = *o.TTL; p.ttl < 1 || p.ttl > 255 {
			return nil, keyerr.Errorf("ttl", "must be 1..255, got %d", p.ttl)
		}
	}

	// The family whose socket is checked: the literal's, else the
	// preferred one (ping_group_range and CAP_NET_RAW govern both alike).
	v6 := nc.family == "ip6" || (nc.source.IsValid() && nc.source.Is6())
	if a, ok := literal(host); ok {
		v6 = a.Is6()
	}
	if p.raw, err = icmpMode(o.Privileged, v6); err != nil {
		return nil, err
	}
	return p, nil
}

// CheckICMP reports whether this process may send ICMP echo requests with
// the given privileged setting ("auto", "true", "false"; "" is auto), by
// opening and closing an IPv4 ICMP socket of that kind (no packet is
// sent). Its error is the one New returns for an icmp URL: a
// *keyerr.Error naming "privileged" that says what is missing and how to
// grant it (a setcap line, a sysctl line).
func CheckICMP(privileged Privileged) error {
	_, err := icmpMode(privileged, false)
	return err
}

// icmpMode picks raw (true) or datagram (false) sockets for privileged
// and checks that the process may open one.
func icmpMode(privileged Privileged, v6 bool) (raw bool, err error) {
	switch Privileged(strings.ToLower(string(privileged))) {
	case "", PrivilegedAuto:
		dgErr := trySocket(v6, false)
		if dgErr == nil {
			return false, nil
		}
		rawErr := trySocket(v6, true)
		if rawErr == nil {
			return true, nil
		}
		return false, keyerr.Errorf("privileged", "ICMP probes need raw or unprivileged ICMP sockets and this process may open neither: %s; %s",
			rawHelp(rawErr), datagramHelp(dgErr))
	case PrivilegedTrue:
		if err := trySocket(v6, true); err != nil {
			return false, keyerr.Errorf("privileged", "privileged = true needs raw ICMP sockets: %s (or set privileged = false or \"auto\")", rawHelp(err))
		}
		return true, nil
	case PrivilegedFalse:
		if err := trySocket(v6, false); err != nil {
			return false, keyerr.Errorf("privileged", "privileged = false needs unprivileged ICMP sockets: %s (or set privileged = true or \"auto\")", datagramHelp(err))
		}
		return false, nil
	}
	return false, keyerr.Errorf("privileged", `%q is not one of true, false, "auto"`, string(privileged))
}

// trySocket opens and closes an ICMP socket: raw or datagram, IPv6 or IPv4.
func trySocket(v6, raw bool) error {
	family, proto := syscall.AF_INET, syscall.IPPROTO_ICMP
	if v6 {
		family, proto = syscall.AF_INET6, syscall.IPPROTO_ICMPV6
	}
	typ := syscall.SOCK_DGRAM
	if raw {
		typ = syscall.SOCK_RAW
	}
	fd, err := syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, proto)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	return syscall.Close(fd)
}

func rawHelp(err error) string {
	exe, xerr := os.Executable()
	if xerr != nil {
		exe = "/path/to/service_latency"
	}
	return fmt.Sprintf("raw sockets need root or CAP_NET_RAW (%v); grant it with `sudo setcap cap_net_raw+ep %s` (under systemd: AmbientCapabilities=CAP_NET_RAW)", err, exe)
}

// pingGroupRange is read for datagramHelp (a var for tests).
var pingGroupRange = "/proc/sys/net/ipv4/ping_group_range"

func datagramHelp(err error) string {
	gid := os.Getegid()
	now := "unknown"
	if b, rerr := os.ReadFile(pingGroupRange); rerr == nil {
		now = strings.Join(strings.Fields(string(b)), " ")
	}
	return fmt.Sprintf("unprivileged ICMP sockets need the process's group (gid %d) inside net.ipv4.ping_group_range, now %q (%v); allow it with `sudo sysctl -w net.ipv4.ping_group_range=\"%d %d\"` (a line net.ipv4.ping_group_range = %d %d in /etc/sysctl.d/ keeps it)",
		gid, now, err, gid, gid, gid, gid)
}

// Kind returns "icmp".
func (*icmpProber) Kind() string { return "icmp" }

// Close waits for the pingers of past rounds to close their sockets (at
// most the pinger's read poll, ~100 ms).
func (p *icmpProber) Close() { p.running.Wait() }

// round is what the callbacks of one pinger collect.
type round struct {
	mu         sync.Mutex
	target     netip.Addr
	sent       []time.Time     // by sequence number
	rtt        []time.Duration // by sequence number; -1: no reply yet
	received   int
	ttl        int
	duplicates int
	unexpected int
	ttls       []int         // by sequence number, traced rounds only
	all        chan struct{} // closed when every request was answered
	count      int
	over       bool // the round ended: later callbacks are ignored
}

// Probe runs one round; see the file comment.
func (p *icmpProber) Probe(parent context.Context) Result {
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()
	start := time.Now()

	traced := Traced(parent)
	fields := make([]Field, 0, 11)
	first, second, looked, err := p.net.resolve(ctx, p.host, traced)
	if looked {
		fields = append(fields, Field{"dns_lookup", time.Since(start).Seconds()})
	}
	if err != nil {
		return Result{Outcome: classify(ctx, err, false), Latency: time.Since(start), Err: err, Fields: fields}
	}
	res, sentNone := p.round(ctx, start, first[0], fields, traced)
	if sentNone && len(second) > 0 && ctx.Err() == nil {
		if traced {
			tracef(ctx, "fallback", "no echo request could be sent to %s; trying %s", first[0], second[0])
		}
		res, _ = p.round(ctx, start, second[0], fields, traced)
	}
	return res
}

// round pings target once per count; sentNone reports that not even the
// first request could be sent.
// traced: report the round and each echo to ctx's tracer.
func (p *icmpProber) round(ctx context.Context, start time.Time, target netip.Addr, fields []Field, traced bool) (Result, bool) {
	deadline, _ := ctx.Deadline()
	rd := &round{
		target: target, count: p.count, all: make(chan struct{}),
		sent: make([]time.Time, 0, p.count), rtt: make([]time.Duration, 0, p.count),
	}
	if traced {
		rd.ttls = make([]int, p.count)
		kind := "unprivileged datagram"
		if p.raw {
			kind = "raw (privileged)"
		}
		src := "any local address"
		if p.net.source.IsValid() {
			src = p.net.source.String()
		}
		tracef(ctx, "ping", "%d echo request(s) to %s, %s apart, payload %d bytes, ttl %d, %s socket, from %s",
			p.count, target, p.interval, p.size, p.ttl, kind, src)
	}

	pg := probing.New(target.String())
	pg.SetIPAddr(&net.IPAddr{IP: target.AsSlice(), Zone: target.Zone()})
	pg.SetPrivileged(p.raw)
	pg.SetLogger(probing.NoopLogger{})
	pg.Count = p.count
	pg.Interval = p.interval
	pg.Size = p.size
	pg.TTL = p.ttl
	pg.RecordRtts, pg.RecordTTLs = false, false
	if p.net.source.IsValid() {
		pg.Source = p.net.source.String()
	}
	if pg.Timeout = time.Until(deadline); pg.Timeout <= 0 {
		return Result{Outcome: Timeout, Latency: time.Since(start), Err: context.DeadlineExceeded, Fields: fields}, false
	}
	pg.OnSend = func(pkt *probing.Packet) {
		now := time.Now()
		rd.mu.Lock()
		defer rd.mu.Unlock()
		if !rd.over && pkt.Seq == len(rd.sent) {
			rd.sent = append(rd.sent, now)
			rd.rtt = append(rd.rtt, -1)
		}
	}
	pg.OnRecv = func(pkt *probing.Packet) {
		now := time.Now()
		rd.mu.Lock()
		defer rd.mu.Unlock()
		if rd.over {
			return
		}
		from, _ := netip.AddrFromSlice(pkt.IPAddr.IP)
		if from.Unmap() != rd.target.WithZone("") || pkt.Seq < 0 || pkt.Seq >= len(rd.sent) || rd.rtt[pkt.Seq] >= 0 {
			rd.unexpected++
			return
		}
		rd.rtt[pkt.Seq] = now.Sub(rd.sent[pkt.Seq])
		if rd.ttls != nil && pkt.Seq < len(rd.ttls) {
			rd.ttls[pkt.Seq] = pkt.TTL
		}
		if rd.received == 0 && pkt.TTL > 0 {
			rd.ttl = pkt.TTL
		}
		if rd.received++; rd.received == rd.count {
			close(rd.all)
		}
	}
	pg.OnDuplicateRecv = func(*probing.Packet) {
		rd.mu.Lock()
		if !rd.over {
			rd.duplicates++
		}
		rd.mu.Unlock()
	}

	// The pinger stops at its Timeout, when ctx ends, or on Stop; its
	// goroutines end within its read poll after that.
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	p.running.Add(1)
	go func() {
		defer p.running.Done()
		done <- pg.RunWithContext(pctx)
	}()
	var runErr error
	select {
	case runErr = <-done:
	case <-rd.all:
	case <-ctx.Done():
	}
	pg.Stop()
	end := time.Now()

	rd.mu.Lock()
	rd.over = true
	sent, rtts := rd.sent, rd.rtt
	received, ttl, dups, unexpected := rd.received, rd.ttl, rd.duplicates, rd.unexpected
	ttls := rd.ttls
	rd.mu.Unlock()
	if traced {
		traceEchoes(ctx, target, sent, rtts, ttls, start)
		if runErr != nil {
			tracef(ctx, "error", "%v", runErr)
		}
		if dups > 0 || unexpected > 0 {
			tracef(ctx, "ping", "%d duplicate repl(ies), %d unexpected echo repl(ies)", dups, unexpected)
		}
	}

	fields = append(fields, Field{"remote_address", target.String()})
	if len(sent) == 0 {
		err := runErr
		if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = ctx.Err()
		}
		if err == nil {
			err = errors.New("no echo request could be sent")
		}
		return Result{Outcome: classify(ctx, err, false), Latency: end.Sub(start), Err: err, Fields: fields}, ctx.Err() == nil
	}

	samples := make([]Sample, len(sent))
	ok := make([]time.Duration, 0, received)
	for i := range sent {
		samples[i].Offset = sent[i].Sub(start)
		if rtts[i] >= 0 {
			samples[i].OK, samples[i].Latency = true, rtts[i]
			ok = append(ok, rtts[i])
		}
	}
	lost := len(sent) - len(ok)
	fields = append(fields,
		Field{"round_samples", int64(len(sent))},
		Field{"round_failures", int64(lost)},
		Field{"round_loss", float64(lost) / float64(len(sent))},
	)
	res := Result{Outcome: Success, Samples: samples}
	if len(ok) == 0 {
		res.Outcome, res.Latency = Timeout, end.Sub(start)
		res.Err = fmt.Errorf("no echo reply from %s to %d echo requests", target, len(sent))
	} else {
		slices.Sort(ok)
		res.Latency = medianOf(ok)
		fields = append(fields, Field{"round_min", ok[0].Seconds()}, Field{"round_max", ok[len(ok)-1].Seconds()})
		if ttl > 0 {
			fields = append(fields, Field{"ttl", int64(ttl)})
		}
	}
	res.Fields = append(fields, Field{"icmp_duplicates", int64(dups)}, Field{"icmp_unexpected", int64(unexpected)})
	return res, false
}

// traceEchoes reports each echo request of a round: its sequence number,
// when it was sent, and its reply (round trip, TTL) or that it was lost.
func traceEchoes(ctx context.Context, target netip.Addr, sent []time.Time, rtts []time.Duration, ttls []int, start time.Time) {
	for i := range sent {
		at := sent[i].Sub(start).Round(time.Microsecond)
		if rtts[i] < 0 {
			tracef(ctx, "echo", "seq %d (sent at +%s): lost, no reply by the end of the round", i, at)
			continue
		}
		ttl := "ttl unknown"
		if i < len(ttls) && ttls[i] > 0 {
			ttl = fmt.Sprintf("ttl %d", ttls[i])
		}
		tracef(ctx, "echo", "seq %d (sent at +%s): reply from %s, rtt %s, %s", i, at, target, rtts[i].Round(time.Microsecond), ttl)
	}
}

// medianOf sorted durations (the mean of the middle two for an even count).
func medianOf(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return sorted[n/2-1] + (sorted[n/2]-sorted[n/2-1])/2
}
