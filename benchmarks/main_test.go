package main

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the harness re-execute the test binary as a child (one
// contender per process), exactly as the command re-executes itself.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "child" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// buildTarget builds cmd/latency_target, the harness's target, into a
// temporary directory.
func buildTarget(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "latency_target")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", bin, "../cmd/latency_target")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the target: %v\n%s", err, out)
	}
	return bin
}

// TestHarnessSmoke runs the whole harness small (N = 50: scale with the
// four contenders, truth with the three contenders; the truth with spread
// at 20 services, a gather every 500 ms, 2 unmeasured gathers and 1
// measured) and checks that it produces sane numbers. No assertion depends
// on how fast anything is.
func TestHarnessSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and probes loopback")
	}
	cfg, err := parseFlags([]string{
		"-target", buildTarget(t),
		"-addrs", "2",
		"-n", "50", "-runs", "1", "-warmup", "1", "-gathers", "2", "-concurrency", "10",
		"-truth-n", "50", "-truth-runs", "1", "-truth-delay", "5ms", "-truth-http-response-max", "50",
		"-timeout", "10s",
		"-spread-n", "20", "-spread-cadence", "500ms", "-spread-warmup", "2", "-spread-gathers", "1", "-spread-runs", "1",
		"-spread-timeout", "100ms", "-spread-concurrency", "10",
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Self = []string{os.Args[0]}
	var progress strings.Builder
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("harness: %v\nprogress:\n%s", err, progress.String())
	}

	// Scale: each contender ran once, every probe of every gather succeeded
	// and was counted, and the measurements are positive and finite.
	rows := rep.scaleRows()
	if len(rows) != 4 {
		t.Fatalf("scale rows: got %d, want 4 (ours, http_response, plain loop, ours with keep_alive)", len(rows))
	}
	for _, row := range rows {
		if row.Probes != 50*2 || row.Failed != 0 {
			t.Errorf("%s: %d probes, %d failed; want 100, 0", row.Contender, row.Probes, row.Failed)
		}
		if row.Wall <= 0 || row.CPU <= 0 || row.PeakHeap <= 0 || row.MaxRSS <= 0 {
			t.Errorf("%s: a measurement is not positive: %+v", row.Contender, row)
		}
	}
	for _, r := range []struct {
		num, den string
		f        func(*childResult) float64
	}{{HTTPResponse, Ours, wallOf}, {Ours, Plain, wallOf}, {Ours, Plain, cpuOf}, {HTTPResponse, OursKeepAlive, wallOf}} {
		x, runs := rep.ratio(50, r.num, r.den, r.f)
		if runs != 1 || !(x > 0) || math.IsInf(x, 0) {
			t.Errorf("ratio %s/%s: %v over %d runs", r.num, r.den, x, runs)
		}
	}

	// Truth: every contender reported a latency for every probe, none below
	// the injected delay (causality, not speed), and the error quantiles
	// are ordered.
	truth := rep.truthRows()
	if len(truth) != 4 {
		t.Fatalf("truth rows: got %d, want 4 (ours at 50 and 1 in flight, http_response, plain loop)", len(truth))
	}
	for _, row := range truth {
		if row.Samples != 50*2 || row.Failed != 0 {
			t.Errorf("%s: %d samples, %d failed; want 100, 0", row.Contender, row.Samples, row.Failed)
		}
		if !(row.P50 >= 0) || !(row.P99 >= row.P50) || math.IsInf(row.P99, 0) {
			t.Errorf("%s: error p50 %v, p99 %v", row.Contender, row.P50, row.P99)
		}
	}
	for _, s := range rep.Truth {
		for _, l := range s.Res.Latencies {
			if l < cfg.TruthDelay.Seconds() {
				t.Fatalf("%s reported %v s, below the injected delay %v", s.Contender, l, cfg.TruthDelay)
			}
		}
	}

	// Truth with spread: our plugin with "auto" and "0s" and http_response;
	// every probe of the measured gather reported and seen by the targets,
	// once, within the gather.
	spread := rep.spreadRows()
	if len(spread) != 3 {
		t.Fatalf("spread rows: got %d, want 3 (auto, 0s, http_response)", len(spread))
	}
	for _, row := range spread {
		if row.Samples != 20 || row.Failed != 0 || row.Probes != 20 || row.Arrived != 20 {
			t.Errorf("%s %q: %d samples, %d failed, %d probes, %d arrived at the targets; want 20, 0, 20, 20", row.Contender, row.Spread, row.Samples, row.Failed, row.Probes, row.Arrived)
		}
		if row.Burst < 1 || row.Burst > 20 || row.Span < 0 || row.Wall <= 0 {
			t.Errorf("%s %q: burst %d, span %v, wall %v", row.Contender, row.Spread, row.Burst, row.Span, row.Wall)
		}
		if !(row.P50 >= 0) || !(row.P99 >= row.P50) || math.IsInf(row.P99, 0) {
			t.Errorf("%s %q: error p50 %v, p99 %v", row.Contender, row.Spread, row.P50, row.P99)
		}
	}
	for _, s := range rep.Spread {
		for _, l := range s.Res.Latencies {
			if l < cfg.TruthDelay.Seconds() {
				t.Fatalf("%s %q reported %v s, below the injected delay %v", s.Contender, s.Spread, l, cfg.TruthDelay)
			}
		}
	}

	// The report renders every part, and the file update keeps what is
	// outside the markers.
	md := rep.Markdown()
	for _, want := range []string{"#### Scale: one gather", "#### Truth", "#### Truth with spread", "| service_latency | \"auto\" |", "| service_latency | \"0s\" |", "spread = \"auto\": error p99 ≤ 5 ms", "| 50 | service_latency |", "| 50 | http_response |", "| 50 | plain_loop |", "| 50 | service_latency keep_alive |", "overshoot", "- Machine:"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nprose before\n\n"+beginMarker+"\nold\n"+endMarker+"\n\nprose after\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateFile(path, md); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if s := string(got); !strings.Contains(s, "prose before") || !strings.Contains(s, "prose after") || strings.Contains(s, "\nold\n") || !strings.Contains(s, md) {
		t.Errorf("updateFile:\n%s", s)
	}
	t.Logf("smoke report:\n%s", md)
}

func TestParseMicro(t *testing.T) {
	out := `goos: linux
pkg: github.com/service-latency/service_latency/plugins/inputs/service_latency/stats
BenchmarkObserve-2   	 5000000	       100.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkObserve-2   	 5000000	       120.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkObserve-2   	 5000000	       300.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkStateHeap-2 	       1	 900000000 ns/op	      2500 B/state
PASS
pkg: github.com/service-latency/service_latency/benchmarks
BenchmarkMemoryStoreUpdate-2 	 1000000	 250 ns/op	 24 B/op	 1 allocs/op
BenchmarkMemoryStoreUpdateBatch-2 	 1000	 250000 ns/op	 250.0 ns/service	 0.001 allocs/service	 24588 B/op	       1 allocs/op
`
	ms := parseMicro([]byte(out))
	if len(ms) != 4 {
		t.Fatalf("got %d benchmarks, want 4: %+v", len(ms), ms)
	}
	if ms[0].Name != "BenchmarkObserve" || ms[0].Runs != 3 || ms[0].Values["ns/op"] != 120 || ms[0].Values["allocs/op"] != 0 {
		t.Errorf("observe: %+v", ms[0])
	}
	if ms[1].Values["B/state"] != 2500 {
		t.Errorf("state heap: %+v", ms[1])
	}
	rep := &report{Config: &config{}, Micro: ms}
	targets := rep.targets()
	if len(targets) != 2 {
		t.Fatalf("targets: %v", targets)
	}
	if !strings.Contains(targets[0][2], "missed") || !strings.Contains(targets[1][2], "met") {
		t.Errorf("verdicts: %v", targets)
	}
}

func TestBursts(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	gathers := []gatherSample{
		{Start: t0, End: t0.Add(time.Second)},
		{Start: t0.Add(2 * time.Second), End: t0.Add(3 * time.Second)},
		{Start: t0.Add(4 * time.Second), End: t0.Add(5 * time.Second)},
	}
	// first gather: 0, 50, 99 within 100 ms, 150 and 190 with 99 and 150
	// (3); second: 2000–2099 all at once (4), one at 2500; a stray request
	// between the gathers; none in the third
	got := bursts(gathers, at(0, 50, 99, 150, 190, 1500, 2000, 2001, 2050, 2099, 2500), 100*time.Millisecond)
	want := []burst{{Arrived: 5, Span: 190 * time.Millisecond, Max: 3}, {Arrived: 5, Span: 500 * time.Millisecond, Max: 4}, {}}
	if !slices.Equal(got, want) {
		t.Errorf("bursts:\n got %+v\nwant %+v", got, want)
	}
	if fmtCount(1000) != "1,000" || fmtCount(20) != "20" || fmtCount(1234567) != "1,234,567" {
		t.Errorf("fmtCount: %s %s %s", fmtCount(1000), fmtCount(20), fmtCount(1234567))
	}
}

func TestQuantiles(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if m := median(xs); m != 3 {
		t.Errorf("median %v", m)
	}
	if m := median([]float64{1, 2, 3, 4}); m != 2.5 {
		t.Errorf("median %v", m)
	}
	if q := quantile(xs, 0.99); math.Abs(q-4.96) > 1e-9 {
		t.Errorf("p99 %v", q)
	}
	if q := quantile(xs, 0); q != 1 {
		t.Errorf("p0 %v", q)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing")
	}
}
