package probe

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

const dnsSlowDelay = 100 * time.Millisecond

// testZone answers the names of the DNS tests.
func testZone(w dns.ResponseWriter, req *dns.Msg) {
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
	switch q.Name {
	case "a.test.":
		switch q.Qtype {
		case dns.TypeA:
			add("a.test. 60 IN A 127.0.0.1")
			add("a.test. 60 IN A 127.0.0.2")
		case dns.TypeMX:
			add("a.test. 60 IN MX 10 mail.a.test.")
		case dns.TypeTXT:
			add(`a.test. 60 IN TXT "v=spf1 -all"`)
		}
	case "alias.test.": // CNAME chain, and a dangling CNAME
		add("alias.test. 60 IN CNAME a.test.")
		if q.Qtype == dns.TypeA {
			add("a.test. 60 IN A 127.0.0.1")
		}
	case "dangling.test.":
		add("dangling.test. 60 IN CNAME gone.test.")
	case "slow.test.":
		time.Sleep(dnsSlowDelay)
		add("slow.test. 60 IN A 127.0.0.1")
	case "1.0.0.127.in-addr.arpa.":
		add("1.0.0.127.in-addr.arpa. 60 IN PTR localhost.")
	case "nx.test.":
		m.Rcode = dns.RcodeNameError
	case "fail.test.":
		m.Rcode = dns.RcodeServerFailure
	case "refused.test.":
		m.Rcode = dns.RcodeRefused
	}
	_ = w.WriteMsg(m)
}

// serveDNS starts srv, waits until it serves, and shuts it down at
// cleanup.
func serveDNS(t *testing.T, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-served
	})
}

// dnsServer starts the test zone on 127.0.0.1 over UDP and TCP.
func dnsServer(t *testing.T) (udpAddr, tcpAddr string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(testZone)},
		{Listener: ln, Handler: dns.HandlerFunc(testZone)},
	} {
		serveDNS(t, srv)
	}
	return pc.LocalAddr().String(), ln.Addr().String()
}

func TestDNS(t *testing.T) {
	udp, tcp := dnsServer(t)
	cases := []struct {
		name    string
		url     string
		want    Outcome
		rcode   string
		answers int64
	}{
		{"A", "dns://" + udp + "/a.test?type=A", Success, "NOERROR", 2},
		{"default type A", "dns://" + udp + "/a.test", Success, "NOERROR", 2},
		{"MX", "dns://" + udp + "/a.test?type=MX", Success, "NOERROR", 1},
		{"TXT", "dns://" + udp + "/a.test?type=txt", Success, "NOERROR", 1},
		{"PTR from IP", "dns://" + udp + "/127.0.0.1?type=PTR", Success, "NOERROR", 1},
		{"A over TCP", "dns://" + tcp + "/a.test.?transport=tcp", Success, "NOERROR", 2},
		{"no answer", "dns://" + udp + "/a.test?type=AAAA", DNSNoAnswer, "NOERROR", 0},
		{"CNAME then A", "dns://" + udp + "/alias.test", Success, "NOERROR", 1},
		{"CNAME asked", "dns://" + udp + "/alias.test?type=CNAME", Success, "NOERROR", 1},
		{"dangling CNAME", "dns://" + udp + "/dangling.test", DNSNoAnswer, "NOERROR", 0},
		{"NXDOMAIN", "dns://" + udp + "/nx.test", DNSNXDomain, "NXDOMAIN", 0},
		{"SERVFAIL", "dns://" + udp + "/fail.test", DNSServFail, "SERVFAIL", 0},
		{"REFUSED", "dns://" + udp + "/refused.test", DNSRcodeError, "REFUSED", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mustNew(t, tc.url, time.Second, Options{}).Probe(context.Background())
			requireOutcome(t, tc.want, r)
			require.Equal(t, tc.rcode, requireField(t, r, "dns_rcode"))
			require.Equal(t, tc.answers, requireField(t, r, "dns_answers"))
			if tc.want == Success {
				require.NoError(t, r.Err)
			} else {
				require.Error(t, r.Err)
			}
			_, hasConnect := field(r, "tcp_connect")
			require.Equal(t, tc.name == "A over TCP", hasConnect)
		})
	}
}

func TestDNSLatency(t *testing.T) {
	udp, tcp := dnsServer(t)
	for _, u := range []string{"dns://" + udp + "/slow.test", "dns://" + tcp + "/slow.test?transport=tcp"} {
		r := mustNew(t, u, time.Second, Options{}).Probe(context.Background())
		requireOutcome(t, Success, r)
		require.GreaterOrEqual(t, r.Latency, dnsSlowDelay, u)
		require.Less(t, r.Latency, dnsSlowDelay+50*time.Millisecond, u)
	}
}

func TestDNSServerNeverAnswers(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // reads and drops every query
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
	const timeout = 300 * time.Millisecond
	r, elapsed := probeTimed(mustNew(t, "dns://"+pc.LocalAddr().String()+"/a.test", timeout, Options{}))
	requireOutcome(t, Timeout, r)
	requireByDeadline(t, elapsed, timeout)
	requireNoField(t, r, "dns_rcode")
}

func TestDNSConnectionRefused(t *testing.T) {
	r, elapsed := probeTimed(mustNew(t, "dns://"+freePort(t)+"/a.test?transport=tcp", time.Second, Options{}))
	requireOutcome(t, ConnectionFailed, r)
	require.Less(t, elapsed, 500*time.Millisecond)
	requireNoField(t, r, "dns_rcode")
}

func TestDNSServerSelection(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	require.NoError(t, os.WriteFile(conf, []byte("nameserver 127.0.0.53\nnameserver 127.0.0.54\n"), 0o600))
	old := resolvConf
	resolvConf = conf
	t.Cleanup(func() { resolvConf = old })

	for u, want := range map[string]string{
		"dns:///example.com?type=MX":     "127.0.0.53:53",
		"dns://127.0.0.9/example.com":    "127.0.0.9:53",
		"dns://127.0.0.9:5353/x.example": "127.0.0.9:5353",
		"dns://[::1]/example.com":        "[::1]:53",
	} {
		p, err := New(u, time.Second, Options{})
		require.NoError(t, err, u)
		dp := p.(*dnsProber)
		require.Equal(t, want, net.JoinHostPort(dp.host, dp.port), u)
	}

	resolvConf = filepath.Join(t.TempDir(), "missing")
	_, err := New("dns:///example.com", time.Second, Options{})
	require.ErrorContains(t, err, "url: no server given")
}
