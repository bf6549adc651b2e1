package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startLean(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() { _ = serveLean(ln, delay, 0) }()
	return ln.Addr().String()
}

// The lean server answers net/http's client as Handler does: 200 "ok\n"
// after the delay (the query's, else the flag's), /status/N with N, HEAD
// without a body, every connection closed after its answer.
func TestLeanServer(t *testing.T) {
	addr := startLean(t, 5*time.Millisecond)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
		least        time.Duration
	}{
		{"GET", "/svc/1", 200, "ok\n", 5 * time.Millisecond},
		{"GET", "/svc/2?x=1&delay=40ms", 200, "ok\n", 40 * time.Millisecond},
		{"GET", "/status/503?delay=0s", 503, "ok\n", 0},
		{"HEAD", "/svc/3?delay=1ms", 200, "", time.Millisecond},
	} {
		req, err := http.NewRequest(tc.method, "http://"+addr+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		if err != nil || resp.StatusCode != tc.code || string(body) != tc.body || !resp.Close {
			t.Fatalf("%s %s: %d %q close=%v err=%v", tc.method, tc.path, resp.StatusCode, body, resp.Close, err)
		}
		if took < tc.least {
			t.Errorf("%s %s answered after %s, before its delay %s", tc.method, tc.path, took, tc.least)
		}
	}
}

// A head that is not HTTP/1.x gets 400, one past leanMaxHead 431, and a
// client that sends a head in pieces is answered once it is whole.
func TestLeanServerBadHeads(t *testing.T) {
	addr := startLean(t, 0)
	send := func(parts ...string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		for _, p := range parts {
			if _, err := io.WriteString(c, p); err != nil {
				break // the server may close after refusing
			}
			time.Sleep(10 * time.Millisecond)
		}
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := send("NONSENSE\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("a bad request line: %q", got)
	}
	if got := send("GET /x HTTP/1.1\r\nX: " + strings.Repeat("a", leanMaxHead) + "\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Errorf("a head past %d bytes: %q", leanMaxHead, got)
	}
	if got := send("GET /svc/9 HT", "TP/1.1\r\nHost: x\r\n", "\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\nok\n") {
		t.Errorf("a head in three writes: %q", got)
	}
}
