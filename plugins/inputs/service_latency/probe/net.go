// The options of every network probe: ip_protocol and source_address.
//
// ip_protocol picks the address family of a host name's addresses:
//
//   - "auto" (the default): the resolver's order (Go's, RFC 6724); when
//     every address of the first family fails (connect refused, no route,
//     ...), the addresses of the other family are tried.
//   - "ip4", "ip6": that family's addresses first; the other family's only
//     when the name has no address of it (blackbox_exporter's
//     preferred_ip_protocol with ip_protocol_fallback = true). An IP
//     literal is what it is: it is used whatever ip_protocol says.
//
// source_address is an IP of this host that probes send from (bound
// before connect); New checks that it parses and can be bound. Only
// addresses of its family are then candidates.
//
// The address a probe actually used (connected to, sent to) is the field
// remote_address (the IP, without port).

package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// lookupResolver resolves host names (a var for tests, read by New).
var lookupResolver = net.DefaultResolver

// netConfig is ip_protocol and source_address, checked.
type netConfig struct {
	family   string // "", "ip4" or "ip6"
	source   netip.Addr
	resolver *net.Resolver
}

func newNetConfig(o *Options) (netConfig, error) {
	n := netConfig{resolver: lookupResolver}
	switch strings.ToLower(o.IPProtocol) {
	case "", "auto":
	case "ip4", "ipv4":
		n.family = "ip4"
	case "ip6", "ipv6":
		n.family = "ip6"
	default:
		return n, keyerr.Errorf("ip_protocol", "%q is not one of auto, ip4, ip6", o.IPProtocol)
	}
	if o.SourceAddress != "" {
		a, err := netip.ParseAddr(o.SourceAddress)
		if err != nil {
			return n, keyerr.Errorf("source_address", "%q is not an IP address", o.SourceAddress)
		}
		if a.IsUnspecified() || a.IsMulticast() {
			return n, keyerr.Errorf("source_address", "%s is not an address of this host", a)
		}
		a = a.Unmap()
		// Assignable: binding a UDP socket to it (no packet is sent).
		c, err := net.ListenPacket("udp", net.JoinHostPort(a.String(), "0"))
		if err != nil {
			var se syscall.Errno
			if errors.As(err, &se) && se == syscall.EADDRNOTAVAIL {
				return n, keyerr.Errorf("source_address", "%s is not an address of this host", a)
			}
			return n, keyerr.Errorf("source_address", "cannot bind %s: %w", a, err)
		}
		_ = c.Close()
		n.source = a
	}
	return n, nil
}

// sourceIP is the source address as a net.IP (nil when none is set).
func (n *netConfig) sourceIP() net.IP {
	if !n.source.IsValid() {
		return nil
	}
	return n.source.AsSlice()
}

// fits reports whether a can be reached from the source address.
func (n *netConfig) fits(a netip.Addr) bool {
	return !n.source.IsValid() || n.source.Is4() == a.Is4()
}

// literal returns host as an address when it is an IP literal.
func literal(host string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// resolve returns host's candidate addresses in the order they are tried,
// split at the family change: first holds the addresses tried first,
// second those tried when every one of first failed (auto only; nil for
// ip4/ip6). An IP literal is returned without a lookup (looked = false).
// The lookup, when there is one, uses ctx (so httptrace hooks see it).
// traced: report the lookup to ctx's tracer.
func (n *netConfig) resolve(ctx context.Context, host string, traced bool) (first, second []netip.Addr, looked bool, err error) {
	if !traced {
		return n.lookup(ctx, host)
	}
	first, second, looked, err = n.lookup(ctx, host)
	if !looked {
		if err != nil {
			tracef(ctx, "address", "%s: %v", host, err)
		} else {
			tracef(ctx, "address", "%s (literal, no lookup)", host)
		}
		return
	}
	traceResolved(ctx, n, host, first, second, err)
	return
}

func (n *netConfig) lookup(ctx context.Context, host string) (first, second []netip.Addr, looked bool, err error) {
	if a, ok := literal(host); ok {
		if !n.fits(a) {
			return nil, nil, false, &net.AddrError{Err: "source_address " + n.source.String() + " cannot reach this address family", Addr: host}
		}
		return []netip.Addr{a}, nil, false, nil
	}
	ips, err := n.resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, nil, true, err
	}
	var v4, v6, order []netip.Addr
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.Is6() && ip.Zone != "" {
			a = a.WithZone(ip.Zone)
		}
		if !n.fits(a) {
			continue
		}
		order = append(order, a)
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(order) == 0 {
		return nil, nil, true, &net.DNSError{Err: "no suitable address found", Name: host, IsNotFound: true}
	}
	switch n.family {
	case "ip4":
		if len(v4) > 0 {
			return v4, nil, true, nil
		}
		return v6, nil, true, nil
	case "ip6":
		if len(v6) > 0 {
			return v6, nil, true, nil
		}
		return v4, nil, true, nil
	}
	if order[0].Is4() {
		return v4, v6, true, nil
	}
	return v6, v4, true, nil
}

// dialer returns a net.Dialer bound to the source address.
func (n *netConfig) dialer(timeout time.Duration, network string) net.Dialer {
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if ip := n.sourceIP(); ip != nil {
		switch network {
		case "udp":
			d.LocalAddr = &net.UDPAddr{IP: ip}
		default:
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return d
}

// dial connects to host:port over network ("tcp" or "udp") by the rules of
// the file comment: the addresses of first one after another, each with
// its share of the remaining time (as net.Dialer shares it, at least 2 s
// when there is that much), then those of second. Hooks of an httptrace
// in ctx see the lookup and each connect. d carries the timeout, the
// keep-alive and the source address. traced: report the lookup and each
// connect to ctx's tracer.
func (n *netConfig) dial(ctx context.Context, d net.Dialer, network, host, port string, traced bool) (net.Conn, error) {
	first, second, _, err := n.resolve(ctx, host, traced)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return dialFamilies(ctx, d, network, port, first, second, traced)
}

// dialFamilies dials the addresses of first, then, when every one of them
// failed and ctx is still live, those of second. The error is first's:
// the family the resolver preferred.
func dialFamilies(ctx context.Context, d net.Dialer, network, port string, first, second []netip.Addr, traced bool) (net.Conn, error) {
	c, err := dialEach(ctx, d, network, port, first, len(second), traced)
	if err == nil || len(second) == 0 || ctx.Err() != nil {
		return c, err
	}
	if traced {
		tracef(ctx, "fallback", "every %s address failed; trying %s", family(first[0]), addrList(second))
	}
	if c, err2 := dialEach(ctx, d, network, port, second, 0, traced); err2 == nil {
		return c, nil
	}
	return nil, err
}

// dialPhases is dial over TCP that fills ph (under ph.mu): dns_lookup for
// a host name (also when the lookup failed), tcp_connect from the first
// connect attempt to the established connection, and the remote address.
func (n *netConfig) dialPhases(ctx context.Context, d net.Dialer, host, port string, ph *phases, traced bool) (net.Conn, error) {
	dnsStart := time.Now()
	first, second, looked, err := n.resolve(ctx, host, traced)
	if looked {
		ph.mu.Lock()
		ph.dns, ph.did = ph.dns+time.Since(dnsStart), ph.did|didDNS
		ph.mu.Unlock()
	}
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	connStart := time.Now()
	c, err := dialFamilies(ctx, d, "tcp", port, first, second, traced)
	if err != nil {
		return nil, err
	}
	ph.mu.Lock()
	ph.connect, ph.did = ph.connect+time.Since(connStart), ph.did|didConnect
	ph.remote = remoteIP(c.RemoteAddr())
	ph.mu.Unlock()
	return c, nil
}

// dialEach tries addrs in order; more is how many addresses come after
// them (for the share of the remaining time).
// traced: report each attempt to ctx's tracer.
func dialEach(ctx context.Context, d net.Dialer, network, port string, addrs []netip.Addr, more int, traced bool) (net.Conn, error) {
	deadline, hasDeadline := ctx.Deadline()
	if d.Timeout > 0 {
		if dl := time.Now().Add(d.Timeout); !hasDeadline || dl.Before(deadline) {
			deadline, hasDeadline = dl, true
		}
	}
	var firstErr error
	for i, a := range addrs {
		dd := d
		if rest := len(addrs) - i + more; rest > 1 && hasDeadline {
			now := time.Now()
			share := deadline.Sub(now) / time.Duration(rest)
			if share < 2*time.Second {
				share = min(deadline.Sub(now), 2*time.Second)
			}
			dd.Deadline = now.Add(share)
		}
		addr := net.JoinHostPort(a.String(), port)
		var t0 time.Time
		if traced {
			from := "any local address"
			if d.LocalAddr != nil {
				from = d.LocalAddr.String()
			}
			tracef(ctx, "connect", "%s %s (address %d of %d, from %s)", network, addr, i+1, len(addrs), from)
			t0 = time.Now()
		}
		c, err := dd.DialContext(ctx, network, addr)
		if traced {
			if err == nil {
				tracef(ctx, "connected", "%s → %s in %s", c.LocalAddr(), c.RemoteAddr(), time.Since(t0).Round(time.Microsecond))
			} else {
				tracef(ctx, "connect", "%s failed after %s: %v", addr, time.Since(t0).Round(time.Microsecond), err)
			}
		}
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	if firstErr == nil {
		firstErr = &net.OpError{Op: "dial", Net: network, Err: errors.New("no address to dial")}
	}
	return nil, firstErr
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// remoteIP is the IP of a connection's remote address, for the
// remote_address field ("" when it has none).
func remoteIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return ipString(a.IP, a.Zone)
	case *net.UDPAddr:
		return ipString(a.IP, a.Zone)
	case *net.IPAddr:
		return ipString(a.IP, a.Zone)
	case nil:
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

func ipString(ip net.IP, zone string) string {
	if ip == nil {
		return ""
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ip.String()
	}
	a = a.Unmap()
	if zone != "" && a.Is6() {
		a = a.WithZone(zone)
	}
	return a.String()
}

// remoteField appends remote_address for conn's remote end.
func remoteField(f []Field, conn net.Conn) []Field {
	if conn == nil {
		return f
	}
	if ip := remoteIP(conn.RemoteAddr()); ip != "" {
		f = append(f, Field{"remote_address", ip})
	}
	return f
}
