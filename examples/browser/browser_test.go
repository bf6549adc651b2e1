// Package browser tests the operator's page (GET / and /service/NAME of
// status_listen) in headless Chromium against the real binary: built
// here, run with status_listen on a free loopback port, gathering on
// stdin newlines like Telegraf's execd, probing loopback targets.
//
//	go test ./examples/browser/                  # skips without chromium
//	DOCS_SCREENSHOT=1 go test ./examples/browser/ # also rewrites docs/operator-page.png
package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/browsertest"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "service_latency_browser")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "service_latency")
	build := exec.Command("go", "build", "-o", binPath, "../../cmd/service_latency")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binary:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostile is a service name that is markup, an entity, quotes and a path.
const hostile = `<img src=x onerror=alert(1)>&amp;"q'/../x`

type agent struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
	n     int
}

var listeningRE = regexp.MustCompile(`status endpoint listening on http://([^/]+)/status`)

func startAgent(t *testing.T, conf string) *agent {
	path := filepath.Join(t.TempDir(), "agent.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	cmd := exec.Command(binPath, "-config", path, "-poll_interval_disabled")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	a := &agent{t: t, cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
			if testing.Verbose() {
				t.Log("agent: " + sc.Text())
			}
		}
	}()
	select {
	case a.addr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not start its status server")
	}
	return a
}

type statusDoc struct {
	Gathers  int64 `json:"gathers"`
	Services []struct {
		Name    string         `json:"name"`
		Fields  map[string]any `json:"fields"`
		History []struct {
			Result string `json:"result"`
		} `json:"history"`
		LastError string `json:"last_error"`
	} `json:"services"`
}

func (a *agent) status() statusDoc {
	a.t.Helper()
	resp, err := http.Get("http://" + a.addr + "/status")
	require.NoError(a.t, err)
	defer resp.Body.Close()
	var d statusDoc
	require.NoError(a.t, json.NewDecoder(resp.Body).Decode(&d))
	return d
}

// gather triggers one gather (a newline on stdin) and waits for it.
func (a *agent) gather() statusDoc {
	a.t.Helper()
	a.n++
	_, err := io.WriteString(a.stdin, "\n")
	require.NoError(a.t, err)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if d := a.status(); d.Gathers >= int64(a.n) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.t.Fatalf("gather %d did not complete", a.n)
	return statusDoc{}
}

func tomlString(s string) string { return strconv.Quote(s) }

// rowState is what a row of the table shows.
type rowState struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Fails  string `json:"fails"`
	Marks  int    `json:"marks"`
	Failed int    `json:"failed"`
}

const rowsJS = `[...document.querySelectorAll('#services tbody tr[data-name]')].map(r => ({
	name: r.dataset.name, status: r.querySelector('.st').dataset.status,
	fails: r.querySelector('td[data-col=f]').textContent,
	marks: r.querySelectorAll('svg.chart g.mark').length,
	failed: r.querySelectorAll('svg.chart g.mark[data-result=fail]').length}))`

func rows(t *testing.T, ctx context.Context) map[string]rowState {
	t.Helper()
	m := map[string]rowState{}
	for _, r := range browsertest.Eval[[]rowState](t, ctx, rowsJS) {
		m[r.Name] = r
	}
	return m
}

// TestOperatorPage: the table shows every service with the right status
// as a target goes down and comes back, the filter and the sort work, the
// chart has one mark per round, the detail view's figures are /status's,
// a hostile name is text, /probe is off by default; screenshots of both
// views are real pictures.
func TestOperatorPage(t *testing.T) {
	ctx := browsertest.New(t, 1280, 800)
	var down atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		time.Sleep(2 * time.Millisecond)
		fmt.Fprintln(w, "ok")
	}))
	defer api.Close()
	var mu sync.Mutex
	n := 0
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		d := time.Duration(1+n%4) * time.Millisecond
		mu.Unlock()
		time.Sleep(d)
		fmt.Fprintln(w, "ok")
	}))
	defer web.Close()

	a := startAgent(t, `[[inputs.service_latency]]
  timeout = "2s"
  status_listen = "127.0.0.1:0"
  percentiles = [50.0, 95.0]
[[inputs.service_latency.service]]
  name = "api"
  url = "`+api.URL+`/health"
  [inputs.service_latency.service.tags]
    team = "payments"
[[inputs.service_latency.service]]
  name = "web"
  url = "`+web.URL+`/"
  samples = 3
  sample_interval = "5ms"
  [inputs.service_latency.service.tags]
    team = "frontend"
[[inputs.service_latency.service]]
  name = `+tomlString(hostile)+`
  url = "`+web.URL+`/x"
`)
	base := "http://" + a.addr
	for range 3 {
		a.gather()
	}
	down.Store(true)
	var st statusDoc
	for range 3 {
		st = a.gather()
	}
	tm := time.Now()
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/?refresh=300")))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('#services tbody tr[data-name]').length === 3`, 10*time.Second)
	t.Logf("the table of 3 services drawn in %s", time.Since(tm).Round(time.Millisecond))

	// api is down (3 failures in a row), the others up, worst first
	rs := rows(t, ctx)
	require.Len(t, rs, 3)
	require.Equal(t, "down", rs["api"].Status)
	require.Equal(t, "3", rs["api"].Fails)
	require.Equal(t, "up", rs["web"].Status)
	require.Equal(t, "0", rs["web"].Fails)
	require.Equal(t, "up", rs[hostile].Status)
	require.Equal(t, "api", browsertest.Eval[string](t, ctx, `document.querySelector('#services tbody tr').dataset.name`), "worst first")
	for _, sv := range st.Services {
		require.Equal(t, len(sv.History), rs[sv.Name].Marks, "one mark per round: %s", sv.Name)
		failed := 0
		for _, h := range sv.History {
			if h.Result != "success" {
				failed++
			}
		}
		require.Equal(t, failed, rs[sv.Name].Failed, sv.Name)
	}
	require.Equal(t, 6, rs["api"].Marks)
	require.Equal(t, 3, rs["api"].Failed)
	require.Contains(t, browsertest.Eval[string](t, ctx, `document.querySelector('tr[data-name=api] td.err').textContent`), "503")
	// the smoke of web's rounds (samples = 3): a band per round seen
	require.Positive(t, browsertest.Eval[int](t, ctx, `document.querySelector('tr[data-name=web] svg.chart').querySelectorAll('rect.smoke').length`))
	// the hostile name is text
	require.Equal(t, 0, browsertest.Eval[int](t, ctx, `document.querySelectorAll('img').length`))
	require.Equal(t, hostile, browsertest.Eval[string](t, ctx, `[...document.querySelectorAll('#services tbody tr a')].find(a => a.textContent.startsWith('<')).textContent`))
	dir := t.TempDir()
	if d := os.Getenv("SCREENSHOT_DIR"); d != "" {
		dir = d
	}
	png := browsertest.Screenshot(t, ctx, dir, "table-down.png")

	// it comes back: the table follows without a reload
	down.Store(false)
	a.gather()
	a.gather()
	browsertest.WaitJS(t, ctx, `document.body.dataset.gathers === "8"`, 10*time.Second)
	rs = rows(t, ctx)
	require.Equal(t, "up", rs["api"].Status)
	require.Equal(t, "0", rs["api"].Fails)
	require.Equal(t, 8, rs["api"].Marks)
	require.Equal(t, 3, rs["api"].Failed)

	// filter by tag, by name; sort by a column
	require.NoError(t, chromedp.Do(ctx, chromedp.SendKeys(`#filter`, "team=front")))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('#services tbody tr[data-name]').length === 1`, 5*time.Second)
	require.Equal(t, "web", browsertest.Eval[string](t, ctx, `document.querySelector('#services tbody tr').dataset.name`))
	require.NoError(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('filter').value = ''`), chromedp.SendKeys(`#filter`, "AP")))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('#services tbody tr[data-name]').length === 1 && document.querySelector('#services tbody tr').dataset.name === 'api'`, 5*time.Second)
	require.NoError(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('filter').value = ''; document.getElementById('filter').dispatchEvent(new Event('input'))`)))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('#services tbody tr[data-name]').length === 3`, 5*time.Second)
	// keyboard: the Service header is a button; Enter sorts by name
	require.NoError(t, chromedp.Do(ctx, chromedp.Focus(`th[data-key=n] button`), chromedp.KeyEvent("\r")))
	browsertest.WaitJS(t, ctx, `document.querySelector('th[data-key=n]').getAttribute('aria-sort') === 'ascending'`, 5*time.Second)
	names := browsertest.Eval[[]string](t, ctx, `[...document.querySelectorAll('#services tbody tr[data-name]')].map(r => r.dataset.name)`)
	require.Equal(t, []string{hostile, "api", "web"}, names)
	require.NoError(t, chromedp.Do(ctx, chromedp.KeyEvent("\r")))
	browsertest.WaitJS(t, ctx, `document.querySelector('th[data-key=n]').getAttribute('aria-sort') === 'descending'`, 5*time.Second)
	names = browsertest.Eval[[]string](t, ctx, `[...document.querySelectorAll('#services tbody tr[data-name]')].map(r => r.dataset.name)`)
	require.Equal(t, []string{"web", "api", hostile}, names)
	// the last 20 results of a row, on demand
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(`tr[data-name=api] button.more`)))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('tr.sub table.history tbody tr').length === 8`, 5*time.Second)

	// the detail view: its figures are /status's
	st = a.status()
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/service/web?refresh=300")))
	browsertest.WaitJS(t, ctx, `document.querySelectorAll('#figures dd').length > 5 && document.querySelector('#chart svg')`, 10*time.Second)
	st = a.status() // the page and this read the same gather (no gather ran since)
	var web0 map[string]any
	for _, sv := range st.Services {
		if sv.Name == "web" {
			web0 = sv.Fields
		}
	}
	type shown struct {
		Field string `json:"field"`
		Value string `json:"value"`
	}
	figs := browsertest.Eval[[]shown](t, ctx, `[...document.querySelectorAll('#figures dd[data-field], #fields td[data-field], #phases li[data-field]')].map(d => ({field: d.dataset.field, value: d.dataset.value}))`)
	checked := map[string]bool{}
	for _, f := range figs {
		want, ok := web0[f.Field]
		if !ok {
			continue // status, last_success, …: not fields
		}
		switch w := want.(type) {
		case float64:
			got, err := strconv.ParseFloat(f.Value, 64)
			require.NoError(t, err, f.Field)
			require.Equal(t, w, got, f.Field)
		default:
			require.Equal(t, fmt.Sprint(w), f.Value, f.Field)
		}
		checked[f.Field] = true
	}
	for k := range web0 {
		require.True(t, checked[k], "the field %s is shown", k)
	}
	for _, k := range []string{"latency", "latency_avg", "latency_p95", "availability", "consecutive_failures", "round_min", "round_max", "tcp_connect", "time_to_first_byte"} {
		require.True(t, checked[k], k)
	}
	require.Equal(t, 8, browsertest.Eval[int](t, ctx, `document.querySelectorAll('#chart svg g.mark').length`), "one mark per round")
	require.Equal(t, 8, browsertest.Eval[int](t, ctx, `document.querySelectorAll('#results tbody tr').length`))
	require.GreaterOrEqual(t, browsertest.Eval[int](t, ctx, `document.querySelectorAll('#phases .phases div').length`), 2)
	require.NotEmpty(t, browsertest.Eval[string](t, ctx, `document.getElementById('probe-off').textContent`), "/probe is off by default")
	browsertest.Screenshot(t, ctx, dir, "detail-web.png")
	resp, err := http.Get(base + "/probe/web")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// the hostile name's own view
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/service/"+url.PathEscape(hostile))))
	browsertest.WaitJS(t, ctx, `document.getElementById('name')`, 10*time.Second)
	require.Equal(t, hostile, browsertest.Eval[string](t, ctx, `document.getElementById('name').textContent`))
	require.Equal(t, 0, browsertest.Eval[int](t, ctx, `document.querySelectorAll('img').length`))
	require.True(t, strings.HasSuffix(browsertest.Eval[string](t, ctx, `document.title`), "— service_latency"))

	if os.Getenv("DOCS_SCREENSHOT") != "" {
		require.NoError(t, os.WriteFile("../../docs/operator-page.png", png, 0o644))
	}
}
