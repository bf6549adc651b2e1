package service_latency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/redis/go-redis/v9"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// RedisConfig is the [inputs.service_latency.redis] table: the Redis that
// holds the state shared by every agent (state = "redis").
type RedisConfig struct {
	// Address is host:port; with MasterName, the Sentinel address(es),
	// comma separated; several addresses without MasterName are the seed
	// nodes of a Redis Cluster. Exclusive with URL.
	Address string `toml:"address"`
	// URL is redis://[user[:password]@]host[:port][/db] or rediss:// for
	// TLS. Exclusive with Address.
	URL      string        `toml:"url"`
	Username config.Secret `toml:"username"`
	Password config.Secret `toml:"password"`
	DB       int           `toml:"db"`
	// MasterName selects the Sentinel master (Address then lists the
	// Sentinels).
	MasterName       string        `toml:"master_name"`
	SentinelPassword config.Secret `toml:"sentinel_password"`

	KeyPrefix string          `toml:"key_prefix"`
	TTL       config.Duration `toml:"ttl"`
	Timeout   config.Duration `toml:"timeout"`
	AgentID   string          `toml:"agent_id"`
	QueueSize int             `toml:"queue_size"`

	tls.ClientConfig
}

// initStore builds the store the config asks for. No network I/O.
func (p *ServiceLatency) initStore() error {
	plugin := func(key string, err error) error { return &ConfigError{Service: -1, Key: key, Err: err} }
	switch p.State {
	case "", "memory":
		if p.Redis != nil {
			return plugin("redis", errors.New(`an [inputs.service_latency.redis] table needs state = "redis"`))
		}
		if p.StateFile == "" {
			p.memStore = store.NewMemory()
			p.store = p.memStore
			return nil
		}
		f := store.NewFile(p.StateFile, pluginLogger{p})
		p.memStore = f.Memory()
		p.store = f
		return nil
	case "redis":
		if p.StateFile != "" {
			return plugin("state_file", errors.New(`only for state = "memory": with Redis the state lives in Redis`))
		}
		if p.Redis == nil {
			return plugin("state", errors.New(`state = "redis" needs an [inputs.service_latency.redis] table with an address or a url`))
		}
		opts, err := p.Redis.options()
		if err != nil {
			return plugin("redis", err)
		}
		opts.Log = pluginLogger{p}
		r, err := store.NewRedis(opts)
		if err != nil {
			return plugin("redis", err)
		}
		p.store = r
		p.memStore = nil
		return nil
	}
	return plugin("state", fmt.Errorf("unknown store %q (want \"memory\" or \"redis\")", p.State))
}

// options turns the table into the store's options, validating it.
func (c *RedisConfig) options() (store.RedisOptions, error) {
	var o store.RedisOptions
	u := &o.Client
	switch {
	case c.Address != "" && c.URL != "":
		return o, errors.New("address and url are exclusive: set one")
	case c.Address == "" && c.URL == "":
		return o, errors.New("address or url is required")
	case c.URL != "":
		if c.MasterName != "" {
			return o, errors.New("master_name needs address (the Sentinels), not url")
		}
		parsed, err := redis.ParseURL(c.URL)
		if err != nil {
			return o, fmt.Errorf("url: %w", err)
		}
		u.Addrs = []string{parsed.Addr}
		u.Username, u.Password, u.DB = parsed.Username, parsed.Password, parsed.DB
		u.TLSConfig = parsed.TLSConfig
		if c.DB != 0 {
			return o, errors.New("db: set the database in the url (redis://host:port/DB)")
		}
	default:
		for _, a := range strings.Split(c.Address, ",") {
			a = strings.TrimSpace(a)
			host, port, err := net.SplitHostPort(a)
			if err == nil {
				if _, perr := strconv.ParseUint(port, 10, 16); perr != nil || host == "" || strings.ContainsAny(host, "/@") {
					err = errors.New("bad host or port")
				}
			}
			if err != nil {
				return o, fmt.Errorf("address %q: want host:port, or use url (%v)", a, err)
			}
			u.Addrs = append(u.Addrs, a)
		}
		if len(u.Addrs) > 1 && c.MasterName == "" && c.DB != 0 {
			return o, errors.New("db: a Redis Cluster (several addresses without master_name) has only database 0")
		}
		u.DB = c.DB
	}
	if c.DB < 0 {
		return o, fmt.Errorf("db %d: must not be negative", c.DB)
	}
	u.MasterName = c.MasterName
	if c.MasterName == "" && !c.SentinelPassword.Empty() {
		return o, errors.New("sentinel_password needs master_name")
	}

	tlsCfg, err := c.ClientConfig.TLSConfig()
	if err != nil {
		return o, fmt.Errorf("tls: %w", err)
	}
	if tlsCfg != nil {
		if tlsCfg.ServerName == "" && len(u.Addrs) == 1 && c.MasterName == "" {
			if host, _, err := net.SplitHostPort(u.Addrs[0]); err == nil {
				tlsCfg.ServerName = host
			}
		}
		u.TLSConfig = tlsCfg
	}

	// Credentials are read from the secrets when a connection is made,
	// never kept in plain text in the options (and never logged).
	username, password, sentinel := c.Username, c.Password, c.SentinelPassword
	if !username.Empty() || !password.Empty() {
		urlUser, urlPass := u.Username, u.Password
		u.Username, u.Password = "", ""
		u.CredentialsProviderContext = func(context.Context) (string, string, error) {
			user, pass := urlUser, urlPass
			if !username.Empty() {
				v, err := secretString(&username)
				if err != nil {
					return "", "", fmt.Errorf("redis username: %w", err)
				}
				user = v
			}
			if !password.Empty() {
				v, err := secretString(&password)
				if err != nil {
					return "", "", fmt.Errorf("redis password: %w", err)
				}
				pass = v
			}
			return user, pass, nil
		}
	}
	if !sentinel.Empty() {
		v, err := secretString(&sentinel)
		if err != nil {
			return o, fmt.Errorf("sentinel_password: %w", err)
		}
		u.SentinelPassword = v
	}

	o.KeyPrefix = c.KeyPrefix // store.NewRedis defaults and checks it
	if c.TTL < 0 {
		return o, fmt.Errorf("ttl %s: must be positive (0 or unset: %s)", time.Duration(c.TTL), store.DefaultRedisTTL)
	}
	o.TTL = time.Duration(c.TTL)
	if c.Timeout < 0 {
		return o, fmt.Errorf("timeout %s: must be positive (0 or unset: %s)", time.Duration(c.Timeout), store.DefaultRedisTimeout)
	}
	o.Timeout = time.Duration(c.Timeout)
	o.QueueSize = c.QueueSize // store.NewRedis defaults and checks it
	if strings.ContainsAny(c.AgentID, " \t\n:") {
		return o, fmt.Errorf("agent_id %q may not contain blanks or ':'", c.AgentID)
	}
	o.AgentID = c.AgentID
	return o, nil
}

func secretString(s *config.Secret) (string, error) {
	buf, err := s.Get()
	if err != nil {
		return "", err
	}
	defer buf.Destroy()
	return buf.String(), nil
}

// sameStoreSettings reports whether two configs ask for the same store;
// when not, it names the first key that differs. Secrets are compared
// without being revealed.
func sameStoreSettings(a, b *ServiceLatency) (bool, string) {
	norm := func(s string) string {
		if s == "" {
			return "memory"
		}
		return s
	}
	if norm(a.State) != norm(b.State) {
		return false, "state"
	}
	if a.StateFile != b.StateFile {
		return false, "state_file"
	}
	ra, rb := a.Redis, b.Redis
	if (ra == nil) != (rb == nil) {
		return false, "redis"
	}
	if ra == nil {
		return true, ""
	}
	switch {
	case ra.Address != rb.Address:
		return false, "redis.address"
	case ra.URL != rb.URL:
		return false, "redis.url"
	case ra.DB != rb.DB:
		return false, "redis.db"
	case ra.MasterName != rb.MasterName:
		return false, "redis.master_name"
	case ra.KeyPrefix != rb.KeyPrefix:
		return false, "redis.key_prefix"
	case ra.TTL != rb.TTL:
		return false, "redis.ttl"
	case ra.Timeout != rb.Timeout:
		return false, "redis.timeout"
	case ra.AgentID != rb.AgentID:
		return false, "redis.agent_id"
	case ra.QueueSize != rb.QueueSize:
		return false, "redis.queue_size"
	case !sameTLS(&ra.ClientConfig, &rb.ClientConfig):
		return false, "redis.tls"
	case !sameSecret(&ra.Username, &rb.Username):
		return false, "redis.username"
	case !sameSecret(&ra.Password, &rb.Password):
		return false, "redis.password"
	case !sameSecret(&ra.SentinelPassword, &rb.SentinelPassword):
		return false, "redis.sentinel_password"
	}
	return true, ""
}

func sameTLS(a, b *tls.ClientConfig) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb) && slices.Equal(a.TLSCipherSuites, b.TLSCipherSuites)
}

func sameSecret(a, b *config.Secret) bool {
	if a.Empty() || b.Empty() {
		return a.Empty() == b.Empty()
	}
	buf, err := b.Get()
	if err != nil {
		return false
	}
	defer buf.Destroy()
	eq, err := a.EqualTo(buf.Bytes())
	return err == nil && eq
}

// checkStoreUnchanged refuses a reload that changes the store settings:
// the store is not rebuilt on reload.
func (p *ServiceLatency) checkStoreUnchanged(next *ServiceLatency) error {
	if same, key := sameStoreSettings(p, next); !same {
		return &ConfigError{Service: -1, Key: key, Err: errors.New("the state store settings changed; they are not applied on reload (the store keeps running as it is): restart the process to change them")}
	}
	return nil
}

// GetState implements telegraf.StatefulPlugin: the state of every service,
// when the store keeps it in the process (the memory store). With Redis
// the state lives in Redis and an empty snapshot is returned.
func (p *ServiceLatency) GetState() interface{} {
	if ps, ok := p.store.(store.Persister); ok {
		return ps.Export()
	}
	return &store.Snapshot{Version: store.SnapshotVersion, Services: map[string]json.RawMessage{}}
}

// SetState implements telegraf.StatefulPlugin: it restores a state
// returned by GetState (Telegraf's [agent] statefile). With a state file,
// the state file wins when it holds a state. A malformed service entry
// makes that service start over with a warning; the others are restored.
func (p *ServiceLatency) SetState(state interface{}) error {
	ps, ok := p.store.(store.Persister)
	if !ok {
		if p.Log != nil {
			p.Log.Debug("the Redis state store keeps no local state: the state restored by Telegraf is ignored")
		}
		return nil
	}
	var snap *store.Snapshot
	switch s := state.(type) {
	case *store.Snapshot:
		snap = s
	case store.Snapshot:
		snap = &s
	default: // e.g. a generic map: round-trip through JSON
		data, err := json.Marshal(state)
		if err != nil {
			return fmt.Errorf("restoring the state: %w", err)
		}
		snap = &store.Snapshot{}
		if err := json.Unmarshal(data, snap); err != nil {
			return fmt.Errorf("restoring the state: %w", err)
		}
	}
	if err := ps.Import(snap); err != nil {
		return fmt.Errorf("restoring the state: %w", err)
	}
	return nil
}

// pluginLogger logs through the plugin's Log as it is when a line is
// written: the store is built in Init, before the logger is set.
type pluginLogger struct{ p *ServiceLatency }

func (l pluginLogger) log() telegraf.Logger {
	if l.p.Log == nil {
		return store.NopLogger{}
	}
	return l.p.Log
}

func (l pluginLogger) Level() telegraf.LogLevel                   { return l.log().Level() }
func (l pluginLogger) AddAttribute(key string, value interface{}) { l.log().AddAttribute(key, value) }
func (l pluginLogger) Errorf(format string, args ...interface{})  { l.log().Errorf(format, args...) }
func (l pluginLogger) Error(args ...interface{})                  { l.log().Error(args...) }
func (l pluginLogger) Warnf(format string, args ...interface{})   { l.log().Warnf(format, args...) }
func (l pluginLogger) Warn(args ...interface{})                   { l.log().Warn(args...) }
func (l pluginLogger) Infof(format string, args ...interface{})   { l.log().Infof(format, args...) }
func (l pluginLogger) Info(args ...interface{})                   { l.log().Info(args...) }
func (l pluginLogger) Debugf(format string, args ...interface{})  { l.log().Debugf(format, args...) }
func (l pluginLogger) Debug(args ...interface{})                  { l.log().Debug(args...) }
func (l pluginLogger) Tracef(format string, args ...interface{})  { l.log().Tracef(format, args...) }
func (l pluginLogger) Trace(args ...interface{})                  { l.log().Trace(args...) }
