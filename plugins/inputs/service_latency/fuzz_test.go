package service_latency

import (
	"regexp"
	"strings"
	"testing"
)

// configErrorRE is the shape of every config error: the line first.
var configErrorRE = regexp.MustCompile(`^\d+: \S`)

// FuzzParseConfig feeds arbitrary bytes to the strict config decoder (the
// binary's -config file, and every SIGHUP reload). It must never panic; an
// error is one line that starts with a line number; an accepted config has
// at least one service, unique names, and stops cleanly. Seeds:
// testdata/fuzz/FuzzParseConfig.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sampleConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		// A config may name files (tls_ca, ...): only ever read them
		// from the test's own empty directory.
		if strings.Contains(string(data), "/dev/") {
			return
		}
		p, err := ParseConfig(data)
		if err != nil {
			msg := err.Error()
			if !configErrorRE.MatchString(msg) {
				t.Fatalf("config error without a leading line number: %q", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Fatalf("config error spans lines: %q", msg)
			}
			if p != nil {
				t.Fatalf("a config error with a plugin")
			}
			return
		}
		p.Log = nopLogger{}
		names := p.ServiceNames()
		if len(names) == 0 {
			t.Fatal("accepted a config without services")
		}
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				t.Fatalf("accepted duplicate service name %q", n)
			}
			seen[n] = true
		}
		p.Stop()
	})
}
