package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/keyerr"
)

// File is the memory store persisted to a state file, so that the state
// outlives the process (a restart, a deploy, a Telegraf reload that
// restarts the execd process).
//
// The file is read at the first Update (or Export/Import), never in the
// constructor: a missing file is a fresh start. A state file that is a
// symbolic link is read and replaced where it points: the link stays. It
// is written every save interval (SetSaveInterval; after every Update
// when 0, the default of NewFile) — at the first Update that ends at
// least an interval after the last save (or the load) — and on Close,
// atomically: a temporary file in the same directory is written (streamed,
// service by service) and fsynced, renamed over the state file, and the
// directory is fsynced, so a crash at any moment leaves either the old or
// the new file, and loses at most the last interval's updates.
//
// A file that cannot be read or decoded, or is of another format version,
// is kept aside, renamed to "<file>.corrupt-<UTC timestamp>" (never
// overwriting anything), with a warning, and every service starts over
// from its current sample. A malformed service entry in an otherwise good
// file makes only that service start over (a warning names it); a copy of
// the file is kept aside as well, so nothing is lost.
type File struct {
	mem  *Memory
	path string
	log  telegraf.Logger
	now  func() time.Time

	mu       sync.Mutex
	interval time.Duration // between saves; 0: after every Update
	lastSave time.Time     // of the last save, or of the load
	stats    SaveStats
	loaded   bool
	hadState bool // the file existed and was decoded
	noSave   bool // a bad file could not be moved aside: never overwrite it
	saveWarn time.Time
	saveErrs int64
}

// NewFile returns a memory store persisted to path. It checks the path
// (CheckStateFile) and removes the temporary files a killed process left
// beside the state file; it does not read the file.
func NewFile(path string, log telegraf.Logger) (*File, error) {
	if log == nil {
		log = NopLogger{}
	}
	if err := CheckStateFile(path); err != nil {
		return nil, err
	}
	f := &File{mem: NewMemory(), path: path, log: log, now: time.Now}
	f.removeStaleTemps()
	return f, nil
}

// CheckStateFile reports a state_file path that cannot work: a directory,
// or a file whose directory does not exist. A symbolic link is checked
// where it points. The error is a *keyerr.Error with Key "state_file".
func CheckStateFile(path string) error {
	if path == "" {
		return keyerr.New("state_file", errors.New("empty path"))
	}
	return checkFilePath("state_file", path)
}

// checkFilePath reports a file path (of config key key) that cannot
// work: a directory, or a file whose directory does not exist. A
// symbolic link is checked where it points.
func checkFilePath(key, path string) error {
	target := resolveLink(path)
	if fi, err := os.Stat(target); err == nil && fi.IsDir() {
		return keyerr.Errorf(key, "%s is a directory; name a file in it", path)
	}
	dir := filepath.Dir(target)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return keyerr.Errorf(key, "the directory of %s (%s) does not exist", path, dir)
	case err != nil:
		return keyerr.Errorf(key, "the directory of %s: %v", path, err)
	case !fi.IsDir():
		return keyerr.Errorf(key, "the directory of %s (%s) is not a directory", path, dir)
	}
	return nil
}

// resolveLink returns where path points when it is a symbolic link
// (followed to the end, even when the final target does not exist yet),
// else path: the state file is read, kept aside and replaced there, so
// the link stays a link.
func resolveLink(path string) string {
	for range 40 {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return path
		}
		if t, err := filepath.EvalSymlinks(path); err == nil {
			return t
		}
		dest, err := os.Readlink(path) // dangling: one step at a time
		if err != nil {
			return path
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(path), dest)
		}
		path = dest
	}
	return path
}

// tempPrefix is how the temporary files of a save of target begin; the
// rest of the name is os.CreateTemp's random decimal number.
func tempPrefix(target string) string { return "." + filepath.Base(target) + ".tmp-" }

// removeStaleTemps removes the temporary files of saves that never
// finished (a kill -9 between create and rename): only names of exactly
// our pattern, only regular files, only beside the state file (and beside
// the link's target when the state file is a link).
func (f *File) removeStaleTemps() {
	dirs := map[string]string{f.path: filepath.Dir(f.path)}
	if t := resolveLink(f.path); t != f.path {
		dirs[t] = filepath.Dir(t)
	}
	for target, dir := range dirs {
		prefix := tempPrefix(target)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			rest, ok := strings.CutPrefix(name, prefix)
			if !ok || rest == "" || strings.Trim(rest, "0123456789") != "" || !e.Type().IsRegular() {
				continue
			}
			if err := os.Remove(filepath.Join(dir, name)); err == nil {
				f.log.Infof("state file %s: removed %s, left by a save that did not finish", f.path, filepath.Join(dir, name))
			}
		}
	}
}

// DefaultSaveInterval is the plugin's default state_save_interval.
const DefaultSaveInterval = time.Minute

// SetSaveInterval sets the time between saves (0: after every Update).
func (f *File) SetSaveInterval(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.interval = max(d, 0)
}

// SaveStats are what the saves wrote, for benchmarks and tests.
type SaveStats struct {
	Saves int64         // completed saves
	Bytes int64         // bytes written by them, in all
	Last  time.Duration // the last save's duration (encode, write, fsync, rename)
}

// SaveStats returns what the saves so far wrote.
func (f *File) SaveStats() SaveStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Health implements Store: failed saves are WriteErrors.
func (f *File) Health() Health {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Health{WriteErrors: f.saveErrs}
}

// Update implements Store: it loads the file on the first call, applies
// the observations and saves the file.
func (f *File) Update(ctx context.Context, now time.Time, obs []Observation) ([]Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loadLocked()
	res, err := f.mem.Update(ctx, now, obs)
	if err != nil {
		return nil, err
	}
	if f.interval == 0 || f.now().Sub(f.lastSave) >= f.interval {
		f.saveLocked()
	}
	return res, nil
}

// Retain implements Store; dropped services leave the file at the next
// save.
func (f *File) Retain(keep func(string) bool) { f.mem.Retain(keep) }

// Close implements Store: it saves the file (if it was ever loaded, so a
// store that never ran cannot overwrite the file of one that did).
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded || f.noSave {
		return nil
	}
	return f.save()
}

// Export implements Persister.
func (f *File) Export() *Dump {
	f.mu.Lock()
	f.loadLocked()
	f.mu.Unlock()
	return f.mem.Export()
}

// Import implements Persister. The state file wins: when it held a state,
// the imported snapshot is ignored (the file is written after every
// gather, so it is at least as recent).
func (f *File) Import(snap *Dump) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loadLocked()
	if f.hadState {
		f.log.Infof("state file %s already holds the state; the state restored by Telegraf is ignored", f.path)
		return nil
	}
	return f.mem.Import(snap)
}

func (f *File) loadLocked() {
	if f.loaded {
		return
	}
	f.loaded = true
	f.lastSave = f.now() // the first save is an interval after the load
	data, err := os.ReadFile(resolveLink(f.path))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		f.log.Debugf("state file %s does not exist yet: starting with a fresh state", f.path)
		return
	}
	if err != nil {
		f.keepAside(fmt.Errorf("reading it: %w", err), true)
		return
	}
	var snap Dump
	if err := json.Unmarshal(data, &snap); err != nil {
		f.keepAside(fmt.Errorf("decoding it: %w", err), true)
		return
	}
	nbad, err := f.mem.importDump(&snap, "state file "+f.path)
	if err != nil {
		f.keepAside(err, true)
		return
	}
	f.hadState = true
	if nbad > 0 {
		f.keepAside(fmt.Errorf("%d malformed service entries (those services start over)", nbad), false)
	}
	f.log.Debugf("state file %s loaded: %d services", f.path, len(snap.Services)-nbad)
}

// keepAside moves (whole = true) or copies the state file to
// <file>.corrupt-<timestamp> and warns. It never overwrites a file.
func (f *File) keepAside(why error, whole bool) {
	target := resolveLink(f.path) // the file, not the link to it
	aside, err := f.asideName(target)
	if err == nil {
		err = os.Link(target, aside) // fails rather than overwrite
		if err != nil && !errors.Is(err, fs.ErrExist) {
			err = copyExclusive(target, aside)
		}
		if err == nil && whole {
			err = os.Remove(target)
		}
	}
	switch {
	case err != nil && whole:
		f.noSave = true
		f.log.Errorf("state file %s is unusable (%v) and could not be kept aside (%v): starting with a fresh state that will NOT be saved, so the file is not overwritten; move it away and restart", f.path, why, err)
	case err != nil:
		f.log.Warnf("state file %s: %v; a copy could not be kept aside (%v)", f.path, why, err)
	case whole:
		f.log.Warnf("state file %s is unusable (%v): kept aside as %s; every service starts over from its current sample", f.path, why, aside)
	default:
		f.log.Warnf("state file %s: %v; a copy of the file was kept aside as %s", f.path, why, aside)
	}
}

func (f *File) asideName(target string) (string, error) {
	base := target + ".corrupt-" + f.now().UTC().Format("20060102T150405.000000000Z")
	name := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name, nil
		}
		if i > 100 {
			return "", fmt.Errorf("no free name for %s", base)
		}
		name = fmt.Sprintf("%s.%d", base, i)
	}
}

func copyExclusive(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst) // no empty or partial copy left behind
	}
	return err
}

// saveLocked saves and warns on failure (at most once a minute); the
// gather goes on. A failed save is retried at the next Update, not an
// interval later.
func (f *File) saveLocked() {
	if f.noSave {
		return
	}
	if err := f.save(); err != nil {
		f.saveErrs++
		if now := f.now(); f.saveWarn.IsZero() || now.Sub(f.saveWarn) >= time.Minute {
			f.saveWarn = now
			f.log.Warnf("saving the state file: %v (%d failed saves so far; the state is kept in memory)", err, f.saveErrs)
		}
	}
}

// save writes the state file atomically, each service's entry encoded
// straight into the temporary file (no copy of the whole state in
// memory).
func (f *File) save() error {
	start := time.Now()
	var n int64
	err := writeAtomic(resolveLink(f.path), func(w io.Writer) error {
		cw := &countingWriter{w: w}
		err := f.mem.writeDump(cw, f.now().UTC())
		n = cw.n
		return err
	})
	if err != nil {
		return err
	}
	f.lastSave = f.now()
	f.stats.Saves++
	f.stats.Bytes += n
	f.stats.Last = time.Since(start)
	return nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeAtomic writes what write writes to path through a temporary file
// in the same directory: write, fsync, rename, fsync the directory. path
// is the file itself (a link's target): the rename replaces it, not a
// link.
func writeAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix(path)+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<16)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil // renamed; the directory fsync is best effort
	}
	_ = d.Sync()
	return d.Close()
}
