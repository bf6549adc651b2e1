package service_latency

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigErrors(t *testing.T) {
	const svc = "[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"http://127.0.0.1:1/\"\n"
	cases := []struct {
		name, conf string
		want       []string // substrings of the error
	}{
		{"unknown plugin key", "[[inputs.service_latency]]\n  timeout = \"1s\"\n  tmeout = \"1s\"\n" + svc,
			[]string{"3: ", `unknown key "tmeout"`, "[[inputs.service_latency]]"}},
		{"unknown service key", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"api\"\n  ulr = \"http://x/\"\n",
			[]string{"4: ", `unknown key "ulr"`, "[[inputs.service_latency.service]]"}},
		{"second plugin table", "[[inputs.service_latency]]\n" + svc + "[[inputs.service_latency]]\n" + svc,
			[]string{"5: ", "second [[inputs.service_latency]]"}},
		{"other plugin", "[[inputs.service_latency]]\n" + svc + "[[inputs.cpu]]\n", []string{"5: ", "inputs.cpu"}},
		{"agent table", "[agent]\n  interval = \"1s\"\n[[inputs.service_latency]]\n" + svc, []string{"1: ", `"agent"`, "inputs.execd"}},
		{"no plugin table", "# nothing\n", []string{"no [[inputs.service_latency]]"}},
		{"no services", "[[inputs.service_latency]]\n  timeout = \"1s\"\n", []string{"1: ", "no services"}},
		{"duplicate names", "[[inputs.service_latency]]\n" + svc + svc, []string{"6: ", `service "api"`, "duplicate"}},
		{"duplicate default names", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  url = \"tcp://127.0.0.1:1\"\n[[inputs.service_latency.service]]\n  url = \"tcp://127.0.0.1:1\"\n",
			[]string{"4: ", "duplicate"}},
		{"empty url", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"\"\n", []string{"4: ", `service "api"`, "url"}},
		{"missing url", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"api\"\n", []string{"2: ", `service "api"`, "url"}},
		{"unparsable url", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"http://[::1\"\n", []string{"4: ", `service "api"`, "url"}},
		{"unsupported scheme", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"ftp://127.0.0.1/\"\n", []string{"4: ", "url", "ftp"}},
		{"zero timeout", "[[inputs.service_latency]]\n  timeout = \"0s\"\n" + svc, []string{"2: ", "timeout", "positive"}},
		{"negative timeout", "[[inputs.service_latency]]\n  timeout = \"-1s\"\n" + svc, []string{"2: ", "timeout"}},
		{"service timeout", "[[inputs.service_latency]]\n" + svc + "  timeout = \"-2s\"\n", []string{"5: ", `service "api"`, "timeout"}},
		{"zero concurrency", "[[inputs.service_latency]]\n  max_concurrency = 0\n" + svc, []string{"2: ", "max_concurrency"}},
		{"negative concurrency", "[[inputs.service_latency]]\n  max_concurrency = -3\n" + svc, []string{"2: ", "max_concurrency"}},
		{"wrong type", "[[inputs.service_latency]]\n  max_concurrency = \"many\"\n" + svc, []string{"2: "}},
		{"syntax", "[[inputs.service_latency]]\n  timeout = \n", []string{"3: ", "syntax"}},
		{"builtin tag", "[[inputs.service_latency]]\n" + svc + "  tags = { result = \"x\" }\n", []string{"5: ", "tags", `"result"`}},
		{"window", "[[inputs.service_latency]]\n  window = 0\n" + svc, []string{"2: ", "window"}},
		{"percentile", "[[inputs.service_latency]]\n  percentiles = [50.0, 100.0]\n" + svc, []string{"2: ", "percentiles"}},
		{"half-life", "[[inputs.service_latency]]\n  ewma_half_life = \"-1m\"\n" + svc, []string{"2: ", "ewma_half_life"}},
		{"buckets", "[[inputs.service_latency]]\n  histogram_buckets = [0.1, 0.05]\n" + svc, []string{"2: ", "histogram_buckets"}},
		{"service window", "[[inputs.service_latency]]\n" + svc + "  window = -1\n", []string{"5: ", `service "api"`, "window"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sl.conf")
			require.NoError(t, os.WriteFile(path, []byte(tc.conf), 0o600))
			p, err := LoadConfigFile(path)
			require.Error(t, err)
			require.Nil(t, p)
			msg := err.Error()
			require.Contains(t, msg, path+":", "the error names the file")
			for _, w := range tc.want {
				require.Contains(t, msg, w)
			}
			require.NotContains(t, msg, "\n", "one line")
		})
	}
}

func TestConfigEnvExpansion(t *testing.T) {
	t.Setenv("SL_TEST_HOST", "127.0.0.1:9")
	p, err := ParseConfig([]byte("[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"a\"\n  url = \"tcp://${SL_TEST_HOST}\"\n  body_regex = \"ok$\"\n"))
	require.Error(t, err) // body_regex does not apply to tcp — but the env var expanded and "$" was kept
	require.Contains(t, err.Error(), "body_regex")
	p, err = ParseConfig([]byte("[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"a\"\n  url = \"tcp://${SL_TEST_HOST}\"\n"))
	require.NoError(t, err)
	require.Equal(t, "tcp://127.0.0.1:9", p.targets()[0].Server)
	p.Stop()
}

func TestReconfigureKeepsStateOfRemainingServices(t *testing.T) {
	srv := newDelayServer(t, 0)
	p, _ := newPlugin(t, conf(`
[[inputs.service_latency.service]]
  name = "keep"
  url = "`+srv.URL+`/a"
[[inputs.service_latency.service]]
  name = "drop"
  url = "`+srv.URL+`/b"
`))
	gather(t, p)
	gather(t, p)
	next := decodeConfig(t, conf(`
[[inputs.service_latency.service]]
  name = "keep"
  url = "`+srv.URL+`/moved"
[[inputs.service_latency.service]]
  name = "new"
  url = "`+srv.URL+`/c"
`))
	require.NoError(t, p.Reconfigure(next))
	ms := gather(t, p)
	require.Len(t, ms, 2)
	require.Equal(t, int64(3), field[int64](t, ms["keep"], "latency_count"))
	require.Equal(t, int64(1), field[int64](t, ms["new"], "latency_count"))
	require.Nil(t, dumpEntry(t, p, "drop"))
}

// Each config mistake found trying the plugin as a user would is refused at
// load with the file, the line and the key — never silently accepted, and
// never with a credential in the message.
func TestConfigErrorsFoundByUsers(t *testing.T) {
	const svc = "[[inputs.service_latency.service]]\n  name = \"api\"\n  url = \"http://127.0.0.1:1/\"\n"
	long := strings.Repeat("n", 70_000)
	cases := []struct {
		name, conf string
		want       []string
		never      []string
	}{
		{"missing env var", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  url = \"http://127.0.0.1:${SL_SURELY_MISSING_PORT}/a\"\n",
			[]string{":3: ", "url", "SL_SURELY_MISSING_PORT", "not set"}, nil},
		{"mixed percentiles", "[[inputs.service_latency]]\n  percentiles = [50.0, 100]\n" + svc, []string{":2: ", "percentiles"}, nil},
		{"bad size unit", "[[inputs.service_latency]]\n" + svc + "  max_body_size = \"1XB\"\n", []string{":5: ", "max_body_size"}, nil},
		{"tag of the wrong type", "[[inputs.service_latency]]\n" + svc + "  tags = { a = 1 }\n", []string{":5: ", "tags"}, nil},
		{"unknown redis key", "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  adress = \"x\"\n" + svc,
			[]string{":5: ", `unknown key "adress"`, "[inputs.service_latency.redis]"}, []string{"RedisConfig"}},
		{"redis url with a password", "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  url = \"redis://u:SECRETR5@[::1:1/0\"\n" + svc,
			[]string{":4: ", "redis.url"}, []string{"SECRETR5"}},
		{"redis url with bad userinfo", "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  url = \"redis://u:SECRET%zz@127.0.0.1:6379/0\"\n" + svc,
			[]string{":4: ", "redis.url"}, []string{"SECRET"}},
		{"redis address with a password", "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"u:SECRETA1@127.0.0.1:16379\"\n" + svc,
			[]string{":4: ", "redis.address"}, []string{"SECRETA1"}},
		{"secret store reference", "[[inputs.service_latency]]\n" + svc + "  bearer_token = \"@{vault:token}\"\n",
			[]string{":5: ", `service "api"`, "bearer_token", "secret store"}, nil},
		{"redis secret store reference", "[[inputs.service_latency]]\n  state = \"redis\"\n[inputs.service_latency.redis]\n  address = \"127.0.0.1:6379\"\n  password = \"@{vault:redis}\"\n" + svc,
			[]string{":5: ", "redis.password", "secret store"}, nil},
		{"name too long", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = \"" + long + "\"\n  url = \"http://127.0.0.1:1/\"\n",
			[]string{":3: ", "name", "limit"}, nil},
		{"tag value too long", "[[inputs.service_latency]]\n" + svc + "  tags = { team = \"" + long + "\" }\n", []string{":5: ", "tags", "limit"}, nil},
		{"name ending in a backslash", "[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  name = 'x\\'\n  url = \"http://127.0.0.1:1/\"\n",
			[]string{":3: ", "name", "backslash"}, nil},
		{"tag ending in a backslash", "[[inputs.service_latency]]\n" + svc + "  tags = { team = 'a\\' }\n", []string{":5: ", "tags", "backslash"}, nil},
		{"interval not whole seconds", "[[inputs.service_latency]]\n" + svc + "  interval = \"1500ms\"\n", []string{":5: ", `service "api"`, "interval", "whole seconds"}, nil},
		{"plugin interval too short", "[[inputs.service_latency]]\n  interval = \"500ms\"\n" + svc, []string{":2: ", "interval"}, nil},
		{"samples out of range", "[[inputs.service_latency]]\n  samples = 0\n" + svc, []string{":2: ", "samples"}, nil},
		{"round does not fit the timeout", "[[inputs.service_latency]]\n  timeout = \"1s\"\n" + svc + "  samples = 5\n  sample_interval = \"300ms\"\n", []string{":6: ", `service "api"`, "samples", "timeout"}, nil},
		{"spread not a duration", "[[inputs.service_latency]]\n  spread = \"soon\"\n" + svc, []string{":2: ", "spread", "auto"}, nil},
		{"state file is a directory", "[[inputs.service_latency]]\n  state_file = \"" + t.TempDir() + "\"\n" + svc, []string{":2: ", "state_file", "directory"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sl.conf")
			require.NoError(t, os.WriteFile(path, []byte(tc.conf), 0o600))
			p, err := LoadConfigFile(path)
			require.Error(t, err)
			require.Nil(t, p)
			msg := err.Error()
			require.Contains(t, msg, path+":", "the error names the file")
			for _, w := range tc.want {
				require.Contains(t, msg, w)
			}
			for _, n := range tc.never {
				require.NotContains(t, msg, n)
			}
			require.NotContains(t, msg, "\n", "one line")
			require.Less(t, len(msg), 2048, "bounded")
		})
	}
}

// What users write that must simply work: integer percentiles, a UTF-8
// byte order mark (Telegraf strips it too), an env var set to "".
func TestConfigAcceptedAsUsersWriteIt(t *testing.T) {
	t.Setenv("SL_EMPTY", "")
	p, err := ParseConfig([]byte("\xef\xbb\xbf[[inputs.service_latency]]\n  percentiles = [50, 95, 99]\n[[inputs.service_latency.service]]\n  name = \"a${SL_EMPTY}\"\n  url = \"tcp://127.0.0.1:9\"\n  # ${SL_ONLY_IN_A_COMMENT}\n"))
	require.NoError(t, err)
	defer p.Stop()
	require.Equal(t, []float64{50, 95, 99}, p.targets()[0].Percentiles)
	require.Equal(t, "a", p.targets()[0].Name)
}
