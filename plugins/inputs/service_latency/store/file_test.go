package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

func newFile(t *testing.T, path string) (*File, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	f, err := NewFile(path, log)
	require.NoError(t, err)
	return f, log
}

func twoObs(latA, latB float64, okB bool) []Observation {
	return []Observation{
		{Service: "a", Params: testParams, OK: true, Latency: latA},
		{Service: "b", Params: testParams, OK: okB, Latency: latB},
	}
}

func TestFileStateSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, log := newFile(t, path)
	ref := NewMemory() // the same probes, never persisted
	now := time.Unix(1_700_000_000, 0)
	ctx := context.Background()
	for i := range 12 {
		now = now.Add(time.Second)
		o := twoObs(0.001*float64(i%4), 0.01, i%3 != 0)
		_, err := f.Update(ctx, now, o)
		require.NoError(t, err)
		_, err = ref.Update(ctx, now, o)
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	var head struct {
		Version int `json:"version"`
	}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &head))
	require.Equal(t, DumpVersion, head.Version)

	// a new process
	g, glog := newFile(t, path)
	now = now.Add(time.Second)
	o := twoObs(0.002, 0.02, true)
	res, err := g.Update(ctx, now, o)
	require.NoError(t, err)
	want, err := ref.Update(ctx, now, o)
	require.NoError(t, err)
	for i := range res {
		require.NoError(t, res[i].Warning)
		requireSameState(t, want[i].State, res[i].State)
	}
	require.Equal(t, int64(13), res[0].State.Count, "latency_count continues")
	require.Empty(t, log.Warnings())
	require.Empty(t, glog.Warnings())
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")
}

func TestFileMissingIsAFreshStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "none.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	f, log := newFile(t, path)
	res, err := f.Update(context.Background(), time.Now(), twoObs(0.01, 0.01, true))
	require.NoError(t, err)
	require.Equal(t, int64(1), res[0].State.Count)
	require.NoError(t, res[0].Warning)
	require.Empty(t, log.Warnings())
	require.FileExists(t, path, "written after the gather")
}

func TestFileCorruptIsKeptAsideAndThePluginRunsOn(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "{not json",
		"wrong version": `{"version": 99, "services": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			f, log := newFile(t, path)
			clock := newFakeClock()
			f.now = clock.Now
			// a file of the same name already aside: never overwritten
			aside := path + ".corrupt-" + clock.Now().UTC().Format("20060102T150405.000000000Z")
			require.NoError(t, os.WriteFile(aside, []byte("older"), 0o600))

			res, err := f.Update(context.Background(), time.Now(), twoObs(0.01, 0.02, true))
			require.NoError(t, err)
			require.Equal(t, int64(1), res[0].State.Count, "current sample")
			require.Equal(t, 0.01, res[0].State.Mean)
			require.Len(t, log.Warnings(), 1)
			require.Contains(t, log.Warnings()[0], path)
			require.Contains(t, log.Warnings()[0], aside+".1")

			kept, err := os.ReadFile(aside + ".1")
			require.NoError(t, err)
			require.Equal(t, content, string(kept), "the bad file is kept as it was")
			older, err := os.ReadFile(aside)
			require.NoError(t, err)
			require.Equal(t, "older", string(older))
			// and the state file is valid again
			g, glog := newFile(t, path)
			res, err = g.Update(context.Background(), time.Now(), twoObs(0.01, 0.02, true))
			require.NoError(t, err)
			require.Equal(t, int64(2), res[0].State.Count)
			require.Empty(t, glog.Warnings())
		})
	}
}

func TestFileMalformedEntryFallsBackForThatServiceOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, _ := newFile(t, path)
	ctx := context.Background()
	now := time.Now()
	for i := range 3 {
		_, err := f.Update(ctx, now.Add(time.Duration(i)*time.Second), twoObs(0.01, 0.02, true))
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())

	var snap map[string]interface{}
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &snap))
	svcs := snap["services"].(map[string]interface{})
	svcs["a"].(map[string]interface{})["count"] = -5
	bad, err := json.Marshal(snap)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, bad, 0o600))

	g, log := newFile(t, path)
	res, err := g.Update(ctx, now.Add(time.Hour), twoObs(0.05, 0.02, true))
	require.NoError(t, err)
	require.Error(t, res[0].Warning)
	require.Contains(t, res[0].Warning.Error(), `"a"`)
	require.Contains(t, res[0].Warning.Error(), path)
	require.Equal(t, int64(1), res[0].State.Count)
	require.Equal(t, 0.05, res[0].State.Mean)
	require.NoError(t, res[1].Warning)
	require.Equal(t, int64(4), res[1].State.Count, "the other service loaded")
	require.Len(t, log.Warnings(), 1)
	require.Contains(t, log.Warnings()[0], "kept aside")
	matches, err := filepath.Glob(path + ".corrupt-*")
	require.NoError(t, err)
	require.Len(t, matches, 1)
	kept, err := os.ReadFile(matches[0])
	require.NoError(t, err)
	require.Equal(t, string(bad), string(kept), "nothing is lost")
}

func TestFileDropsRemovedServicesAtTheNextSave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, _ := newFile(t, path)
	ctx := context.Background()
	_, err := f.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// restarted with only "a" configured
	g, _ := newFile(t, path)
	first := time.Now()
	_, err = g.Update(ctx, first, []Observation{{Service: "a", Params: testParams, OK: true, Latency: 0.01}})
	require.NoError(t, err)
	require.Contains(t, g.Export().Services, "b", "the first gather may have more Updates (batches) to come")
	_, err = g.Update(ctx, first.Add(10*time.Second), []Observation{{Service: "a", Params: testParams, OK: true, Latency: 0.01}})
	require.NoError(t, err)
	snap := g.Export()
	require.Contains(t, snap.Services, "a")
	require.NotContains(t, snap.Services, "b", "not seen in the first gather: dropped at the second")
	require.NoError(t, g.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(data), `"b"`)
}

func TestFileNeverUsedDoesNotOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	require.NoError(t, os.WriteFile(path, []byte("precious"), 0o600))
	f, _ := newFile(t, path)
	require.NoError(t, f.Close())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "precious", string(data))
}

func TestFileSaveFailureIsWarnedAndTheGatherGoesOn(t *testing.T) {
	// a directory that disappears after the start (directory permissions
	// would not stop root)
	parent := filepath.Join(t.TempDir(), "gone")
	require.NoError(t, os.Mkdir(parent, 0o755))
	f, log := newFile(t, filepath.Join(parent, "state.json"))
	require.NoError(t, os.Remove(parent))
	for i := range 3 {
		res, err := f.Update(context.Background(), time.Now(), twoObs(0.01, 0.02, true))
		require.NoError(t, err)
		require.Equal(t, int64(i+1), res[0].State.Count)
	}
	require.Equal(t, int64(3), f.Health().WriteErrors)
	require.Len(t, log.Warnings(), 1, "warned once a minute at most")
	require.Contains(t, log.Warnings()[0], "saving the state file")
}

func TestSnapshotRoundTripKeepsEveryField(t *testing.T) {
	m := NewMemory()
	now := time.Unix(1_700_000_000, 5)
	ctx := context.Background()
	for i := range 20 {
		now = now.Add(1500 * time.Millisecond)
		_, err := m.Update(ctx, now, twoObs(0.0003*float64(i%7), 0.02, i%4 != 1))
		require.NoError(t, err)
	}
	data, err := json.Marshal(m.Export()) // as Telegraf's statefile does
	require.NoError(t, err)
	var snap Dump
	require.NoError(t, json.Unmarshal(data, &snap))
	n := NewMemory()
	require.NoError(t, n.Import(&snap))
	for _, name := range []string{"a", "b"} {
		requireSameState(t, m.state(name), n.state(name))
	}
	require.Error(t, n.Import(&Dump{Version: 99}))
	require.NotNil(t, n.state("a"), "a rejected import changes nothing")
}

func TestFileImportYieldsToTheStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, _ := newFile(t, path)
	ctx := context.Background()
	_, err := f.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	other := NewMemory()
	for range 5 {
		_, err := other.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
		require.NoError(t, err)
	}
	g, log := newFile(t, path)
	require.NoError(t, g.Import(other.Export()))
	res, err := g.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.Equal(t, int64(2), res[0].State.Count, "the state file wins")
	require.True(t, strings.Contains(strings.Join(logInfos(log), "\n"), "ignored"))

	// without a file, the import is the state
	h, _ := newFile(t, filepath.Join(t.TempDir(), "new.json"))
	require.NoError(t, h.Import(other.Export()))
	res, err = h.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.Equal(t, int64(6), res[0].State.Count)
}

func TestMemoryParamsChangeRebuildsBuckets(t *testing.T) {
	m := NewMemory()
	p1 := stats.Params{Window: 5, HalfLife: time.Minute, Buckets: []float64{0.01, 0.1}}
	p2 := stats.Params{Window: 5, HalfLife: time.Minute, Buckets: []float64{0.001, 0.05}}
	ctx := context.Background()
	for _, x := range []float64{0.0005, 0.02, 0.2} {
		_, err := m.Update(ctx, time.Now(), []Observation{{Service: "h", Params: p1, OK: true, Latency: x}})
		require.NoError(t, err)
	}
	res, err := m.Update(ctx, time.Now(), []Observation{{Service: "h", Params: p2, OK: true, Latency: 0.03}})
	require.NoError(t, err)
	require.NoError(t, res[0].Warning)
	require.Equal(t, []int64{1, 2, 1}, res[0].State.Buckets, "same number of buckets, new bounds")
}

// TestFileKeepsServicesOfTheFirstGathersLaterBatches: a gather of more
// than one batch (500 rounds, or a spread) is several Updates with the
// gather's start as now; the services of the later batches keep their
// restored state.
func TestFileKeepsServicesOfTheFirstGathersLaterBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, _ := newFile(t, path)
	ctx := context.Background()
	at := time.Now()
	_, err := f.Update(ctx, at, twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	g, _ := newFile(t, path)
	at = at.Add(10 * time.Second)
	for _, name := range []string{"a", "b"} { // one gather, two batches
		es, err := g.Update(ctx, at, []Observation{{Service: name, Params: testParams, OK: true, Latency: 0.01}})
		require.NoError(t, err)
		require.Equal(t, int64(2), es[0].State.Count, "%s goes on from its restored state", name)
	}
	_, err = g.Update(ctx, at.Add(10*time.Second), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.Len(t, g.Export().Services, 2)
}
