package config

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// manyServices is a file with n services past the fast path's threshold;
// service i's table is body(i).
func manyServices(n int, head string, body func(i int) string) string {
	var b strings.Builder
	b.WriteString("[[inputs.service_latency]]\n" + head)
	for i := range n {
		b.WriteString("[[inputs.service_latency.service]]\n" + body(i))
	}
	return b.String()
}

// slowParse is Parse without the fast path.
func slowParse(t *testing.T, src string) (*File, error) {
	t.Helper()
	root, err := toml.Parse([]byte(src))
	if err != nil {
		return nil, err
	}
	tbl, err := pluginTable(root)
	require.NoError(t, err)
	f := &File{Config: Default(), table: tbl}
	if err := decoder.UnmarshalTable(tbl, &f.Config); err != nil {
		return nil, err
	}
	return f, nil
}

func TestFastParseEqualsOneParse(t *testing.T) {
	n := 2*chunkServices*2 + 7
	src := manyServices(n, "  timeout = \"3s\"\n  keep_alive = true\n  # [[inputs.service_latency.service]] in a comment\n", func(i int) string {
		s := fmt.Sprintf("  name = \"svc-%d\"\n  url = \"http://127.0.0.1:80/%d\"\n", i, i)
		switch i % 7 {
		case 1:
			s += "  tags = { team = \"a\", tier = \"1\" }\n"
		case 2:
			s += "  timeout = \"2s\"\n  window = 10\n  follow_redirects = false\n  max_body_size = \"2KiB\"\n"
		case 3:
			s += "  percentiles = [50, 99.9]\n  expected_status = [200, \"3xx\"]\n" // the library's own decoding
		case 4:
			s += "  body = \"\"\"\n[[inputs.service_latency.service]]\n\"\"\"\n  method = \"POST\"\n"
		case 5:
			s += "  headers = { X = \"[[inputs.service_latency.service]]\" }\n  [inputs.service_latency.service.tags]\n    k = 'v'\n"
		case 6:
			s += "  password = \"pw\"\n  username = \"u\"\n"
		}
		return s
	})
	cuts := splitServices(src)
	require.Len(t, cuts, n, "the header inside the multi-line string is not a cut")
	fast, err := parseFast(src, cuts)
	require.NoError(t, err)
	slow, err := slowParse(t, src)
	require.NoError(t, err)
	require.Len(t, fast.Config.Services, n)
	for i := range fast.Config.Services {
		a, b := *fast.Config.Services[i], *slow.Config.Services[i]
		// Secrets are containers: compare what they hold.
		for _, p := range [][2]*Service{{&a, &b}} {
			for _, sec := range []string{"Username", "Password"} {
				x := reflect.ValueOf(p[0]).Elem().FieldByName(sec).Addr().Interface().(interface{ Empty() bool })
				y := reflect.ValueOf(p[1]).Elem().FieldByName(sec).Addr().Interface().(interface{ Empty() bool })
				require.Equal(t, x.Empty(), y.Empty())
			}
		}
		a.Options.Username = b.Options.Username
		a.Options.Password = b.Options.Password
		require.Equal(t, b, a, "service %d", i)
	}
	fast.Config.Services, slow.Config.Services = nil, nil
	require.Equal(t, slow.Config, fast.Config)
	// Lines: every service table and key where one parse puts them.
	require.NotContains(t, fast.table.Fields, "service", "the services' tree is dropped once decoded")
	fast.restoreServices()
	fs, ss := fast.table.Fields["service"].([]*ast.Table), slow.table.Fields["service"].([]*ast.Table)
	require.Len(t, fs, n)
	for i := range fs {
		require.Equal(t, ss[i].Line, fs[i].Line)
		for k, v := range ss[i].Fields {
			require.Equal(t, fieldLine(v), fieldLine(fs[i].Fields[k]), "service %d key %s", i, k)
		}
	}
}

// TestFastParseErrorsAreTheExactOnes: an error anywhere gives the message
// and the line of one parse.
func TestFastParseErrorsAreTheExactOnes(t *testing.T) {
	n := 2*chunkServices + 300
	body := func(bad int, what string) func(int) string {
		return func(i int) string {
			if i == bad {
				return what
			}
			return fmt.Sprintf("  url = \"http://h/%d\"\n", i)
		}
	}
	for name, src := range map[string]string{
		"unknown key":    manyServices(n, "", body(n-3, "  url = \"http://x\"\n  nope = 1\n")),
		"syntax":         manyServices(n, "", body(300, "  url = \"http://x\n")),
		"wrong type":     manyServices(n, "", body(20, "  window = \"ten\"\n")),
		"duplicate key":  manyServices(n, "", body(400, "  url = \"a\"\n  url = \"b\"\n")),
		"second plugin":  manyServices(n, "", body(n-1, "  url = \"http://x\"\n[[inputs.service_latency]]\n")),
		"unset env":      manyServices(n, "", body(500, "  url = \"http://${NOPE_NOT_SET_17}/\"\n")),
		"secret store":   manyServices(n, "", body(501, "  url = \"http://x/\"\n  password = \"@{vault:pw}\"\n")),
		"open multiline": manyServices(n, "", body(10, "  body = \"\"\"\n")),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(src))
			require.Error(t, err)
			// The exact path: the same file with the fast path's threshold out of reach.
			old := strings.ReplaceAll(src, serviceHeader, "[[ inputs.service_latency.service ]]")
			require.Nil(t, splitServices(old))
			_, want := Parse([]byte(old))
			require.Error(t, want)
			require.Equal(t, strings.ReplaceAll(want.Error(), "[[ inputs.service_latency.service ]]", serviceHeader), err.Error())
		})
	}
}

// TestFastParseFallsBack: a table after the services (legal) is not the
// fast path's shape; the exact path reads it.
func TestFastParseFallsBack(t *testing.T) {
	n := 2*chunkServices + 1
	src := manyServices(n, "", func(i int) string {
		s := fmt.Sprintf("  url = \"http://h/%d\"\n", i)
		if i == n-1 {
			s += "[inputs.service_latency.redis]\n  address = '127.0.0.1:6379'\n"
		}
		return s
	})
	_, err := parseFast(src, splitServices(src))
	require.ErrorIs(t, err, errSlow)
	f, err := Parse([]byte(src))
	require.NoError(t, err)
	require.Len(t, f.Config.Services, n)
	require.NotNil(t, f.Config.Redis)
}

// TestCompileManyServicesShareDefaults: thousands of services, compiled
// in parallel (go test -race: the probers read their scheme's defaults
// together), from a file the scanner reads; services with options of
// their own get them on top of the defaults.
func TestCompileManyServicesShareDefaults(t *testing.T) {
	var mu sync.Mutex
	methods := map[string]string{} // path → method and body
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		methods[r.URL.Path] = r.Method + string(body)
		mu.Unlock()
	}))
	defer srv.Close()
	n := 3000
	src := manyServices(n, "  timeout = \"3s\"\n  method = \"HEAD\"\n", func(i int) string {
		s := fmt.Sprintf("  name = \"svc-%d\"\n  url = \"%s/%d\"\n", i, srv.URL, i)
		switch i % 5 {
		case 1:
			s += "  method = \"POST\"\n  body = \"x\"\n"
		case 2:
			s += "  tags = { team = \"t\" }\n"
		case 3:
			s = fmt.Sprintf("  name = \"svc-%d\"\n  url = \"tcp://127.0.0.1:%d\"\n", i, 1000+i)
		}
		return s
	})
	f, err := Parse([]byte(src))
	require.NoError(t, err)
	spec, err := Compile(&f.Config)
	require.NoError(t, err)
	defer spec.Close()
	require.Len(t, spec.Targets, n)
	for i, tg := range spec.Targets {
		require.Equal(t, fmt.Sprintf("svc-%d", i), tg.Name)
		want := "http"
		if i%5 == 3 {
			want = "tcp"
		}
		require.Equal(t, want, tg.Prober.Kind(), "service %d", i)
	}
	// Each prober sends its own method: the defaults' (shared), or the
	// service's on top of them; the defaults are not changed by it.
	for i := range 10 {
		if i%5 != 3 {
			require.Equal(t, probe.Success, spec.Targets[i].Prober.Probe(context.Background()).Outcome)
		}
	}
	require.Equal(t, map[string]string{"/0": "HEAD", "/1": "POSTx", "/2": "HEAD", "/4": "HEAD",
		"/5": "HEAD", "/6": "POSTx", "/7": "HEAD", "/9": "HEAD"}, methods)
	require.Equal(t, "HEAD", f.Config.Options.Method)
	require.Empty(t, f.Config.Options.Body)

	// A prober's first probes at once (its request is rendered by the
	// first of them): every one sends the request whole.
	var wg sync.WaitGroup
	outcomes := make([]probe.Outcome, 8)
	for k := range outcomes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[k] = spec.Targets[11].Prober.Probe(context.Background()).Outcome
		}()
	}
	wg.Wait()
	for _, o := range outcomes {
		require.Equal(t, probe.Success, o)
	}
	require.Equal(t, "POSTx", methods["/11"])
}

// TestFastLoadCompileErrorsLocated: an error Compile finds in a file the
// fast path read (its services' tree dropped) is located at the line one
// parse gives.
func TestFastLoadCompileErrorsLocated(t *testing.T) {
	n := 2*chunkServices + 300
	body := func(bad int, what string) func(int) string {
		return func(i int) string {
			if i == bad {
				return what
			}
			return fmt.Sprintf("  name = \"s%d\"\n  url = \"http://h/%d\"\n", i, i)
		}
	}
	for name, src := range map[string]string{
		"scheme":        manyServices(n, "", body(n-2, "  name = \"x\"\n\n  url = \"ftp://h/\"\n")),
		"duplicate":     manyServices(n, "", body(400, "  # same name\n  name = \"s3\"\n  url = \"http://h/\"\n")),
		"builtin tag":   manyServices(n, "", body(300, "  url = \"http://h/t\"\n  tags = { result = \"x\" }\n")),
		"misplaced key": manyServices(n, "", body(77, "  url = \"tcp://h:1\"\n  method = \"POST\"\n")),
		"plugin key":    manyServices(n, "  timeout = \"-1s\"\n", body(-1, "")),
	} {
		t.Run(name, func(t *testing.T) {
			f, err := Parse([]byte(src))
			require.NoError(t, err)
			require.NotNil(t, f.reparse, "read by the fast path")
			_, err = Compile(&f.Config)
			require.Error(t, err)
			got := f.Locate(err).Error()

			old := strings.ReplaceAll(src, serviceHeader, "[[ inputs.service_latency.service ]]")
			require.Nil(t, splitServices(old))
			slow, err := Parse([]byte(old))
			require.NoError(t, err)
			_, err = Compile(&slow.Config)
			require.Error(t, err)
			require.Equal(t, slow.Locate(err).Error(), got)
			require.Regexp(t, `^\d+: `, got)
		})
	}
}

// TestCompileServerTag: the server tag is the URL without credentials,
// and so is the name of a service that has none.
func TestCompileServerTag(t *testing.T) {
	f, err := Parse([]byte("[[inputs.service_latency]]\n" +
		"[[inputs.service_latency.service]]\n  url = \"http://u:pw@h/?token=abc&x=1\"\n" +
		"[[inputs.service_latency.service]]\n  name = \"named\"\n  url = \"http://v:pw2@h/\"\n"))
	require.NoError(t, err)
	spec, err := Compile(&f.Config)
	require.NoError(t, err)
	defer spec.Close()
	require.Equal(t, "http://u@h/?token=REDACTED&x=1", spec.Targets[0].Name)
	require.Equal(t, "http://u@h/?token=REDACTED&x=1", spec.Targets[0].Server)
	require.Equal(t, "named", spec.Targets[1].Name)
	require.Equal(t, "http://v@h/", spec.Targets[1].Server)
}

// TestLoadReadsTheFile: Load reads the file itself (a byte order mark
// ignored, ${VAR} expanded) and names it in its errors.
func TestLoadReadsTheFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/sl.conf"
	t.Setenv("SL_LOAD_TEST_HOST", "127.0.0.1:9")
	src := "\xef\xbb\xbf[[inputs.service_latency]]\n[[inputs.service_latency.service]]\n  url = \"http://${SL_LOAD_TEST_HOST}/\"\n"
	require.NoError(t, os.WriteFile(path, []byte(src), 0o600))
	f, err := Load(path)
	require.NoError(t, err)
	require.Equal(t, path, f.Path)
	require.Equal(t, "http://127.0.0.1:9/", f.Config.Services[0].URL)

	_, err = Load(dir + "/missing.conf")
	require.ErrorIs(t, err, os.ErrNotExist)

	require.NoError(t, os.WriteFile(path, []byte(src+"  nope = 1\n"), 0o600))
	_, err = Load(path)
	require.EqualError(t, err, path+`:4: unknown key "nope" in [[inputs.service_latency.service]]`)
}
