package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sample is one child run.
type sample struct {
	N           int
	Run         int
	Contender   string
	Concurrency int
	// Spread is our plugin's spread setting in the truth with spread
	// ("auto", "0s"; empty for http_response), Bursts what the targets saw
	// of each measured gather there.
	Spread string
	Bursts []burst
	childOut
}

// report is everything one harness run measured.
type report struct {
	Machine machineInfo
	Config  *config
	Micro   []microResult
	Scale   []sample
	Truth   []sample
	Spread  []sample // the truth with a spread
	// Overshoot is how late the target itself answers beyond the truth
	// delay (sequential keep-alive requests): a floor of every prober's
	// error.
	Overshoot time.Duration
}

type machineInfo struct {
	CPU        string
	Cores      int
	GOMAXPROCS int
	Go         string
	Kernel     string
	Date       string
}

func machine() machineInfo {
	m := machineInfo{
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Go:         runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		Date:       time.Now().UTC().Format("2006-01-02"),
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		m.Kernel = "Linux " + b.String()
	}
	return m
}

// ---- statistics

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// quantile is the R-7 (linear interpolation) quantile, q in [0, 1].
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func gatherWalls(gs []gatherSample) []time.Duration {
	out := make([]time.Duration, len(gs))
	for i, g := range gs {
		out[i] = g.Wall
	}
	return out
}

func gatherCPUs(gs []gatherSample) []time.Duration {
	out := make([]time.Duration, len(gs))
	for i, g := range gs {
		out[i] = g.CPU
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ---- aggregation

// scaleRow is one contender at one N: medians over runs of each run's
// median gather.
type scaleRow struct {
	N, Concurrency, Runs, Probes, Failed int
	Contender                            string
	Wall, CPU                            time.Duration // per gather
	CPUPerProbe                          time.Duration
	PeakHeap, MaxRSS                     float64 // bytes
	RetainedPerService                   float64 // bytes
	AllocPerProbe, AllocsPerProbe        float64 // heap bytes and objects allocated per probe
}

func (r *report) scaleRows() []scaleRow {
	var rows []scaleRow
	for _, n := range r.scaleNs() {
		for _, name := range []string{Ours, HTTPResponse, Plain, OursKeepAlive} {
			var walls, cpus, peaks, rss, kept, ab, ao []float64
			row := scaleRow{N: n, Contender: name}
			for _, s := range r.Scale {
				if s.N != n || s.Contender != name {
					continue
				}
				row.Runs++
				row.Concurrency = s.Concurrency
				walls = append(walls, float64(medianDur(gatherWalls(s.Res.Gathers))))
				cpus = append(cpus, float64(medianDur(gatherCPUs(s.Res.Gathers))))
				peaks = append(peaks, float64(s.Res.PeakHeap))
				rss = append(rss, float64(s.MaxRSS))
				kept = append(kept, float64(s.Res.RetainedHeap)/float64(n))
				for _, g := range s.Res.Gathers {
					row.Probes += g.Metrics
					row.Failed += g.Metrics - g.OK
					ab = append(ab, float64(g.AllocBytes)/float64(n))
					ao = append(ao, float64(g.Allocs)/float64(n))
				}
			}
			if row.Runs == 0 {
				continue
			}
			row.Wall = time.Duration(median(walls))
			row.CPU = time.Duration(median(cpus))
			row.CPUPerProbe = row.CPU / time.Duration(n)
			row.PeakHeap, row.MaxRSS, row.RetainedPerService = median(peaks), median(rss), median(kept)
			row.AllocPerProbe, row.AllocsPerProbe = median(ab), median(ao)
			rows = append(rows, row)
		}
	}
	return rows
}

func (r *report) scaleNs() []int {
	var ns []int
	for _, s := range r.Scale {
		if !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	return ns
}

// ratio is the median over runs of a per-run ratio between two
// contenders (both measured in the same run, a few seconds apart).
func (r *report) ratio(n int, num, den string, f func(*childResult) float64) (float64, int) {
	byRun := map[int]map[string]*childResult{}
	for _, s := range r.Scale {
		if s.N != n {
			continue
		}
		if byRun[s.Run] == nil {
			byRun[s.Run] = map[string]*childResult{}
		}
		byRun[s.Run][s.Contender] = s.Res
	}
	var xs []float64
	for _, m := range byRun {
		a, b := m[num], m[den]
		if a == nil || b == nil {
			continue
		}
		if d := f(b); d > 0 {
			xs = append(xs, f(a)/d)
		}
	}
	return median(xs), len(xs)
}

func wallOf(c *childResult) float64 { return float64(medianDur(gatherWalls(c.Gathers))) }
func cpuOf(c *childResult) float64  { return float64(medianDur(gatherCPUs(c.Gathers))) }

// truthRow is the error of the reported latency of one contender at one
// number of concurrent probes: medians over runs of each run's p50/p99.
type truthRow struct {
	N, Concurrency, Runs, Samples, Failed int
	Contender                             string
	P50, P99                              float64 // seconds
}

func (r *report) truthRows() []truthRow {
	var rows []truthRow
	var ns []int
	for _, s := range r.Truth {
		if !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	d := r.Config.TruthDelay.Seconds()
	for _, n := range ns {
		for _, k := range []struct {
			name string
			conc int
		}{{Ours, n}, {Plain, n}, {Ours, 1}, {HTTPResponse, 1}} {
			name := k.name
			row := truthRow{N: n, Contender: name}
			var p50s, p99s []float64
			for _, s := range r.Truth {
				if s.N != n || s.Contender != name || s.Concurrency != k.conc {
					continue
				}
				row.Runs++
				row.Concurrency = s.Concurrency
				errs := make([]float64, len(s.Res.Latencies))
				for i, l := range s.Res.Latencies {
					errs[i] = l - d
				}
				row.Samples += len(errs)
				for _, g := range s.Res.Gathers {
					row.Failed += g.Metrics - g.OK
				}
				if len(errs) > 0 {
					p50s = append(p50s, quantile(errs, 0.5))
					p99s = append(p99s, quantile(errs, 0.99))
				}
			}
			if row.Runs == 0 {
				continue
			}
			row.P50, row.P99 = median(p50s), median(p99s)
			rows = append(rows, row)
		}
	}
	return rows
}

// spreadRow is one contender of the truth with a spread: the absolute
// error |reported − injected| (medians over runs of each run's p50/p99)
// and what the targets saw of its measured gathers.
type spreadRow struct {
	Contender, Spread                  string
	Concurrency, Runs, Samples, Failed int
	P50, P99                           float64 // seconds
	Burst                              int     // the most requests within burstSlice, over every measured gather
	BurstMedian                        float64 // the median over the measured gathers of each one's most
	Span                               time.Duration
	Wall                               time.Duration // median gather
	Arrived, Probes                    int
}

func (r *report) spreadRows() []spreadRow {
	var rows []spreadRow
	d := r.Config.TruthDelay.Seconds()
	for _, k := range []struct{ name, spread string }{{Ours, "auto"}, {Ours, "0s"}, {HTTPResponse, ""}} {
		row := spreadRow{Contender: k.name, Spread: k.spread}
		var p50s, p99s, maxes, spans, walls []float64
		for _, s := range r.Spread {
			if s.Contender != k.name || s.Spread != k.spread {
				continue
			}
			row.Runs++
			row.Concurrency = s.Concurrency
			errs := make([]float64, len(s.Res.Latencies))
			for i, l := range s.Res.Latencies {
				errs[i] = math.Abs(l - d)
			}
			row.Samples += len(errs)
			if len(errs) > 0 {
				p50s = append(p50s, quantile(errs, 0.5))
				p99s = append(p99s, quantile(errs, 0.99))
			}
			for _, g := range s.Res.Gathers {
				row.Failed += g.Metrics - g.OK
				row.Probes += g.Metrics
				walls = append(walls, float64(g.Wall))
			}
			for _, b := range s.Bursts {
				row.Burst = max(row.Burst, b.Max)
				row.Arrived += b.Arrived
				maxes = append(maxes, float64(b.Max))
				spans = append(spans, float64(b.Span))
			}
		}
		if row.Runs == 0 {
			continue
		}
		row.P50, row.P99 = median(p50s), median(p99s)
		row.BurstMedian = median(maxes)
		row.Span = time.Duration(median(spans))
		row.Wall = time.Duration(median(walls))
		rows = append(rows, row)
	}
	return rows
}

// ---- micro-benchmarks (go test -bench output)

// microResult is one benchmark: the median of each unit over its -count
// repetitions.
type microResult struct {
	Pkg, Name string
	Runs      int
	Values    map[string]float64 // unit → median
	units     []string
	raw       map[string][]float64
}

func parseMicro(data []byte) []microResult {
	var out []*microResult
	index := map[string]*microResult{}
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		key := pkg + " " + name
		m := index[key]
		if m == nil {
			m = &microResult{Pkg: pkg, Name: name, raw: map[string][]float64{}}
			index[key] = m
			out = append(out, m)
		}
		m.Runs++
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			u := f[i+1]
			if _, seen := m.raw[u]; !seen {
				m.units = append(m.units, u)
			}
			m.raw[u] = append(m.raw[u], v)
		}
	}
	res := make([]microResult, len(out))
	for i, m := range out {
		m.Values = map[string]float64{}
		for u, xs := range m.raw {
			m.Values[u] = median(xs)
		}
		res[i] = *m
	}
	return res
}

func (r *report) micro(name string) (microResult, bool) {
	for _, m := range r.Micro {
		if m.Name == name {
			return m, true
		}
	}
	return microResult{}, false
}

// ---- markdown

const (
	beginMarker = "<!-- latency_bench:begin (generated by `make bench`; edit outside the markers) -->"
	endMarker   = "<!-- latency_bench:end -->"
)

func fmtBytes(b float64) string {
	switch {
	case math.IsNaN(b):
		return "–"
	case math.Abs(b) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case math.Abs(b) >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms(d))
	}
	return fmt.Sprintf("%.1f µs", float64(d)/1e3)
}

func fmtMs(sec float64) string {
	if math.IsNaN(sec) {
		return "–"
	}
	return fmt.Sprintf("%+.2f ms", sec*1e3)
}

// fmtNum prints a benchmark figure with 3–4 significant digits.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000 || a == math.Trunc(a):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

// Markdown renders the report (the block between the markers of
// BENCHMARKS.md, also printed by the command).
func (r *report) Markdown() string {
	var b strings.Builder
	c := r.Config
	m := r.Machine
	fmt.Fprintf(&b, "### Run of %s\n\n", m.Date)
	fmt.Fprintf(&b, "- Machine: %d cores (GOMAXPROCS %d), %s, %s, %s; shared with other builds (noisy).\n", m.Cores, m.GOMAXPROCS, m.CPU, m.Kernel, m.Go)
	fmt.Fprintf(&b, "- Command: `%s`.\n", c.Command)
	fmt.Fprintf(&b, "- Scale: N services at distinct URLs over %d loopback target processes (cmd/latency_target, one per address 127.0.0.1–%d), delay %s, %d probes in flight for service_latency and the plain loop, http_response sequential; %d child processes per contender (order rotated), each %d warm-up + %d measured gathers; timeout %s. Every figure is a median over the runs of each run's median gather; ratios are medians of per-run ratios.\n",
		c.Addrs, c.Addrs, c.Delay, c.Concurrency, c.Runs, c.Warmup, c.Gathers, c.Timeout)
	fmt.Fprintf(&b, "- CPU: user+system time of the child process (getrusage RUSAGE_SELF) around the gather; the target's CPU is not counted. Peak heap: largest HeapAlloc (runtime/metrics `%s`) sampled every 1 ms during the measured gathers. Max RSS: the child's ru_maxrss (includes config parsing and the Go runtime). Retained/service: heap kept after the gathers and a GC (targets, probers, state), divided by N.\n\n", heapMetric)

	if len(r.Micro) > 0 {
		b.WriteString("#### Micro-benchmarks (medians of `-count` repetitions)\n\n")
		b.WriteString("| benchmark | package | ns/op | B/op | allocs/op | other |\n|---|---|---:|---:|---:|---|\n")
		for _, mr := range r.Micro {
			var other []string
			for _, u := range mr.units {
				switch u {
				case "ns/op", "B/op", "allocs/op":
					continue
				}
				other = append(other, fmt.Sprintf("%s %s", fmtNum(mr.Values[u]), u))
			}
			get := func(u string) string {
				v, ok := mr.Values[u]
				if !ok {
					return "–"
				}
				return fmtNum(v)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(mr.Name, "Benchmark"),
				strings.TrimPrefix(mr.Pkg, "github.com/service-latency/service_latency/"), get("ns/op"), get("B/op"), get("allocs/op"), strings.Join(other, ", "))
		}
		b.WriteString("\n")
	}

	rows := r.scaleRows()
	if len(rows) > 0 {
		b.WriteString("#### Scale: one gather\n\n")
		b.WriteString("| N | contender | in flight | wall / gather | CPU / gather | CPU / probe | allocated / probe | peak heap | max RSS | retained / service | failed probes | runs |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range rows {
			fmt.Fprintf(&b, "| %d | %s | %d | %s | %s | %s | %s in %.0f objects | %s | %s | %s | %d/%d | %d |\n", row.N, row.Contender, row.Concurrency,
				fmtDur(row.Wall), fmtDur(row.CPU), fmtDur(row.CPUPerProbe), fmtBytes(row.AllocPerProbe), row.AllocsPerProbe,
				fmtBytes(row.PeakHeap), fmtBytes(row.MaxRSS), fmtBytes(row.RetainedPerService), row.Failed, row.Probes, row.Runs)
		}
		b.WriteString("\nRatios (median of per-run ratios):\n\n")
		b.WriteString("| N | http_response wall ÷ ours (speed-up) | http_response wall ÷ plain loop (the ceiling's speed-up) | ours ÷ plain loop, wall | ours ÷ plain loop, CPU / probe | http_response CPU ÷ ours | http_response wall ÷ ours with keep_alive |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range r.scaleNs() {
			speed, _ := r.ratio(n, HTTPResponse, Ours, wallOf)
			ceiling, _ := r.ratio(n, HTTPResponse, Plain, wallOf)
			wall, _ := r.ratio(n, Ours, Plain, wallOf)
			cpu, _ := r.ratio(n, Ours, Plain, cpuOf)
			hrcpu, _ := r.ratio(n, HTTPResponse, Ours, cpuOf)
			ka, _ := r.ratio(n, HTTPResponse, OursKeepAlive, wallOf)
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", n, fmtRatio(speed), fmtRatio(ceiling), fmtRatio(wall), fmtRatio(cpu), fmtRatio(hrcpu), fmtRatio(ka))
		}
		b.WriteString("\n")
	}

	truth := r.truthRows()
	if len(truth) > 0 {
		fmt.Fprintf(&b, "#### Truth: reported latency − injected delay (%s), fresh connections\n\n", c.TruthDelay)
		fmt.Fprintf(&b, "The target itself answers %s late (median, sequential requests on one keep-alive connection, %s delay against no delay): a floor under every prober's error. A fresh connection adds its connect and close.\n\n", fmtMs(r.Overshoot.Seconds()), c.TruthDelay)
		b.WriteString("| services | contender | in flight | error p50 | error p99 | p50 less the target's overshoot | samples | failed | runs |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range truth {
			fmt.Fprintf(&b, "| %d | %s | %d | %s | %s | %s | %d | %d | %d |\n", row.N, row.Contender, row.Concurrency, fmtMs(row.P50), fmtMs(row.P99),
				fmtMs(row.P50-r.Overshoot.Seconds()), row.Samples, row.Failed, row.Runs)
		}
		b.WriteString("\n")
	}

	if sr := r.spreadRows(); len(sr) > 0 {
		fmt.Fprintf(&b, "#### Truth with spread: %d services, %s delay, a gather every %s\n\n", c.SpreadN, c.TruthDelay, c.SpreadCadence)
		fmt.Fprintf(&b, "Each child calls Gather every %s (a gather that takes longer is followed at once): %d gathers first, unmeasured (the automatic spread needs the cadence, known from the second), then %d measured; %d child process(es) per contender, order rotated. Timeout %s and, for our plugin, max_concurrency = %d (the plugin's defaults are 5s and 64), fresh connections; the automatic spread is then max(0, 0.9 × %s − %s) = %s. Error = |reported latency − %s|, p50 and p99 over the measured gathers' probes (median of the runs'). Burst: the most requests that reached the targets (their handler; `latency_target -record-arrivals`) within any %s of a measured gather (a sliding window); span: from the gather's first arrival to its last. The target's own lateness, %s, is a floor under every error.\n\n",
			c.SpreadCadence, c.SpreadWarmup, c.SpreadGathers, c.SpreadRuns, c.SpreadTimeout, c.SpreadConcurrency, c.SpreadCadence, c.SpreadTimeout,
			max(0, time.Duration(0.9*float64(c.SpreadCadence))-c.SpreadTimeout), c.TruthDelay, burstSlice, fmtMs(r.Overshoot.Seconds()))
		fmt.Fprintf(&b, "| contender | spread | in flight (at most) | error p50 | error p99 | p50 less the target's overshoot | most started in %s (median gather) | arrivals' span / gather | wall / gather | samples | arrived / probes | failed | runs |\n", burstSlice)
		b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range sr {
			spread := "–"
			if row.Spread != "" {
				spread = fmt.Sprintf("%q", row.Spread)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %d (%.0f) | %s | %s | %d | %d/%d | %d | %d |\n", row.Contender, spread, row.Concurrency,
				fmtMs(row.P50), fmtMs(row.P99), fmtMs(row.P50-r.Overshoot.Seconds()), row.Burst, row.BurstMedian, fmtDur(row.Span), fmtDur(row.Wall),
				row.Samples, row.Arrived, row.Probes, row.Failed, row.Runs)
		}
		b.WriteString("\n")
	}

	if t := r.targets(); len(t) > 0 {
		b.WriteString("#### Targets\n\n| target | measured | verdict |\n|---|---|---|\n")
		for _, row := range t {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", row[0], row[1], row[2])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// targets evaluates the targets against what this run measured
// (rows: target, measured, verdict). Targets whose inputs were not
// measured are left out.
func (r *report) targets() [][3]string {
	var out [][3]string
	has := func(n int, name string) bool {
		for _, s := range r.Scale {
			if s.N == n && s.Contender == name {
				return true
			}
		}
		return false
	}
	if has(1000, Ours) && has(1000, HTTPResponse) && r.Config.Delay == time.Millisecond {
		x, _ := r.ratio(1000, HTTPResponse, Ours, wallOf)
		measured := fmt.Sprintf("%.1f× faster (fresh connections)", x)
		if c, n := r.ratio(1000, HTTPResponse, Plain, wallOf); n > 0 {
			measured += fmt.Sprintf("; the plain loop, the ceiling: %.1f×", c)
		}
		if k, n := r.ratio(1000, HTTPResponse, OursKeepAlive, wallOf); n > 0 {
			measured += fmt.Sprintf("; ours with keep_alive = true: %.1f×", k)
		}
		out = append(out, [3]string{"1,000 services, 1 ms delay: one gather ≥ 10× faster than http_response", measured, verdict(x >= 10)})
	}
	if has(10000, Ours) && has(10000, Plain) {
		w, _ := r.ratio(10000, Ours, Plain, wallOf)
		c, _ := r.ratio(10000, Ours, Plain, cpuOf)
		out = append(out, [3]string{"10,000 services: wall ≤ 1.5× the plain loop", fmtRatio(w), verdict(w <= 1.5)})
		out = append(out, [3]string{"10,000 services: CPU per probe ≤ 1.3× the plain loop", fmtRatio(c), verdict(c <= 1.3)})
	}
	one, ok1 := r.micro("BenchmarkMemoryStoreUpdate")
	batch, ok2 := r.micro("BenchmarkMemoryStoreUpdateBatch")
	if ok1 && ok2 {
		ns, perSvc := one.Values["ns/op"], batch.Values["allocs/service"]
		allocs := one.Values["allocs/op"]
		measured := fmt.Sprintf("%.0f ns/op, %g allocs/op (one service, warm caches); %.0f ns and %.4f allocs per service in a 1,000-service Update (cold caches)",
			ns, allocs, batch.Values["ns/service"], perSvc)
		out = append(out, [3]string{"state update (memory store, window 100 + sketch) ≤ 200 ns/op, 0 allocs", measured, verdict(ns <= 200 && allocs == 0 && perSvc < 0.01)})
	}
	if mr, ok := r.micro("BenchmarkStateHeap"); ok {
		v := mr.Values["B/state"]
		out = append(out, [3]string{"≤ 8 KiB heap per service (state: window 100 + sketch)", fmtBytes(v), verdict(v <= 8192)})
	}
	for _, row := range r.scaleRows() {
		if row.Contender == Ours && row.N == 10000 {
			out = append(out, [3]string{"≤ 8 KiB heap per service (everything the plugin keeps: prober, transport, state)", fmtBytes(row.RetainedPerService), verdict(row.RetainedPerService <= 8192)})
		}
	}
	for _, row := range r.truthRows() {
		if row.Contender == Ours && row.N == 100 && row.Concurrency == 100 {
			out = append(out, [3]string{"reported latency p50 error ≤ 1 ms at 100 concurrent probes", fmtMs(row.P50), verdict(math.Abs(row.P50) <= 0.001)})
		}
	}
	for _, row := range r.spreadRows() {
		if row.Contender != Ours || row.Spread != "auto" {
			continue
		}
		c := r.Config
		what := fmt.Sprintf("%s services, %s delay, a gather every %s, spread = \"auto\": ", fmtCount(c.SpreadN), c.TruthDelay, c.SpreadCadence)
		out = append(out, [3]string{what + "error p50 ≤ 1 ms", fmtMs(row.P50), verdict(row.P50 <= 0.001)})
		out = append(out, [3]string{what + "error p99 ≤ 5 ms", fmtMs(row.P99), verdict(row.P99 <= 0.005)})
	}
	return out
}

// fmtCount prints a count with thousands separators (1,000).
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// updateFile writes md between the markers of the file at path (creating
// it, or appending the markers, when they are missing).
func updateFile(path, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	block := beginMarker + "\n\n" + md + endMarker + "\n"
	s := string(old)
	i := strings.Index(s, beginMarker)
	j := strings.Index(s, endMarker)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + strings.TrimPrefix(s[j+len(endMarker):], "\n")
	case len(s) == 0:
		s = "# Benchmarks\n\n" + block
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
