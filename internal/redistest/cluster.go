package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Cluster is a Redis Cluster of real redis-server processes on loopback:
// three masters with one replica each (redis-cli --cluster create …
// --cluster-replicas 1), node timeout 1 s so that a killed master's
// replica takes over within a few seconds.
type Cluster struct {
	tb    testing.TB
	Nodes []*Server
}

// ClusterNodeTimeout is the cluster-node-timeout of the nodes.
const ClusterNodeTimeout = time.Second

// StartCluster starts the six nodes, creates the cluster and waits until
// every node reports cluster_state:ok and every master has its replica.
// It stops them when the test ends.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Fatalf("redis-cli not found (apt-get install redis-tools, or make deps): %v", err)
	}
	c := &Cluster{tb: tb}
	for range 6 {
		s := &Server{tb: tb, dir: tb.TempDir()}
		s.startOnFreePort(func(s *Server) {
			bus, err := freePort()
			if err != nil {
				bus = s.port + 1
			}
			s.extra = []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
				"--cluster-port", strconv.Itoa(bus),
				// a replica that lost its master for long may still fail over
				"--cluster-replica-validity-factor", "0",
			}
		})
		c.Nodes = append(c.Nodes, s)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	c.WaitHealthy(30 * time.Second)
	return c
}

// Addrs are every node's host:port (seeds for a cluster client).
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		out[i] = s.Addr()
	}
	return out
}

// node is one line of CLUSTER NODES.
type node struct {
	addr, id, master string
	isMaster, failed bool
	slots            int
}

func (c *Cluster) nodes(ctx context.Context, via *Server) ([]node, error) {
	cl := via.plainClient()
	defer cl.Close()
	txt, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []node
	for _, line := range strings.Split(strings.TrimSpace(txt), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		n := node{id: f[0], addr: strings.SplitN(f[1], "@", 2)[0], master: f[3]}
		n.isMaster = strings.Contains(f[2], "master")
		n.failed = strings.Contains(f[2], "fail") && !strings.Contains(f[2], "fail?")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot in migration
			}
			lo, hi, ok := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if ok {
				b, _ = strconv.Atoi(hi)
			}
			n.slots += b - a + 1
		}
		out = append(out, n)
	}
	return out, nil
}

// WaitHealthy waits until every running node reports cluster_state:ok
// and sees three masters that cover the 16384 slots, each with a live
// replica (after a failover: once the old master has come back as a
// replica, or without it when it is still down).
func (c *Cluster) WaitHealthy(within time.Duration) {
	c.tb.Helper()
	deadline := time.Now().Add(within)
	var why string
	for time.Now().Before(deadline) {
		why = c.healthy()
		if why == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.tb.Fatalf("redis cluster not healthy within %s: %s", within, why)
}

func (c *Cluster) healthy() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range c.Nodes {
		if !s.running() {
			continue
		}
		cl := s.plainClient()
		info, err := cl.ClusterInfo(ctx).Result()
		cl.Close()
		if err != nil {
			return err.Error()
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return s.Addr() + " not ok"
		}
		ns, err := c.nodes(ctx, s)
		if err != nil {
			return err.Error()
		}
		slots, masters := 0, 0
		for _, n := range ns {
			if n.isMaster && !n.failed && n.slots > 0 {
				masters++
				slots += n.slots
			}
		}
		if masters != 3 || slots != 16384 {
			return fmt.Sprintf("%s sees %d masters, %d slots", s.Addr(), masters, slots)
		}
	}
	return ""
}

// MasterOf returns the node that is now the master of key's slot.
func (c *Cluster) MasterOf(key string) *Server {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := c.Client()
	defer cl.Close()
	addr, slot, err := slotMaster(ctx, cl, key)
	if err != nil {
		c.tb.Fatal(err)
	}
	for _, s := range c.Nodes {
		if s.Addr() == addr {
			return s
		}
	}
	c.tb.Fatalf("no node is master of slot %d (%q)", slot, addr)
	return nil
}

// WaitFailover waits until key's slot is served by a master other than
// old, and returns it.
func (c *Cluster) WaitFailover(key string, old *Server, within time.Duration) *Server {
	c.tb.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := c.masterOfQuiet(key); m != nil && m != old {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.tb.Fatalf("no failover of %q's slot within %s", key, within)
	return nil
}

func (c *Cluster) masterOfQuiet(key string) *Server {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, s := range c.Nodes {
		if !s.running() {
			continue
		}
		cl := s.plainClient()
		addr, _, err := slotMaster(ctx, cl, key)
		cl.Close()
		if err != nil {
			continue
		}
		for _, n := range c.Nodes {
			if n.Addr() == addr && n.running() {
				return n
			}
		}
	}
	return nil
}

// slotMaster asks cl for key's slot and the address of the master that
// serves it (CLUSTER KEYSLOT, CLUSTER SLOTS; "" when no shard has it).
func slotMaster(ctx context.Context, cl redis.Cmdable, key string) (addr string, slot int64, err error) {
	slot, err = cl.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return "", 0, fmt.Errorf("CLUSTER KEYSLOT: %w", err)
	}
	shards, err := cl.ClusterSlots(ctx).Result()
	if err != nil {
		return "", slot, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	for _, sh := range shards {
		if int64(sh.Start) <= slot && slot <= int64(sh.End) && len(sh.Nodes) > 0 {
			return sh.Nodes[0].Addr, slot, nil
		}
	}
	return "", slot, nil
}

// Client returns a cluster client over every node (closed by the caller).
func (c *Cluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                    c.Addrs(),
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// running reports whether the server's process is up.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// plainClient is a single-node client (closed by the caller).
func (s *Server) plainClient() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                     s.Addr(),
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               -1,
	})
}

// KillKeepConfig kills the node (SIGKILL) like Kill, keeping its
// nodes.conf, so that Restart brings it back into the cluster (as a
// replica of the master that replaced it, with an empty dataset it then
// syncs).
func (s *Server) KillKeepConfig() {
	s.signalAndWait(syscall.SIGKILL)
	_ = os.Remove(filepath.Join(s.dir, "dump.rdb"))
}
