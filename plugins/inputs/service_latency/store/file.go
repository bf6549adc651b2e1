package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
)

// File is the memory store persisted to a state file, so that the state
// outlives the process (a restart, a deploy, a Telegraf reload that
// restarts the execd process).
//
// The file is read at the first Update (or Export/Import), never in the
// constructor: a missing file is a fresh start. It is written after every
// Update and on Close, atomically: a temporary file in the same directory
// is written and fsynced, renamed over the state file, and the directory
// is fsynced, so a crash leaves either the old or the new file.
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
	loaded   bool
	hadState bool // the file existed and was decoded
	noSave   bool // a bad file could not be moved aside: never overwrite it
	saveWarn time.Time
	saveErrs int64
}

// NewFile returns a memory store persisted to path. It does no I/O.
func NewFile(path string, log telegraf.Logger) *File {
	if log == nil {
		log = NopLogger{}
	}
	return &File{mem: NewMemory(), path: path, log: log, now: time.Now}
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
	f.saveLocked()
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
	data, err := os.ReadFile(f.path)
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
	aside, err := f.asideName()
	if err == nil {
		err = os.Link(f.path, aside) // fails rather than overwrite
		if err != nil && !errors.Is(err, fs.ErrExist) {
			err = copyExclusive(f.path, aside)
		}
		if err == nil && whole {
			err = os.Remove(f.path)
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

func (f *File) asideName() (string, error) {
	base := f.path + ".corrupt-" + f.now().UTC().Format("20060102T150405.000000000Z")
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
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// saveLocked saves and warns on failure (at most once a minute); the
// gather goes on.
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

// save writes the state file atomically.
func (f *File) save() error {
	snap := f.mem.Export()
	snap.SavedAt = f.now().UTC()
	data, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	return writeAtomic(f.path, data)
}

// writeAtomic writes data to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
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
