package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// recordArrivals notes each request's arrival (not its own GET
// /_arrivals) and hands the times out once: a second GET /_arrivals
// returns only what arrived since the first.
func TestRecordArrivals(t *testing.T) {
	srv := httptest.NewServer(recordArrivals(Handler(0, 0)))
	defer srv.Close()
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %q %v", path, resp.StatusCode, b, err)
		}
		return string(b)
	}
	before := time.Now().UnixNano()
	get("/a")
	get("/b?delay=0s")
	after := time.Now().UnixNano()

	lines := strings.Fields(get(arrivalsPath))
	if len(lines) != 2 {
		t.Fatalf("arrivals %q: want 2", lines)
	}
	prev := before
	for _, l := range lines {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < prev || n > after {
			t.Fatalf("arrival %q: want Unix ns in [%d, %d], in order", l, prev, after)
		}
		prev = n
	}
	if got := get(arrivalsPath); got != "" {
		t.Fatalf("second GET %s = %q: want the times forgotten", arrivalsPath, got)
	}
}
