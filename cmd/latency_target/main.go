// Command latency_target is a small HTTP and TCP server on loopback with a
// known, injectable delay: the built-in target of `make run` and of the
// benchmark harness. Every path answers, so any number of distinct URLs
// can be probed (/svc/1 ... /svc/10000).
//
//	GET /anything                 200 "ok" after -delay (± -jitter)
//	GET /anything?delay=25ms      200 after 25ms
//	GET /status/503               answers 503
//	-tcp 127.0.0.1:18081          also accept TCP connections there
//	-lean                         answer with a minimal HTTP/1.1 responder
//	                              (GET/HEAD, no body, Connection: close)
//	                              instead of net/http's server: see lean.go
//	-record-arrivals              note when every request reaches the handler;
//	                              GET /_arrivals returns those times (Unix
//	                              nanoseconds, one a line) and forgets them
//
// It listens only on loopback addresses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "HTTP listen address (loopback only)")
	tcpListen := flag.String("tcp", "", "optional TCP listen address that accepts and closes connections")
	delay := flag.Duration("delay", 2*time.Millisecond, "delay before every answer")
	jitter := flag.Duration("jitter", 0, "uniform random extra delay in [0, jitter)")
	lean := flag.Bool("lean", false, "a minimal HTTP/1.1 responder (GET/HEAD, Connection: close) instead of net/http's server: less CPU per fresh connection")
	record := flag.Bool("record-arrivals", false, "note the arrival time of every request; GET /_arrivals returns them (Unix ns, one a line) and forgets them")
	flag.Parse()

	for _, a := range []string{*listen, *tcpListen} {
		if a == "" {
			continue
		}
		if err := loopbackOnly(a); err != nil {
			fmt.Fprintf(os.Stderr, "latency_target: %v\n", err)
			os.Exit(2)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "latency_target: %v\n", err)
		os.Exit(1)
	}
	if *tcpListen != "" {
		tl, err := net.Listen("tcp", *tcpListen)
		if err != nil {
			fmt.Fprintf(os.Stderr, "latency_target: %v\n", err)
			os.Exit(1)
		}
		go acceptAndClose(tl)
	}
	if *lean {
		if *record {
			fmt.Fprintln(os.Stderr, "latency_target: -lean cannot -record-arrivals")
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "latency_target: listening on http://%s (delay %s, lean)\n", ln.Addr(), *delay)
		go func() {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			_ = ln.Close()
		}()
		if err := serveLean(ln, *delay, *jitter); err != nil && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintf(os.Stderr, "latency_target: %v\n", err)
			os.Exit(1)
		}
		return
	}
	h := Handler(*delay, *jitter)
	if *record {
		h = recordArrivals(h)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
	}
	fmt.Fprintf(os.Stderr, "latency_target: listening on http://%s (delay %s)\n", ln.Addr(), *delay)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "latency_target: %v\n", err)
		os.Exit(1)
	}
}

// Handler answers every path after the delay.
func Handler(delay, jitter time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := delay
		if q := r.URL.Query().Get("delay"); q != "" {
			if v, err := time.ParseDuration(q); err == nil {
				d = v
			}
		}
		if jitter > 0 {
			d += rand.N(jitter)
		}
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		code := http.StatusOK
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if c, err := strconv.Atoi(rest); err == nil && c >= 200 && c < 600 {
				code = c
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = w.Write([]byte("ok\n"))
	})
}

// arrivalsPath is where recordArrivals hands out the arrival times.
const arrivalsPath = "/_arrivals"

// recordArrivals notes when each request reaches the handler (the
// benchmark harness counts how many probes start in any 100 ms) and
// serves, on arrivalsPath, the times noted since the last such request.
func recordArrivals(next http.Handler) http.Handler {
	var mu sync.Mutex
	var times []int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		if r.URL.Path == arrivalsPath {
			mu.Lock()
			got := times
			times = nil
			mu.Unlock()
			w.Header().Set("Content-Type", "text/plain")
			b := make([]byte, 0, 20*len(got))
			for _, t := range got {
				b = strconv.AppendInt(b, t, 10)
				b = append(b, '\n')
			}
			_, _ = w.Write(b)
			return
		}
		mu.Lock()
		times = append(times, now)
		mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: only loopback addresses are allowed", addr)
	}
	return nil
}
