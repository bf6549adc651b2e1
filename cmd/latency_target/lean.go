package main

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The lean server (-lean) answers like Handler with little more than the
// kernel's work: one goroutine and one pooled buffer a connection, the
// request head read once, a fixed response, Connection: close, and close.
// It is for the keeping-up benchmark, where ~2,000 fresh connections a
// second make net/http's server (a goroutine with its bufio reader and
// writer, header maps, and a 0.5 s lingering close per connection) the
// largest CPU user of the machine, and so the error of every prober.
// It serves only what the benchmarks send: GET or HEAD without a body.

// leanMaxHead bounds a request head; a longer one gets 431.
const leanMaxHead = 8 << 10

// leanTimeout bounds a connection's whole life (a client that sends
// nothing is closed).
const leanTimeout = 10 * time.Second

var leanBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

var headEnd = []byte("\r\n\r\n")

// serveLean accepts connections on ln until it is closed.
func serveLean(ln net.Listener, delay, jitter time.Duration) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go leanConn(c, delay, jitter)
	}
}

// leanConn answers one request on c and closes it.
func leanConn(c net.Conn, delay, jitter time.Duration) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(leanTimeout))
	bp := leanBufs.Get().(*[]byte)
	defer leanBufs.Put(bp)
	head, ok := readHead(c, (*bp)[:0])
	*bp = head[:0]
	if !ok {
		if len(head) >= leanMaxHead {
			writeLean(c, http.StatusRequestHeaderFieldsTooLarge, false)
		}
		return
	}
	method, target, ok := requestLine(head)
	if !ok {
		writeLean(c, http.StatusBadRequest, false)
		return
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	d := delay
	if v, ok := queryValue(query, "delay"); ok {
		if x, err := time.ParseDuration(string(v)); err == nil {
			d = x
		}
	}
	if jitter > 0 {
		d += rand.N(jitter)
	}
	if d > 0 {
		time.Sleep(d)
	}
	code := http.StatusOK
	if rest, ok := bytes.CutPrefix(path, []byte("/status/")); ok {
		if n, err := strconv.Atoi(string(rest)); err == nil && n >= 200 && n < 600 {
			code = n
		}
	}
	writeLean(c, code, string(method) != http.MethodHead)
}

// readHead reads from c into buf until the end of the request head; ok is
// false when c closed, timed out or sent more than leanMaxHead first.
func readHead(c net.Conn, buf []byte) (head []byte, ok bool) {
	for !bytes.Contains(buf, headEnd) {
		if len(buf) >= leanMaxHead {
			return buf, false
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), leanMaxHead)])
		buf = buf[:len(buf)+n]
		if err != nil && !bytes.Contains(buf, headEnd) {
			return buf, false
		}
	}
	return buf, true
}

// requestLine splits "GET /path?q HTTP/1.1" (the head's first line).
func requestLine(head []byte) (method, target []byte, ok bool) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	ok = ok1 && ok2 && len(method) > 0 && len(target) > 0 && bytes.HasPrefix(proto, []byte("HTTP/1."))
	return method, target, ok
}

// queryValue is the value of the first key=value of query named key (not
// unescaped: a duration needs no escapes).
func queryValue(query []byte, key string) ([]byte, bool) {
	for len(query) > 0 {
		var kv []byte
		kv, query, _ = bytes.Cut(query, []byte("&"))
		if k, v, _ := bytes.Cut(kv, []byte("=")); string(k) == key {
			return v, true
		}
	}
	return nil, false
}

// writeLean writes the whole response in one write.
func writeLean(c net.Conn, code int, body bool) {
	b := make([]byte, 0, 128)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"...)
	if body {
		b = append(b, "ok\n"...)
	}
	_, _ = c.Write(b)
}
