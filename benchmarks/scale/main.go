// Command latency_scale is `make bench-scale` (issue 17, "100,000 services
// on one agent"): for each N (1,000, 10,000, 100,000 by default) one child
// process, running only the plugin, measures
//
//   - start-up: config.Load of a generated N-service file + the plugin's
//     Init with a state file (the binary's path to its first gather; the
//     file is read at the first gather), wall and CPU time;
//   - the window filled: the state of every service is synthesized through
//     the store — SetState (Telegraf's StatefulPlugin path) with a dump in
//     which every service has a full window of 100 samples and a sketch of
//     ~1,000 lognormal samples around 20 ms —, then one real gather probes
//     all N services (fresh connections, the defaults: 64 at once, spread
//     "0s" so that it is one burst) against cmd/latency_target processes
//     on 8 loopback addresses; RSS (VmRSS) after it and a GC, the peak
//     (VmHWM), and the retained heap per service (heap after the gather and
//     a GC less the heap before the config was read, over N);
//   - the state file: one save of that state as the plugin makes it now
//     (store.File, streamed: bytes and time), and as it made it before
//     (json.Marshal of the whole Export, then write + fsync + rename, after
//     every store update: ceil(N/500) updates a gather with spread "0s").
//
// Then, for each N of -keepup-n (1,000 and 100,000 by default), the
// keeping-up part (keepup.go): the plugin with spread = "auto" on a 60 s
// ticker, and the plain net/http loop paced over the same window, each in
// its own child, against 16 latency_target processes on 127.0.0.1–16.
//
// It prints Markdown tables and, with -out, writes them into BENCHMARKS.md
// between the latency_scale markers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"

	"github.com/service-latency/service_latency/benchmarks/internal/loopback"
)

const roleEnv = "LATENCY_SCALE_CHILD"

// result is what a child reports.
type result struct {
	N                   int
	StartWall, StartCPU time.Duration
	GatherWall          time.Duration
	OK, Failed          int
	RSS, HWM            int64 // bytes
	RetainedPerService  float64
	SaveBytes           int64
	SaveTime            time.Duration
	OldSaveBytes        int64
	OldSaveTime         time.Duration
	UpdatesPerGather    int
}

func main() {
	switch {
	case os.Getenv(roleEnv) != "":
		os.Exit(child())
	case os.Getenv(keepupEnv) != "":
		os.Exit(keepupChild())
	}
	ns := flag.String("n", "1000,10000,100000", "service counts of the start-up / memory / state-file part (\"\": skip it)")
	target := flag.String("target", "bin/latency_target", "the latency_target binary")
	out := flag.String("out", "", "BENCHMARKS.md to update between the latency_scale markers")
	keepN := flag.String("keepup-n", "1000,100000", "service counts of the keeping-up part (\"\": skip it)")
	cadence := flag.Duration("keepup-cadence", 60*time.Second, "keeping up: the gather cadence (Telegraf's interval)")
	gathers := flag.Int("keepup-gathers", 3, "keeping up: counted gathers per prober and N, after the first (a burst, not counted)")
	timeout := flag.Duration("keepup-timeout", 0, "keeping up: the plugin's timeout (and the plain loop's); 0: the plugin's default (5 s). Shorter lets a short cadence keep a spread: 0.9 × cadence − timeout")
	profiles := flag.String("keepup-cpuprofile", "", "keeping up: a directory for a CPU profile of each child's counted gathers (keepup-service_latency-<N>.pprof, keepup-plain_net_http-<N>.pprof)")
	targets := flag.Int("keepup-targets", 16, "keeping up: latency_target processes, one per loopback address 127.0.0.1, .2, ...")
	lean := flag.Bool("keepup-lean", false, "keeping up: the targets answer with latency_target -lean (a minimal HTTP/1.1 responder) rather than net/http's server")
	flag.Parse()
	scaleNs, err := parseNs(*ns)
	if err == nil {
		var keepNs []int
		keepNs, err = parseNs(*keepN)
		if err == nil && len(keepNs) > 0 && (*cadence <= 0 || *gathers < 1 || *timeout < 0) {
			err = fmt.Errorf("-keepup-cadence %s -keepup-gathers %d -keepup-timeout %s: want a positive cadence, at least one gather and a timeout ≥ 0", *cadence, *gathers, *timeout)
		}
		if err == nil && *out != "" && (len(scaleNs) == 0 || len(keepNs) == 0) {
			// the markers hold both parts' tables: writing one alone
			// would drop the other's
			err = fmt.Errorf("-out with -n or -keepup-n empty would drop the skipped part's table from %s: run both parts, or leave -out out", *out)
		}
		if err == nil {
			err = run(scaleNs, keepupOptions{Ns: keepNs, Cadence: *cadence, Gathers: *gathers, Timeout: *timeout, Targets: *targets, Lean: *lean, Delay: time.Millisecond, Target: *target, DrainWait: drainTimeWaitMax, ProfileDir: *profiles}, *target, *out)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "latency_scale:", err)
		os.Exit(1)
	}
}

// parseNs reads a comma-separated list of positive service counts; an
// empty string is none.
func parseNs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("service count %q: want a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// run is both parts, then the Markdown (printed, and written into out).
func run(scaleNs []int, keep keepupOptions, target, out string) error {
	var md string
	if len(scaleNs) > 0 {
		rows, err := runScale(scaleNs, target)
		if err != nil {
			return err
		}
		md = markdown(rows)
	}
	if len(keep.Ns) > 0 {
		kr, err := runKeepup(keep)
		if err != nil {
			return err
		}
		if md == "" {
			md = header() + "\n"
		} else {
			md += "\n"
		}
		md += keepupMarkdown(kr)
	}
	if md == "" {
		return fmt.Errorf("nothing to run: -n and -keepup-n are both empty")
	}
	fmt.Print(md)
	if out != "" {
		return update(out, md)
	}
	return nil
}

// runScale is the start-up / memory / state-file part: 8 targets on
// 127.0.0.1–8, one child per N.
func runScale(ns []int, target string) ([]result, error) {
	tg, err := loopback.Start(target, 8, loopback.Options{Args: []string{"-delay", "1ms"}})
	if err != nil {
		return nil, err
	}
	defer tg.Stop()
	var rows []result
	for _, n := range ns {
		r, err := runChild(n, tg.Hosts)
		if err != nil {
			return nil, fmt.Errorf("N=%d: %w", n, err)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "N=%d done: %+v\n", n, r)
	}
	return rows, nil
}

func runChild(n int, hosts []string) (result, error) {
	var r result
	self, err := os.Executable()
	if err != nil {
		return r, err
	}
	c := exec.Command(self)
	c.Env = append(os.Environ(), roleEnv+"=1", "LATENCY_SCALE_N="+strconv.Itoa(n), "LATENCY_SCALE_HOSTS="+strings.Join(hosts, ","))
	c.Stderr = os.Stderr
	data, err := c.Output()
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(data, &r)
}

func child() int {
	n, _ := strconv.Atoi(os.Getenv("LATENCY_SCALE_N"))
	r, err := measure(n, strings.Split(os.Getenv("LATENCY_SCALE_HOSTS"), ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

func measure(n int, hosts []string) (*result, error) {
	r := &result{N: n}
	dir, err := os.MkdirTemp("", "latency_scale")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "scale.conf")
	stateFile := filepath.Join(dir, "scale.state")
	extra := fmt.Sprintf("  spread = \"0s\"\n  state_file = %q\n", stateFile)
	if err := os.WriteFile(path, genConfig(n, hosts, extra), 0o600); err != nil {
		return nil, err
	}
	heap0 := heapAfterGC()

	// Start-up.
	cpu0, t0 := cpuTime(), time.Now()
	p, err := startup(path)
	if err != nil {
		return nil, err
	}
	r.StartWall, r.StartCPU = time.Since(t0), cpuTime()-cpu0

	// The window filled, synthesized through the store.
	dump := syntheticDump(p.ServiceNames())
	if err := p.SetState(dump); err != nil {
		return nil, err
	}
	dump = nil
	acc := &countAcc{}
	t0 = time.Now()
	if err := p.Gather(acc); err != nil {
		return nil, err
	}
	r.GatherWall = time.Since(t0)
	r.OK, r.Failed = acc.ok, acc.failed
	r.RetainedPerService = float64(int64(heapAfterGC())-int64(heap0)) / float64(n)
	debug.FreeOSMemory()
	r.RSS, r.HWM = procStatus("VmRSS:"), procStatus("VmHWM:")

	// The state file: one save now and before.
	exp := p.GetState().(*store.Dump)
	f, err := store.NewFile(filepath.Join(dir, "now.state"), store.NopLogger{})
	if err != nil {
		return nil, err
	}
	if err := f.Import(exp); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	st := f.SaveStats()
	r.SaveBytes, r.SaveTime = st.Bytes, st.Last
	t0 = time.Now()
	old := p.GetState().(*store.Dump) // what the old save did: Export, Marshal, write
	old.SavedAt = time.Now().UTC()
	data, err := json.Marshal(old)
	if err != nil {
		return nil, err
	}
	if err := writeFsyncRename(filepath.Join(dir, "old.state"), data); err != nil {
		return nil, err
	}
	r.OldSaveTime, r.OldSaveBytes = time.Since(t0), int64(len(data))
	r.UpdatesPerGather = (n + 499) / 500
	p.Stop()
	return r, nil
}

// syntheticDump is every service's state with a full window (100
// samples, 2 % failures) and a sketch of 1,000 samples, lognormal around
// 20 ms, a verdict up; built by Observe and EndRound like the store's.
func syntheticDump(names []string) *store.Dump {
	params := stats.Params{Window: 100, HalfLife: 5 * time.Minute}
	vp := stats.VerdictParams{FailureThreshold: stats.DefaultFailureThreshold, SuccessThreshold: stats.DefaultSuccessThreshold, Statistic: stats.DefaultStatistic}
	params.Verdict = vp
	m := store.NewMemory()
	r := rand.New(rand.NewPCG(17, 17))
	now := time.Now().Add(-time.Hour)
	const rounds = 1000
	obs := make([]store.Observation, len(names))
	for i := range rounds {
		at := now.Add(time.Duration(i) * time.Second)
		for j, name := range names {
			ok := r.IntN(50) != 0
			obs[j] = store.Observation{Service: name, Params: params, OK: ok, Latency: 0.02 * math.Exp(0.3*r.NormFloat64()), At: at, EndsRound: true, RoundOK: ok}
		}
		if _, err := m.Update(context.Background(), at, obs); err != nil {
			panic(err)
		}
	}
	return m.Export()
}

func writeFsyncRename(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// procStatus reads a "VmRSS:"-style line of /proc/self/status, in bytes.
func procStatus(key string) int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// countAcc counts the service metrics of a gather.
type countAcc struct{ ok, failed int }

func (a *countAcc) AddFields(name string, f map[string]interface{}, tags map[string]string, _ ...time.Time) {
	if name != service_latency.Measurement {
		return
	}
	if tags["result"] == "success" {
		a.ok++
	} else {
		a.failed++
	}
}
func (a *countAcc) AddGauge(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *countAcc) AddCounter(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *countAcc) AddSummary(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *countAcc) AddHistogram(n string, f map[string]interface{}, t map[string]string, ts ...time.Time) {
	a.AddFields(n, f, t, ts...)
}
func (a *countAcc) AddMetric(telegraf.Metric)                   {}
func (*countAcc) SetPrecision(time.Duration)                    {}
func (a *countAcc) AddError(error)                              { a.failed++ }
func (*countAcc) WithTracking(int) telegraf.TrackingAccumulator { return nil }

func fmtBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

// header is the run's title and machine line.
func header() string {
	return fmt.Sprintf("### Scale run of %s\n\n- Machine: %d cores (GOMAXPROCS %d), %s %s/%s; load average at the end %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, loadAverage())
}

func markdown(rows []result) string {
	var b strings.Builder
	b.WriteString(header())
	b.WriteString("- Command: `make bench-scale`. One child process per N; the window filled by synthesis through the store (SetState of a dump: every service a full window of 100 and a sketch of 1,000 samples), then one real gather of all N services (fresh connections, 64 at once, spread \"0s\") against 8 `latency_target` processes on 127.0.0.1–8, delay 1 ms.\n\n")
	b.WriteString("| N | start-up (Load + Init), wall | start-up, CPU | one gather of N | probes ok / failed | RSS after the window filled (peak) | retained heap / service | state file bytes / save | save time | before: bytes written / gather (saves × file) | before: save time / gather |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d / %d | %s (%s) | %s | %s | %s | %s (%d × %s) | %s (%d × %s) |\n",
			r.N, fmtDur(r.StartWall), fmtDur(r.StartCPU), fmtDur(r.GatherWall), r.OK, r.Failed,
			fmtBytes(float64(r.RSS)), fmtBytes(float64(r.HWM)), fmtBytes(r.RetainedPerService),
			fmtBytes(float64(r.SaveBytes)), fmtDur(r.SaveTime),
			fmtBytes(float64(r.OldSaveBytes)*float64(r.UpdatesPerGather)), r.UpdatesPerGather, fmtBytes(float64(r.OldSaveBytes)),
			fmtDur(r.OldSaveTime*time.Duration(r.UpdatesPerGather)), r.UpdatesPerGather, fmtDur(r.OldSaveTime))
	}
	b.WriteString("\nNow a save happens every `state_save_interval` (default 1 m) and on shutdown, not per store update: at a 60 s cadence that is one save a gather at most.\n")
	return b.String()
}

const beginMarker = "<!-- latency_scale:begin (generated by `make bench-scale`; edit outside the markers) -->"
const endMarker = "<!-- latency_scale:end -->"

func update(path, md string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(data)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no latency_scale markers", path)
	}
	out := s[:i+len(beginMarker)] + "\n\n" + md + "\n" + s[j:]
	return os.WriteFile(path, []byte(out), 0o644)
}
