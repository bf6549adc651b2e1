package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// Issue 12.10: a directory, or a file in a missing directory, is refused
// up front with the key state_file; the old NewFile accepted both and a
// directory left an empty "<dir>.corrupt-<ts>" at every start.
func TestCheckStateFile(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"directory":      dir,
		"missing parent": filepath.Join(dir, "nope", "state.json"),
		"parent a file":  filepath.Join(dir, "file", "state.json"),
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			if name == "parent a file" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
			}
			err := CheckStateFile(path)
			require.Error(t, err)
			require.Equal(t, "state_file", keyerr.Key(err), "%v", err)
			_, err = NewFile(path, nil)
			require.Error(t, err, "NewFile checks it too")
			require.Equal(t, "state_file", keyerr.Key(err))
		})
	}
	require.NoError(t, CheckStateFile(filepath.Join(dir, "new.json")), "a file still to be created")
	link := filepath.Join(dir, "dirlink")
	require.NoError(t, os.Symlink(dir, link))
	require.Error(t, CheckStateFile(link), "a link to a directory")
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(dir), "*.corrupt-*"))
	require.NoError(t, err)
	require.Empty(t, matches, "nothing left beside the directory")
}

// Issue 12.10: a state file that is a symbolic link is written where it
// points, atomically; the link stays a link. The old code renamed its
// temporary file over the link, which became a regular file.
func TestFileWritesThroughASymlink(t *testing.T) {
	realDir, links := t.TempDir(), t.TempDir()
	target := filepath.Join(realDir, "state.json")
	link := filepath.Join(links, "state.json")
	require.NoError(t, os.Symlink(target, link)) // dangling until the first save
	ctx := context.Background()
	f, _ := newFile(t, link)
	for i := range 3 {
		_, err := f.Update(ctx, time.Now(), twoObs(0.01, 0.02, i%2 == 0))
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "still a link")
	fi, err = os.Lstat(target)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "the target holds the state")
	for _, d := range []string{realDir, links} {
		entries, err := os.ReadDir(d)
		require.NoError(t, err)
		require.Len(t, entries, 1, "no temporary file left in %s", d)
	}
	// a new process through the link continues the state
	g, _ := newFile(t, link)
	res, err := g.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.Equal(t, int64(4), res[0].State.Count)

	// a corrupt target is kept aside beside the target, the link stays
	require.NoError(t, os.WriteFile(target, []byte("{garbage"), 0o600))
	h, log := newFile(t, link)
	_, err = h.Update(ctx, time.Now(), twoObs(0.01, 0.02, true))
	require.NoError(t, err)
	require.Len(t, log.Warnings(), 1)
	aside, err := filepath.Glob(target + ".corrupt-*")
	require.NoError(t, err)
	require.Len(t, aside, 1, "kept aside beside the target")
	fi, err = os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&os.ModeSymlink, "still a link after a corrupt file")
}

// Issue 12.5: a kill -9 between the temporary file's creation and its
// rename leaves ".<state>.tmp-<digits>"; NewFile removes those, and
// nothing else.
func TestNewFileRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	stale := []string{".state.json.tmp-123456", ".state.json.tmp-9"}
	keep := []string{
		".state.json.tmp-", ".state.json.tmp-12a", ".other.json.tmp-1", "state.json.tmp-1",
		".state.json.tmp-1.bak", "state.json", "state.json.corrupt-20250101T000000.000000000Z",
	}
	for _, n := range append(append([]string{}, stale...), keep...) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, ".state.json.tmp-77"), 0o755)) // not a file: kept
	keep = append(keep, ".state.json.tmp-77")
	_, log := newFile(t, path)
	for _, n := range stale {
		require.NoFileExists(t, filepath.Join(dir, n))
	}
	for _, n := range keep {
		_, err := os.Lstat(filepath.Join(dir, n))
		require.NoError(t, err, "%s is not ours: kept", n)
	}
	require.Len(t, logInfos(log), len(stale))

	// what a save creates matches the pattern that is cleaned
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	require.NoError(t, err)
	require.NoError(t, tmp.Close())
	_, _ = newFile(t, path)
	require.NoFileExists(t, tmp.Name())
}

// A state file that cannot be copied aside leaves no empty copy (the old
// code left an empty "<dir>.corrupt-<ts>" for a directory).
func TestCopyExclusiveLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(t.TempDir(), "copy")
	require.Error(t, copyExclusive(dir, dst))
	require.NoFileExists(t, dst)
}
