package redistest

import (
	"context"
	"testing"
	"time"
)

func TestClusterStartsAndFailsOver(t *testing.T) {
	c := StartCluster(t)
	cl := c.Client()
	defer cl.Close()
	ctx := context.Background()
	if err := cl.Set(ctx, "k{x}", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	m := c.MasterOf("k{x}")
	began := time.Now()
	m.KillKeepConfig()
	nm := c.WaitFailover("k{x}", m, 30*time.Second)
	t.Logf("cluster failover in %s: %s → %s", time.Since(began).Round(time.Millisecond), m.Addr(), nm.Addr())
	m.Restart()
	c.WaitHealthy(30 * time.Second)
}

func TestSentinelStartsAndFailsOver(t *testing.T) {
	st := StartSentinel(t)
	old := st.Current()
	if old != st.Master {
		t.Fatalf("master %s", old.Addr())
	}
	began := time.Now()
	old.Kill()
	nm := st.WaitFailover(old, 30*time.Second)
	t.Logf("sentinel failover in %s: %s → %s", time.Since(began).Round(time.Millisecond), old.Addr(), nm.Addr())
}
