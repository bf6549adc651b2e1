package e2e

import (
	"encoding/json"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// promPanel is the part of a Grafana panel with Prometheus targets the
// tests read.
type promPanel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource *dsRef                    `json:"datasource"`
	Repeat     string                    `json:"repeat"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Instant    bool   `json:"instant"`
		Range      bool   `json:"range"`
		Datasource *dsRef `json:"datasource"`
	} `json:"targets"`
}

type promDashboard struct {
	Title      string      `json:"title"`
	UID        string      `json:"uid"`
	Schema     int         `json:"schemaVersion"`
	Panels     []promPanel `json:"panels"`
	Templating struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *dsRef          `json:"datasource"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
		} `json:"list"`
	} `json:"templating"`
}

func loadPromDashboard(t *testing.T) promDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "prometheus", "grafana", "service_latency.json"))
	require.NoError(t, err)
	var d promDashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return d
}

var promDS = &dsRef{"prometheus", "${datasource}"}

// TestPromDashboardJSON checks the Prometheus dashboard is importable onto
// any Prometheus data source, follows the service variable, and has the
// panels of the InfluxDB dashboard (examples/grafana).
func TestPromDashboardJSON(t *testing.T) {
	d := loadPromDashboard(t)
	require.NotEmpty(t, d.Title)
	require.NotEmpty(t, d.UID)
	require.GreaterOrEqual(t, d.Schema, 36)
	influx, influxPanels := loadDashboard(t)
	require.NotEqual(t, influx.UID, d.UID, "both dashboards can be imported side by side")

	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	require.Contains(t, vars, "datasource")
	ds := d.Templating.List[vars["datasource"]]
	require.Equal(t, "datasource", ds.Type)
	require.JSONEq(t, `"prometheus"`, string(ds.Query))
	require.Contains(t, vars, "service")
	svc := d.Templating.List[vars["service"]]
	require.Equal(t, "query", svc.Type)
	require.True(t, svc.Multi && svc.IncludeAll)
	require.Equal(t, promDS, svc.Datasource)
	require.Equal(t, "label_values(service_latency_probes, service)", svc.Definition)

	var want, got []string
	for _, p := range influxPanels {
		want = append(want, p.Type+" "+p.Title)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		got = append(got, p.Type+" "+p.Title)
		require.NotZero(t, p.ID)
		require.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		require.NotNil(t, p.GridPos, p.Title)
		if p.Type == "row" {
			continue
		}
		require.Equal(t, promDS, p.Datasource, "panel %q", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q", p.Title)
		for _, tg := range p.Targets {
			require.Equal(t, promDS, tg.Datasource, "panel %q target %s", p.Title, tg.RefID)
			require.NotEmpty(t, strings.TrimSpace(tg.Expr), "panel %q target %s", p.Title, tg.RefID)
			require.Contains(t, tg.Expr, `service=~"$service"`, "panel %q target %s follows the service variable", p.Title, tg.RefID)
			require.NotEqual(t, tg.Instant, tg.Range, "panel %q target %s: instant or range", p.Title, tg.RefID)
		}
		if p.Repeat != "" {
			require.Equal(t, "service", p.Repeat)
			require.Contains(t, p.Title, "$service")
		}
	}
	require.Equal(t, want, got, "the panels of examples/grafana/service_latency.json, in its order")
}

// checkPromDashboard runs every query of the Prometheus dashboard against
// the e2e Prometheus, with Grafana's variables substituted as Grafana does
// for "All": each must run without error or warning and return data.
func checkPromDashboard(t *testing.T, e *promEnv) {
	d := loadPromDashboard(t)
	all := append([]string(nil), e.services...)
	sort.Strings(all)
	for _, v := range d.Templating.List {
		if v.Name != "service" {
			continue
		}
		m := regexp.MustCompile(`^label_values\((\w+), (\w+)\)$`).FindStringSubmatch(v.Definition)
		require.NotNil(t, m, v.Definition)
		var got []string
		require.NoError(t, e.api("/api/v1/label/"+m[2]+"/values", url.Values{"match[]": {m[1]}}, &got))
		sort.Strings(got)
		require.Equal(t, all, got, "the service variable's values")
	}

	// Grafana: a multi-value variable in a regex matcher becomes (a|b|c);
	// $__rate_interval is 4 x the scrape interval it knows (here the 1s
	// Telegraf interval), $__interval the step.
	repl := strings.NewReplacer(
		"$service", "("+strings.Join(all, "|")+")",
		"$__rate_interval", "4s",
		"$__interval", "1s",
	)
	leftover := regexp.MustCompile(`\$\w+|\[\[\w+\]\]|\$\{\w+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := repl.Replace(tg.Expr)
			require.NotRegexp(t, leftover, q, "panel %q: a variable the test does not know", p.Title)
			var r promResult
			if tg.Instant {
				require.NoError(t, e.api("/api/v1/query", url.Values{"query": {q}}, &r), "panel %q target %s: %s", p.Title, tg.RefID, q)
				require.Equal(t, "vector", r.ResultType)
			} else {
				now := time.Now()
				require.NoError(t, e.api("/api/v1/query_range", url.Values{
					"query": {q},
					"start": {strconv.FormatInt(now.Add(-30*time.Second).Unix(), 10)},
					"end":   {strconv.FormatInt(now.Unix(), 10)},
					"step":  {"1"},
				}, &r), "panel %q target %s: %s", p.Title, tg.RefID, q)
				require.Equal(t, "matrix", r.ResultType)
			}
			require.NotEmpty(t, r.Result, "panel %q target %s returned no series: %s", p.Title, tg.RefID, q)
			found := false
			for _, s := range r.Result {
				vals := s.Values
				if tg.Instant {
					vals = [][2]any{s.Value}
				}
				for _, v := range vals {
					if f := sampleValue(t, v); !math.IsNaN(f) {
						found = true
					}
				}
			}
			require.True(t, found, "panel %q target %s: only NaN: %s", p.Title, tg.RefID, q)
			n++
		}
	}
	t.Logf("%d dashboard queries ran", n)
}
