package service_latency

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
)

// memguard (behind config.Secret) keeps one global goroutine once a secret
// exists.
var ignoreMemguard = goleak.IgnoreTopFunction("github.com/awnumar/memguard/core.NewCoffer.func1")

// nopLogger formats every message (debug included) and keeps nothing.
type nopLogger struct{}

func (nopLogger) Level() telegraf.LogLevel          { return telegraf.Debug }
func (nopLogger) AddAttribute(string, interface{})  {}
func (nopLogger) Errorf(f string, a ...interface{}) { _ = fmt.Sprintf(f, a...) }
func (nopLogger) Error(a ...interface{})            { _ = fmt.Sprint(a...) }
func (nopLogger) Warnf(f string, a ...interface{})  { _ = fmt.Sprintf(f, a...) }
func (nopLogger) Warn(a ...interface{})             { _ = fmt.Sprint(a...) }
func (nopLogger) Infof(f string, a ...interface{})  { _ = fmt.Sprintf(f, a...) }
func (nopLogger) Info(a ...interface{})             { _ = fmt.Sprint(a...) }
func (nopLogger) Debugf(f string, a ...interface{}) { _ = fmt.Sprintf(f, a...) }
func (nopLogger) Debug(a ...interface{})            { _ = fmt.Sprint(a...) }
func (nopLogger) Tracef(f string, a ...interface{}) { _ = fmt.Sprintf(f, a...) }
func (nopLogger) Trace(a ...interface{})            { _ = fmt.Sprint(a...) }

// dnsTestServer answers every A query with 127.0.0.1 over UDP.
func dnsTestServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(127, 0, 0, 1),
		})
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	return pc.LocalAddr().String(), func() {
		_ = srv.Shutdown()
		<-done
	}
}

// acceptAndClose is a TCP listener that closes every connection it
// accepts.
func acceptAndClose(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		wg.Wait()
	}
}

// silentTCP accepts connections and never answers; stop closes those
// still open. It forgets a connection once the peer closes it (so that the
// server itself holds no memory per connection served).
func silentTCP(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// silentUDPStoppable reads and drops datagrams until stop.
func silentUDPStoppable(t *testing.T) (addr string, stop func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String(), func() {
		pc.Close()
		<-done
	}
}

// TestNoLeakOverManyGathers runs 1,000 gathers over 100 services of every
// kind, some failing (timeouts included), with the status server on and
// collect_internal: afterwards the goroutines are back at their baseline
// (goleak) and the heap did not grow between gather 200 and the last.
// The race detector makes a probe ~5× slower, so under -race it runs 300
// gathers (heap compared at 100 and 300); `make test` runs it once more
// without -race, in full.
func TestNoLeakOverManyGathers(t *testing.T) {
	gathers, warm := 1000, 200
	if raceEnabled || testing.Short() {
		gathers, warm = 300, 100
	}
	baseline := goleak.IgnoreCurrent()

	okSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	okSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	okSrv.Start()
	tcpAddr, stopTCP := acceptAndClose(t)
	dnsAddr, stopDNS := dnsTestServer(t)
	refused := refusedAddr(t)
	silent, stopSilent := silentTCP(t)
	silentDNS, stopSilentDNS := silentUDPStoppable(t)
	host := strings.TrimPrefix(okSrv.URL, "http://")

	var b strings.Builder
	b.WriteString("timeout = \"2s\"\nwindow = 20\ncollect_internal = true\nstatus_listen = \"127.0.0.1:0\"\n")
	svc := func(name, url, extra string) {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = %q\n  url = %q\n  %s\n", name, url, extra)
	}
	for i := range 100 {
		name := fmt.Sprintf("s%03d", i)
		switch {
		case i < 45: // HTTP, keep-alive
			svc(name, fmt.Sprintf("http://%s/ok/%d", host, i), "keep_alive = true\n  body_contains = \"ok\"")
		case i < 50: // HTTP, keep-alive, failing: the body does not match
			svc(name, fmt.Sprintf("http://%s/ok/%d", host, i), "keep_alive = true\n  body_contains = \"nope\"")
		case i < 53: // HTTP, a fresh connection each time
			svc(name, fmt.Sprintf("http://%s/ok/%d", host, i), "")
		case i < 55: // HTTP failing with 503
			svc(name, fmt.Sprintf("http://%s/fail/%d", host, i), "")
		case i < 65: // TCP connect
			svc(name, "tcp://"+tcpAddr, "")
		case i < 85: // TCP refused
			svc(name, "tcp://"+refused, "")
		case i == 85: // HTTP timing out
			svc(name, "http://"+silent+"/", "timeout = \"2ms\"")
		case i == 86: // DNS timing out
			svc(name, fmt.Sprintf("dns://%s/h%d.test", silentDNS, i), "timeout = \"2ms\"")
		default: // DNS
			svc(name, fmt.Sprintf("dns://%s/h%d.test", dnsAddr, i), "")
		}
	}
	p, err := ParseConfig([]byte(conf(b.String())))
	require.NoError(t, err)
	p.Log = nopLogger{}
	require.NoError(t, p.Start(&testutil.NopAccumulator{}))

	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	acc := &testutil.NopAccumulator{}
	var atWarm uint64
	start := time.Now()
	for i := 1; i <= gathers; i++ {
		require.NoError(t, p.Gather(acc))
		if i == warm {
			atWarm = heap()
		}
	}
	elapsed := time.Since(start)
	atEnd := heap()
	t.Logf("%d gathers over 100 services in %s; heap in use after gather %d: %.2f MiB, after gather %d: %.2f MiB",
		gathers, elapsed, warm, float64(atWarm)/(1<<20), gathers, float64(atEnd)/(1<<20))
	// GC noise is a few hundred KiB; a leak of 1 KiB per gather (10 bytes
	// per probe) would show as 800 KiB.
	const tolerance = 768 << 10
	require.Less(t, atEnd, atWarm+tolerance, "the heap grew from %d to %d bytes", atWarm, atEnd)

	// the status server answered throughout and still does
	resp, err := http.Get("http://" + p.StatusAddr() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	http.DefaultClient.CloseIdleConnections()

	p.Stop()
	okSrv.Close()
	stopTCP()
	stopDNS()
	stopSilent()
	stopSilentDNS()
	goleak.VerifyNone(t, baseline, ignoreMemguard)
}

// TestNoLeakOverReloads: reloading a config (what SIGHUP does) over and
// over, secrets included, leaves neither goroutines nor heap behind.
func TestNoLeakOverReloads(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	c := conf(`
username = "u"
password = "plugin-secret"
keep_alive = true
[[inputs.service_latency.service]]
  name = "a"
  url = "` + srv.URL + `/a"
  password = "svc-secret"
[[inputs.service_latency.service]]
  name = "b"
  url = "` + srv.URL + `/b"
[[inputs.service_latency.service]]
  name = "c"
  url = "tcp://` + strings.TrimPrefix(srv.URL, "http://") + `"
`)
	p, err := ParseConfig([]byte(c))
	require.NoError(t, err)
	p.Log = nopLogger{}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	var atWarm uint64
	for i := 1; i <= 400; i++ {
		next, err := config.Parse([]byte(c))
		require.NoError(t, err)
		require.NoError(t, p.Reconfigure(&next.Config))
		require.NoError(t, p.Gather(&testutil.NopAccumulator{}))
		if i == 100 {
			atWarm = heap()
		}
	}
	atEnd := heap()
	require.Less(t, atEnd, atWarm+512<<10, "the heap grew from %d to %d bytes over 300 reloads", atWarm, atEnd)
	p.Stop()
	srv.Close()
	goleak.VerifyNone(t, baseline, ignoreMemguard)
}
