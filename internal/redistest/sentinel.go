package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SentinelMaster is the name the Sentinels monitor.
const SentinelMaster = "mymaster"

// Sentinel is a master, one replica and three Sentinels (quorum 2) on
// loopback, down-after 1 s: a killed master's replica is promoted within
// a few seconds.
type Sentinel struct {
	tb        testing.TB
	Master    *Server // the first master (after a failover, see MasterAddr)
	Replica   *Server
	Sentinels []*Server
}

// SentinelDownAfter is the Sentinels' down-after-milliseconds.
const SentinelDownAfter = time.Second

// StartReplica starts a replica of master (replicaof) on a free port and
// waits until it is in sync. It stops it when the test ends.
func StartReplica(tb testing.TB, master *Server) *Server {
	tb.Helper()
	r := &Server{tb: tb, dir: tb.TempDir()}
	r.extra = []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.port)}
	r.startOnFreePort()
	r.waitInSync(master)
	return r
}

// waitInSync waits (up to 15 s) until replica s reports its link to
// master up; it fails the test otherwise.
func (s *Server) waitInSync(master *Server) {
	s.tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c := s.plainClient()
		info, _ := c.Info(ctx, "replication").Result()
		c.Close()
		cancel()
		if strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("replica %s not in sync with %s", s.Addr(), master.Addr())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartSentinel starts them and waits until every Sentinel knows the
// replica and the two other Sentinels. It stops them when the test ends.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	m := Start(tb)
	r := StartReplica(tb, m)
	st := &Sentinel{tb: tb, Master: m, Replica: r}
	for range 3 {
		s := &Server{tb: tb, dir: tb.TempDir()}
		s.startOnFreePort(func(s *Server) {
			s.sentinel = filepath.Join(s.dir, "sentinel.conf")
			conf := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, s.port, s.dir, filepath.Join(s.dir, "sentinel.log"), SentinelMaster, m.port, SentinelMaster, SentinelDownAfter.Milliseconds(), SentinelMaster, SentinelMaster)
			if err := os.WriteFile(s.sentinel, []byte(conf), 0o600); err != nil {
				tb.Fatalf("sentinel.conf: %v", err)
			}
		})
		st.Sentinels = append(st.Sentinels, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		why := st.ready()
		if why == "" {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sentinels not ready: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return st
}

func (st *Sentinel) ready() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// the replica in sync first
	rc := st.Replica.plainClient()
	info, err := rc.Info(ctx, "replication").Result()
	rc.Close()
	if err != nil {
		return err.Error()
	}
	if !strings.Contains(info, "master_link_status:up") {
		return "replica not in sync"
	}
	for _, s := range st.Sentinels {
		c := s.plainClient()
		reps, err := c.Do(ctx, "SENTINEL", "REPLICAS", SentinelMaster).Slice()
		if err != nil {
			c.Close()
			return err.Error()
		}
		sents, err := c.Do(ctx, "SENTINEL", "SENTINELS", SentinelMaster).Slice()
		c.Close()
		if err != nil {
			return err.Error()
		}
		if len(reps) != 1 || len(sents) != 2 {
			return fmt.Sprintf("sentinel %s knows %d replicas, %d sentinels", s.Addr(), len(reps), len(sents))
		}
	}
	return ""
}

// Addrs are the Sentinels' host:port (address = "…" with master_name).
func (st *Sentinel) Addrs() []string {
	out := make([]string, len(st.Sentinels))
	for i, s := range st.Sentinels {
		out[i] = s.Addr()
	}
	return out
}

// MasterAddr asks a Sentinel for the current master's host:port.
func (st *Sentinel) MasterAddr() string {
	st.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range st.Sentinels {
		c := s.plainClient()
		v, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
		c.Close()
		if err == nil && len(v) == 2 {
			return net.JoinHostPort(v[0], v[1])
		}
	}
	st.tb.Fatalf("no sentinel answers for %s", SentinelMaster)
	return ""
}

// Current returns the server that is master now.
func (st *Sentinel) Current() *Server {
	a := st.MasterAddr()
	for _, s := range []*Server{st.Master, st.Replica} {
		if s.Addr() == a {
			return s
		}
	}
	st.tb.Fatalf("master %s is neither server", a)
	return nil
}

// WaitFailover waits until the Sentinels name a master other than old
// and it answers as a master; it returns it.
func (st *Sentinel) WaitFailover(old *Server, within time.Duration) *Server {
	st.tb.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if a := st.MasterAddr(); a != old.Addr() {
			for _, s := range []*Server{st.Master, st.Replica} {
				if s.Addr() != a {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				c := s.plainClient()
				role, err := c.Do(ctx, "ROLE").Slice()
				c.Close()
				cancel()
				if err == nil && len(role) > 0 && role[0] == "master" {
					return s
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	st.tb.Fatalf("no failover within %s", within)
	return nil
}

// RestartAsReplicaOf starts a stopped or killed server again on its port
// as a replica of master (an old master coming back after a failover,
// without waiting for the Sentinels to reconfigure it) and waits until it
// is in sync.
func (s *Server) RestartAsReplicaOf(master *Server) {
	s.tb.Helper()
	s.extra = []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.port)}
	s.Restart()
	s.waitInSync(master)
}
