package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/toml"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// These tests need root (raw sockets, network namespaces), ip(8),
// nft(8) and setpriv(1): `make deps` installs them. They fail, never
// skip, when something is missing. Traffic stays on loopback, in network
// namespaces the tests create and delete.

func requireICMPTools(t *testing.T) {
	t.Helper()
	require.Zero(t, os.Geteuid(), "the ICMP tests run as root (raw sockets, ip netns)")
	for _, tool := range []string{"ip", "nft", "setpriv"} {
		_, err := exec.LookPath(tool)
		require.NoErrorf(t, err, "%s is missing: make deps installs it", tool)
	}
}

func icmpOpts(count int, interval time.Duration, privileged Privileged) Options {
	return Options{Count: ptr(count), PingInterval: config.Duration(interval), Privileged: privileged}
}

func TestICMPRawLoopback(t *testing.T) {
	requireICMPTools(t)
	for _, u := range []string{"icmp://127.0.0.1", "icmp://[::1]", "icmp://localhost"} {
		t.Run(u, func(t *testing.T) {
			p := mustNew(t, u, 2*time.Second, icmpOpts(4, 10*time.Millisecond, PrivilegedTrue))
			require.Equal(t, "icmp", p.Kind())
			require.True(t, p.(*icmpProber).raw)
			r, elapsed := probeTimed(p)
			requireOutcome(t, Success, r)
			require.Less(t, elapsed, time.Second, "a round without loss ends at its last reply")
			require.Len(t, r.Samples, 4)
			var prev time.Duration = -1
			for _, s := range r.Samples {
				require.True(t, s.OK)
				require.Greater(t, s.Latency, time.Duration(0))
				require.Greater(t, s.Offset, prev, "offsets increase")
				prev = s.Offset
			}
			require.GreaterOrEqual(t, r.Samples[3].Offset-r.Samples[0].Offset, 25*time.Millisecond, "ping_interval apart")
			require.Equal(t, int64(4), requireField(t, r, "round_samples"))
			require.Equal(t, int64(0), requireField(t, r, "round_failures"))
			require.Equal(t, 0.0, requireField(t, r, "round_loss"))
			require.Equal(t, int64(64), requireField(t, r, "ttl"), "Linux answers with TTL / hop limit 64")
			require.Equal(t, int64(0), requireField(t, r, "icmp_duplicates"))
			require.Equal(t, int64(0), requireField(t, r, "icmp_unexpected"))
			lo, hi := requireField(t, r, "round_min").(float64), requireField(t, r, "round_max").(float64)
			require.LessOrEqual(t, lo, r.Latency.Seconds())
			require.GreaterOrEqual(t, hi, r.Latency.Seconds())
			want := "127.0.0.1"
			if strings.Contains(u, "::1") {
				want = "::1"
			}
			require.Equal(t, want, requireField(t, r, "remote_address"))
			if u == "icmp://localhost" {
				requireField(t, r, "dns_lookup")
			} else {
				requireNoField(t, r, "dns_lookup")
			}
		})
	}
}

func TestICMPConcurrentRounds(t *testing.T) {
	requireICMPTools(t)
	p := mustNew(t, "icmp://127.0.0.1", 2*time.Second, icmpOpts(5, 5*time.Millisecond, PrivilegedTrue))
	results := make(chan Result, 8)
	for range 8 {
		go func() { results <- p.Probe(context.Background()) }()
	}
	for range 8 {
		r := <-results
		requireOutcome(t, Success, r)
		require.Equal(t, 0.0, requireField(t, r, "round_loss"), "each round sees its own replies only")
		require.Equal(t, int64(0), requireField(t, r, "icmp_duplicates"))
	}
}

func TestICMPNewErrors(t *testing.T) {
	for _, c := range []struct {
		url     string
		timeout time.Duration
		o       Options
		key     string
		msg     string
	}{
		{"icmp://", time.Second, Options{}, "url", "missing host"},
		{"icmp://127.0.0.1:7", time.Second, Options{}, "url", "icmp URLs are icmp://host"},
		{"icmp://127.0.0.1/x", time.Second, Options{}, "url", "icmp URLs are icmp://host"},
		{"icmp://127.0.0.1?x=1", time.Second, Options{}, "url", "icmp URLs are icmp://host"},
		{"icmp://u:pw@127.0.0.1", time.Second, Options{}, "url", "icmp URLs are icmp://host"},
		{"icmp://127.0.0.1", time.Second, Options{Count: ptr(0)}, "count", "must be 1..1000"},
		{"icmp://127.0.0.1", time.Hour, Options{Count: ptr(1001)}, "count", "must be 1..1000"},
		{"icmp://127.0.0.1", time.Second, Options{PingInterval: config.Duration(time.Microsecond)}, "ping_interval", "at least 1ms"},
		{"icmp://127.0.0.1", time.Second, Options{Count: ptr(6)}, "count", "6 echo requests 200ms apart need count × ping_interval = 1.2s, more than the timeout 1s"},
		{"icmp://127.0.0.1", 500 * time.Millisecond, Options{}, "count", "5 echo requests 200ms apart need count × ping_interval = 1s, more than the timeout 500ms"},
		{"icmp://127.0.0.1", time.Second, Options{PingInterval: config.Duration(300 * time.Millisecond)}, "ping_interval", "count × ping_interval = 1.5s"},
		{"icmp://127.0.0.1", time.Second, Options{PayloadSize: ptr(23)}, "payload_size", "must be 24..65507"},
		{"icmp://127.0.0.1", time.Second, Options{PayloadSize: ptr(65508)}, "payload_size", "must be 24..65507"},
		{"icmp://127.0.0.1", time.Second, Options{TTL: ptr(0)}, "ttl", "must be 1..255"},
		{"icmp://127.0.0.1", time.Second, Options{TTL: ptr(256)}, "ttl", "must be 1..255"},
		{"icmp://127.0.0.1", time.Second, Options{Privileged: "maybe"}, "privileged", `"maybe" is not one of true, false, "auto"`},
		{"icmp://127.0.0.1", time.Second, Options{IPProtocol: "ip5"}, "ip_protocol", `"ip5" is not one of auto, ip4, ip6`},
		{"icmp://127.0.0.1", time.Second, Options{SourceAddress: "nope"}, "source_address", "not an IP address"},
	} {
		_, err := New(c.url, c.timeout, c.o)
		require.Errorf(t, err, "%s %+v", c.url, c.o)
		require.Equal(t, c.key, keyerr.Key(err), "%s: %v", c.url, err)
		require.ErrorContains(t, err, c.msg, c.url)
	}
	// Exactly fitting is fine: 5 × 200ms = 1s.
	_, err := New("icmp://127.0.0.1", time.Second, Options{})
	require.NoError(t, err)
}

func TestPrivilegedTOML(t *testing.T) {
	for src, want := range map[string]Privileged{
		`privileged = true`:    PrivilegedTrue,
		`privileged = false`:   PrivilegedFalse,
		`privileged = "auto"`:  PrivilegedAuto,
		`privileged = "false"`: PrivilegedFalse,
	} {
		var v struct {
			P Privileged `toml:"privileged"`
		}
		require.NoError(t, toml.Unmarshal([]byte(src), &v), src)
		require.Equal(t, want, v.P, src)
	}
	var v struct {
		P Privileged `toml:"privileged"`
	}
	err := toml.Unmarshal([]byte(`privileged = 1`), &v)
	require.ErrorContains(t, err, "privileged")
}

// ---- in network namespaces ---------------------------------------------

var netnsSeq atomic.Int32

// newNetns creates a network namespace with lo up, deleted at cleanup, and
// writes ping_group_range in it.
func newNetns(t *testing.T, pingGroupRange string) string {
	t.Helper()
	requireICMPTools(t)
	name := fmt.Sprintf("slprobe-%d-%d", os.Getpid(), netnsSeq.Add(1))
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	require.NoError(t, err, "ip netns add: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	inNetns(t, name, "ip", "link", "set", "lo", "up")
	inNetns(t, name, "sh", "-c", "echo '"+pingGroupRange+"' > /proc/sys/net/ipv4/ping_group_range")
	return name
}

func inNetns(t *testing.T, ns string, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	require.NoError(t, err, "%v: %s", args, out)
}

// nftDrop drops, inside ns, the echo requests that rule matches (an nft
// rule without its verdict), e.g. "icmp type echo-request numgen inc mod 4 0".
func nftDrop(t *testing.T, ns string, rules ...string) {
	t.Helper()
	inNetns(t, ns, "nft", "add", "table", "inet", "t")
	inNetns(t, ns, "nft", "add", "chain", "inet", "t", "in", "{ type filter hook input priority 0; }")
	for _, r := range rules {
		inNetns(t, ns, "sh", "-c", "nft add rule inet t in "+r+" drop")
	}
}

const icmpChildEnv = "SERVICE_LATENCY_ICMP_CHILD"

// icmpChildSpec is what the child probes.
type icmpChildSpec struct {
	URL        string
	Timeout    time.Duration
	Count      int
	Interval   time.Duration
	Payload    int
	TTL        int
	Privileged Privileged
	CheckOnly  bool // call CheckICMP instead of New
}

// icmpChildResult is what the child reports.
type icmpChildResult struct {
	NewErr  string
	NewKey  string
	Raw     bool
	Outcome Outcome
	Err     string
	Fields  map[string]any
	Samples []Sample
	Elapsed time.Duration
}

// TestICMPChild is the child process of the namespace tests: run by
// runICMPChild inside a namespace, it probes what icmpChildEnv says and
// prints the result. Without icmpChildEnv it does nothing.
func TestICMPChild(t *testing.T) {
	raw := os.Getenv(icmpChildEnv)
	if raw == "" {
		return
	}
	var spec icmpChildSpec
	require.NoError(t, json.Unmarshal([]byte(raw), &spec))
	var res icmpChildResult
	report := func() {
		b, err := json.Marshal(res)
		require.NoError(t, err)
		fmt.Printf("ICMPCHILD %s\n", b)
	}
	if spec.CheckOnly {
		if err := CheckICMP(spec.Privileged); err != nil {
			res.NewErr, res.NewKey = err.Error(), keyerr.Key(err)
		}
		report()
		return
	}
	o := Options{Privileged: spec.Privileged}
	if spec.Count != 0 {
		o.Count = ptr(spec.Count)
	}
	o.PingInterval = config.Duration(spec.Interval)
	if spec.Payload != 0 {
		o.PayloadSize = ptr(spec.Payload)
	}
	if spec.TTL != 0 {
		o.TTL = ptr(spec.TTL)
	}
	p, err := New(spec.URL, spec.Timeout, o)
	if err != nil {
		res.NewErr, res.NewKey = err.Error(), keyerr.Key(err)
		report()
		return
	}
	defer p.Close()
	res.Raw = p.(*icmpProber).raw
	r, elapsed := probeTimed(p)
	res.Outcome, res.Samples, res.Elapsed = r.Outcome, r.Samples, elapsed
	if r.Err != nil {
		res.Err = r.Err.Error()
	}
	res.Fields = map[string]any{}
	for _, f := range r.Fields {
		res.Fields[f.Key] = f.Value
	}
	report()
}

// runICMPChild runs TestICMPChild inside ns (through `ip netns exec`, with
// wrap, e.g. setpriv, in front of the test binary) and returns its result.
func runICMPChild(t *testing.T, ns string, spec icmpChildSpec, wrap ...string) icmpChildResult {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	b, err := json.Marshal(spec)
	require.NoError(t, err)
	args := append([]string{"netns", "exec", ns}, wrap...)
	args = append(args, exe, "-test.run=^TestICMPChild$", "-test.count=1")
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), icmpChildEnv+"="+string(b))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "child: %s\n%s", stdout.String(), stderr.String())
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "ICMPCHILD "); ok {
			var res icmpChildResult
			require.NoError(t, json.Unmarshal([]byte(line), &res))
			return res
		}
	}
	t.Fatalf("child printed no result: %s\n%s", stdout.String(), stderr.String())
	return icmpChildResult{}
}

// dropNetRaw makes the child a root process without CAP_NET_RAW.
var dropNetRaw = []string{"setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--"}

const openPingGroupRange = "0 2147483647"

func TestICMPUnprivilegedInNetns(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, openPingGroupRange)
	for _, u := range []string{"icmp://127.0.0.1", "icmp://[::1]"} {
		for _, priv := range []Privileged{PrivilegedFalse, PrivilegedAuto, ""} {
			res := runICMPChild(t, ns, icmpChildSpec{URL: u, Timeout: 2 * time.Second, Count: 3, Interval: 10 * time.Millisecond, Privileged: priv})
			require.Empty(t, res.NewErr, "%s %q", u, priv)
			require.False(t, res.Raw, "%s %q: datagram sockets are allowed, so auto takes them", u, priv)
			require.Equal(t, Success, res.Outcome, "%s %q: %s", u, priv, res.Err)
			require.Len(t, res.Samples, 3)
			require.Equal(t, 0.0, res.Fields["round_loss"])
			require.EqualValues(t, 64, res.Fields["ttl"], "the TTL comes with datagram sockets too")
		}
	}
	// Without CAP_NET_RAW, datagram sockets still work.
	res := runICMPChild(t, ns, icmpChildSpec{URL: "icmp://127.0.0.1", Timeout: time.Second, Count: 2, Interval: 10 * time.Millisecond}, dropNetRaw...)
	require.Empty(t, res.NewErr)
	require.Equal(t, Success, res.Outcome, res.Err)
	// privileged = true is refused without CAP_NET_RAW, with the fix.
	res = runICMPChild(t, ns, icmpChildSpec{URL: "icmp://127.0.0.1", Timeout: time.Second, Privileged: PrivilegedTrue}, dropNetRaw...)
	require.Equal(t, "privileged", res.NewKey)
	require.Contains(t, res.NewErr, "privileged = true needs raw ICMP sockets")
	require.Contains(t, res.NewErr, "setcap cap_net_raw+ep ")
	require.NotContains(t, res.NewErr, "ping_group_range")
}

func TestICMPPermissionErrors(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, "1 0")
	// Root without datagram ICMP: auto takes raw sockets.
	res := runICMPChild(t, ns, icmpChildSpec{URL: "icmp://127.0.0.1", Timeout: time.Second, Count: 2, Interval: 10 * time.Millisecond})
	require.Empty(t, res.NewErr)
	require.True(t, res.Raw)
	require.Equal(t, Success, res.Outcome, res.Err)

	// privileged = false: only the datagram advice.
	res = runICMPChild(t, ns, icmpChildSpec{URL: "icmp://127.0.0.1", Timeout: time.Second, Privileged: PrivilegedFalse})
	require.Equal(t, "privileged", res.NewKey)
	require.Contains(t, res.NewErr, "privileged = false needs unprivileged ICMP sockets")
	require.Contains(t, res.NewErr, `inside net.ipv4.ping_group_range, now "1 0"`)
	require.Contains(t, res.NewErr, `sudo sysctl -w net.ipv4.ping_group_range="0 0"`)
	require.NotContains(t, res.NewErr, "setcap")

	// Neither allowed: one error at New (and from CheckICMP) with both fixes.
	for _, check := range []bool{false, true} {
		for _, u := range []string{"icmp://127.0.0.1", "icmp://[::1]"} {
			res = runICMPChild(t, ns, icmpChildSpec{URL: u, Timeout: time.Second, CheckOnly: check}, dropNetRaw...)
			require.Equal(t, "privileged", res.NewKey, "%s check=%v: %s", u, check, res.NewErr)
			require.Contains(t, res.NewErr, "this process may open neither")
			require.Contains(t, res.NewErr, "setcap cap_net_raw+ep ")
			require.Contains(t, res.NewErr, `sysctl -w net.ipv4.ping_group_range="0 0"`)
			require.Contains(t, res.NewErr, "operation not permitted")
		}
	}
	t.Logf("the error: %s", res.NewErr)
}

func TestICMPExactLoss(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, url, rule string
		priv            Privileged
	}{
		{"raw ipv4", "icmp://127.0.0.1", "icmp type echo-request numgen inc mod 4 0", PrivilegedTrue},
		{"datagram ipv4", "icmp://127.0.0.1", "icmp type echo-request numgen inc mod 4 0", PrivilegedFalse},
		{"raw ipv6", "icmp://[::1]", "icmpv6 type echo-request numgen inc mod 4 0", PrivilegedTrue},
		{"datagram ipv6", "icmp://[::1]", "icmpv6 type echo-request numgen inc mod 4 0", PrivilegedFalse},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t, openPingGroupRange)
			nftDrop(t, ns, c.rule)
			const timeout = time.Second
			res := runICMPChild(t, ns, icmpChildSpec{URL: c.url, Timeout: timeout, Count: 20, Interval: 5 * time.Millisecond, Privileged: c.priv})
			require.Empty(t, res.NewErr)
			require.Equal(t, Success, res.Outcome, res.Err)
			require.EqualValues(t, 20, res.Fields["round_samples"])
			require.EqualValues(t, 5, res.Fields["round_failures"])
			require.Equal(t, 0.25, res.Fields["round_loss"], "nft drops exactly one echo request in four")
			require.Len(t, res.Samples, 20)
			lost := 0
			for i, s := range res.Samples {
				if !s.OK {
					lost++
					require.Zero(t, s.Latency, "a lost sample has no latency")
					require.Zero(t, i%4, "the first of every four is dropped (sample %d)", i)
				}
			}
			require.Equal(t, 5, lost)
			// A lost echo request holds the round until the timeout, never past it.
			require.GreaterOrEqual(t, res.Elapsed, timeout-5*time.Millisecond)
			// pro-bing notices a round's end on its receive loop's tick
			// (up to 100 ms), and the round runs in a namespace's child
			// process: more slack than an in-process probe needs
			require.Less(t, res.Elapsed, timeout+3*deadlineSlack)
		})
	}
}

func TestICMPAllLost(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, openPingGroupRange)
	nftDrop(t, ns, "icmp type echo-request")
	const timeout = 300 * time.Millisecond
	res := runICMPChild(t, ns, icmpChildSpec{URL: "icmp://127.0.0.1", Timeout: timeout, Count: 3, Interval: 10 * time.Millisecond})
	require.Equal(t, Timeout, res.Outcome)
	require.Contains(t, res.Err, "no echo reply from 127.0.0.1 to 3 echo requests")
	require.EqualValues(t, 3, res.Fields["round_failures"])
	require.Equal(t, 1.0, res.Fields["round_loss"])
	require.NotContains(t, res.Fields, "round_min")
	require.NotContains(t, res.Fields, "ttl")
	require.Len(t, res.Samples, 3)
	require.GreaterOrEqual(t, res.Elapsed, timeout-5*time.Millisecond)
	require.Less(t, res.Elapsed, timeout+deadlineSlack)
}

// TestICMPTTLAndPayloadOnTheWire: nft drops every echo request whose IP
// TTL or length is not what ttl and payload_size say; the round succeeds
// only if they are applied.
func TestICMPTTLAndPayloadOnTheWire(t *testing.T) {
	t.Parallel()
	ns := newNetns(t, openPingGroupRange)
	nftDrop(t, ns,
		"icmp type echo-request ip ttl != 7",
		"icmp type echo-request ip length != 128", // 20 IP + 8 ICMP + 100
		"icmpv6 type echo-request ip6 hoplimit != 7",
		"icmpv6 type echo-request ip6 length != 108", // payload length: 8 ICMPv6 + 100
	)
	for _, u := range []string{"icmp://127.0.0.1", "icmp://[::1]"} {
		for _, priv := range []Privileged{PrivilegedTrue, PrivilegedFalse} {
			res := runICMPChild(t, ns, icmpChildSpec{URL: u, Timeout: time.Second, Count: 2, Interval: 10 * time.Millisecond, Payload: 100, TTL: 7, Privileged: priv})
			require.Equal(t, Success, res.Outcome, "%s %s: %s", u, priv, res.Err)
			require.Equal(t, 0.0, res.Fields["round_loss"], "%s %s", u, priv)
		}
		// Another size is dropped: the rules do bite.
		res := runICMPChild(t, ns, icmpChildSpec{URL: u, Timeout: 200 * time.Millisecond, Count: 1, Interval: 10 * time.Millisecond, Payload: 101, TTL: 7})
		require.Equal(t, Timeout, res.Outcome, u)
	}
}
