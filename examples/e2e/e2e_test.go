package e2e

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestTelegrafInfluxDBPipeline runs our binary under a real Telegraf
// ([[inputs.execd]], signal = "STDIN", interval 1s) writing to a real
// InfluxDB 1.x, then checks what InfluxDB stored, Telegraf's log, every
// query of the Grafana dashboard, and that nothing is left behind.
func TestTelegrafInfluxDBPipeline(t *testing.T) {
	e := startEnv(t)
	started := time.Now()
	e.waitGathers(t, minGathers, 60*time.Second)
	t.Logf("%d gathers of every service stored after %s", minGathers, time.Since(started).Round(time.Millisecond))

	// Stop Telegraf first: it flushes, and the data no longer moves under
	// the assertions. SIGTERM closes our binary's stdin, which ends it.
	logRunning := e.telegraf.out.String()
	require.Equal(t, 0, e.telegraf.stop(syscall.SIGTERM, 20*time.Second), "Telegraf's exit status on SIGTERM")
	require.Empty(t, e.leftovers(e.plugin, e.telegrafConf), "processes left after Telegraf stopped (our binary must exit on stdin EOF)")

	t.Run("one series per service", func(t *testing.T) {
		perService := map[string]int{}
		for _, s := range e.query(t, `SELECT count("result_code") FROM "service_latency" GROUP BY *`) {
			perService[s.Tags["service"]]++
		}
		require.Equal(t, map[string]int{"healthy": 1, "refused": 1, "secure": 1}, perService)
	})

	t.Run("nothing lost between Telegraf and InfluxDB", func(t *testing.T) {
		// Telegraf's outputs.file saw every metric; InfluxDB must hold them all.
		f, err := os.Open(e.metricsOut)
		require.NoError(t, err)
		defer f.Close()
		inFile := map[string]int64{}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		re := regexp.MustCompile(`^service_latency,.*\bservice=(\w+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				inFile[m[1]]++
			}
		}
		require.NoError(t, sc.Err())
		require.Equal(t, inFile, e.gathersPerService(t))
	})

	t.Run("healthy: latency_count rises by one per interval and latency_avg is the mean", func(t *testing.T) {
		rows := e.rows(t, "healthy")
		require.GreaterOrEqual(t, len(rows), minGathers)
		var sum float64
		minL, maxL := math.Inf(1), math.Inf(-1)
		var steps []time.Duration
		for i, r := range rows {
			require.Equal(t, "success", r["result"], "row %d", i)
			require.Equal(t, "http", r["probe"])
			require.Equal(t, int64(0), integer(t, r["result_code"]))
			require.Equal(t, int64(200), integer(t, r["http_response_code"]))
			// the first stored metric is the process's first gather; then +1 each
			require.Equal(t, int64(i+1), integer(t, r["latency_count"]), "latency_count of row %d", i)
			require.Equal(t, int64(i+1), integer(t, r["probes"]))
			require.Equal(t, int64(0), integer(t, r["failures"]))
			require.Equal(t, int64(0), integer(t, r["consecutive_failures"]))
			require.InDelta(t, 1.0, number(t, r["availability"]), 0)

			l := number(t, r["latency"])
			require.GreaterOrEqual(t, l, healthyDelay.Seconds(), "latency below the target's delay")
			require.Less(t, l, 0.8, "latency above the probe timeout")
			sum += l
			minL, maxL = math.Min(minL, l), math.Max(maxL, l)
			require.InEpsilon(t, sum/float64(i+1), number(t, r["latency_avg"]), 1e-9, "latency_avg of row %d is not the mean of the stored latencies", i)
			require.InDelta(t, minL, number(t, r["latency_min"]), 0)
			require.InDelta(t, maxL, number(t, r["latency_max"]), 0)
			for _, f := range []string{"latency_ewma", "latency_p95"} {
				v := number(t, r[f])
				require.True(t, v >= minL && v <= maxL, "%s = %v outside [%v, %v]", f, v, minL, maxL)
			}
			// the phases of a fresh connection add up to at most the latency;
			// the server's delay is in time_to_first_byte
			phases := 0.0
			for _, f := range []string{"dns_lookup", "tcp_connect", "time_to_first_byte", "body_transfer"} {
				require.NotNil(t, r[f], "%s missing in row %d", f, i)
				phases += number(t, r[f])
			}
			require.LessOrEqual(t, phases, l+1e-3)
			require.GreaterOrEqual(t, number(t, r["time_to_first_byte"]), healthyDelay.Seconds())
			require.Nil(t, r["tls_handshake"], "no TLS on plain HTTP")
			if i > 0 {
				steps = append(steps, time.Duration(integer(t, r["time"])-integer(t, rows[i-1]["time"])))
			}
		}
		// one gather per interval (1s): no extra gathers (the -poll_interval
		// trap doubles them), none missing
		var total time.Duration
		for i, s := range steps {
			require.True(t, s > 250*time.Millisecond && s < 2500*time.Millisecond, "gather %d came %s after the previous one", i+1, s)
			total += s
		}
		mean := total / time.Duration(len(steps))
		require.InDelta(t, float64(time.Second), float64(mean), float64(200*time.Millisecond), "mean time between gathers")
	})

	t.Run("secure: TLS verified, handshake and certificate expiry", func(t *testing.T) {
		rows := e.rows(t, "secure")
		require.GreaterOrEqual(t, len(rows), minGathers)
		for i, r := range rows {
			require.Equal(t, "success", r["result"], "row %d", i)
			require.Equal(t, int64(i+1), integer(t, r["latency_count"]))
			require.Greater(t, number(t, r["tls_handshake"]), 0.0)
			at := time.Unix(0, integer(t, r["time"]))
			expiry := time.Duration(number(t, r["tls_cert_expiry"]) * float64(time.Second))
			require.WithinDuration(t, e.certNotAfter, at.Add(expiry), 5*time.Second, "tls_cert_expiry")
		}
	})

	t.Run("refused: connection_failed and no latency", func(t *testing.T) {
		rows := e.rows(t, "refused")
		require.GreaterOrEqual(t, len(rows), minGathers)
		for i, r := range rows {
			n := int64(i + 1)
			require.Equal(t, "connection_failed", r["result"], "row %d", i)
			require.Equal(t, "tcp", r["probe"])
			require.Equal(t, "tcp://"+e.refusedAddr, r["server"])
			require.Equal(t, int64(3), integer(t, r["result_code"]))
			require.Equal(t, int64(0), integer(t, r["latency_count"]))
			require.Equal(t, n, integer(t, r["probes"]))
			require.Equal(t, n, integer(t, r["failures"]))
			require.Equal(t, n, integer(t, r["consecutive_failures"]))
			require.InDelta(t, 0.0, number(t, r["availability"]), 0)
			for _, f := range []string{"latency", "latency_avg", "latency_ewma", "latency_min", "latency_p95"} {
				require.Nil(t, r[f], "%s in row %d of a service that never succeeded", f, i)
			}
		}
		require.Empty(t, e.query(t, `SELECT count("latency") FROM "service_latency" WHERE "service" = 'refused'`))
	})

	t.Run("field types are the README's", func(t *testing.T) {
		documented := readmeFieldTypes(t)
		stored := map[string]string{}
		for _, s := range e.query(t, `SHOW FIELD KEYS FROM "service_latency"`) {
			for _, r := range s.rows() {
				stored[r["fieldKey"].(string)] = r["fieldType"].(string)
			}
		}
		for _, f := range []string{"latency", "latency_avg", "latency_count", "latency_ewma", "latency_p95", "result_code",
			"probes", "failures", "consecutive_failures", "availability", "http_response_code"} {
			require.Contains(t, stored, f)
		}
		var undocumented, wrong []string
		for f, typ := range stored {
			want, ok := documented.lookup(f)
			switch {
			case !ok:
				undocumented = append(undocumented, f+" ("+typ+")")
			case want != typ:
				wrong = append(wrong, f+": stored "+typ+", README says "+want)
			}
		}
		sort.Strings(undocumented)
		sort.Strings(wrong)
		require.Empty(t, wrong, "field types differ from the README's Metrics section")
		require.Empty(t, undocumented, "fields stored in InfluxDB that the README's Metrics section does not list with a type")
	})

	t.Run("Telegraf logs our warnings at their level", func(t *testing.T) {
		log := e.telegraf.out.String()
		warn := regexp.MustCompile(`(?m)^\S+ W! \[inputs\.execd\] service "refused" \(tcp://` + regexp.QuoteMeta(e.refusedAddr) + `\) failing: connection_failed: .*connection refused`)
		require.Len(t, warn.FindAllString(log, -1), 1, "one warning when the refused service starts failing, at level W!, in:\n%s", log)
		require.NotRegexp(t, `E! \[inputs\.execd\] stderr:`, log, "our log lines reached Telegraf without their level")
		require.NotRegexp(t, `(?m)^\S+ E! `, logRunning, "Telegraf logged errors while running")
		// At shutdown Telegraf 1.37's execd (internal/process cmdWait) calls
		// exec.Cmd.Wait while its stdout/stderr readers may still be reading,
		// so now and then it logs "read |0: file already closed" for them
		// after our binary exited cleanly. Those two lines are Telegraf's race;
		// any other error at shutdown fails.
		race := regexp.MustCompile(`^\S+ E! \[inputs\.execd\] Error in plugin: (error reading stderr: )?read \|0: file already closed$`)
		for _, line := range strings.Split(strings.TrimPrefix(log, logRunning), "\n") {
			if strings.Contains(line, " E! ") && !race.MatchString(line) {
				t.Errorf("Telegraf logged an error at shutdown: %s", line)
			}
		}
	})

	t.Run("every dashboard query parses and returns data", func(t *testing.T) {
		checkDashboardQueries(t, e)
	})

	t.Run("the README's InfluxQL alert queries: true and false", func(t *testing.T) {
		checkInfluxAlerts(t, e)
	})

	// Everything stopped and removed: no process, no temp dir.
	e.stop(t)
	require.Empty(t, e.leftovers(), "processes left behind")
	require.NoError(t, os.RemoveAll(e.dir))
	_, err := os.Stat(e.dir)
	require.True(t, os.IsNotExist(err), "temp dir %s left behind", e.dir)
}

// rows returns every stored metric of a service, oldest first, as
// column → value (tags and fields; a field the metric lacks is nil).
func (e *env) rows(t *testing.T, service string) []map[string]any {
	t.Helper()
	s := e.query(t, `SELECT * FROM "service_latency" WHERE "service" = '`+service+`' ORDER BY time ASC`)
	require.Len(t, s, 1, "service %s", service)
	return s[0].rows()
}

// fieldTypes is what the plugin README's Metrics section says of each
// field of measurement service_latency, as InfluxDB names the types.
type fieldTypes struct {
	exact    map[string]string
	patterns map[*regexp.Regexp]string // latency_p50 … → latency_p<N>
}

func (ft fieldTypes) lookup(field string) (string, bool) {
	if typ, ok := ft.exact[field]; ok {
		return typ, true
	}
	for re, typ := range ft.patterns {
		if re.MatchString(field) {
			return typ, true
		}
	}
	return "", false
}

// pluginReadmeSection is plugins/inputs/service_latency/README.md from the
// line that starts with heading to the next "## " heading.
func pluginReadmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "plugins", "inputs", "service_latency", "README.md"))
	require.NoError(t, err)
	s := string(b)
	i := strings.Index(s, "\n"+heading)
	require.GreaterOrEqual(t, i, 0, "the plugin README has no %q", heading)
	s = s[i+1:]
	if j := strings.Index(s[len(heading):], "\n## "); j >= 0 {
		s = s[:len(heading)+j]
	}
	return s
}

// readmeFieldTypes reads list items like
// "- latency_min, latency_max (float, s): ..." from the service_latency
// part of plugins/inputs/service_latency/README.md's Metrics section.
func readmeFieldTypes(t *testing.T) fieldTypes {
	t.Helper()
	sec := pluginReadmeSection(t, "## Metrics")
	if end := strings.Index(sec, "- service_latency_histogram"); end >= 0 {
		sec = sec[:end]
	}
	types := map[string]string{"float": "float", "int": "integer", "integer": "integer", "string": "string", "bool": "boolean", "boolean": "boolean"}
	item := regexp.MustCompile("(?m)^\\s*- ([`\\w][`\\w ,…]*?) \\((float|int|integer|string|bool|boolean)\\b")
	pct := regexp.MustCompile(`^(\w+_p)\d+$`)
	ft := fieldTypes{exact: map[string]string{}, patterns: map[*regexp.Regexp]string{}}
	for _, m := range item.FindAllStringSubmatch(sec, -1) {
		for _, name := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == '…' || r == ' ' }) {
			name = strings.Trim(name, "`")
			if name == "" {
				continue
			}
			ft.exact[name] = types[m[2]]
			if p := pct.FindStringSubmatch(name); p != nil {
				ft.patterns[regexp.MustCompile(`^`+p[1]+`\d+(_\d+)?$`)] = types[m[2]]
			}
		}
	}
	require.NotEmpty(t, ft.exact, "no typed fields found in the README's Metrics section")
	return ft
}
