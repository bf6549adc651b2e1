package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

func secret(s string) config.Secret { return config.NewSecret([]byte(s)) }

// TestRedisConfigErrorsNameTheKeyAndHideSecrets runs every validation
// error path: each is a *keyerr.Error naming the toml key, and no error
// text holds any of the credentials written in the table.
func TestRedisConfigErrorsNameTheKeyAndHideSecrets(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	cases := []struct {
		name    string
		cfg     RedisConfig
		key     string
		secrets []string
	}{
		{"both", RedisConfig{Address: "127.0.0.1:1", URL: "redis://127.0.0.1:1"}, "url", nil},
		{"neither", RedisConfig{}, "address", nil},
		{"url bad host", RedisConfig{URL: "redis://u:SECRETR5@[::1:1/0"}, "url", []string{"SECRETR5"}},
		{"url invalid userinfo", RedisConfig{URL: "redis://u:SECRET%zz@127.0.0.1:6379"}, "url", []string{"SECRET"}},
		{"url bad port", RedisConfig{URL: "redis://u:SECRETP1@127.0.0.1:99999/0"}, "url", []string{"SECRETP1"}},
		{"url slash in password", RedisConfig{URL: "redis://u:SEC/RETS2@127.0.0.1:6379/0"}, "url", []string{"SEC", "RETS2"}},
		{"url space in password", RedisConfig{URL: "redis://u:SEC RETS3@127.0.0.1:6379/0"}, "url", []string{"SEC", "RETS3"}},
		{"url bad db", RedisConfig{URL: "redis://u:SECRETD1@127.0.0.1:6379/x"}, "url", []string{"SECRETD1"}},
		{"url bad scheme", RedisConfig{URL: "http://u:SECRETH1@127.0.0.1:6379"}, "url", []string{"SECRETH1"}},
		{"url and db", RedisConfig{URL: "redis://u:SECRETB1@127.0.0.1:6379/1", DB: 2}, "db", []string{"SECRETB1"}},
		{"url and master", RedisConfig{URL: "redis://127.0.0.1:6379", MasterName: "m"}, "master_name", nil},
		{"address with userinfo", RedisConfig{Address: "u:SECRETA1@127.0.0.1:16379"}, "address", []string{"SECRETA1"}},
		{"address with password only", RedisConfig{Address: ":SECRETA2@127.0.0.1:16379"}, "address", []string{"SECRETA2"}},
		{"second address with userinfo", RedisConfig{Address: "127.0.0.1:1, u:SECRETA3@127.0.0.1:2"}, "address", []string{"SECRETA3"}},
		{"address no port", RedisConfig{Address: "127.0.0.1"}, "address", nil},
		{"address bad port", RedisConfig{Address: "127.0.0.1:99999"}, "address", nil},
		{"address port 0", RedisConfig{Address: "127.0.0.1:0"}, "address", nil},
		{"address no host", RedisConfig{Address: ":6379"}, "address", nil},
		{"address path", RedisConfig{Address: "h/x:6379"}, "address", nil},
		{"negative db", RedisConfig{Address: "127.0.0.1:1", DB: -1}, "db", nil},
		{"cluster db", RedisConfig{Address: "127.0.0.1:1,127.0.0.1:2", DB: 1}, "db", nil},
		{"sentinel password without master", RedisConfig{Address: "127.0.0.1:1", SentinelPassword: secret("SECRETS1")}, "sentinel_password", []string{"SECRETS1"}},
		{"key prefix", RedisConfig{Address: "127.0.0.1:1", KeyPrefix: "a{b"}, "key_prefix", nil},
		{"ttl", RedisConfig{Address: "127.0.0.1:1", TTL: config.Duration(-time.Second)}, "ttl", nil},
		{"timeout", RedisConfig{Address: "127.0.0.1:1", Timeout: config.Duration(-time.Second)}, "timeout", nil},
		{"queue size", RedisConfig{Address: "127.0.0.1:1", QueueSize: -1}, "queue_size", nil},
		{"agent id", RedisConfig{Address: "127.0.0.1:1", AgentID: "a:b"}, "agent_id", nil},
		{"tls ca", RedisConfig{Address: "127.0.0.1:1", Password: secret("SECRETT1")}, "tls_ca", []string{"SECRETT1"}},
		{"tls cert without key", RedisConfig{Address: "127.0.0.1:1"}, "tls_key", nil},
		{"tls key pair", RedisConfig{Address: "127.0.0.1:1"}, "tls_cert", []string{"SECRETK1"}},
		{"tls min version", RedisConfig{Address: "127.0.0.1:1"}, "tls_min_version", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			switch tc.name {
			case "tls ca":
				cfg.TLSCA = notPEM
			case "tls cert without key":
				cfg.TLSCert = notPEM
			case "tls key pair":
				cfg.TLSCert, cfg.TLSKey, cfg.TLSKeyPwd = notPEM, notPEM, "SECRETK1"
			case "tls min version":
				cfg.InsecureSkipVerify = true
				cfg.TLSMinVersion = "TLS9"
			}
			_, err := cfg.Options()
			require.Error(t, err)
			var ke *keyerr.Error
			require.True(t, errors.As(err, &ke), "a *keyerr.Error: %T %v", err, err)
			require.Equal(t, tc.key, ke.Key, "%v", err)
			for _, s := range tc.secrets {
				require.NotContains(t, err.Error(), s, "the error holds a credential")
			}
			t.Log(err)
		})
	}
}

func TestRedisConfigOptions(t *testing.T) {
	c := RedisConfig{URL: "redis://u:pw@127.0.0.1:6390/3", KeyPrefix: "p", TTL: config.Duration(time.Hour),
		Timeout: config.Duration(time.Second), AgentID: "a1", QueueSize: 7}
	o, err := c.Options()
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:6390"}, o.Client.Addrs)
	require.Equal(t, 3, o.Client.DB)
	require.Equal(t, "u", o.Client.Username)
	require.Equal(t, "pw", o.Client.Password)
	require.Equal(t, "p", o.KeyPrefix)
	require.Equal(t, time.Hour, o.TTL)
	require.Equal(t, time.Second, o.Timeout)
	require.Equal(t, "a1", o.AgentID)
	require.Equal(t, 7, o.QueueSize)

	// secrets are read at connect time, the URL's user is kept
	c = RedisConfig{URL: "redis://u@127.0.0.1:6390", Password: secret("pw2")}
	o, err = c.Options()
	require.NoError(t, err)
	require.Empty(t, o.Client.Password)
	user, pass, err := o.Client.CredentialsProviderContext(context.Background())
	require.NoError(t, err)
	require.Equal(t, "u", user)
	require.Equal(t, "pw2", pass)

	// sentinels, cluster
	c = RedisConfig{Address: "127.0.0.1:1, 127.0.0.1:2", MasterName: "m", SentinelPassword: secret("sp"), DB: 2}
	o, err = c.Options()
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, o.Client.Addrs)
	require.Equal(t, "m", o.Client.MasterName)
	require.Equal(t, "sp", o.Client.SentinelPassword)
	require.Equal(t, 2, o.Client.DB)

	// TLS: the server name is the single host
	c = RedisConfig{Address: "localhost:6380"}
	c.InsecureSkipVerify = true
	o, err = c.Options()
	require.NoError(t, err)
	require.NotNil(t, o.Client.TLSConfig)
	require.Equal(t, "localhost", o.Client.TLSConfig.ServerName)
}

// TestNewRedisChecksWhatOptionsChecks: options built by hand go through
// the same rules (one place), and NewRedis defaults the zero values.
func TestNewRedisChecksWhatOptionsChecks(t *testing.T) {
	addr := redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}}
	for key, o := range map[string]RedisOptions{
		"key_prefix": {Client: addr, KeyPrefix: "{x"},
		"ttl":        {Client: addr, TTL: -1},
		"timeout":    {Client: addr, Timeout: -1},
		"queue_size": {Client: addr, QueueSize: -1},
		"agent_id":   {Client: addr, AgentID: "a b"},
		"chunk_size": {Client: addr, ChunkSize: -1},
		"address":    {},
	} {
		_, err := NewRedis(o)
		require.Error(t, err, key)
		require.Equal(t, key, keyerr.Key(err), "%v", err)
	}
	r, err := NewRedis(RedisOptions{Client: addr})
	require.NoError(t, err)
	require.Equal(t, DefaultRedisKeyPrefix, r.opts.KeyPrefix)
	require.Equal(t, DefaultRedisTTL, r.opts.TTL)
	require.Equal(t, DefaultRedisTimeout, r.opts.Timeout)
	require.Equal(t, DefaultRedisQueueSize, r.opts.QueueSize)
	require.Equal(t, DefaultRedisChunkSize, r.opts.ChunkSize)
	require.NotEmpty(t, r.agentID())
	require.NoError(t, r.Close())
}

// TestRedisLogsHoldNoCredentials: an outage with credentials in the
// options logs the address, never the password.
func TestRedisLogsHoldNoCredentials(t *testing.T) {
	log := &testutil.CaptureLogger{}
	c := RedisConfig{URL: "redis://u:SECRETL1@127.0.0.1:1/0", Timeout: config.Duration(100 * time.Millisecond)}
	o, err := c.Options()
	require.NoError(t, err)
	o.Log = log
	r, err := NewRedis(o)
	require.NoError(t, err)
	defer r.Close()
	_, err = r.Update(context.Background(), time.Now(), obs1("api", true, 0.01))
	require.NoError(t, err)
	require.NotEmpty(t, log.Warnings())
	for _, m := range log.Messages() {
		require.NotContains(t, m.Text, "SECRETL1")
	}
	require.True(t, strings.Contains(strings.Join(log.Warnings(), "\n"), "127.0.0.1:1"))
}
