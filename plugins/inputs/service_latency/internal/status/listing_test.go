package status

// GET /status?service=, ?limit=, ?after= (listing.go) over loopback.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// statusAt GETs /status with query (raw, already escaped) and decodes it.
func statusAt(t testing.TB, s *Server, query string) (statusJSON, string) {
	t.Helper()
	code, body := httpGet(t, "http://"+s.Addr()+"/status"+query)
	require.Equal(t, http.StatusOK, code, "%s: %s", query, body)
	var doc statusJSON
	require.NoError(t, json.Unmarshal([]byte(body), &doc), body)
	return doc, body
}

// names are the names of a document's services.
func (d *statusJSON) names() []string {
	out := make([]string, len(d.Services))
	for i, sv := range d.Services {
		out[i] = sv.Name
	}
	return out
}

// namesOf are the names of svcs[from:to].
func namesOf(svcs []gather.Service, from, to int) []string {
	out := make([]string, 0, to-from)
	for _, sv := range svcs[from:to] {
		out = append(out, sv.Name)
	}
	return out
}

// jsonError is the body of a refused /status request.
func jsonError(t *testing.T, s *Server, query string, want int) string {
	t.Helper()
	resp, body := get(t, "http://"+s.Addr()+"/status"+query)
	require.Equal(t, want, resp.StatusCode, "%s: %s", query, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), query)
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.NotEmpty(t, e.Error, body)
	return e.Error
}

// Bad parameters get 400 and a message that says what is wrong; nothing
// is rendered for them.
func TestStatusBadParameters(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.Publish(report(t0, synthServices(30, t0)...))
	for query, want := range map[string]string{
		"?limit=0":                    `limit must be a whole number from 1 to 10000, not "0"`,
		"?limit=-1":                   `not "-1"`,
		"?limit=%2B5":                 `not "+5"`,
		"?limit=1.5":                  `not "1.5"`,
		"?limit=ten":                  `not "ten"`,
		"?limit=":                     `not ""`,
		"?limit=10001":                `not "10001"`,
		"?limit=99999999999999999999": `not "99999999999999999999"`,
		"?limit=5&limit=6":            "limit= is given 2 times; give it once",
		"?service=":                   "service= needs a service name",
		"?after=":                     "after= needs a service name: the previous page's next_after",
		"?service=svc-0001&limit=5":   "service= selects one service: it takes neither limit= nor after=",
		"?service=svc-0001&after=x":   "service= selects one service",
		"?page=2":                     `unknown parameter "page": /status takes service=NAME, or limit=N (1 to 10000) and after=NAME`,
		"?limt=10":                    `unknown parameter "limt"`,
		"?limit=%zz":                  "malformed query string",
	} {
		require.Contains(t, jsonError(t, s, query, http.StatusBadRequest), want, query)
	}
	require.Zero(t, s.renders.Load(), "a refused request renders nothing")
}

// ?service=NAME is that service alone, its entry byte for byte the one a
// page holds; any name, escaped; unknown: 404 and a JSON error.
func TestStatusOneService(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.SetClock(func() time.Time { return t0 }) // "health", and so the length, the same in every body
	svcs := synthServices(30, t0)
	odd := []string{hostile, "a b+c&d=e", "naïve ✓", "svc-0002/../x"}
	for i, name := range odd {
		svcs[10+i].Name = name
	}
	svcs[20].Error = "connection_failed: redis://probe:hunter2@db:6379 refused"
	svcs[20].History = []gather.HistoryEntry{{At: t0, Result: "connection_failed", Error: "connection_failed: https://u:hunter2@h/x"}}
	s.Publish(report(t0, svcs...))
	_, page := statusAt(t, s, "")
	var entries struct {
		Services []json.RawMessage `json:"services"`
	}
	require.NoError(t, json.Unmarshal([]byte(page), &entries))
	require.Len(t, entries.Services, 30)

	for _, i := range []int{0, 10, 11, 12, 13, 20, 29} {
		doc, body := statusAt(t, s, "?service="+url.QueryEscape(svcs[i].Name))
		require.Equal(t, []string{svcs[i].Name}, doc.names())
		require.Equal(t, 30, doc.ServicesTotal)
		require.True(t, doc.ServicesTruncated, "one of 30")
		require.Nil(t, doc.NextAfter, "no cursor for one service")
		require.Equal(t, int64(1), doc.Gathers)
		require.NotNil(t, doc.LastGather, "the frame is the same")
		require.NotEmpty(t, doc.Internal)
		var one struct {
			Services []json.RawMessage `json:"services"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &one))
		require.Equal(t, string(entries.Services[i]), string(one.Services[0]), svcs[i].Name)
		require.NotContains(t, body, "hunter2")
	}
	doc, _ := statusAt(t, s, "?service=svc-0020")
	require.Equal(t, "connection_failed: redis://probe@db:6379 refused", doc.Services[0].LastError)

	msg := jsonError(t, s, "?service=nope", http.StatusNotFound)
	require.Equal(t, `no such service: "nope"`, msg)
	// the name comes back as JSON text, not markup
	resp, body := get(t, "http://"+s.Addr()+"/status?service="+url.QueryEscape("<b>x</b>"))
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.NotContains(t, body, "<b>")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))

	// HEAD: the length of the GET
	req, err := http.NewRequest(http.MethodHead, "http://"+s.Addr()+"/status?service=svc-0001", nil)
	require.NoError(t, err)
	hr, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	hr.Body.Close()
	_, got := statusAt(t, s, "?service=svc-0001")
	require.EqualValues(t, len(got), hr.ContentLength)
}

// Pages in config order: limit= of them, next_after the cursor of the
// next, null on the last; the first page is the default's bytes and its
// render; an unknown cursor is a 404 that says to start again.
func TestStatusPages(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.SetClock(func() time.Time { return t0 }) // the same "health" in every body
	svcs := synthServices(25, t0)
	svcs[7].Name = hostile // a cursor that needs escaping
	s.Publish(report(t0, svcs...))

	doc, def := statusAt(t, s, "")
	require.Equal(t, namesOf(svcs, 0, 25), doc.names(), "everything fits the default page")
	require.False(t, doc.ServicesTruncated)
	require.Equal(t, 25, doc.ServicesTotal)
	require.Nil(t, doc.NextAfter)
	require.Contains(t, def, "\"next_after\": null,\n  \"services\": [")
	_, same := statusAt(t, s, fmt.Sprintf("?limit=%d", DefaultLimit))
	require.Equal(t, def, same, "?limit=DefaultLimit is the default page")
	require.Equal(t, int64(1), s.renders.Load(), "and shares its render")

	var got []string
	query := "?limit=10"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 3)
		doc, _ = statusAt(t, s, query)
		require.True(t, doc.ServicesTruncated)
		require.Equal(t, 25, doc.ServicesTotal)
		got = append(got, doc.names()...)
		if doc.NextAfter == nil {
			require.Len(t, doc.Services, 5, "the last page holds the rest")
			break
		}
		require.Len(t, doc.Services, 10)
		require.Equal(t, doc.Services[9].Name, *doc.NextAfter)
		query = "?limit=10&after=" + url.QueryEscape(*doc.NextAfter)
	}
	require.Equal(t, namesOf(svcs, 0, 25), got, "every service once, in config order")

	doc, _ = statusAt(t, s, "?after="+url.QueryEscape(hostile))
	require.Equal(t, namesOf(svcs, 8, 25), doc.names(), "after= alone: the default limit")
	doc, _ = statusAt(t, s, "?after=svc-0024")
	require.Empty(t, doc.Services, "after the last service: an empty last page")
	require.NotNil(t, doc.Services, `"services": [] as before`)
	require.Nil(t, doc.NextAfter)
	doc, _ = statusAt(t, s, "?limit=1&after=svc-0023")
	require.Equal(t, []string{"svc-0024"}, doc.names())
	require.Nil(t, doc.NextAfter, "the page that ends at the last service is the last")

	msg := jsonError(t, s, "?after=gone&limit=10", http.StatusNotFound)
	require.Equal(t, `after="gone": no such service (the configuration changed since the previous page?): start again without after=`, msg)

	// no gather yet: an empty first page, no cursor
	empty, _ := startServer(t, Settings{})
	doc, body := statusAt(t, empty, "?limit=5")
	require.Empty(t, doc.Services)
	require.Zero(t, doc.ServicesTotal)
	require.False(t, doc.ServicesTruncated)
	require.Nil(t, doc.NextAfter)
	require.True(t, strings.HasSuffix(body, "\"services\": []\n}\n"), body)
	jsonError(t, empty, "?service=svc-0000", http.StatusNotFound)
}

// Pages render one at a time: while one renders, another page waits (and
// gives up with its client), the default page and ?service= do not wait.
func TestPageRendersOneAtATime(t *testing.T) {
	s, _ := startServer(t, Settings{})
	s.Publish(report(t0, synthServices(30, t0)...))
	s.pageRender <- struct{}{} // a page render in progress
	impatient := &http.Client{Timeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := impatient.Get("http://" + s.Addr() + "/status?limit=5")
	require.Error(t, err, "the page waited for the render in progress")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	for _, q := range []string{"", "?service=svc-0007"} {
		doc, _ := statusAt(t, s, q)
		require.NotEmpty(t, doc.Services, "%q is not held up by a page render", q)
	}
	<-s.pageRender
	doc, _ := statusAt(t, s, "?limit=5")
	require.Len(t, doc.Services, 5)
	require.Empty(t, s.pageRender, "the token is given back")
	require.Eventually(t, func() bool { return len(s.slots) == 0 }, 5*time.Second, 10*time.Millisecond, "the waiting request gave its slot back")
}
