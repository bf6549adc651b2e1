package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
)

// timeWaitLife is Linux's TIME_WAIT (TCP_TIMEWAIT_LEN, not tunable).
const timeWaitLife = 60 * time.Second

// localPorts is the machine's ephemeral port range
// (net.ipv4.ip_local_port_range); Linux's default when unreadable.
func localPorts() (lo, hi int) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if _, err := fmt.Sscanf(string(data), "%d %d", &lo, &hi); err == nil && hi >= lo {
			return lo, hi
		}
	}
	return 32768, 60999
}

func ephemeralPorts() int { lo, hi := localPorts(); return hi - lo + 1 }
func portRange() string   { lo, hi := localPorts(); return fmt.Sprintf("%d–%d", lo, hi) }

// sysctl is a /proc/sys value as text ("?" unread).
func sysctl(name string) string {
	data, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return "?"
	}
	v := strings.TrimSpace(string(data))
	if n, err := strconv.Atoi(v); err == nil {
		return fmtInt(n)
	}
	return v
}

// mostTimeWait is the most TIME_WAITs any gather's sampler saw.
func mostTimeWait(run *keepupRun) int {
	most := 0
	for _, r := range run.Rows {
		for _, g := range r.Gathers {
			most = max(most, g.MaxTimeWait, g.TimeWait)
		}
	}
	return most
}

// loadAverage is /proc/loadavg's three figures, "1 / 5 / 15 min".
func loadAverage() string {
	var load [3]float64
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscanf(string(data), "%f %f %f", &load[0], &load[1], &load[2])
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f (1 / 5 / 15 min)", load[0], load[1], load[2])
}

// keepupMarkdown is the keeping-up section: how it was run, one row per
// gather, one summary row per N, and the three conditions.
func keepupMarkdown(run *keepupRun) string {
	var b strings.Builder
	o := run.Opt
	window := plainWindow(o.Cadence, o.timeout())
	fmt.Fprintf(&b, "#### Keeping up: N services on a %s ticker with `spread = \"auto\"`\n\n", fmtSpan(o.Cadence))
	fmt.Fprintf(&b, "- Flags of this part: `-keepup-n %s -keepup-cadence %s -keepup-gathers %d -keepup-timeout %s -keepup-targets %d -keepup-lean=%t`; load average at its end %s.\n",
		joinInts(o.Ns), o.Cadence, o.Gathers, o.Timeout, o.Targets, o.Lean, loadAverage())
	if o.Lean {
		b.WriteString("- The targets run `latency_target -lean`: a minimal HTTP/1.1 responder (one goroutine and a pooled buffer a connection, the head read once, one write, `Connection: close`) instead of net/http's server, whose cost per fresh connection (bufio, header maps, a 0.5 s lingering close) was ~0.5 ms a probe at 100,000 services — more than the prober's.\n")
	}
	fmt.Fprintf(&b, "- Targets: %d `latency_target` processes, one per loopback address 127.0.0.1–%d (`-delay %s`, every URL `?delay=%s`), service i on the address 1 + i mod %d. "+
		"Fresh connections everywhere (keep_alive = false: kept connections would need one descriptor per service, and the hard limit of open files here is %d). "+
		"Per gather each destination sees N / %d connections (%s at N = %s), against %s ephemeral ports (%s) per destination 4-tuple and a %s TIME_WAIT: neither is the limit. "+
		"The most sockets in TIME_WAIT seen: %s (the machine's net.ipv4.tcp_max_tw_buckets: %s; beyond it the kernel closes a socket without its TIME_WAIT, no error).\n",
		o.Targets, o.Targets, o.Delay, o.Delay, o.Targets, run.NoFile, o.Targets,
		fmtInt((slices.Max(o.Ns)+o.Targets-1)/o.Targets), fmtInt(slices.Max(o.Ns)), fmtInt(ephemeralPorts()), portRange(), fmtSpan(timeWaitLife),
		fmtInt(mostTimeWait(run)), sysctl("net/ipv4/tcp_max_tw_buckets"))
	fmt.Fprintf(&b, "- File descriptors: a prober holds at most max_concurrency (%d) sockets at once plus a few of its own; the targets keep each connection open about 0.5 s after answering (net/http's close). The most seen are in the `fds` column.\n",
		config.DefaultMaxConcurrency)
	fmt.Fprintf(&b, "- Per N two child processes, one after the other, each once the machine's TIME_WAITs are below %s (waiting at most %s):\n", fmtInt(drainTimeWait), fmtSpan(o.DrainWait))
	fmt.Fprintf(&b, "  - **%s**: the plugin with the defaults except `spread = \"auto\"`%s (timeout %s, max_concurrency %d, keep_alive false, memory store), started as the binary starts it (config.Load, Init, Start), "+
		"Gather called on a %s ticker as Telegraf's execd shim calls it (a tick that comes during a gather waits for it, one at most); every metric built as Telegraf's accumulator builds it. "+
		"The first gather is a burst (the cadence is not known yet: spread 0), shown but not counted; then the spread is 0.9 × the observed cadence − timeout ≈ %s.\n",
		proberOurs, timeoutSet(o), fmtSpan(o.timeout()), config.DefaultMaxConcurrency, fmtSpan(o.Cadence), fmtSpan(window))
	fmt.Fprintf(&b, "  - **%s**: an http.Client with DisableKeepAlives (a fresh connection per request), the same N URLs, at most %d at once, each request at its own offset (uniformly random, fixed seed) within the same %s window (the first gather a burst too), on the same ticker.\n",
		proberPlain, config.DefaultMaxConcurrency, fmtSpan(window))
	b.WriteString("- Columns: *late* = gather start − its tick; *wall* = the gather's duration; *slack* = the next tick − the gather's end (negative: the round ran into the next one); " +
		"*probe starts* = the first and last probe start after the gather's start (the spread applied); *CPU* = the child's user + system time (getrusage) from this gather's start to the next one's; " +
		"*error* = the reported latency − the injected delay (ours: the emitted `latency` field; plain: request start to body read), p50 / p99 over the gather's successful probes; " +
		"*TIME_WAIT* = /proc/net/sockstat `tw` at the gather's end (the most seen by a 1 s sampler during it), the whole machine, other processes' sockets too; " +
		"*fds* = the prober's most open files (the targets' together).\n\n")

	b.WriteString("| N | prober | gather | late | wall | slack | probe starts | probes ok / failed | CPU | CPU / probe | error p50 / p99 | TIME_WAIT at end (most) | fds: prober (targets) |\n")
	b.WriteString("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range run.Rows {
		for i, g := range r.Gathers {
			label := fmt.Sprintf("%d", i)
			if i == 0 {
				label = "0 (burst, not counted)"
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s – %s | %d / %d | %s | %s | %s / %s | %s (%s) | %d (%d) |\n",
				r.N, r.Prober, label, fmtDur(g.Late), fmtDur(g.Wall), fmtSigned(g.Slack),
				fmtSecs(g.FirstStart), fmtSecs(g.LastStart), g.OK, g.Failed, fmtDur(g.CPU), fmtPerProbe(g.CPU, g.OK+g.Failed),
				fmtErr(g.ErrP50), fmtErr(g.ErrP99), fmtInt(g.TimeWait), fmtInt(g.MaxTimeWait), g.MaxFDs, r.TargetFDsMax)
		}
	}
	b.WriteString("\n")
	writeKeepupSummary(&b, run)
	return b.String()
}

// keepupPair is one N's two children.
type keepupPair struct {
	n           int
	ours, plain *keepupResult
}

func pairs(run *keepupRun) []keepupPair {
	var out []keepupPair
	for _, n := range run.Opt.Ns {
		p := keepupPair{n: n}
		for i := range run.Rows {
			r := &run.Rows[i]
			switch {
			case r.N == n && r.Prober == proberOurs:
				p.ours = r
			case r.N == n && r.Prober == proberPlain:
				p.plain = r
			}
		}
		if p.ours != nil && p.plain != nil {
			out = append(out, p)
		}
	}
	return out
}

// writeKeepupSummary is the summary over the counted gathers and the
// issue's three conditions.
func writeKeepupSummary(b *strings.Builder, run *keepupRun) {
	ps := pairs(run)
	b.WriteString("Over the counted gathers (error percentiles over all their successful probes; *ours − plain* is what the plugin adds to what any prober measures here: connecting, the loaded machine, the target — whose own lateness alone, on one kept connection with nothing else in flight, is its own column; the targets' CPU is theirs (/proc/<pid>/stat) over the child's whole run, burst included, over its probes; the last column is what N probes of ours and its targets' CPU per probe need a second within the spread, against the machine's cores. At a low rate a process's fixed cost per second — the Go runtime, timers, the 1 s sampler — weighs on each probe: compare ours with plain at the same N, not one N with another):\n\n")
	b.WriteString("| N | every counted round ended before the next tick | worst slack | probes ok / failed: ours | plain | CPU / probe: ours | plain | ours / plain | error p50: ours | plain | ours − plain | error p99: ours | plain | ours − plain | target's own lateness | targets' CPU / probe: with ours | with plain | CPU a second at N / spread: ours + its targets |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range ps {
		ok, worst := keptUp(p.ours)
		oursOK, oursFailed := countedProbes(p.ours)
		plainOK, plainFailed := countedProbes(p.plain)
		oursTargets := perProbe(p.ours.TargetCPU, p.ours.allProbes())
		fmt.Fprintf(b, "| %d | %s | %s | %d / %d | %d / %d | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			p.n, yesNo(ok), fmtSigned(worst), oursOK, oursFailed, plainOK, plainFailed,
			fmtDur(p.ours.CPUPerProbe), fmtDur(p.plain.CPUPerProbe), ratio(p.ours.CPUPerProbe, p.plain.CPUPerProbe),
			fmtErr(p.ours.ErrP50), fmtErr(p.plain.ErrP50), fmtErr(p.ours.ErrP50-p.plain.ErrP50),
			fmtErr(p.ours.ErrP99), fmtErr(p.plain.ErrP99), fmtErr(p.ours.ErrP99-p.plain.ErrP99),
			fmtErr(run.Overshoot[p.n]),
			fmtDur(oursTargets), fmtDur(perProbe(p.plain.TargetCPU, p.plain.allProbes())),
			coresNeeded(p.n, p.ours.CPUPerProbe+oursTargets, plainWindow(run.Opt.Cadence, run.Opt.timeout())))
	}
	b.WriteString("\nThe issue's conditions, from the rows above (one run; the machine is shared, so read them with its load average):\n\n")
	for _, p := range ps {
		ok, worst := keptUp(p.ours)
		failed := ""
		if _, f := countedProbes(p.ours); f > 0 {
			failed = fmt.Sprintf(", but %d probes failed", f)
		}
		fmt.Fprintf(b, "- N = %d: every round completes before the next — %s (worst slack %s%s); CPU per probe ≤ the plain loop's — %s (%s vs %s, ×%.2f).\n",
			p.n, metOrNot(ok), fmtSigned(worst), failed, metOrNot(p.ours.CPUPerProbe <= p.plain.CPUPerProbe),
			fmtDur(p.ours.CPUPerProbe), fmtDur(p.plain.CPUPerProbe), ratio(p.ours.CPUPerProbe, p.plain.CPUPerProbe))
	}
	if len(ps) >= 2 {
		lo, hi := ps[0], ps[len(ps)-1]
		fmt.Fprintf(b, "- The latency error at N = %d no worse than at N = %d — p50 %s (%s vs %s), p99 %s (%s vs %s); the plain loop's, for the machine's share: p50 %s vs %s, p99 %s vs %s.\n",
			hi.n, lo.n,
			metOrNot(hi.ours.ErrP50 <= lo.ours.ErrP50), fmtErr(hi.ours.ErrP50), fmtErr(lo.ours.ErrP50),
			metOrNot(hi.ours.ErrP99 <= lo.ours.ErrP99), fmtErr(hi.ours.ErrP99), fmtErr(lo.ours.ErrP99),
			fmtErr(hi.plain.ErrP50), fmtErr(lo.plain.ErrP50), fmtErr(hi.plain.ErrP99), fmtErr(lo.plain.ErrP99))
	}
}

func perProbe(cpu time.Duration, probes int) time.Duration {
	if probes == 0 {
		return 0
	}
	return cpu / time.Duration(probes)
}

// coresNeeded is the CPU a second that n probes of the given cost need
// within the spread: "0.85 cores".
func coresNeeded(n int, cost, spread time.Duration) string {
	if spread <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f cores", float64(n)*float64(cost)/float64(spread))
}

// keptUp reports whether every counted gather ended before the next
// tick, and the worst slack.
func keptUp(r *keepupResult) (bool, time.Duration) {
	ok := len(r.Gathers) > 1
	var worst time.Duration
	for i, g := range r.Gathers[1:] {
		if i == 0 || g.Slack < worst {
			worst = g.Slack
		}
		if g.Slack <= 0 {
			ok = false
		}
	}
	return ok, worst
}

// countedProbes are the ok and failed probes of the counted gathers.
func countedProbes(r *keepupResult) (ok, failed int) {
	for _, g := range r.Gathers[1:] {
		ok += g.OK
		failed += g.Failed
	}
	return ok, failed
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func fmtSigned(d time.Duration) string {
	if d < 0 {
		return "−" + fmtDur(-d)
	}
	return fmtDur(d)
}

// fmtErr is a latency error in ms with a sign.
func fmtErr(d time.Duration) string {
	ms := float64(d) / 1e6
	if ms < 0 {
		return fmt.Sprintf("−%.2f ms", -ms)
	}
	return fmt.Sprintf("+%.2f ms", ms)
}

// fmtSpan is a setting's duration: "60 s", "1.5 s", "500 ms".
func fmtSpan(d time.Duration) string {
	switch {
	case d == 0:
		return "0 s"
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	case d >= time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return fmtDur(d)
}

// timeoutSet says in the text when the timeout is not the default.
func timeoutSet(o keepupOptions) string {
	if o.Timeout > 0 {
		return fmt.Sprintf(" and `timeout = \"%s\"` (-keepup-timeout)", o.Timeout)
	}
	return ""
}

func fmtSecs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func fmtPerProbe(cpu time.Duration, probes int) string {
	if probes == 0 {
		return "–"
	}
	return fmtDur(cpu / time.Duration(probes))
}

// fmtInt writes n with thousands separators.
func fmtInt(n int) string {
	s := fmt.Sprintf("%d", n)
	if n < 0 {
		return "−" + fmtInt(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%d", x))
	}
	return strings.Join(s, ",")
}
