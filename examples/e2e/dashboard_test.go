package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Schema     int     `json:"schemaVersion"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Type       string          `json:"type"`
			Name       string          `json:"name"`
			Query      json.RawMessage `json:"query"`
			Datasource *dsRef          `json:"datasource"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
		} `json:"list"`
	} `json:"templating"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource *dsRef                    `json:"datasource"`
	Repeat     string                    `json:"repeat"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Panels     []panel                   `json:"panels"` // a collapsed row's panels
	Targets    []struct {
		RefID        string `json:"refId"`
		RawQuery     bool   `json:"rawQuery"`
		Query        string `json:"query"`
		ResultFormat string `json:"resultFormat"`
		Datasource   *dsRef `json:"datasource"`
	} `json:"targets"`
}

// panelQuery is one InfluxQL query of the dashboard, with where it is.
type panelQuery struct {
	panel, refID, query string
}

func loadDashboard(t *testing.T) (dashboard, []panel) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "grafana", "service_latency.json"))
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, all
}

// dashboardQueries returns every panel query; each must be raw InfluxQL so
// that it can be run as it stands.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	_, panels := loadDashboard(t)
	var qs []panelQuery
	for _, p := range panels {
		for _, tg := range p.Targets {
			require.True(t, tg.RawQuery, "panel %q target %s: use a raw InfluxQL query (the test runs it)", p.Title, tg.RefID)
			require.NotEmpty(t, strings.TrimSpace(tg.Query), "panel %q target %s", p.Title, tg.RefID)
			qs = append(qs, panelQuery{p.Title, tg.RefID, tg.Query})
		}
	}
	return qs
}

// TestDashboardJSON checks the dashboard is an importable Grafana dashboard
// for an InfluxDB (InfluxQL) data source with the service variable, and
// that its panels cover what users look at.
func TestDashboardJSON(t *testing.T) {
	d, panels := loadDashboard(t)
	require.NotEmpty(t, d.Title)
	require.NotEmpty(t, d.UID)
	require.GreaterOrEqual(t, d.Schema, 36, "schemaVersion: datasource references by uid")

	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	require.Contains(t, vars, "datasource", "a datasource variable, so the dashboard imports onto any InfluxDB data source")
	dsVar := d.Templating.List[vars["datasource"]]
	require.Equal(t, "datasource", dsVar.Type)
	require.JSONEq(t, `"influxdb"`, string(dsVar.Query))
	require.Contains(t, vars, "service")
	svc := d.Templating.List[vars["service"]]
	require.Equal(t, "query", svc.Type)
	require.True(t, svc.Multi && svc.IncludeAll, "service: multi-value with All")
	require.Equal(t, &dsRef{"influxdb", "${datasource}"}, svc.Datasource)
	var svcQuery string
	require.NoError(t, json.Unmarshal(svc.Query, &svcQuery))
	require.Regexp(t, `(?i)^SHOW TAG VALUES FROM "service_latency" WITH KEY = "service"$`, svcQuery)

	ids := map[int]string{}
	types := map[string]bool{}
	for _, p := range panels {
		require.NotZero(t, p.ID, "panel %q has no id", p.Title)
		require.NotContains(t, ids, p.ID, "panel id %d of %q already used by %q", p.ID, p.Title, ids[p.ID])
		ids[p.ID] = p.Title
		require.NotNil(t, p.GridPos, "panel %q has no gridPos", p.Title)
		require.True(t, p.GridPos.W > 0 && p.GridPos.X+p.GridPos.W <= 24 && p.GridPos.H > 0, "panel %q: gridPos %+v", p.Title, *p.GridPos)
		types[p.Type] = true
		if p.Type == "row" {
			continue
		}
		require.Equal(t, &dsRef{"influxdb", "${datasource}"}, p.Datasource, "panel %q data source", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			require.Equal(t, &dsRef{"influxdb", "${datasource}"}, tg.Datasource, "panel %q target data source", p.Title)
			require.Contains(t, tg.Query, "$timeFilter", "panel %q: the query must follow the dashboard's time range", p.Title)
			require.Regexp(t, `"service" =~ /\^\$service\$/`, tg.Query, "panel %q: the query must follow the service variable", p.Title)
		}
		if p.Repeat != "" {
			require.Equal(t, "service", p.Repeat, "panel %q repeats by an unknown variable", p.Title)
			require.Contains(t, p.Title, "$service", "a repeated panel names its service")
		}
	}
	require.True(t, types["table"], "a table of all services")

	// The figures the issue asks for are all charted.
	var all strings.Builder
	for _, q := range dashboardQueries(t) {
		all.WriteString(q.query + "\n")
	}
	for _, f := range []string{"latency", "latency_avg", "latency_ewma", "latency_p95", "availability", "failures",
		"consecutive_failures", "dns_lookup", "tcp_connect", "tls_handshake", "time_to_first_byte", "body_transfer",
		"tls_cert_expiry", "result_code"} {
		require.Contains(t, all.String(), `"`+f+`"`, "no panel charts %s", f)
	}
}

// checkDashboardQueries runs every query of the dashboard, with Grafana's
// variables substituted as Grafana does for "All", against the e2e
// InfluxDB. Each must parse and return data in every column: a field the
// plugin does not emit gives no series, or a column of nulls.
func checkDashboardQueries(t *testing.T, e *env) {
	// Grafana: $timeFilter → time >= <from>ms and time <= <to>ms, $__interval
	// → the panel's interval, a multi-value variable in a regex → (a|b|c).
	all := append([]string(nil), services...)
	sort.Strings(all)
	repl := strings.NewReplacer(
		"$timeFilter", "time >= now() - 1h and time <= now() + 1m",
		"$__interval", "1s",
		"$service", "("+strings.Join(all, "|")+")",
	)
	leftover := regexp.MustCompile(`\$\w+|\[\[\w+\]\]|\$\{\w+`)

	// The service variable's own query lists the services.
	d, _ := loadDashboard(t)
	for _, v := range d.Templating.List {
		if v.Name != "service" {
			continue
		}
		var q string
		require.NoError(t, json.Unmarshal(v.Query, &q))
		var got []string
		for _, s := range e.query(t, q) {
			for _, r := range s.rows() {
				got = append(got, r["value"].(string))
			}
		}
		sort.Strings(got)
		require.Equal(t, all, got, "the service variable's values")
	}

	qs := dashboardQueries(t)
	require.NotEmpty(t, qs)
	for _, pq := range qs {
		q := repl.Replace(pq.query)
		require.NotRegexp(t, leftover, q, "panel %q: a variable the test does not know", pq.panel)
		ss, err := e.queryErr(q)
		require.NoError(t, err, "panel %q target %s: %s", pq.panel, pq.refID, q)
		require.NotEmpty(t, ss, "panel %q target %s returned no series: %s", pq.panel, pq.refID, q)
		for col := range ss[0].Columns {
			if ss[0].Columns[col] == "time" {
				continue
			}
			found := false
			for _, s := range ss {
				for _, v := range s.Values {
					if col < len(v) && v[col] != nil {
						found = true
					}
				}
			}
			require.True(t, found, "panel %q target %s: column %q is null in every row: %s", pq.panel, pq.refID, ss[0].Columns[col], q)
		}
	}
}
