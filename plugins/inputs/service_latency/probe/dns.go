// DNS prober (dns://[server[:port]]/name?type=A&transport=udp).
//
// Latency spans one query round trip as github.com/miekg/dns measures it:
// from just before the query is written to the socket until the reply with
// the query's ID has been read. Creating the socket is not included; with
// transport=tcp the TCP connect happens before and is reported as the
// tcp_connect field instead.
//
// The server is the URL's host (port 53 by default); without one
// (dns:///example.com) it is the first nameserver of /etc/resolv.conf, read
// once by New. type is one of A (default), AAAA, CNAME, MX, TXT, NS, SRV,
// PTR, SOA; for PTR the name may be an IP address. transport is udp
// (default) or tcp. Queries ask for recursion and advertise an EDNS0
// buffer of 1232 bytes.
//
// A UDP reply with the TC (truncated) bit set is asked again over TCP, as
// resolvers do; latency is then the UDP round trip plus the TCP round
// trip (the TCP connect in tcp_connect, as for transport=tcp), and the
// reply judged is the TCP one.
//
// Outcomes: NOERROR with answers → Success; NOERROR without answers →
// DNSNoAnswer (answers are the answer-section records of the asked type:
// a CNAME alone does not answer an A query); NXDOMAIN → DNSNXDomain;
// SERVFAIL → DNSServFail; another rcode → DNSRcodeError; no reply by the
// deadline → Timeout; refused or other network error → ConnectionFailed.
//
// Fields: dns_rcode (string, "NOERROR"), dns_answers (int64, records of
// the asked type) and dns_transport ("udp" or "tcp": which answered)
// whenever a reply came; tcp_connect for transport=tcp and after a
// truncated UDP reply; remote_address (the server's IP) once connected.
// A server given by name is resolved per probe by ip_protocol (net.go).

package probe

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// resolvConf is read when a dns URL names no server (a var for tests).
var resolvConf = "/etc/resolv.conf"

const ednsBufSize = 1232

var dnsTypes = map[string]uint16{
	"A":     dns.TypeA,
	"AAAA":  dns.TypeAAAA,
	"CNAME": dns.TypeCNAME,
	"MX":    dns.TypeMX,
	"TXT":   dns.TypeTXT,
	"NS":    dns.TypeNS,
	"SRV":   dns.TypeSRV,
	"PTR":   dns.TypePTR,
	"SOA":   dns.TypeSOA,
}

type dnsProber struct {
	host string
	port string
	net  netConfig
	// udpDialer, tcpDialer carry the timeout and source_address.
	udpDialer, tcpDialer net.Dialer
	name                 string // FQDN
	qtype                uint16
	tcp                  bool
	timeout              time.Duration
	client               *dns.Client
}

func newDNS(u *url.URL, timeout time.Duration, o *Options) (*dnsProber, error) {
	if u.User != nil {
		return nil, keyerr.Errorf("url", "dns URLs take no user info, got %q", redactURL(u.String()))
	}
	p := &dnsProber{timeout: timeout}

	q := u.Query()
	for k := range q {
		if k != "type" && k != "transport" {
			return nil, keyerr.Errorf("url", "unknown query parameter %q (want type, transport)", k)
		}
	}
	qt := strings.ToUpper(q.Get("type"))
	if qt == "" {
		qt = "A"
	}
	var ok bool
	if p.qtype, ok = dnsTypes[qt]; !ok {
		return nil, keyerr.Errorf("url", "unsupported query type %q (want %s)", q.Get("type"), strings.Join(dnsTypeNames(), ", "))
	}
	switch strings.ToLower(q.Get("transport")) {
	case "", "udp":
	case "tcp":
		p.tcp = true
	default:
		return nil, keyerr.Errorf("url", "unsupported transport %q (want udp, tcp)", q.Get("transport"))
	}

	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return nil, keyerr.Errorf("url", "missing the name to query in %q (want dns://[server[:port]]/name?type=A)", redactURL(u.String()))
	}
	if p.qtype == dns.TypePTR && net.ParseIP(name) != nil {
		name, _ = dns.ReverseAddr(name)
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.Contains(name, "/") {
		return nil, keyerr.Errorf("url", "invalid domain name %q", name)
	}
	p.name = dns.Fqdn(name)

	if u.Host == "" {
		cfg, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, keyerr.Errorf("url", "no server given and %w", err)
		}
		if len(cfg.Servers) == 0 {
			return nil, keyerr.Errorf("url", "no server given and none in %s", resolvConf)
		}
		p.host, p.port = cfg.Servers[0], cfg.Port
	} else {
		host, port, err := hostPort(u, "53")
		if err != nil {
			return nil, err
		}
		p.host, p.port = host, port
	}
	var err error
	if p.net, err = newNetConfig(o); err != nil {
		return nil, err
	}
	p.udpDialer, p.tcpDialer = p.net.dialer(timeout, "udp"), p.net.dialer(timeout, "tcp")
	p.client = &dns.Client{Timeout: timeout, UDPSize: ednsBufSize}
	return p, nil
}

func dnsTypeNames() []string {
	names := make([]string, 0, len(dnsTypes))
	for n := range dnsTypes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Kind returns "dns".
func (*dnsProber) Kind() string { return "dns" }

// Close does nothing: a DNS prober keeps no socket.
func (*dnsProber) Close() {}

// Probe sends one query; see the file comment.
func (p *dnsProber) Probe(parent context.Context) Result {
	ctx, cancel := context.WithTimeout(parent, p.timeout)
	defer cancel()

	m := new(dns.Msg)
	m.SetQuestion(p.name, p.qtype)
	m.SetEdns0(ednsBufSize, false)

	traced := Traced(parent)
	fields := make([]Field, 0, 5)
	r, rtt, fields, res := p.exchange(ctx, m, p.tcp, fields, traced)
	if res != nil {
		return *res
	}
	transport := "udp"
	if p.tcp {
		transport = "tcp"
	} else if r.Truncated {
		// The answer did not fit: ask again over TCP, as resolvers do.
		transport = "tcp"
		var rtt2 time.Duration
		before := rtt
		if traced {
			tracef(ctx, "truncated", "the UDP reply has TC=1: asking again over TCP")
		}
		r, rtt2, fields, res = p.exchange(ctx, m, true, fields[:0], traced)
		if res != nil {
			res.Latency += before
			return *res
		}
		rtt = before + rtt2
	}
	rcode := rcodeName(r.Rcode)
	answers := 0
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == p.qtype {
			answers++
		}
	}
	fields = append(fields, Field{"dns_rcode", rcode}, Field{"dns_answers", int64(answers)}, Field{"dns_transport", transport})
	if traced {
		tracef(ctx, "assert", "rcode %s, %d answer(s) of type %s → %s", rcode, answers, dns.TypeToString[p.qtype], verdict(r.Rcode == dns.RcodeSuccess && answers > 0))
	}
	out := Result{Outcome: Success, Latency: rtt, Fields: fields}
	switch r.Rcode {
	case dns.RcodeSuccess:
		if answers == 0 {
			out.Outcome, out.Err = DNSNoAnswer, errNoAnswer
		}
	case dns.RcodeNameError:
		out.Outcome, out.Err = DNSNXDomain, errNXDomain
	case dns.RcodeServerFailure:
		out.Outcome, out.Err = DNSServFail, errServFail
	default:
		out.Outcome, out.Err = DNSRcodeError, fmt.Errorf("server answered %s", rcode)
	}
	return out
}

// exchange sends m over a fresh connection (TCP when tcp) and returns the
// reply and its round trip, with tcp_connect and remote_address appended
// to fields; or, when no reply came, the failed Result.
// traced: report the query and the whole reply to ctx's tracer.
func (p *dnsProber) exchange(ctx context.Context, m *dns.Msg, tcp bool, fields []Field, traced bool) (*dns.Msg, time.Duration, []Field, *Result) {
	network, d := "udp", p.udpDialer
	if tcp {
		network, d = "tcp", p.tcpDialer
	}
	start := time.Now()
	c, err := p.net.dial(ctx, d, network, p.host, p.port, traced)
	connected := time.Now()
	if err != nil {
		return nil, 0, fields, &Result{Outcome: classify(ctx, err, false), Latency: connected.Sub(start), Err: err, Fields: fields}
	}
	co := &dns.Conn{Conn: c, UDPSize: ednsBufSize}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { _ = co.SetDeadline(pastDeadline) })
	defer stop()

	if tcp {
		fields = append(fields, Field{"tcp_connect", connected.Sub(start).Seconds()})
	}
	fields = remoteField(fields, c)
	if traced {
		tracef(ctx, "query", "%s (id %d, %s to %s, RD, EDNS0 buffer %d)", questionString(m), m.Id, network, c.RemoteAddr(), ednsBufSize)
	}
	r, rtt, err := p.client.ExchangeWithConnContext(ctx, m, co)
	if traced {
		if err != nil {
			tracef(ctx, "reply", "none: %v", err)
		} else {
			traceReply(ctx, r, rtt)
		}
	}
	if err != nil {
		return nil, 0, fields, &Result{Outcome: classify(ctx, err, false), Latency: time.Since(connected), Err: err, Fields: fields}
	}
	return r, rtt, fields, nil
}

func questionString(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return "(no question)"
	}
	q := m.Question[0]
	return fmt.Sprintf("%s %s %s", q.Name, dns.ClassToString[q.Qclass], dns.TypeToString[q.Qtype])
}

// traceReply reports a DNS reply: its header, then every record of the
// answer, authority and additional sections (EDNS0 as its buffer size).
func traceReply(ctx context.Context, r *dns.Msg, rtt time.Duration) {
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{r.Response, "qr"}, {r.Authoritative, "aa"}, {r.Truncated, "tc"}, {r.RecursionDesired, "rd"}, {r.RecursionAvailable, "ra"}, {r.AuthenticatedData, "ad"}, {r.CheckingDisabled, "cd"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	rcode := rcodeName(r.Rcode)
	tracef(ctx, "reply", "%s in %s (id %d, flags %s; answer %d, authority %d, additional %d)",
		rcode, rtt.Round(time.Microsecond), r.Id, strings.Join(flags, " "), len(r.Answer), len(r.Ns), len(r.Extra))
	for _, rr := range r.Answer {
		tracef(ctx, "answer", "%s", rrString(rr))
	}
	for _, rr := range r.Ns {
		tracef(ctx, "authority", "%s", rrString(rr))
	}
	for _, rr := range r.Extra {
		if opt, ok := rr.(*dns.OPT); ok {
			tracef(ctx, "additional", "OPT (EDNS%d, udp buffer %d, rcode ext %d, do %t)", opt.Version(), opt.UDPSize(), opt.ExtendedRcode(), opt.Do())
			continue
		}
		tracef(ctx, "additional", "%s", rrString(rr))
	}
}

// rcodeName is an rcode's mnemonic ("NOERROR"), else "RCODE" and its
// number.
func rcodeName(rcode int) string {
	if s := dns.RcodeToString[rcode]; s != "" {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// rrString is an RR in presentation format, its tabs as spaces.
func rrString(rr dns.RR) string {
	return strings.ReplaceAll(rr.String(), "\t", " ")
}

var (
	errNoAnswer = dnsErr("server answered NOERROR without answers of the asked type")
	errNXDomain = dnsErr("server answered NXDOMAIN")
	errServFail = dnsErr("server answered SERVFAIL")
)

type dnsErr string

func (e dnsErr) Error() string { return string(e) }
