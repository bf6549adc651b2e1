package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBinaryStateFileSurvivesKill9DuringSaves: the binary saving its state
// file after every update (state_save_interval = "0s"; 1,000 services
// probed once an hour and one every gather, a gather every 10 ms: each
// gather writes the 1,001 entries, ~0.6 MB, so it is saving most of the
// time) is killed, once past its second gather, with
// SIGKILL at random moments, again and again. After every kill the state
// file loads — it is the old or the new one, never half of one —, nothing
// is ever kept aside as corrupt, the state never goes back, and the next
// process removes the temporary file a kill left mid-save.
func TestBinaryStateFileSurvivesKill9DuringSaves(t *testing.T) {
	srv := target(t)
	dir := t.TempDir()
	stateFile := filepath.Join(dir, "service_latency.state")
	const n = 1000
	var b strings.Builder
	fmt.Fprintf(&b, "[[inputs.service_latency]]\n  timeout = \"2s\"\n  spread = \"0s\"\n  state_file = %q\n  state_save_interval = \"0s\"\n", stateFile)
	for i := range n {
		fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"s%d\"\n  url = \"%s/%d\"\n  interval = \"3600s\"\n", i, srv.URL, i)
	}
	fmt.Fprintf(&b, "[[inputs.service_latency.service]]\n  name = \"every\"\n  url = \"%s/every\"\n", srv.URL)
	conf := writeConf(t, b.String())

	// probes returns the file's total probe count and that of "every"
	// (-1: no file yet, or no entry).
	probes := func() (int64, int64) {
		data, err := os.ReadFile(stateFile)
		if os.IsNotExist(err) {
			return -1, -1
		}
		require.NoError(t, err)
		var d struct {
			Version  int                        `json:"version"`
			Services map[string]json.RawMessage `json:"services"`
		}
		require.NoError(t, json.Unmarshal(data, &d), "the state file after a kill -9 is whole JSON (%d bytes)", len(data))
		require.Equal(t, 2, d.Version)
		total, every := int64(0), int64(-1)
		for name, raw := range d.Services {
			var e struct {
				Probes *int64 `json:"probes"`
			}
			require.NoError(t, json.Unmarshal(raw, &e), name)
			require.NotNil(t, e.Probes, name)
			total += *e.Probes
			if name == "every" {
				every = *e.Probes
			}
		}
		return total, every
	}
	tempRE := regexp.MustCompile(`^\.` + regexp.QuoteMeta(filepath.Base(stateFile)) + `\.tmp-\d+$`)
	temps := func() []string {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var out []string
		for _, e := range entries {
			if tempRE.MatchString(e.Name()) {
				out = append(out, e.Name())
			}
		}
		return out
	}

	r := rand.New(rand.NewPCG(17, uint64(time.Now().UnixNano())))
	last, lastEvery := int64(-1), int64(-1)
	midSave := 0
	const kills = 8
	for k := range kills {
		p := start(t, "-config", conf, "-poll_interval", "10ms")
		go func() {
			for range p.lines { // keep stdout flowing
			}
		}()
		if k > 0 {
			// The previous kill's temporary file, if any, is gone once
			// this process has started.
			require.Eventually(t, func() bool { return len(temps()) == 0 || strings.Contains(p.stderr.String(), "removed") }, 10*time.Second, 5*time.Millisecond)
		}
		// Wait for a save of this process's second gather ("every" probed
		// again), then kill it at a random moment.
		require.Eventually(t, func() bool { _, e := probes(); return e > lastEvery+1 }, 60*time.Second, 5*time.Millisecond, "stderr: %s", p.stderr.String())
		time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
		require.NoError(t, p.cmd.Process.Kill())
		p.wait()
		if len(temps()) > 0 {
			midSave++
		}
		got, every := probes()
		require.GreaterOrEqual(t, got, last, "the state never goes back")
		require.GreaterOrEqual(t, every, lastEvery+2)
		last, lastEvery = got, every
		aside, err := filepath.Glob(stateFile + ".corrupt-*")
		require.NoError(t, err)
		require.Empty(t, aside, "never kept aside: the file always loads")
		require.NotContains(t, p.stderr.String(), "unusable")
	}
	t.Logf("%d of %d kills landed during a save (a temporary file left behind)", midSave, kills)

	// A last process loads the file and goes on from it.
	out, err := exec.Command(binPath, "-config", conf, "-once").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NotContains(t, string(out), "unusable")
	m := regexp.MustCompile(`(?m)service=every .*[ ,]probes=(\d+)i`).FindStringSubmatch(string(out))
	require.NotNil(t, m, "%s", out)

	p0, _ := strconv.ParseInt(m[1], 10, 64)
	require.Equal(t, lastEvery+1, p0, "it went on from the saved state")
	require.Empty(t, temps())
}
