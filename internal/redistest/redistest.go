// Package redistest starts a real redis-server for tests: on a free
// loopback port, in a temporary directory, without persistence
// (--save "" --appendonly no). It can be killed, paused and restarted on the
// same port to simulate outages. Tests of any package may use it.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Server is a running (or stopped) redis-server.
type Server struct {
	tb   testing.TB
	dir  string
	port int
	// extra are more redis-server arguments (Cluster, replication);
	// sentinel, when set, is the sentinel config file the server runs
	// with instead (redis-server FILE --sentinel).
	extra    []string
	sentinel string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts a redis-server on a free 127.0.0.1 port and stops it when
// the test ends. It fails the test when redis-server is not installed
// (apt-get install redis-server).
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redis-server not found (apt-get install redis-server, or make deps): %v", err)
	}
	s := &Server{tb: tb, dir: tb.TempDir()}
	s.startOnFreePort()
	return s
}

// startOnFreePort starts s on a free port (s.extra and s.sentinel may
// depend on it through s.port: they are made by prepare).
func (s *Server) startOnFreePort(prepare ...func(*Server)) {
	s.tb.Helper()
	var err error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			continue
		}
		for _, p := range prepare {
			p(s)
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		s.tb.Fatalf("starting redis-server: %v", err)
	}
	s.tb.Cleanup(s.Stop)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port.
func (s *Server) Port() int { return s.port }

func (s *Server) start() error {
	logFile := filepath.Join(s.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logFile,
		"--daemonize", "no",
	}
	if s.sentinel != "" {
		args = []string{s.sentinel, "--sentinel"}
		logFile = filepath.Join(s.dir, "sentinel.log")
	}
	cmd := exec.Command("redis-server", append(args, s.extra...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("redis-server on port %d exited: %s", s.port, log)
		default:
		}
		if err := ping(s.Addr()); err == nil {
			break
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server on port %d not ready: %v", s.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return nil
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", buf[:n])
	}
	return nil
}

// Kill kills the server (SIGKILL) and waits for it to exit: its data is
// gone. Restart brings it back on the same port.
func (s *Server) Kill() {
	s.signalAndWait(syscall.SIGKILL)
	_ = os.Remove(filepath.Join(s.dir, "dump.rdb"))
}

// SaveAndKill snapshots the dataset to the server's directory (SAVE) and
// kills the server (SIGKILL): a crash of a Redis that persists its data.
// Restart loads the snapshot back.
func (s *Server) SaveAndKill() {
	s.tb.Helper()
	c := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Save(ctx).Err(); err != nil {
		s.tb.Fatalf("redis SAVE: %v", err)
	}
	_ = c.Close()
	s.signalAndWait(syscall.SIGKILL)
}

// Stop stops the server (SIGTERM, then SIGKILL). It is idempotent.
func (s *Server) Stop() { s.signalAndWait(syscall.SIGTERM) }

func (s *Server) signalAndWait(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGCONT) // in case it is paused
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Pause stops the server's process (SIGSTOP): connections are accepted by
// the kernel but nothing answers, like a hung server. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = syscall.Kill(s.cmd.Process.Pid, sig)
	}
}

// Restart starts the server again on the same port after Kill or Stop
// (with an empty dataset).
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var err error
	for range 20 { // the port may take a moment to be free again
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.tb.Fatalf("restarting redis-server: %v", err)
}

// Client returns a go-redis client for the server, configured for Redis
// 7.0 (no client identity, no maintenance notifications), closed when the
// test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                     s.Addr(),
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

// PauseWrites makes the server hold every write command (scripts
// included) of every client for d, while it keeps answering reads and
// PING: a Redis that is slow but reachable (CLIENT PAUSE d WRITE).
func (s *Server) PauseWrites(d time.Duration) {
	s.tb.Helper()
	c := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Do(ctx, "CLIENT", "PAUSE", strconv.FormatInt(d.Milliseconds(), 10), "WRITE").Err(); err != nil {
		s.tb.Fatalf("redis CLIENT PAUSE: %v", err)
	}
	_ = c.Close()
}

// Proxy is a loopback TCP proxy in front of a server whose replies can be
// held back for a while: the commands reach the server (and are applied)
// at once, the client sees the replies late, as behind a congested link.
type Proxy struct {
	ln       net.Listener
	upstream string
	until    atomic.Int64 // unix ns: replies wait until then
	wg       sync.WaitGroup
	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
}

// StartProxy starts a proxy on a free 127.0.0.1 port in front of addr
// (a loopback address) and stops it when the test ends.
func StartProxy(tb testing.TB, addr string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy: %v", err)
	}
	p := &Proxy{ln: ln, upstream: addr, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// DelayReplies holds every reply back until d from now.
func (p *Proxy) DelayReplies(d time.Duration) { p.until.Store(time.Now().Add(d).UnixNano()) }

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			_ = c.Close()
			return
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.upstream, time.Second)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.track(client, true)
		p.track(server, true)
		p.wg.Add(2)
		pipe := func(dst, src net.Conn, delay bool) {
			defer p.wg.Done()
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if delay {
						if wait := time.Until(time.Unix(0, p.until.Load())); wait > 0 {
							time.Sleep(wait)
						}
					}
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			_ = dst.Close()
			_ = src.Close()
			p.track(dst, false)
			p.track(src, false)
		}
		go pipe(server, client, false)
		go pipe(client, server, true)
	}
}
