package store

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/stats"
)

// variedMemory is a memory store of services with windows partly full,
// failures, zero latencies, histograms and verdicts.
func variedMemory(t testing.TB, n int) *Memory {
	r := rand.New(rand.NewPCG(17, 2))
	m := NewMemory()
	now := time.Unix(1_700_000_000, 0)
	for round := range 30 {
		now = now.Add(10 * time.Second)
		var obs []Observation
		for i := range n {
			p := stats.Params{Window: 5 + i%20, HalfLife: time.Minute}
			if i%3 == 0 {
				p.Buckets = []float64{0.001, 0.01, 0.1}
			}
			p.Verdict = stats.VerdictParams{FailureThreshold: 2, SuccessThreshold: 2, Statistic: stats.DefaultStatistic}
			if i%4 == 1 && round%2 == 0 {
				continue
			}
			x := math.Exp(r.Float64()*20 - 15)
			if i%11 == 0 {
				x = 0
			}
			ok := r.IntN(5) != 0
			obs = append(obs, Observation{Service: "svc-\u00e9\"<" + string(rune('a'+i%26)) + string(rune('0'+i/26)), Params: p, OK: ok, Latency: x, EndsRound: true, RoundOK: ok})
		}
		_, err := m.Update(context.Background(), now, obs)
		require.NoError(t, err)
	}
	return m
}

// TestAppendEntryIsEncodeEntry: the streamed encoding is the document
// json.Marshal makes (byte for byte but for the order of the bins), and
// decodes to the same state.
func TestAppendEntryIsEncodeEntry(t *testing.T) {
	m := variedMemory(t, 200)
	for name, e := range m.states {
		want, err := encodeEntry(e.state, e.params)
		require.NoError(t, err)
		got := appendEntry(nil, e.state, e.params)
		var a, b dumpEntry
		require.NoError(t, json.Unmarshal(want, &a))
		require.NoError(t, json.Unmarshal(got, &b), "%s", got)
		require.Equal(t, a, b, name)
		// Byte for byte with the bins blanked.
		blank := func(raw []byte) []byte {
			i := bytes.Index(raw, []byte(`"bins":{`))
			j := bytes.IndexByte(raw[i:], '}')
			return append(append([]byte{}, raw[:i]...), raw[i+j:]...)
		}
		require.Equal(t, string(blank(want)), string(blank(got)))
		s1, p1, err := decodeEntry(want)
		require.NoError(t, err)
		s2, p2, err := decodeEntry(got)
		require.NoError(t, err)
		require.Equal(t, p1, p2)
		require.Equal(t, s1.Count, s2.Count)
		require.Equal(t, s1.Verdict, s2.Verdict)
	}
}

// TestWriteDumpIsExport: the streamed state file decodes to the Dump
// Export returns.
func TestWriteDumpIsExport(t *testing.T) {
	m := variedMemory(t, 100)
	at := time.Date(2026, 12, 1, 0, 0, 0, 123, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, m.writeDump(&buf, at))
	var got Dump
	require.NoError(t, json.Unmarshal(buf.Bytes(), &got))
	want := m.Export()
	require.Equal(t, want.Version, got.Version)
	require.True(t, at.Equal(got.SavedAt))
	require.Len(t, got.Services, len(want.Services))
	for name, raw := range want.Services {
		var a, b dumpEntry
		require.NoError(t, json.Unmarshal(raw, &a))
		require.NoError(t, json.Unmarshal(got.Services[name], &b), name)
		require.Equal(t, a, b, name)
	}
	// An empty store is a valid, empty dump.
	buf.Reset()
	require.NoError(t, NewMemory().writeDump(&buf, at))
	var empty Dump
	require.NoError(t, json.Unmarshal(buf.Bytes(), &empty))
	require.Equal(t, DumpVersion, empty.Version)
	require.NotNil(t, empty.Services)
	require.Empty(t, empty.Services)
}

// TestFileSavesEveryInterval: with a save interval the file is written
// at the first Update an interval after the last save (or the load), and
// on Close; not after the others.
func TestFileSavesEveryInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.state")
	f, err := NewFile(path, nil)
	require.NoError(t, err)
	clock := time.Unix(1_700_000_000, 0)
	f.now = func() time.Time { return clock }
	f.SetSaveInterval(time.Minute)
	p := stats.Params{Window: 10, HalfLife: time.Minute}
	update := func() {
		_, err := f.Update(context.Background(), clock, []Observation{{Service: "a", Params: p, OK: true, Latency: 0.01}})
		require.NoError(t, err)
	}
	count := func() int64 {
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		var d Dump
		require.NoError(t, json.Unmarshal(data, &d))
		s, _, err := decodeEntry(d.Services["a"])
		require.NoError(t, err)
		return s.Count
	}
	update() // loads (no file yet): the interval starts now
	require.NoFileExists(t, path)
	clock = clock.Add(59 * time.Second)
	update()
	require.NoFileExists(t, path)
	clock = clock.Add(time.Second)
	update()
	require.Equal(t, int64(3), count(), "saved an interval after the load")
	clock = clock.Add(30 * time.Second)
	update()
	require.Equal(t, int64(3), count(), "not yet")
	clock = clock.Add(30 * time.Second)
	update()
	require.Equal(t, int64(5), count())
	st := f.SaveStats()
	require.Equal(t, int64(2), st.Saves)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Less(t, fi.Size(), st.Bytes)
	update()
	require.NoError(t, f.Close())
	require.Equal(t, int64(6), count(), "Close saves")
}
