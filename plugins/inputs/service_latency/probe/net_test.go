package probe

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// dualResolver points lookupResolver (for probers built until cleanup) at
// a loopback DNS server where dual.test. has A 127.0.0.1 and AAAA ::1,
// v4.test. only the A and v6.test. only the AAAA.
func dualResolver(t *testing.T) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		add := func(rr string) {
			r, err := dns.NewRR(rr)
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, r)
		}
		switch {
		case q.Qtype == dns.TypeA && (q.Name == "dual.test." || q.Name == "v4.test."):
			add(q.Name + " 60 IN A 127.0.0.1")
		case q.Qtype == dns.TypeAAAA && (q.Name == "dual.test." || q.Name == "v6.test."):
			add(q.Name + " 60 IN AAAA ::1")
		}
		_ = w.WriteMsg(m)
	})}
	serveDNS(t, srv)
	addr := pc.LocalAddr().String()
	old := lookupResolver
	lookupResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
	t.Cleanup(func() { lookupResolver = old })
}

// listenOn listens on ip:port (port "0": any) and accepts until cleanup,
// recording the remote IPs.
func listenOn(t *testing.T, ip, port string) (addr string, peers func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	require.NoError(t, err)
	var mu sync.Mutex
	var seen []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, remoteIP(c.RemoteAddr()))
			mu.Unlock()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func TestIPProtocol(t *testing.T) {
	dualResolver(t)
	// The resolver's order for dual.test (Go sorts by RFC 6724).
	ips, err := lookupResolver.LookupIPAddr(context.Background(), "dual.test.")
	require.NoError(t, err)
	require.Len(t, ips, 2)
	firstFamily := ips[0].IP.String()

	// A TCP port open on 127.0.0.1 only (::1 refuses it).
	v4, _ := listenOn(t, "127.0.0.1", "0")
	port := portOf(t, v4)
	if ln, err := net.Listen("tcp", net.JoinHostPort("::1", port)); err == nil {
		_ = ln.Close() // free on ::1 too: connections there are refused
	} else {
		t.Fatalf("[::1]:%s is taken: %v", port, err)
	}

	for _, c := range []struct {
		url, proto string
		want       Outcome
		remote     string
	}{
		{"tcp://dual.test.:" + port, "", Success, "127.0.0.1"}, // auto: falls back to IPv4 if ::1 came first
		{"tcp://dual.test.:" + port, "auto", Success, "127.0.0.1"},
		{"tcp://dual.test.:" + port, "ip4", Success, "127.0.0.1"},
		{"tcp://dual.test.:" + port, "ip6", ConnectionFailed, ""}, // ::1 exists: no fallback
		{"tcp://v4.test.:" + port, "ip6", Success, "127.0.0.1"},   // no IPv6 address: fallback
		{"tcp://v6.test.:" + port, "ip4", ConnectionFailed, ""},
		{"http://dual.test.:" + port + "/", "ip6", ConnectionFailed, ""},
		{"http://v4.test.:" + port + "/", "ip6", ConnectionFailed, "127.0.0.1"}, // connected, then no HTTP answer
		{"grpc://dual.test.:" + port, "ip6", ConnectionFailed, ""},
		{"icmp://dual.test.", "ip6", Success, "::1"},
		{"icmp://dual.test.", "ip4", Success, "127.0.0.1"},
		{"icmp://dual.test.", "", Success, firstFamily},
		{"icmp://v6.test.", "ip4", Success, "::1"},
		{"icmp://127.0.0.1", "ip6", Success, "127.0.0.1"}, // a literal is what it is
	} {
		o := Options{IPProtocol: c.proto}
		if strings.HasPrefix(c.url, "icmp") {
			o.Count, o.PingInterval = ptr(1), 0
		}
		p := mustNew(t, c.url, time.Second, o)
		r := p.Probe(context.Background())
		require.Equalf(t, c.want, r.Outcome, "%s ip_protocol=%q: %v", c.url, c.proto, r.Err)
		if c.remote == "" {
			requireNoField(t, r, "remote_address")
			continue
		}
		require.Equalf(t, c.remote, requireField(t, r, "remote_address"), "%s ip_protocol=%q", c.url, c.proto)
	}

	// The Transport path (keep_alive) dials the same way.
	srv, _ := newHTTPServer(t, ok)
	hp := portOf(t, strings.TrimPrefix(srv.URL, "http://"))
	for _, ka := range []bool{false, true} {
		r := mustNew(t, "http://dual.test.:"+hp+"/", time.Second, Options{KeepAlive: ptr(ka)}).Probe(context.Background())
		requireOutcome(t, Success, r)
		require.Equal(t, "127.0.0.1", requireField(t, r, "remote_address"), "keep_alive=%v", ka)
		requireField(t, r, "dns_lookup")
	}
}

func TestSourceAddress(t *testing.T) {
	addr, peers := listenOn(t, "127.0.0.1", "0")
	// Linux answers for all of 127.0.0.0/8 on lo: 127.0.0.2 is an address of this host.
	r := mustNew(t, "tcp://"+addr, time.Second, Options{SourceAddress: "127.0.0.2"}).Probe(context.Background())
	requireOutcome(t, Success, r)
	require.Equal(t, "127.0.0.1", requireField(t, r, "remote_address"))
	require.Eventually(t, func() bool { return len(peers()) == 1 }, time.Second, 5*time.Millisecond)
	require.Equal(t, []string{"127.0.0.2"}, peers())

	var mu sync.Mutex
	var httpPeers []string
	srv, _ := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		httpPeers = append(httpPeers, host)
		mu.Unlock()
		ok(w, r)
	})
	for _, ka := range []bool{false, true} {
		requireOutcome(t, Success, mustNew(t, srv.URL+"/", time.Second, Options{SourceAddress: "127.0.0.3", KeepAlive: ptr(ka)}).Probe(context.Background()))
	}
	mu.Lock()
	require.Equal(t, []string{"127.0.0.3", "127.0.0.3"}, httpPeers)
	mu.Unlock()

	// DNS: the server sees the source address.
	var dnsPeer string
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	dsrv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		mu.Lock()
		dnsPeer = remoteIP(w.RemoteAddr())
		mu.Unlock()
		testZone(w, req)
	})}
	started := make(chan struct{})
	dsrv.NotifyStartedFunc = func() { close(started) }
	go func() { _ = dsrv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = dsrv.Shutdown() })
	r = mustNew(t, "dns://"+pc.LocalAddr().String()+"/a.test", time.Second, Options{SourceAddress: "127.0.0.4"}).Probe(context.Background())
	requireOutcome(t, Success, r)
	mu.Lock()
	require.Equal(t, "127.0.0.4", dnsPeer)
	mu.Unlock()

	// ICMP from a source address.
	r = mustNew(t, "icmp://127.0.0.1", time.Second, Options{SourceAddress: "127.0.0.5", Count: ptr(1), Privileged: PrivilegedTrue}).Probe(context.Background())
	requireOutcome(t, Success, r)

	// The other family cannot be reached from it.
	r = mustNew(t, "tcp://[::1]:1", time.Second, Options{SourceAddress: "127.0.0.2"}).Probe(context.Background())
	requireOutcome(t, ConnectionFailed, r)
	require.ErrorContains(t, r.Err, "source_address 127.0.0.2 cannot reach this address family")
}

func TestNetOptionErrors(t *testing.T) {
	for _, c := range []struct {
		o   Options
		key string
		msg string
	}{
		{Options{IPProtocol: "ipv5"}, "ip_protocol", `"ipv5" is not one of auto, ip4, ip6`},
		{Options{SourceAddress: "localhost"}, "source_address", `"localhost" is not an IP address`},
		{Options{SourceAddress: "0.0.0.0"}, "source_address", "not an address of this host"},
		{Options{SourceAddress: "192.0.2.77"}, "source_address", "192.0.2.77 is not an address of this host"},
		{Options{SourceAddress: "2001:db8::77"}, "source_address", "2001:db8::77 is not an address of this host"},
	} {
		for _, u := range []string{"http://127.0.0.1/", "https://127.0.0.1/", "tcp://127.0.0.1:1", "dns://127.0.0.1/a.test", "icmp://127.0.0.1", "grpc://127.0.0.1:1", "grpcs://127.0.0.1:1"} {
			_, err := New(u, time.Second, c.o)
			require.Equal(t, c.key, keyerr.Key(err), "%s %+v: %v", u, c.o, err)
			require.ErrorContains(t, err, c.msg, u)
		}
	}
	for _, ok := range []string{"auto", "ip4", "ip6", "IP4", ""} {
		_, err := New("tcp://127.0.0.1:1", time.Second, Options{IPProtocol: ok})
		require.NoError(t, err, ok)
	}
	_, err := New("tcp://127.0.0.1:1", time.Second, Options{SourceAddress: "::1"})
	require.NoError(t, err)
}

// truncated answers every query with an empty reply with TC set.
var truncated = dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Truncated = true
	_ = w.WriteMsg(m)
})

// truncatingServer answers a.test over UDP with TC=1 and no answers, and
// over TCP in full.
func truncatingServer(t *testing.T) string {
	t.Helper()
	// The same port over UDP and TCP: a UDP port whose TCP twin is taken
	// (by anything else on the host) is tried again.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 50 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		_ = pc.Close()
	}
	require.NoError(t, err)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: truncated},
		{Listener: ln, Handler: dns.HandlerFunc(testZone)},
	} {
		serveDNS(t, srv)
	}
	return pc.LocalAddr().String()
}

func TestDNSTruncatedRetriesOverTCP(t *testing.T) {
	addr := truncatingServer(t)
	r := mustNew(t, "dns://"+addr+"/a.test", time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, Success, r)
	require.Equal(t, "tcp", requireField(t, r, "dns_transport"))
	require.Equal(t, int64(2), requireField(t, r, "dns_answers"))
	requireField(t, r, "tcp_connect")
	require.Equal(t, "127.0.0.1", requireField(t, r, "remote_address"))

	// Not truncated: UDP answers.
	udp, _ := dnsServer(t)
	r = mustNew(t, "dns://"+udp+"/a.test", time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, Success, r)
	require.Equal(t, "udp", requireField(t, r, "dns_transport"))
	requireNoField(t, r, "tcp_connect")

	// Truncated over UDP and nothing on TCP: the TCP failure is the result.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	serveDNS(t, &dns.Server{PacketConn: pc, Handler: truncated})
	r = mustNew(t, "dns://"+pc.LocalAddr().String()+"/a.test", time.Second, Options{}).Probe(context.Background())
	requireOutcome(t, ConnectionFailed, r)
	requireNoField(t, r, "dns_transport")
}
