package store

import (
	"context"
	ctls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/redis/go-redis/v9"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
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
	// WaitReplicas: a write counts as done only when this many replicas
	// have it (WAIT); 0: off.
	WaitReplicas int `toml:"wait_replicas"`
	// QueueFile keeps the replay queue on disk across restarts.
	QueueFile string `toml:"queue_file"`

	tls.ClientConfig
}

// Options turns the table into the store's options, validating every
// key. Every error is a *keyerr.Error whose Key is the toml key inside the
// redis table, and no error holds a credential (a URL or address with
// user info is never echoed). Zero values stay zero: NewRedis defaults
// them.
func (c *RedisConfig) Options() (RedisOptions, error) {
	var o RedisOptions
	u := &o.Client
	switch {
	case c.Address != "" && c.URL != "":
		return o, keyerr.New("url", errors.New("address and url are exclusive: set one"))
	case c.Address == "" && c.URL == "":
		return o, keyerr.New("address", errors.New("address or url is required"))
	case c.URL != "":
		if c.MasterName != "" {
			return o, keyerr.New("master_name", errors.New("master_name needs address (the Sentinels), not url"))
		}
		parsed, err := parseRedisURL(c.URL)
		if err != nil {
			return o, keyerr.New("url", err)
		}
		u.Addrs = []string{parsed.Addr}
		u.Username, u.Password, u.DB = parsed.Username, parsed.Password, parsed.DB
		u.TLSConfig = parsed.TLSConfig
		if c.DB != 0 {
			return o, keyerr.New("db", errors.New("set the database in the url (redis://host:port/DB)"))
		}
	default:
		for _, a := range strings.Split(c.Address, ",") {
			a = strings.TrimSpace(a)
			if err := checkAddress(a); err != nil {
				return o, keyerr.New("address", err)
			}
			u.Addrs = append(u.Addrs, a)
		}
		if len(u.Addrs) > 1 && c.MasterName == "" && c.DB != 0 {
			return o, keyerr.New("db", errors.New("a Redis Cluster (several addresses without master_name) has only database 0"))
		}
		u.DB = c.DB
	}
	if c.DB < 0 {
		return o, keyerr.Errorf("db", "%d: must not be negative", c.DB)
	}
	u.MasterName = c.MasterName
	if c.MasterName == "" && !c.SentinelPassword.Empty() {
		return o, keyerr.New("sentinel_password", errors.New("sentinel_password needs master_name"))
	}

	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return o, err
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
			return o, keyerr.New("sentinel_password", errors.New("cannot be read: "+redact.Text(err.Error())))
		}
		u.SentinelPassword = v
	}

	o.KeyPrefix = c.KeyPrefix
	o.TTL = time.Duration(c.TTL)
	o.Timeout = time.Duration(c.Timeout)
	o.QueueSize = c.QueueSize
	o.AgentID = c.AgentID
	o.WaitReplicas = c.WaitReplicas
	o.QueueFile = c.QueueFile
	if err := o.check(); err != nil {
		return o, err
	}
	return o, nil
}

// check validates the options that do not come from the connection
// settings. Options runs it on the table's values and NewRedis on the
// options it is given, after defaulting the zero values: the rules live
// here only.
func (o *RedisOptions) check() error {
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return keyerr.Errorf("key_prefix", "%q may not contain '{' or '}' (they delimit the hash tag)", o.KeyPrefix)
	}
	if o.TTL < 0 {
		return keyerr.Errorf("ttl", "%s: must be positive (0 or unset: %s)", o.TTL, DefaultRedisTTL)
	}
	if o.Timeout < 0 {
		return keyerr.Errorf("timeout", "%s: must be positive (0 or unset: %s)", o.Timeout, DefaultRedisTimeout)
	}
	if o.QueueSize < 0 {
		return keyerr.Errorf("queue_size", "%d: must not be negative (0 or unset: %d)", o.QueueSize, DefaultRedisQueueSize)
	}
	if err := checkAgentID(o.AgentID); err != nil {
		return err
	}
	if err := checkQueueFile(o.QueueFile); err != nil {
		return err
	}
	if o.WaitReplicas < 0 {
		return keyerr.Errorf("wait_replicas", "%d: must not be negative (0 or unset: off)", o.WaitReplicas)
	}
	if o.ChunkSize < 0 {
		return keyerr.Errorf("chunk_size", "%d: must not be negative (0 or unset: %d)", o.ChunkSize, DefaultRedisChunkSize)
	}
	if o.ReplayPerUpdate < 0 {
		return keyerr.Errorf("replay_per_update", "%d: must not be negative (0 or unset: %d)", o.ReplayPerUpdate, DefaultRedisReplayPerUpdate)
	}
	return nil
}

// checkAddress validates one host:port. An address with user info is
// refused without being echoed (it holds a credential).
func checkAddress(a string) error {
	if strings.Contains(a, "@") {
		return errors.New("an address may not hold user info (user:password@); set username and password, or use url")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: want host:port, or use url", a)
	}
	if n, perr := strconv.ParseUint(port, 10, 16); perr != nil || n == 0 {
		return fmt.Errorf("%q: bad port %q (want 1 to 65535)", a, port)
	}
	if host == "" || strings.ContainsAny(host, "/") {
		return fmt.Errorf("%q: bad host %q", a, host)
	}
	return nil
}

// quoted matches a Go-quoted string in an error text.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// parseRedisURL parses the url key. Its errors never hold the URL's user
// info: the URL is shown with the password cut out, and when the URL has
// user info, no quoted fragment of it is echoed either (a parse error
// quotes the part it failed on, which may be a piece of the password).
func parseRedisURL(raw string) (*redis.Options, error) {
	parsed, err := redis.ParseURL(raw)
	if err == nil {
		if aerr := checkAddress(parsed.Addr); aerr != nil {
			return nil, fmt.Errorf("%q: %w", displayURL(raw), aerr)
		}
		return parsed, nil
	}
	var why string
	var ue *url.Error
	if errors.As(err, &ue) {
		why = ue.Err.Error()
	} else {
		why = strings.TrimPrefix(err.Error(), "redis: ")
	}
	shown := displayURL(raw)
	if strings.Contains(raw, "@") {
		why = quoted.ReplaceAllString(why, `"…"`)
	}
	return nil, fmt.Errorf("%q: %s (want redis://[user[:password]@]host[:port][/db] or rediss://)", shown, redact.Text(why))
}

// displayURL is the URL without its password: everything between the
// first ':' after the scheme and the last '@' is cut (more than
// url.Parse would take as the password when the URL is malformed, never
// less).
func displayURL(raw string) string {
	at := strings.LastIndexByte(raw, '@')
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + 3
	}
	user := raw[start:at]
	if c := strings.IndexByte(user, ':'); c >= 0 {
		user = user[:c]
	}
	if strings.ContainsAny(user, "/?#") {
		user = "…"
	}
	return raw[:start] + user + raw[at:]
}

// tlsConfig builds the TLS settings; an error names the key at fault.
func (c *RedisConfig) tlsConfig() (*ctls.Config, error) {
	cc := c.ClientConfig
	if (cc.TLSCert == "") != (cc.TLSKey == "") && (cc.Enable == nil || *cc.Enable) {
		if cc.TLSCert == "" {
			return nil, keyerr.New("tls_cert", errors.New("tls_key needs tls_cert"))
		}
		return nil, keyerr.New("tls_key", errors.New("tls_cert needs tls_key"))
	}
	cfg, err := cc.TLSConfig()
	if err == nil {
		return cfg, nil
	}
	// Find the key at fault: each part alone.
	key := "tls_enable"
	parts := []struct {
		key string
		set func(*tls.ClientConfig)
	}{
		{"tls_renegotiation_method", func(p *tls.ClientConfig) { p.RenegotiationMethod = cc.RenegotiationMethod }},
		{"tls_ca", func(p *tls.ClientConfig) { p.TLSCA = cc.TLSCA }},
		{"tls_cert", func(p *tls.ClientConfig) { p.TLSCert, p.TLSKey, p.TLSKeyPwd = cc.TLSCert, cc.TLSKey, cc.TLSKeyPwd }},
		{"tls_min_version", func(p *tls.ClientConfig) { p.TLSMinVersion = cc.TLSMinVersion }},
		{"tls_cipher_suites", func(p *tls.ClientConfig) { p.TLSCipherSuites = cc.TLSCipherSuites }},
	}
	for _, part := range parts {
		p := tls.ClientConfig{InsecureSkipVerify: true}
		part.set(&p)
		if _, perr := p.TLSConfig(); perr != nil {
			key = part.key
			break
		}
	}
	msg := strings.ReplaceAll(redact.Text(err.Error()), ": %!w(<nil>)", "")
	if cc.TLSKeyPwd != "" {
		msg = strings.ReplaceAll(msg, cc.TLSKeyPwd, "…")
	}
	return nil, keyerr.New(key, errors.New(msg))
}

func secretString(s *config.Secret) (string, error) {
	buf, err := s.Get()
	if err != nil {
		return "", err
	}
	defer buf.Destroy()
	return buf.String(), nil
}
