package status

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/gather"
)

// synthServices returns n services shaped like the plugin's (tags,
// state fields, percentiles, an 8-bucket histogram); every tenth fails.
func synthServices(n int, at time.Time) []gather.Service {
	les := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1", "+Inf"}
	out := make([]gather.Service, n)
	for i := range out {
		name := fmt.Sprintf("svc-%04d", i)
		ok := i%10 != 0
		s := gather.Service{
			Name: name,
			Tags: map[string]string{
				"service": name, "probe": "http", "server": fmt.Sprintf("10.0.%d.%d:443", i/250, i%250),
				"result": "success", "team": "team-" + fmt.Sprint(i%7), "region": "eu-west-1",
			},
			Fields: map[string]any{
				"result_code": int64(0), "http_response_code": int64(200), "content_length": int64(512 + i),
				"latency_count": int64(1000 + i), "latency_mean": 0.0123, "latency_stddev": 0.004,
				"latency_min": 0.001, "latency_max": 0.25, "latency_p50": 0.011, "latency_p90": 0.02,
				"latency_p99": 0.05, "latency_p999": 0.2, "availability": 0.999, "success_count": int64(999),
				"failure_count": int64(1), "consecutive_failures": int64(0), "window_seconds": 300.0,
			},
			HistogramTags: map[string]string{"service": name},
			LastSuccess:   at,
		}
		for j, le := range les {
			s.Histogram = append(s.Histogram, gather.Bucket{LE: le, Count: int64(100*j + i)})
		}
		if ok {
			s.Fields["latency"] = 0.0117
		} else {
			s.Tags["result"] = "timeout"
			s.Fields["result_code"] = int64(2)
			s.Fields["consecutive_failures"] = int64(1)
			s.LastFailure = at
			s.Error = "timeout: no answer within 1s from https://" + name + ".example.com/health"
		}
		out[i] = s
	}
	return out
}

// The document of today's plugin (status.go before the move), built
// independently from the reports, to compare the bytes.
type legacyService struct {
	Name        string            `json:"name"`
	Tags        map[string]string `json:"tags"`
	Fields      map[string]any    `json:"fields"`
	Histogram   map[string]int64  `json:"histogram,omitempty"`
	LastSuccess *time.Time        `json:"last_success"`
	LastFailure *time.Time        `json:"last_failure"`
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt *time.Time        `json:"last_error_at,omitempty"`
}

type legacyDoc struct {
	Build struct {
		Version   string    `json:"version"`
		Commit    string    `json:"commit"`
		GoVersion string    `json:"go_version"`
		StartTime time.Time `json:"start_time"`
	} `json:"build"`
	Healthy    bool   `json:"healthy"`
	Health     string `json:"health"`
	Gathers    int64  `json:"gathers"`
	LastGather *struct {
		Start           time.Time `json:"start"`
		End             time.Time `json:"end"`
		DurationSeconds float64   `json:"duration_seconds"`
		Error           string    `json:"error,omitempty"`
	} `json:"last_gather,omitempty"`
	Internal map[string]any `json:"internal,omitempty"`
	// The paging keys (listing.go).
	ServicesTotal     int             `json:"services_total"`
	ServicesTruncated bool            `json:"services_truncated"`
	NextAfter         *string         `json:"next_after"`
	Services          []legacyService `json:"services"`
}

func legacyBody(t testing.TB, healthy bool, health string, gathers int64, r *gather.Report, gerr string, errs map[string]legacyService) []byte {
	var d legacyDoc
	d.Build.Version, d.Build.Commit, d.Build.GoVersion, d.Build.StartTime = Version, Commit, runtime.Version(), processStart.UTC()
	d.Healthy, d.Health, d.Gathers = healthy, health, gathers
	d.Services = []legacyService{}
	if r != nil {
		d.LastGather = &struct {
			Start           time.Time `json:"start"`
			End             time.Time `json:"end"`
			DurationSeconds float64   `json:"duration_seconds"`
			Error           string    `json:"error,omitempty"`
		}{r.Start.UTC(), r.End.UTC(), r.End.Sub(r.Start).Seconds(), gerr}
		d.Internal = r.Internal.Fields()
		for _, s := range r.Services {
			l := legacyService{Name: s.Name, Tags: s.Tags, Fields: map[string]any{}}
			for k, v := range s.Fields {
				if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
					v = nil
				}
				l.Fields[k] = v
			}
			if len(s.Histogram) > 0 {
				l.Histogram = map[string]int64{}
				for _, b := range s.Histogram {
					l.Histogram[b.LE] = b.Count
				}
			}
			if !s.LastSuccess.IsZero() {
				u := s.LastSuccess.UTC()
				l.LastSuccess = &u
			}
			if !s.LastFailure.IsZero() {
				u := s.LastFailure.UTC()
				l.LastFailure = &u
			}
			if e, ok := errs[s.Name]; ok {
				l.LastError, l.LastErrorAt = e.LastError, e.LastErrorAt
			}
			d.Services = append(d.Services, l)
		}
		d.ServicesTotal = len(d.Services)
	}
	b, err := json.MarshalIndent(&d, "", "  ")
	require.NoError(t, err)
	return append(b, '\n')
}

// The body is byte for byte what today's plugin serves (MarshalIndent of
// the whole document), before and after gathers.
func TestDocumentBytesMatchToday(t *testing.T) {
	oldV, oldC := Version, Commit
	Version, Commit = "v1.2.3<&>", "deadbeef"
	t.Cleanup(func() { Version, Commit = oldV, oldC })
	s, _ := startServer(t, Settings{})
	clock := t0.Add(time.Hour)
	s.SetClock(func() time.Time { return clock })
	get := func() []byte {
		code, body := httpGet(t, "http://"+s.Addr()+"/status")
		require.Equal(t, http.StatusOK, code)
		return []byte(body)
	}

	require.Equal(t, string(legacyBody(t, false, "no gather has completed yet", 0, nil, "", nil)), string(get()))

	r1 := report(t0, synthServices(30, t0)...)
	r1.Services[3].Fields["latency_stddev"] = math.Inf(-1)
	r1.Services[4].Histogram = nil
	r1.Services[5].Tags = nil
	s.Publish(r1)
	r2 := report(t0.Add(10*time.Second), synthServices(30, t0.Add(10*time.Second))...)
	r2.Services[0].Error = "" // recovered: keeps its error of r1
	r2.Services[1].Error = "http: <b>bad</b> & \"quoted\" \u2028"
	s.Publish(r2)
	errs := map[string]legacyService{}
	at1, at2 := r1.Start.UTC(), r2.Start.UTC()
	for i, sv := range r2.Services {
		switch {
		case sv.Error != "":
			errs[sv.Name] = legacyService{LastError: sv.Error, LastErrorAt: &at2}
		case r1.Services[i].Error != "":
			errs[sv.Name] = legacyService{LastError: r1.Services[i].Error, LastErrorAt: &at1}
		}
	}
	ok, msg := s.cur.Load().health(clock)
	require.False(t, ok)
	require.Equal(t, string(legacyBody(t, ok, msg, 2, r2, "", errs)), string(get()))

	clock = r2.End.Add(5 * time.Second)
	ok, msg = s.cur.Load().health(clock)
	require.True(t, ok)
	require.Equal(t, string(legacyBody(t, ok, msg, 2, r2, "", errs)), string(get()))
	require.Equal(t, int64(2), s.renders.Load(), "one render per report read")
}

// A field JSON cannot carry is a 500, not a broken document.
func TestRenderError(t *testing.T) {
	s, _ := startServer(t, Settings{})
	a := svc("a", true, t0)
	a.Fields["bad"] = complex(1, 2)
	s.Publish(report(t0, a))
	code, body := httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, http.StatusInternalServerError, code)
	require.True(t, strings.HasPrefix(body, "encoding the status: json: unsupported type"), body)
	s.Publish(report(t0.Add(time.Second), svc("a", true, t0)))
	code, _ = httpGet(t, "http://"+s.Addr()+"/status")
	require.Equal(t, http.StatusOK, code)
}

// A page that would pass the body limit ends early, at a service in
// config order, and says so: services_truncated, next_after the last
// service it holds; every body stays valid JSON within the limit, and
// following next_after lists every service once.
func TestBodyLimit(t *testing.T) {
	svcs := synthServices(2000, t0)
	full := New(Settings{Listen: "127.0.0.1:0"}, nil)
	full.Publish(report(t0, svcs...))
	sn := full.cur.Load()
	first := sn.defaultPage(full)
	require.NoError(t, first.err)
	size := len(sn.framed().head) + len(sn.framed().mid) + first.size()
	require.Less(t, size, MaxBodyBytes, "the first page of 2,000 services fits")
	require.Contains(t, string(first.keys), `"next_after": "svc-0999"`, "a whole page of DefaultLimit")

	for _, limit := range []int{64 << 10, size / 2, 8 << 10} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			s := New(Settings{Listen: "127.0.0.1:0"}, nil)
			s.maxBody = limit
			require.NoError(t, s.Start())
			t.Cleanup(s.Stop)
			s.Publish(report(t0, svcs...))
			seen := 0
			for query, pages := "", 0; ; pages++ {
				require.Less(t, pages, len(svcs), "the pages do not advance")
				resp, err := http.Get("http://" + s.Addr() + "/status" + query)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				require.LessOrEqual(t, len(body), limit)
				require.EqualValues(t, len(body), resp.ContentLength)
				var doc statusJSON
				require.NoError(t, json.Unmarshal(body, &doc))
				require.True(t, doc.ServicesTruncated)
				require.Equal(t, 2000, doc.ServicesTotal)
				require.NotEmpty(t, doc.Services)
				require.Less(t, len(doc.Services), DefaultLimit, "the body limit ended the page")
				if pages == 0 && limit >= 64<<10 {
					require.Greater(t, len(body), limit-4<<10, "most of the room is used")
				}
				for i, sv := range doc.Services {
					require.Equal(t, svcs[seen+i].Name, sv.Name)
				}
				seen += len(doc.Services)
				require.Equal(t, int64(1), doc.Gathers)
				if doc.NextAfter == nil {
					break
				}
				require.Equal(t, doc.Services[len(doc.Services)-1].Name, *doc.NextAfter)
				query = "?after=" + url.QueryEscape(*doc.NextAfter)
			}
			require.Equal(t, len(svcs), seen)
		})
	}
}

// BenchmarkLegacyRequest: what today's handler did on every request
// (MarshalIndent of the whole document), for 2,000 services.
func BenchmarkLegacyRequest(b *testing.B) {
	r := report(t0, synthServices(2000, t0)...)
	b.ReportAllocs()
	for b.Loop() {
		legacyBody(b, true, "ok", 1, r, "", nil)
	}
}
