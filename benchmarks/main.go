// Command latency_bench is the benchmark harness of service_latency: one
// gather's cost at scale, side by side with Telegraf's inputs.http_response
// and a plain net/http loop, and the truth of the reported latency against
// the target's injected delay. `make bench` runs it (after the Go
// micro-benchmarks, whose output it summarizes with -micro) and writes the
// results into BENCHMARKS.md (-out).
//
// Every contender runs in its own child process (this binary re-executed
// with LATENCY_BENCH_ROLE=child) that runs only the prober: its CPU time
// (getrusage deltas around each gather) and its memory (a heap sampler,
// the heap retained after a GC, the process's max RSS) are the prober's
// alone. The target is cmd/latency_target, one process per loopback
// address.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

func main() {
	if os.Getenv(roleEnv) == "child" {
		os.Exit(childMain())
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "latency_bench: %v\n", err)
		os.Exit(2)
	}
	cfg.Self = []string{os.Args[0]}
	cfg.Progress = os.Stderr
	rep, err := run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "latency_bench: %v\n", err)
		os.Exit(1)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if cfg.Out != "" {
		if err := updateFile(cfg.Out, md); err != nil {
			fmt.Fprintf(os.Stderr, "latency_bench: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "latency_bench: results written to %s\n", cfg.Out)
	}
}

// config is the harness's configuration (the flags).
type config struct {
	Target       string
	Addrs        int
	TargetProcs  int // GOMAXPROCS of each target process (0: Go's default)
	ScaleNs      []int
	Concurrency  int
	Delay        time.Duration
	Runs         int
	Warmup       int
	Gathers      int
	HRMax        int // largest N at which http_response runs in the scale part
	KeepAliveMax int // largest N at which our plugin also runs with keep_alive = true
	Timeout      time.Duration

	TruthNs    []int
	TruthDelay time.Duration
	TruthRuns  int
	TruthHRMax int // largest N at which http_response runs in the truth part

	// The truth with a spread: SpreadN services (0: skipped), a Gather
	// every SpreadCadence, our plugin with spread = "auto" and "0s" and
	// http_response, all with SpreadTimeout and our max_concurrency
	// SpreadConcurrency (the plugin's defaults), TruthDelay injected.
	SpreadN           int
	SpreadCadence     time.Duration
	SpreadWarmup      int
	SpreadGathers     int
	SpreadRuns        int
	SpreadTimeout     time.Duration
	SpreadConcurrency int

	Micro      string
	Out        string
	CPUProfile string // directory for the children's CPU profiles
	MemProfile bool   // also heap profiles (at a fine sampling rate: slows the children)
	Command    string // how the results were produced (written to the report)

	// Self is the argv that runs this program as a child.
	Self     []string
	Progress io.Writer
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("latency_bench", flag.ContinueOnError)
	c := &config{}
	var ns, truthNs string
	fs.StringVar(&c.Target, "target", "bin/latency_target", "the latency_target binary (make build)")
	fs.IntVar(&c.Addrs, "addrs", 8, "loopback addresses (one target process each) to spread the connections over")
	fs.IntVar(&c.TargetProcs, "target-gomaxprocs", 0, "GOMAXPROCS of each target process (0: Go's default, one per core)")
	fs.StringVar(&ns, "n", "1000,10000", "scale: numbers of services")
	fs.IntVar(&c.Concurrency, "concurrency", 100, "scale: probes in flight (our max_concurrency = the plain loop's)")
	fs.DurationVar(&c.Delay, "delay", time.Millisecond, "scale: the target's delay")
	fs.IntVar(&c.Runs, "runs", 5, "scale: child processes per contender and N (the median is reported)")
	fs.IntVar(&c.Warmup, "warmup", 1, "gathers run before the measured ones, in every child")
	fs.IntVar(&c.Gathers, "gathers", 3, "measured gathers in every child")
	fs.IntVar(&c.HRMax, "http-response-max", 1000, "scale: the largest N at which http_response runs (at 10,000 one gather takes ~17–25 s)")
	fs.IntVar(&c.KeepAliveMax, "keepalive-max", 1000, "scale: the largest N at which our plugin also runs with keep_alive = true (connections reused across gathers)")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "per-probe timeout of every contender")
	fs.StringVar(&truthNs, "truth-n", "100,1000", "truth: numbers of concurrent probes")
	fs.DurationVar(&c.TruthDelay, "truth-delay", 20*time.Millisecond, "truth: the target's injected delay")
	fs.IntVar(&c.TruthRuns, "truth-runs", 3, "truth: child processes per contender and N")
	fs.IntVar(&c.TruthHRMax, "truth-http-response-max", 100, "truth: the largest N at which http_response (sequential) runs")
	fs.IntVar(&c.SpreadN, "spread-n", 1000, "truth with spread: services (0: skip the part)")
	fs.DurationVar(&c.SpreadCadence, "spread-cadence", 10*time.Second, "truth with spread: time between the starts of two gathers (Telegraf's interval)")
	fs.IntVar(&c.SpreadWarmup, "spread-warmup", 2, "truth with spread: gathers before the measured ones (≥ 2: the first has no cadence yet, so no automatic spread)")
	fs.IntVar(&c.SpreadGathers, "spread-gathers", 3, "truth with spread: measured gathers in every child")
	fs.IntVar(&c.SpreadRuns, "spread-runs", 1, "truth with spread: child processes per contender")
	fs.DurationVar(&c.SpreadTimeout, "spread-timeout", 5*time.Second, "truth with spread: per-probe timeout (the plugin's default; the automatic spread is 0.9 × cadence − timeout)")
	fs.IntVar(&c.SpreadConcurrency, "spread-concurrency", 64, "truth with spread: our max_concurrency (the plugin's default)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of every child's measured gathers into this directory")
	fs.BoolVar(&c.MemProfile, "memprofile", false, "with -cpuprofile: also write a heap profile after the gathers (fine sampling: slows the children)")
	fs.StringVar(&c.Micro, "micro", "", "go test -bench output to summarize (optional)")
	fs.StringVar(&c.Out, "out", "", "write the results into this markdown file, between the result markers")
	fs.StringVar(&c.Command, "command", "make bench", "the command to report as the one that reproduces the results")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.ScaleNs, err = parseInts(ns); err != nil {
		return nil, fmt.Errorf("-n: %w", err)
	}
	if c.TruthNs, err = parseInts(truthNs); err != nil {
		return nil, fmt.Errorf("-truth-n: %w", err)
	}
	if c.Addrs < 1 || c.Addrs > 250 || c.Runs < 1 || c.TruthRuns < 1 || c.Gathers < 1 || c.Warmup < 0 || c.Concurrency < 1 {
		return nil, errors.New("-addrs, -runs, -truth-runs, -gathers, -concurrency must be positive (-addrs ≤ 250)")
	}
	if c.SpreadN < 0 || c.SpreadRuns < 1 || c.SpreadGathers < 1 || c.SpreadWarmup < 0 || c.SpreadConcurrency < 1 || c.SpreadCadence <= 0 || c.SpreadTimeout <= 0 {
		return nil, errors.New("-spread-runs, -spread-gathers, -spread-concurrency, -spread-cadence, -spread-timeout must be positive, -spread-n and -spread-warmup not negative")
	}
	return c, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// run runs the whole harness and returns the report.
func run(ctx context.Context, c *config) (*report, error) {
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	nofile, err := loopback.RaiseNoFile()
	if err != nil {
		return nil, err
	}
	need := max(c.Concurrency, c.SpreadConcurrency)
	for _, n := range c.TruthNs {
		need = max(need, n)
	}
	for _, n := range c.ScaleNs {
		if n <= c.KeepAliveMax {
			need = max(need, n)
		}
	}
	if nofile < uint64(need)+256 {
		fmt.Fprintf(c.Progress, "latency_bench: warning: %d open files allowed, %d connections at once planned: raise ulimit -n\n", nofile, need)
	}
	rep := &report{Machine: machine(), Config: c}
	if c.Micro != "" {
		data, err := os.ReadFile(c.Micro)
		if err != nil {
			return nil, err
		}
		rep.Micro = parseMicro(data)
	}
	if len(c.ScaleNs) == 0 && len(c.TruthNs) == 0 && c.SpreadN == 0 {
		return rep, nil
	}
	tg, err := startTargets(c.Target, c.Addrs, c.TargetProcs)
	if err != nil {
		return nil, err
	}
	defer tg.Stop()

	for _, n := range c.ScaleNs {
		contenders := []string{Ours, Plain}
		if n <= c.HRMax {
			contenders = append(contenders, HTTPResponse)
		}
		if n <= c.KeepAliveMax {
			contenders = append(contenders, OursKeepAlive)
		}
		urls := tg.urls(n, c.Delay)
		for r := range c.Runs {
			// Rotate the order from run to run, so a slow spell of the
			// shared machine does not always hit the same contender.
			for k := range contenders {
				name := contenders[(k+r)%len(contenders)]
				// spread = "0s": every probe of the gather at once, the
				// cost of one gather (with "auto" the gathers back to
				// back and the 10 s timeout give a spread of 0 anyway)
				sp := &spec{Contender: name, URLs: urls, Concurrency: c.Concurrency, Timeout: c.Timeout, Warmup: c.Warmup, Gathers: c.Gathers, Spread: "0s"}
				if name == HTTPResponse {
					sp.Concurrency = 1
				}
				res, err := runOne(ctx, c, sp, fmt.Sprintf("scale n=%d run %d/%d", n, r+1, c.Runs))
				if err != nil {
					return nil, err
				}
				rep.Scale = append(rep.Scale, sample{N: n, Run: r, Contender: name, Concurrency: sp.Concurrency, childOut: res})
			}
		}
	}
	if len(c.TruthNs) > 0 || c.SpreadN > 0 {
		if rep.Overshoot, err = tg.overshoot(c.TruthDelay, 100); err != nil {
			return nil, fmt.Errorf("measuring the target's overshoot: %w", err)
		}
		fmt.Fprintf(c.Progress, "target overshoot at %s: %s\n", c.TruthDelay, rep.Overshoot)
	}
	for _, n := range c.TruthNs {
		// All n probes at once (max_concurrency = n), as the issue asks;
		// where http_response runs (one probe at a time), our plugin also
		// runs with max_concurrency = 1, to separate the prober's own error
		// from what n simultaneous probes on this machine add.
		type entry struct {
			name string
			conc int
		}
		contenders := []entry{{Ours, n}, {Plain, n}}
		if n <= c.TruthHRMax {
			contenders = append(contenders, entry{HTTPResponse, 1}, entry{Ours, 1})
		}
		urls := tg.urls(n, c.TruthDelay)
		for r := range c.TruthRuns {
			for k := range contenders {
				e := contenders[(k+r)%len(contenders)]
				name := e.name
				sp := &spec{Contender: name, URLs: urls, Concurrency: e.conc, Timeout: c.Timeout, Warmup: c.Warmup, Gathers: c.Gathers, Latencies: true, Spread: "0s"}
				res, err := runOne(ctx, c, sp, fmt.Sprintf("truth n=%d run %d/%d", n, r+1, c.TruthRuns))
				if err != nil {
					return nil, err
				}
				rep.Truth = append(rep.Truth, sample{N: n, Run: r, Contender: name, Concurrency: sp.Concurrency, childOut: res})
			}
		}
	}
	if c.SpreadN > 0 {
		if err := runSpread(ctx, c, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// runSpread is the truth with a spread: SpreadN services probed by our
// plugin with spread = "auto" and with "0s" (every probe of a gather at
// once, as before the spread), and by http_response (one after another),
// a Gather every SpreadCadence. Its targets are a set of their own that
// note every request's arrival, from which each measured gather's burst
// (the most requests that reached the targets within any 100 ms) is
// counted.
func runSpread(ctx context.Context, c *config, rep *report) error {
	tg, err := startTargets(c.Target, c.Addrs, c.TargetProcs, "-record-arrivals")
	if err != nil {
		return err
	}
	defer tg.Stop()
	if _, err := tg.arrivals(); err != nil { // none yet; checks the flag took
		return fmt.Errorf("the target's arrivals: %w", err)
	}
	type entry struct {
		name, spread string
		conc         int
	}
	contenders := []entry{{Ours, "auto", c.SpreadConcurrency}, {Ours, "0s", c.SpreadConcurrency}, {HTTPResponse, "", 1}}
	urls := tg.urls(c.SpreadN, c.TruthDelay)
	for r := range c.SpreadRuns {
		for k := range contenders {
			e := contenders[(k+r)%len(contenders)]
			sp := &spec{Contender: e.name, URLs: urls, Concurrency: e.conc, Timeout: c.SpreadTimeout, Warmup: c.SpreadWarmup, Gathers: c.SpreadGathers,
				Latencies: true, Spread: e.spread, Cadence: c.SpreadCadence}
			what := fmt.Sprintf("spread n=%d run %d/%d", c.SpreadN, r+1, c.SpreadRuns)
			if e.spread != "" {
				what += " " + e.spread
			}
			res, err := runOne(ctx, c, sp, what)
			if err != nil {
				return err
			}
			at, err := tg.arrivals()
			if err != nil {
				return fmt.Errorf("%s: the target's arrivals: %w", what, err)
			}
			s := sample{N: c.SpreadN, Run: r, Contender: e.name, Concurrency: e.conc, Spread: e.spread, childOut: res}
			s.Bursts = bursts(res.Res.Gathers, at, burstSlice)
			for _, b := range s.Bursts {
				fmt.Fprintf(c.Progress, "    gather: %d requests arrived over %s, at most %d in %s\n", b.Arrived, b.Span.Round(time.Millisecond), b.Max, burstSlice)
			}
			rep.Spread = append(rep.Spread, s)
		}
	}
	return nil
}

// childOut is a child's result and its process's max RSS.
type childOut struct {
	Res    *childResult
	MaxRSS int64 // bytes
}

func runOne(ctx context.Context, c *config, sp *spec, what string) (childOut, error) {
	if c.CPUProfile != "" {
		if err := os.MkdirAll(c.CPUProfile, 0o755); err != nil {
			return childOut{}, err
		}
		name := strings.NewReplacer(" ", "-", "/", "of", "=", "").Replace(what)
		sp.CPUProfile = filepath.Join(c.CPUProfile, name+"-"+sp.Contender+".pprof")
		if c.MemProfile {
			sp.MemProfile = filepath.Join(c.CPUProfile, name+"-"+sp.Contender+".heap")
		}
	}
	in, err := json.Marshal(sp)
	if err != nil {
		return childOut{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Self[0], c.Self[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"=child")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return childOut{}, fmt.Errorf("%s, %s: %w: %s", what, sp.Contender, err, strings.TrimSpace(stderr.String()))
	}
	var res childResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return childOut{}, fmt.Errorf("%s, %s: decoding the child's result: %w", what, sp.Contender, err)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss * 1024 // KiB on Linux
	}
	out := childOut{Res: &res, MaxRSS: rss}
	fails := 0
	for _, g := range res.Gathers {
		fails += g.Metrics - g.OK
	}
	fmt.Fprintf(c.Progress, "%-22s %-16s median gather %8.1f ms  (%d failed probes, child %.1fs)\n",
		what, sp.Contender, ms(medianDur(gatherWalls(res.Gathers))), fails, time.Since(t0).Seconds())
	if res.FirstError != "" {
		fmt.Fprintf(c.Progress, "    first error: %s\n", res.FirstError)
	}
	return out, nil
}
