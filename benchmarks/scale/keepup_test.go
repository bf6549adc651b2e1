package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be a keeping-up child, as the command is
// (runKeepupChild runs os.Executable with keepupEnv set).
func TestMain(m *testing.M) {
	if os.Getenv(keepupEnv) != "" {
		os.Exit(keepupChild())
	}
	os.Exit(m.Run())
}

// TestKeepupSmall runs the keeping-up part end to end at a small scale:
// the real latency_target processes on two loopback addresses, both
// children, 200 services on a 2 s ticker with a 500 ms timeout (a 1.3 s
// spread), and checks what the table is built from.
func TestKeepupSmall(t *testing.T) {
	target := filepath.Join(t.TempDir(), "latency_target")
	if out, err := exec.Command("go", "build", "-o", target, "../../cmd/latency_target").CombinedOutput(); err != nil {
		t.Fatalf("building latency_target: %v\n%s", err, out)
	}
	const n = 200
	opt := keepupOptions{Ns: []int{n}, Cadence: 2 * time.Second, Gathers: 1, Timeout: 500 * time.Millisecond,
		Targets: 2, Lean: true, Delay: time.Millisecond, Target: target, DrainWait: time.Second, ProfileDir: t.TempDir()}
	run, err := runKeepup(opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Rows) != 2 || run.Rows[0].Prober != proberOurs || run.Rows[1].Prober != proberPlain {
		t.Fatalf("want one row of each prober, got %+v", run.Rows)
	}
	window := plainWindow(opt.Cadence, opt.Timeout)
	for _, r := range run.Rows {
		if len(r.Gathers) != 1+opt.Gathers {
			t.Fatalf("%s: %d gathers, want %d", r.Prober, len(r.Gathers), 1+opt.Gathers)
		}
		for i, g := range r.Gathers {
			if g.OK != n || g.Failed != 0 {
				t.Errorf("%s gather %d: %d ok / %d failed, want %d / 0 (first error %q)", r.Prober, i, g.OK, g.Failed, n, r.FirstError)
			}
			if g.Slack <= 0 || g.CPU <= 0 || g.TimeWait < 0 || g.MaxFDs <= 0 {
				t.Errorf("%s gather %d: slack %s, CPU %s, TIME_WAIT %d, fds %d: want all positive", r.Prober, i, g.Slack, g.CPU, g.TimeWait, g.MaxFDs)
			}
			// the latency spans at least the delay the target waits
			if g.ErrP50 <= 0 || g.ErrP99 < g.ErrP50 {
				t.Errorf("%s gather %d: error p50 %s p99 %s", r.Prober, i, g.ErrP50, g.ErrP99)
			}
		}
		// the first gather is a burst, the counted one is spread
		if burst := r.Gathers[0].LastStart; burst > window/2 {
			t.Errorf("%s: the first gather's last probe started %s after its start, want a burst", r.Prober, burst)
		}
		if last := r.Gathers[1].LastStart; last < window/2 || last > window+200*time.Millisecond {
			t.Errorf("%s: the counted gather's last probe started at %s, want within the %s spread and past its half", r.Prober, last, window)
		}
		if r.CPUPerProbe <= 0 || r.ErrP50 <= 0 || r.TargetFDsMax <= 0 {
			t.Errorf("%s: CPU/probe %s, error p50 %s, target fds %d", r.Prober, r.CPUPerProbe, r.ErrP50, r.TargetFDsMax)
		}
	}
	for _, f := range []string{"keepup-service_latency-200.pprof", "keepup-plain_net_http-200.pprof"} {
		if st, err := os.Stat(filepath.Join(opt.ProfileDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("CPU profile %s: %v (want a non-empty file)", f, err)
		}
	}
	md := keepupMarkdown(run)
	for _, want := range []string{"| 200 | service_latency | 0 (burst, not counted) |", "| 200 | plain net/http | 1 |", "| 200 | yes |", "| 200 / 0 | 200 / 0 |", "`timeout = \"500ms\"`"} {
		if !strings.Contains(md, want) {
			t.Errorf("the Markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestParseNs(t *testing.T) {
	got, err := parseNs(" 1000, 100000 ,")
	if err != nil || len(got) != 2 || got[0] != 1000 || got[1] != 100000 {
		t.Fatalf("parseNs: %v, %v", got, err)
	}
	if got, err := parseNs(""); err != nil || len(got) != 0 {
		t.Fatalf("parseNs(\"\"): %v, %v; want none", got, err)
	}
	for _, bad := range []string{"10k", "0", "-5"} {
		if _, err := parseNs(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("parseNs(%q): %v, want an error naming it", bad, err)
		}
	}
}

func TestErrPercentiles(t *testing.T) {
	var xs []float64
	for i := 100; i >= 1; i-- {
		xs = append(xs, float64(i)/1000) // 1 ms ... 100 ms, unsorted
	}
	p50, p99 := errPercentiles(xs)
	if p50 != 50*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("p50 %s p99 %s, want 50ms 99ms", p50, p99)
	}
	if xs[0] != 0.1 {
		t.Fatal("errPercentiles sorted its argument")
	}
	if p50, p99 := errPercentiles(nil); p50 != 0 || p99 != 0 {
		t.Fatalf("none: %s %s", p50, p99)
	}
}
