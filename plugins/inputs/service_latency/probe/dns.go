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
// Outcomes: NOERROR with answers → Success; NOERROR without answers →
// DNSNoAnswer (answers are the answer-section records of the asked type:
// a CNAME alone does not answer an A query); NXDOMAIN → DNSNXDomain;
// SERVFAIL → DNSServFail; another rcode → DNSRcodeError; no reply by the
// deadline → Timeout; refused or other network error → ConnectionFailed.
//
// Fields: dns_rcode (string, "NOERROR") and dns_answers (int64, records of
// the asked type) whenever a reply came; tcp_connect for transport=tcp.

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
	server  string // host:port
	name    string // FQDN
	qtype   uint16
	tcp     bool
	timeout time.Duration
	client  *dns.Client
}

func newDNS(u *url.URL, timeout time.Duration) (*dnsProber, error) {
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
		p.server = net.JoinHostPort(cfg.Servers[0], cfg.Port)
	} else {
		host, port, err := hostPort(u, "53")
		if err != nil {
			return nil, err
		}
		p.server = net.JoinHostPort(host, port)
	}

	network := "udp"
	if p.tcp {
		network = "tcp"
	}
	p.client = &dns.Client{Net: network, Timeout: timeout, UDPSize: ednsBufSize}
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

	start := time.Now()
	co, err := p.client.DialContext(ctx, p.server)
	connected := time.Now()
	if err != nil {
		return Result{Outcome: classify(ctx, err, false), Latency: connected.Sub(start), Err: err}
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { _ = co.SetDeadline(pastDeadline) })
	defer stop()

	fields := make([]Field, 0, 3)
	if p.tcp {
		fields = append(fields, Field{"tcp_connect", connected.Sub(start).Seconds()})
	}
	r, rtt, err := p.client.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		return Result{Outcome: classify(ctx, err, false), Latency: time.Since(connected), Err: err, Fields: fields}
	}
	rcode := dns.RcodeToString[r.Rcode]
	if rcode == "" {
		rcode = fmt.Sprintf("RCODE%d", r.Rcode)
	}
	answers := 0
	for _, rr := range r.Answer {
		if rr.Header().Rrtype == p.qtype {
			answers++
		}
	}
	fields = append(fields, Field{"dns_rcode", rcode}, Field{"dns_answers", int64(answers)})
	res := Result{Outcome: Success, Latency: rtt, Fields: fields}
	switch r.Rcode {
	case dns.RcodeSuccess:
		if answers == 0 {
			res.Outcome, res.Err = DNSNoAnswer, errNoAnswer
		}
	case dns.RcodeNameError:
		res.Outcome, res.Err = DNSNXDomain, errNXDomain
	case dns.RcodeServerFailure:
		res.Outcome, res.Err = DNSServFail, errServFail
	default:
		res.Outcome, res.Err = DNSRcodeError, fmt.Errorf("server answered %s", rcode)
	}
	return res
}

var (
	errNoAnswer = dnsErr("server answered NOERROR without answers of the asked type")
	errNXDomain = dnsErr("server answered NXDOMAIN")
	errServFail = dnsErr("server answered SERVFAIL")
)

type dnsErr string

func (e dnsErr) Error() string { return string(e) }
