package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readmeAlertQueries returns the InfluxQL alert queries of the plugin
// README's "Alerting" subsection: rule name → query.
func readmeAlertQueries(t *testing.T) map[string]string {
	t.Helper()
	s := pluginReadmeSection(t, "### Alerting\n")
	re := regexp.MustCompile("(?m)^-- (\\w+): .*\n(SELECT .*)$")
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(s, -1) {
		require.NotContains(t, out, m[1])
		out[m[1]] = m[2]
	}
	require.NotEmpty(t, out, "no query in the README's Alerting subsection")
	return out
}

// checkInfluxAlerts writes, into a database of its own, ten minutes of
// metrics that make each alert query true for some services (or prober
// hosts) and false for others, and runs every query of the README.
func checkInfluxAlerts(t *testing.T, e *env) {
	const db = "alerts"
	e.query(t, "CREATE DATABASE "+db)
	now := time.Now().Truncate(time.Second)
	var lp bytes.Buffer
	// 61 points 10s apart, the last one now; f gives the fields of point i
	// (i = 0 is 10 minutes ago) or "" for none.
	series := func(measurement, tag string, f func(i int) string) {
		for i := 0; i <= 60; i++ {
			if fields := f(i); fields != "" {
				fmt.Fprintf(&lp, "%s,%s %s %d\n", measurement, tag, fields, now.Add(time.Duration(i-60)*10*time.Second).UnixNano())
			}
		}
	}
	svc := func(name string, f func(i int) (status int, availability float64, extra string)) {
		series("service_latency", "service="+name, func(i int) string {
			st, av, extra := f(i)
			return fmt.Sprintf("status_code=%di,availability=%g,probes=%di%s", st, av, i+1, extra)
		})
	}
	const day = 86400
	svc("up", func(int) (int, float64, string) { return 1, 1, "" })
	svc("down", func(i int) (int, float64, string) { // failing for 6 minutes, down for the last 2
		switch {
		case i >= 48:
			return 3, 0.5, ""
		case i >= 24:
			return 1, 0.9, ""
		}
		return 1, 1, ""
	})
	svc("flap", func(i int) (int, float64, string) { // down 30s, up 20s, ...
		if i%5 < 3 {
			return 3, 0.995, ""
		}
		return 1, 0.995, ""
	})
	svc("degraded", func(i int) (int, float64, string) { // degraded for the last 6 minutes
		if i >= 24 {
			return 2, 1, ""
		}
		return 1, 1, ""
	})
	svc("recovering", func(i int) (int, float64, string) { // degraded until a minute ago
		if i < 54 {
			return 2, 1, ""
		}
		return 1, 1, ""
	})
	svc("lowavail", func(int) (int, float64, string) { return 1, 0.95, "" })
	svc("recovered", func(i int) (int, float64, string) { // 50% until 4 minutes ago
		if i < 36 {
			return 1, 0.5, ""
		}
		return 1, 1, ""
	})
	svc("certwarn", func(i int) (int, float64, string) { return 1, 1, fmt.Sprintf(",tls_cert_expiry=%d", 10*day-10*(i-60)) })
	svc("certcrit", func(i int) (int, float64, string) { return 1, 1, fmt.Sprintf(",tls_cert_expiry=%d", 2*day-10*(i-60)) })
	svc("certexpired", func(int) (int, float64, string) { return 1, 1, ",tls_cert_expiry=-3600" })
	svc("certok", func(int) (int, float64, string) { return 1, 1, fmt.Sprintf(",tls_cert_expiry=%d", 60*day) })
	series("service_latency", "service=stopped", func(i int) string { // nothing for the last 2 minutes
		if i > 48 {
			return ""
		}
		return fmt.Sprintf("status_code=1i,availability=1,probes=%di", i+1)
	})
	internal := func(host string, f func(i int) string) { series("service_latency_internal", "host="+host, f) }
	internal("ok", func(int) string { return "gather_time=1.2,store_errors=0i,replay_queue=0i,store_dropped=0i" })
	internal("slow", func(int) string { return "gather_time=9.8,store_errors=0i,replay_queue=0i,store_dropped=0i" })
	internal("spiky", func(i int) string {
		return fmt.Sprintf("gather_time=%g,store_errors=0i,replay_queue=0i,store_dropped=0i", []float64{9.8, 1}[i%2])
	})
	internal("failing", func(i int) string {
		return fmt.Sprintf("gather_time=1,store_errors=%di,replay_queue=0i,store_dropped=0i", i)
	})
	internal("restarted", func(i int) string { // the counter reset by a restart 3 minutes ago
		n := 5
		if i >= 42 {
			n = 0
		}
		return fmt.Sprintf("gather_time=1,store_errors=%di,replay_queue=0i,store_dropped=0i", n)
	})
	internal("queueing", func(i int) string {
		return fmt.Sprintf("gather_time=1,store_errors=0i,replay_queue=%di,store_dropped=0i", 10*i)
	})
	internal("draining", func(i int) string {
		return fmt.Sprintf("gather_time=1,store_errors=0i,replay_queue=%di,store_dropped=0i", 600-10*i)
	})
	internal("full", func(i int) string {
		return fmt.Sprintf("gather_time=1,store_errors=0i,replay_queue=10000i,store_dropped=%di", 10*i)
	})
	resp, err := http.Post(e.influxURL+"/write?db="+db+"&precision=ns", "text/plain", &lp)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "writing the alert data")

	want := map[string][]string{
		"ServiceLatencyServiceDown":               {"down"},
		"ServiceLatencyServiceDegraded":           {"degraded"},
		"ServiceLatencyAvailabilityLow":           {"down", "lowavail"},
		"ServiceLatencyCertificateExpiring":       {"certwarn"},
		"ServiceLatencyCertificateExpiryCritical": {"certcrit", "certexpired"},
		"ServiceLatencyNoData":                    {"stopped"},
		"ServiceLatencyProberSlow":                {"slow"},
		"ServiceLatencyStoreErrors":               {"failing"},
		"ServiceLatencyReplayQueueGrowing":        {"full", "queueing"},
	}
	qs := readmeAlertQueries(t)
	var names []string
	for n := range qs {
		names = append(names, n)
	}
	sort.Strings(names)
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	sort.Strings(wantNames)
	require.Equal(t, wantNames, names, "the README's alert queries")
	for _, name := range names {
		ss, err := e.queryDB(db, qs[name])
		require.NoError(t, err, "%s: %s", name, qs[name])
		var got []string
		for _, s := range ss {
			who := s.Tags["service"]
			if who == "" {
				who = s.Tags["host"]
			}
			got = append(got, who)
		}
		sort.Strings(got)
		require.Equal(t, want[name], got, "%s: %s", name, qs[name])
	}
}
