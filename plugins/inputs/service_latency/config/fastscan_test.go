package config

import (
	"strings"
	"testing"

	"github.com/influxdata/toml/ast"
	"github.com/stretchr/testify/require"
)

// scannedChunks are chunks in the scanner's shape: each must be taken by
// the scanner and give what the parser gives.
var scannedChunks = map[string]string{
	"plain": "[[inputs.service_latency.service]]\n  name = \"svc-1\"\n  url = \"http://127.0.0.1:80/svc/1?delay=1ms\"\n",
	"tags":  "  [[inputs.service_latency.service]]\n    name = \"a\"\n    tags = { team = \"t1\", tier = 'x y' }\n",
	"values": "[[inputs.service_latency.service]] # first\n" +
		"url = 'http://h/\"q\"'\t# a comment\n" +
		"window = 10\nsamples = +3\nfailure_threshold = -0\nx = 0.5\ny = -12.25\n" +
		"keep_alive = true\nfollow_redirects = false   \n" +
		"expected_status = [\"200\", '3xx' ,\"404\"]\nempty = []\nsp = [ ]\ns = \"\"\nl = ''\n",
	"runs": "[[inputs.service_latency.service]]\n\n  url = \"a\"\n  \t\n  # a comment ends the table's source span\n  name = \"b\"\n" +
		"[[inputs.service_latency.service]]   \n# lead\n  url = \"c\"  \n\n" +
		"[[inputs.service_latency.service]]\n",
	"no final newline": "[[inputs.service_latency.service]]\nurl = \"http://x/\"",
	"comment first":    "# before\n\n[[inputs.service_latency.service]]\nurl = \"http://x/\"\n",
	"odd keys":         "[[inputs.service_latency.service]]\n9-a_B = \"v\"\n  tags = {k=\"v\",k2  =  \"w\"}\n",
}

// refusedChunks are chunks the scanner leaves to the parser (valid TOML
// or not).
var refusedChunks = map[string]string{
	"escape":          "[[inputs.service_latency.service]]\nurl = \"a\\tb\"\n",
	"multi-line":      "[[inputs.service_latency.service]]\nbody = \"\"\"\nx\"\"\"\n",
	"multi literal":   "[[inputs.service_latency.service]]\nbody = '''x'''\n",
	"non-ascii":       "[[inputs.service_latency.service]]\nname = \"é\"\n",
	"crlf":            "[[inputs.service_latency.service]]\r\nname = \"a\"\r\n",
	"tab in string":   "[[inputs.service_latency.service]]\nname = \"a\tb\"\n",
	"datetime":        "[[inputs.service_latency.service]]\nd = 1979-05-27\n",
	"time":            "[[inputs.service_latency.service]]\nd = 07:32:00\n",
	"underscore":      "[[inputs.service_latency.service]]\nwindow = 1_000\n",
	"exponent":        "[[inputs.service_latency.service]]\nx = 1e5\n",
	"leading zero":    "[[inputs.service_latency.service]]\nwindow = 012\n",
	"bare fraction":   "[[inputs.service_latency.service]]\nx = 1.\n",
	"trailing comma":  "[[inputs.service_latency.service]]\nexpected_status = [\"200\",]\n",
	"inline trailing": "[[inputs.service_latency.service]]\ntags = { a = \"1\", }\n",
	"inline empty":    "[[inputs.service_latency.service]]\ntags = {}\n",
	"inline number":   "[[inputs.service_latency.service]]\ntags = { a = 1 }\n",
	"numbers array":   "[[inputs.service_latency.service]]\npercentiles = [50, 99]\n",
	"multi-line arr":  "[[inputs.service_latency.service]]\nexpected_status = [\n\"200\"]\n",
	"quoted key":      "[[inputs.service_latency.service]]\n\"url\" = \"a\"\n",
	"dotted key":      "[[inputs.service_latency.service]]\ntags.a = \"a\"\n",
	"duplicate":       "[[inputs.service_latency.service]]\nurl = \"a\"\nurl = \"b\"\n",
	"inline dup":      "[[inputs.service_latency.service]]\ntags = { a = \"1\", a = \"2\" }\n",
	"other table":     "[[inputs.service_latency.service]]\n[inputs.service_latency.service.tags]\na = \"1\"\n",
	"trueish":         "[[inputs.service_latency.service]]\nkeep_alive = trueish\n",
	"garbage after":   "[[inputs.service_latency.service]]\nurl = \"a\" \"b\"\n",
	"header garbage":  "[[inputs.service_latency.service]] x\nurl = \"a\"\n",
	"key first":       "url = \"a\"\n[[inputs.service_latency.service]]\n",
	"no value":        "[[inputs.service_latency.service]]\nurl =\n",
	"open string":     "[[inputs.service_latency.service]]\nurl = \"a\n",
}

// parsed is what the parser makes of a chunk (lines shifted by off).
func parsed(t *testing.T, src string, off int) []*ast.Table {
	t.Helper()
	svcs, err := tomlServiceChunk(src, strings.Count(src, serviceHeader), off)
	require.NoError(t, err)
	return svcs
}

func TestScanEqualsParser(t *testing.T) {
	for name, src := range scannedChunks {
		t.Run(name, func(t *testing.T) {
			want := parsed(t, src, 40)
			got, ok := scanServiceChunk(src, len(want), 40)
			require.True(t, ok, "the scanner takes this shape")
			require.Equal(t, want, got)
		})
	}
}

func TestScanRefuses(t *testing.T) {
	for name, src := range refusedChunks {
		t.Run(name, func(t *testing.T) {
			_, ok := scanServiceChunk(src, strings.Count(src, serviceHeader), 0)
			require.False(t, ok)
		})
	}
	// The count of tables is the caller's: another count is refused.
	_, ok := scanServiceChunk(scannedChunks["runs"], 2, 0)
	require.False(t, ok)
}

// FuzzScanServiceChunk: whatever the scanner takes, the parser takes too
// and makes the same tables of.
func FuzzScanServiceChunk(f *testing.F) {
	for _, src := range scannedChunks {
		f.Add(src)
	}
	for _, src := range refusedChunks {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		want := strings.Count(src, serviceHeader)
		got, ok := scanServiceChunk(src, want, 7)
		if !ok {
			return
		}
		svcs, err := tomlServiceChunk(src, want, 7)
		if want == 0 {
			// No service table: the parser's chunk has none either (the
			// fast path never makes such a chunk).
			require.Empty(t, got)
			return
		}
		require.NoError(t, err, "the scanner took a chunk the parser refuses")
		require.Equal(t, svcs, got)
	})
}
