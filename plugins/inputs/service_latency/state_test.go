package service_latency

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/persister"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/internal/redistest"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

var (
	_ telegraf.StatefulPlugin = (*ServiceLatency)(nil)
	_ store.Persister         = (*store.Memory)(nil)
	_ store.Persister         = (*store.File)(nil)
	_ store.Store             = (*store.Redis)(nil)
)

func TestStoreConfig(t *testing.T) {
	svc := "\n[[inputs.service_latency.service]]\n  url = \"tcp://127.0.0.1:9\"\n"
	ok := map[string]string{
		"memory default": "",
		"memory file":    `state_file = "/tmp/x.state"`,
		"redis address": `state = "redis"
[inputs.service_latency.redis]
  address = "127.0.0.1:6379"
  username = "u"
  password = "p"
  db = 2
  key_prefix = "sl"
  ttl = "24h"
  timeout = "250ms"
  agent_id = "agent-7"
  queue_size = 500
  tls_enable = false`,
		"redis url":  "state = \"redis\"\n[inputs.service_latency.redis]\n  url = \"rediss://user@127.0.0.1:6380/3\"\n  insecure_skip_verify = true",
		"sentinel":   "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:26379, 127.0.0.1:26380\"\n  master_name = \"mymaster\"\n  sentinel_password = \"x\"",
		"cluster":    "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:7000,127.0.0.1:7001\"",
		"redis tls":  "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  tls_enable = true",
		"ttl unset":  "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"[::1]:6379\"",
		"memory too": "state = \"memory\"",
	}
	for name, body := range ok {
		t.Run(name, func(t *testing.T) {
			p, err := ParseConfig([]byte("[[inputs.service_latency]]\n" + body + svc))
			require.NoError(t, err)
			p.Stop()
		})
	}
	bad := map[string]string{
		"unknown store":       "state = \"disk\"",
		"redis without table": "state = \"redis\"",
		"table without redis": "[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"",
		"file with redis":     "state = \"redis\"\nstate_file = \"/tmp/x\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"",
		"address and url":     "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  url = \"redis://127.0.0.1\"",
		"no address":          "state = \"redis\"\n[inputs.service_latency.redis]\n  db = 1",
		"bad address":         "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"redis://127.0.0.1\"",
		"bad url":             "state = \"redis\"\n[inputs.service_latency.redis]\n  url = \"http://127.0.0.1\"",
		"brace in prefix":     "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  key_prefix = \"a{b}\"",
		"negative queue":      "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  queue_size = -1",
		"negative timeout":    "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  timeout = \"-1s\"",
		"unknown redis key":   "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  pasword = \"x\"",
		"cluster with db":     "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:1,127.0.0.1:2\"\n  db = 1",
		"missing tls ca":      "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  tls_ca = \"/nonexistent/ca.pem\"",
	}
	for name, body := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig([]byte("[[inputs.service_latency]]\n" + body + svc))
			require.Error(t, err)
			require.Regexp(t, `^\d+: `, err.Error(), "the error starts with a line number")
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

// TestRedisStoreDoesNoNetworkIOInInit counts connections to a listener:
// none before the first gather.
func TestRedisStoreDoesNoNetworkIOInInit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	srv := newDelayServer(t, 0)
	p, log := newPlugin(t, conf(`
state = "redis"
[inputs.service_latency.redis]
  address = "`+ln.Addr().String()+`"
  timeout = "300ms"
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	time.Sleep(100 * time.Millisecond)
	require.Zero(t, accepted.Load(), "no connection from Init")
	start := time.Now()
	m := gather(t, p)["api"]
	require.Less(t, time.Since(start), 300*time.Millisecond+300*time.Millisecond+time.Second)
	require.Equal(t, int64(1), field[int64](t, m, "latency_count"), "emitted from the local state")
	require.Positive(t, accepted.Load())
	require.Len(t, log.Warnings(), 1)
	require.Contains(t, log.Warnings()[0], "Redis")
}

func TestStateFileSurvivesAPluginRestart(t *testing.T) {
	srv := newDelayServer(t, 0)
	path := filepath.Join(t.TempDir(), "sl.state")
	cfg := conf(`
state_file = "` + path + `"
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`)
	p, _ := newPlugin(t, cfg)
	for range 3 {
		gather(t, p)
	}
	p.Stop()
	q, log := newPlugin(t, cfg)
	m := gather(t, q)["api"]
	require.Equal(t, int64(4), field[int64](t, m, "latency_count"))
	require.Equal(t, int64(4), field[int64](t, m, "probes"))
	require.Empty(t, log.Warnings())
	require.EqualValues(t, 4, dumpEntry(t, q, "api")["count"], "the plugin's memory store holds it")
}

func TestStatefulPluginThroughTelegrafsPersister(t *testing.T) {
	srv := newDelayServer(t, 0)
	cfg := conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
[[inputs.service_latency.service]]
  name = "gone"
  url = "` + srv.URL + `/gone"
`)
	statefile := filepath.Join(t.TempDir(), "telegraf.state")
	p, _ := newPlugin(t, cfg)
	for range 4 {
		gather(t, p)
	}
	p.Stop() // Telegraf stores the states after stopping the inputs
	per := &persister.Persister{Filename: statefile}
	require.NoError(t, per.Init())
	require.NoError(t, per.Register("sl", p))
	require.NoError(t, per.Store())

	q, _ := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`/renamed-url"
`))
	per2 := &persister.Persister{Filename: statefile}
	require.NoError(t, per2.Init())
	require.NoError(t, per2.Register("sl", q))
	require.NoError(t, per2.Load())
	m := gather(t, q)["api"]
	require.Equal(t, int64(5), field[int64](t, m, "latency_count"), "state keyed by name: the new URL keeps it")
	require.Contains(t, q.GetState().(*store.Dump).Services, "gone", "kept through the first gather (it may be several batches)")
	gather(t, q)
	snap := q.GetState().(*store.Dump)
	require.Contains(t, snap.Services, "api")
	require.NotContains(t, snap.Services, "gone", "a removed service is dropped at the second gather")
}

func TestReconfigureRefusesStoreChanges(t *testing.T) {
	srv := newDelayServer(t, 0)
	dir := t.TempDir()
	base := func(extra string) string {
		return conf(extra + `
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`)
	}
	p, _ := newPlugin(t, base(`state_file = "`+filepath.Join(dir, "a")+`"`))
	gather(t, p)
	cases := map[string]string{
		"state_file":     `state_file = "` + filepath.Join(dir, "b") + `"`,
		"state":          "state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"",
		"state_file off": "",
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			err := p.Reconfigure(decodeConfig(t, base(extra)))
			require.Error(t, err)
			require.Contains(t, err.Error(), "restart")
		})
	}
	// the same store settings reload fine, and the state is kept
	require.NoError(t, p.Reconfigure(decodeConfig(t, base(`state_file = "`+filepath.Join(dir, "a")+`"`+"\nwindow = 50"))))
	require.Equal(t, int64(2), field[int64](t, gather(t, p)["api"], "latency_count"))

	// secrets are compared too
	redisConf := func(pw string) string {
		return base("state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  password = \"" + pw + "\"")
	}
	r, _ := newPlugin(t, redisConf("one"))
	require.NoError(t, r.Reconfigure(decodeConfig(t, redisConf("one"))))
	err := r.Reconfigure(decodeConfig(t, redisConf("two")))
	require.Error(t, err)
	require.Contains(t, err.Error(), "redis.password")
	require.NotContains(t, err.Error(), "two", "a secret is never shown")
}

func redisConf(srv *redistest.Server, extra, services string) string {
	return conf(`
timeout = "2s"
state = "redis"
[inputs.service_latency.redis]
  address = "` + srv.Addr() + `"
  key_prefix = "test"
` + extra + services)
}

func TestRedisStateSharedByTwoPlugins(t *testing.T) {
	rs := redistest.Start(t)
	srv := newDelayServer(t, 0)
	services := `
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`
	a, _ := newPlugin(t, redisConf(rs, "", services))
	b, _ := newPlugin(t, redisConf(rs, "", services))
	var sum float64
	for i := range 10 {
		srv.delay.Store(int64(time.Duration(i%3) * time.Millisecond))
		p := a
		if i%2 == 1 {
			p = b
		}
		m := gather(t, p)["api"]
		sum += field[float64](t, m, "latency")
		require.Equal(t, int64(i+1), field[int64](t, m, "latency_count"))
		require.InEpsilon(t, sum/float64(i+1), field[float64](t, m, "latency_avg"), 1e-9)
	}
	_, local := a.store.(store.Persister)
	require.False(t, local, "no memory store with Redis")
}

func TestRedisAuthAndOutageInThePlugin(t *testing.T) {
	rs := redistest.Start(t)
	require.NoError(t, rs.Client().ConfigSet(context.Background(), "requirepass", "s3cret").Err())
	srv := newDelayServer(t, 20*time.Millisecond)
	services := `
[[inputs.service_latency.service]]
  name = "api"
  url = "` + srv.URL + `"
`
	p, log := newPlugin(t, redisConf(rs, "  password = \"s3cret\"\n  timeout = \"400ms\"\n", services))
	for i := range 2 {
		m := gather(t, p)["api"]
		require.Equal(t, int64(i+1), field[int64](t, m, "latency_count"))
	}
	require.Empty(t, log.Warnings(), "authenticated")
	rs.Pause()
	for i := range 2 {
		start := time.Now()
		m := gather(t, p)["api"]
		elapsed := time.Since(start)
		require.Less(t, elapsed, 400*time.Millisecond+20*time.Millisecond+300*time.Millisecond, "store timeout + probe time + 300 ms")
		require.Equal(t, int64(i+3), field[int64](t, m, "latency_count"))
	}
	rs.Resume()
	m := gather(t, p)["api"]
	require.Equal(t, int64(5), field[int64](t, m, "latency_count"))
	require.Len(t, log.Warnings(), 1)
	for _, w := range log.Warnings() {
		require.NotContains(t, w, "s3cret")
	}

	// a wrong password is an outage, not a crash
	q, qlog := newPlugin(t, redisConf(rs, "  password = \"wrong\"\n  timeout = \"400ms\"\n", services))
	m = gather(t, q)["api"]
	require.Equal(t, int64(1), field[int64](t, m, "latency_count"))
	require.Len(t, qlog.Warnings(), 1)
	require.NotContains(t, qlog.Warnings()[0], "wrong")
}

func TestCorruptStateFileInThePlugin(t *testing.T) {
	srv := newDelayServer(t, 0)
	path := filepath.Join(t.TempDir(), "sl.state")
	require.NoError(t, os.WriteFile(path, []byte("\x00garbage"), 0o600))
	p, log := newPlugin(t, conf(`
state_file = "`+path+`"
[[inputs.service_latency.service]]
  name = "api"
  url = "`+srv.URL+`"
`))
	m := gather(t, p)["api"]
	require.Equal(t, int64(1), field[int64](t, m, "latency_count"))
	require.Equal(t, field[float64](t, m, "latency"), field[float64](t, m, "latency_avg"))
	require.Len(t, log.Warnings(), 1)
	require.True(t, strings.Contains(log.Warnings()[0], "kept aside"))
	aside, err := filepath.Glob(path + ".corrupt-*")
	require.NoError(t, err)
	require.Len(t, aside, 1)
	require.Equal(t, int64(2), field[int64](t, gather(t, p)["api"], "latency_count"))
}

// TestSampleStoreKeysDecode uncomments every state and redis key of
// sample.conf: the strict decoder knows each of them.
func TestSampleStoreKeysDecode(t *testing.T) {
	var out []string
	inRedis := false
	n := 0
	for _, line := range strings.Split(sampleConfig, "\n") {
		switch {
		case strings.HasPrefix(line, "  # state = "), strings.HasPrefix(line, "  # state_file = "):
			line = "  " + strings.TrimPrefix(line, "  # ")
			n++
		case line == "  # [inputs.service_latency.redis]":
			line = "  [inputs.service_latency.redis]"
			inRedis = true
		case inRedis && strings.HasPrefix(line, "  #   "):
			rest := strings.TrimPrefix(line, "  #   ")
			if strings.HasPrefix(rest, "# ") && strings.Contains(rest, " = ") {
				rest = strings.TrimPrefix(rest, "# ")
			}
			line = "    " + rest
			if !strings.HasPrefix(rest, "#") {
				n++
			}
		case inRedis && !strings.HasPrefix(line, "  #"):
			inRedis = false
		}
		out = append(out, line)
	}
	require.Greater(t, n, 15, "the sample documents the store keys")
	p := decodeConfig(t, strings.Join(out, "\n"))
	require.NotNil(t, p.Redis)
	require.Equal(t, "127.0.0.1:6379", p.Redis.Address)
	require.Equal(t, 10000, p.Redis.QueueSize)
	require.Equal(t, "service_latency", p.Redis.KeyPrefix)
	require.Equal(t, 168*time.Hour, time.Duration(p.Redis.TTL))
	require.Equal(t, store.DefaultRedisTTL, time.Duration(p.Redis.TTL))
	require.Equal(t, store.DefaultRedisTimeout, time.Duration(p.Redis.Timeout))
	require.Equal(t, store.DefaultRedisQueueSize, p.Redis.QueueSize)
	require.Equal(t, "/var/lib/telegraf/service_latency.state", p.StateFile)
}

func TestRedisGarbageInOneServiceFallsBackForItOnly(t *testing.T) {
	rs := redistest.Start(t)
	srv := newDelayServer(t, 0)
	p, log := newPlugin(t, redisConf(rs, "", `
[[inputs.service_latency.service]]
  name = "a"
  url = "`+srv.URL+`/a"
[[inputs.service_latency.service]]
  name = "b"
  url = "`+srv.URL+`/b"
`))
	gather(t, p)
	gather(t, p)
	c := rs.Client()
	ctx := context.Background()
	require.NoError(t, c.HSet(ctx, "test:{a}:state", "s", "garbage").Err())
	bBefore, err := c.LRange(ctx, "test:{b}:win", 0, -1).Result()
	require.NoError(t, err)
	ms := gather(t, p)
	require.Equal(t, int64(1), field[int64](t, ms["a"], "latency_count"))
	require.Equal(t, field[float64](t, ms["a"], "latency"), field[float64](t, ms["a"], "latency_avg"))
	require.Equal(t, int64(3), field[int64](t, ms["b"], "latency_count"))
	require.Len(t, log.Warnings(), 1)
	require.Contains(t, log.Warnings()[0], `"a"`)
	require.Contains(t, log.Warnings()[0], "test:{a}:state")
	bAfter, err := c.LRange(ctx, "test:{b}:win", 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, bBefore, bAfter[1:], "b's keys were only appended to")
	mean, err := redistest.BlobFloat(ctx, c, "test:{a}:state", 5)
	require.NoError(t, err)
	require.Equal(t, field[float64](t, ms["a"], "latency"), mean, "a's keys were rewritten")
	require.Equal(t, int64(2), field[int64](t, gather(t, p)["a"], "latency_count"))
}
