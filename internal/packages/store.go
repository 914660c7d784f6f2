package packages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Names below the cache directory.
const (
	indexFile = "index.json"
	lockFile  = ".lock"
	tmpDir    = ".tmp"
	trashDir  = ".trash"
	viewsDir  = ".views"
)

// Entry describes one installed package.
type Entry struct {
	Package
	// Dir is the package's host directory.
	Dir string `json:"-"`
	// Size is the disk usage of the directory in bytes.
	Size      int64     `json:"size"`
	Installed time.Time `json:"installed"`
	// LastUse is the last deploy or sandbox start that used the package.
	LastUse time.Time `json:"last_use"`
	// Users are the functions whose resolved set holds the package; filled
	// in by List.
	Users []string `json:"-"`
}

// index is index.json.
type index struct {
	// Python is the version ("3.13") of the interpreter the packages were
	// installed for; empty in caches from before it was recorded, which
	// were all made for 3.11.
	Python string `json:"python,omitempty"`
	// Packages is keyed by name==version.
	Packages map[string]*Entry `json:"packages"`
	// Users maps a function name to the keys of its cached packages.
	Users map[string][]string `json:"users"`
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now, for tests of last-use ordering.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Store is the on-disk cache: package directories and the index. It does
// not install anything; see Cache.
type Store struct {
	dir string
	now func() time.Time

	mu      sync.Mutex           // serialises index updates in this process; guards touched
	touched map[string]time.Time // uses not yet written to the index
}

// OpenStore opens the cache directory dir, creating it if needed. It
// does not sweep leftovers: another process may be installing (see
// Sweep).
func OpenStore(dir string, opts ...Option) (*Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("opening package cache: empty directory: %w", ErrInvalid)
	}
	s := &Store{dir: dir, now: time.Now, touched: map[string]time.Time{}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{dir, filepath.Join(dir, tmpDir), filepath.Join(dir, trashDir), filepath.Join(dir, viewsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening package cache: %w", err)
		}
	}
	return s, nil
}

// Dir returns the cache directory.
func (s *Store) Dir() string { return s.dir }

// path returns p's host directory.
func (s *Store) path(p Package) string { return filepath.Join(s.dir, pkgDir(p)) }

// has reports whether p's directory exists.
func (s *Store) has(p Package) bool {
	fi, err := os.Stat(s.path(p))
	return err == nil && fi.IsDir()
}

// Sweep removes what an interrupted install or removal left and makes the
// index agree with the package directories. Only the process that
// installs (the worker) may call it, before it starts installing.
func (s *Store) Sweep() error {
	for _, d := range []string{tmpDir, trashDir} {
		p := filepath.Join(s.dir, d)
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("sweeping package cache: %w", err)
		}
		if err := os.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("sweeping package cache: %w", err)
		}
	}
	var trash []string
	err := s.update(func(ix *index) (bool, error) {
		var err error
		trash, err = s.reconcileLocked(ix)
		return true, err
	})
	removeAll(trash)
	return err
}

// Adopt makes the cache hold packages for Python version python only.
// If the index says they were installed for another version (or does
// not say, and holds packages), every package is removed, since compiled
// extensions and version-specific files would not load, and Adopt
// returns them; the functions using them keep their records, so their
// sets can be installed again. Only the installing process may call it.
func (s *Store) Adopt(python string) ([]Package, error) {
	var dropped []Package
	var trash []string
	err := s.update(func(ix *index) (bool, error) {
		if ix.Python == python {
			return false, nil
		}
		for k, e := range ix.Packages {
			t, err := s.toTrash(s.path(e.Package))
			if err != nil {
				return true, err
			}
			trash = append(trash, t)
			dropped = append(dropped, e.Package)
			delete(ix.Packages, k)
		}
		ix.Python = python
		return true, nil
	})
	removeAll(trash)
	sort.Slice(dropped, func(i, j int) bool { return dropped[i].String() < dropped[j].String() })
	return dropped, err
}

// reconcileLocked drops index entries whose directory is gone and moves
// package directories the index does not know (a crash between rename
// and index write) to the trash, returning their trash paths.
func (s *Store) reconcileLocked(ix *index) ([]string, error) {
	for k, e := range ix.Packages {
		if !s.has(e.Package) {
			delete(ix.Packages, k)
		}
	}
	known := map[string]bool{}
	for _, e := range ix.Packages {
		known[pkgDir(e.Package)] = true
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading package cache: %w", err)
	}
	var trash []string
	for _, d := range ents {
		n := d.Name()
		if !d.IsDir() || strings.HasPrefix(n, ".") || known[n] {
			continue
		}
		t, err := s.toTrash(filepath.Join(s.dir, n))
		if err != nil {
			return trash, err
		}
		trash = append(trash, t)
	}
	return trash, nil
}

// toTrash renames dir into the trash (atomically hiding it) and returns
// its new path.
func (s *Store) toTrash(dir string) (string, error) {
	t, err := os.MkdirTemp(filepath.Join(s.dir, trashDir), filepath.Base(dir)+".")
	if err != nil {
		return "", fmt.Errorf("removing %s: %w", dir, err)
	}
	dst := filepath.Join(t, "d")
	if err := os.Rename(dir, dst); err != nil {
		os.Remove(t)
		return "", fmt.Errorf("removing %s: %w", dir, err)
	}
	return t, nil
}

func removeAll(dirs []string) {
	for _, d := range dirs {
		// Best effort: what is left is swept on the next open.
		os.RemoveAll(d)
	}
}

// update runs fn on the index under the cross-process lock and writes
// the index back if fn reports a change (pending uses are always
// written).
func (s *Store) update(fn func(*index) (bool, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	lf, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("locking package index: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking package index: %w", err)
	}
	ix, err := s.readIndex()
	if err != nil {
		return err
	}
	changed := len(s.touched) > 0
	for k, t := range s.touched {
		if e := ix.Packages[k]; e != nil && t.After(e.LastUse) {
			e.LastUse = t
		}
	}
	c, err := fn(ix)
	if err != nil {
		return err
	}
	if !changed && !c {
		return nil
	}
	if err := s.writeIndex(ix); err != nil {
		return err
	}
	clear(s.touched)
	return nil
}

func (s *Store) readIndex() (*index, error) {
	ix := &index{}
	b, err := os.ReadFile(filepath.Join(s.dir, indexFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading package index: %w", err)
	}
	if err == nil {
		if err := json.Unmarshal(b, ix); err != nil {
			return nil, fmt.Errorf("reading package index %s: %w", filepath.Join(s.dir, indexFile), err)
		}
	}
	if ix.Packages == nil {
		ix.Packages = map[string]*Entry{}
	}
	if ix.Users == nil {
		ix.Users = map[string][]string{}
	}
	for _, e := range ix.Packages {
		e.Dir = s.path(e.Package)
	}
	return ix, nil
}

// writeIndex replaces index.json atomically and durably.
func (s *Store) writeIndex(ix *index) error {
	b, err := json.MarshalIndent(ix, "", " ")
	if err != nil {
		return fmt.Errorf("encoding package index: %w", err)
	}
	f, err := os.CreateTemp(s.dir, indexFile+".*")
	if err != nil {
		return fmt.Errorf("writing package index: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, indexFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing package index: %w", err)
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// commit moves the fully installed tree staged to p's directory and
// records it. If p is already there, staged is discarded.
func (s *Store) commit(p Package, staged string, size int64) error {
	var trash []string
	err := s.update(func(ix *index) (bool, error) {
		now := s.now().UTC()
		if s.has(p) {
			if ix.Packages[p.String()] != nil {
				return false, nil
			}
			// A directory without an entry is a crash leftover; replace it.
			t, err := s.toTrash(s.path(p))
			if err != nil {
				return false, err
			}
			trash = append(trash, t)
		}
		if err := os.Rename(staged, s.path(p)); err != nil {
			return false, fmt.Errorf("installing %s: %w", p, err)
		}
		if err := syncDir(s.dir); err != nil {
			return false, fmt.Errorf("installing %s: %w", p, err)
		}
		ix.Packages[p.String()] = &Entry{Package: Package{Name: p.Name, Version: p.Version},
			Size: size, Installed: now, LastUse: now}
		return true, nil
	})
	removeAll(trash)
	return err
}

// Touch records a use of the cached packages of set now. The index is
// written at once.
func (s *Store) Touch(set []Package) error {
	s.touchLater(set)
	return s.update(func(*index) (bool, error) { return false, nil })
}

// touchLater records a use in memory; the next index update writes it.
// It keeps sandbox starts free of disk writes.
func (s *Store) touchLater(set []Package) {
	now := s.now().UTC()
	s.mu.Lock()
	for _, p := range Cached(set) {
		s.touched[p.String()] = now
	}
	s.mu.Unlock()
}

// Flush writes uses recorded in memory to the index.
func (s *Store) Flush() error {
	return s.update(func(*index) (bool, error) { return false, nil })
}

// Use records that function fn now uses set (replacing what it used
// before) and marks the packages used now.
func (s *Store) Use(fn string, set []Package) error {
	if fn == "" {
		return fmt.Errorf("recording package users: empty function name: %w", ErrInvalid)
	}
	s.touchLater(set)
	return s.update(func(ix *index) (bool, error) {
		setUsersLocked(ix, fn, set)
		return true, nil
	})
}

func setUsersLocked(ix *index, fn string, set []Package) {
	var keys []string
	for _, p := range Cached(set) {
		keys = append(keys, p.String())
	}
	if len(keys) == 0 {
		delete(ix.Users, fn)
		return
	}
	ix.Users[fn] = keys
}

// Release records that function fn no longer uses any package.
func (s *Store) Release(fn string) error {
	return s.update(func(ix *index) (bool, error) {
		_, ok := ix.Users[fn]
		delete(ix.Users, fn)
		return ok, nil
	})
}

// SyncUsers replaces every function's package set with users (function
// name to resolved set), for a worker starting up: the registry is the
// truth.
func (s *Store) SyncUsers(users map[string][]Package) error {
	return s.update(func(ix *index) (bool, error) {
		ix.Users = map[string][]string{}
		for fn, set := range users {
			setUsersLocked(ix, fn, set)
		}
		return true, nil
	})
}

// List returns the installed packages with their users, ordered by name
// and version.
func (s *Store) List() ([]Entry, error) {
	var out []Entry
	err := s.update(func(ix *index) (bool, error) {
		users := usersLocked(ix)
		for k, e := range ix.Packages {
			x := *e
			x.Users = users[k]
			out = append(out, x)
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}

// usersLocked inverts ix.Users: package key to sorted function names.
func usersLocked(ix *index) map[string][]string {
	users := map[string][]string{}
	for fn, keys := range ix.Users {
		for _, k := range keys {
			users[k] = append(users[k], fn)
		}
	}
	for _, u := range users {
		sort.Strings(u)
	}
	return users
}

// GCOptions says what GC may remove. The zero value removes nothing.
type GCOptions struct {
	// Budget is the cache size to shrink to, in bytes; zero means no
	// budget.
	Budget int64
	// All removes every unused package, budget or not.
	All bool
	// Grace protects packages used (or installed) less than Grace ago,
	// in use or not: a deploy between install and commit holds them.
	Grace time.Duration
}

// GCResult reports what GC did.
type GCResult struct {
	// Removed are the packages removed, least recently used first.
	Removed []Entry
	// Freed is the bytes removed; Size the cache size afterwards.
	Freed, Size int64
}

// GC removes packages that no function uses, least recently used first,
// until the cache is within opts.Budget (or all of them if opts.All). It
// also removes mount-point views no function uses. Removal renames a
// package out of sight before deleting it.
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCResult, error) {
	var res GCResult
	var trash []string
	err := s.update(func(ix *index) (bool, error) {
		t, err := s.reconcileLocked(ix)
		trash = append(trash, t...)
		if err != nil {
			return true, err
		}
		now := s.now()
		users := usersLocked(ix)
		var cands []*Entry
		for k, e := range ix.Packages {
			res.Size += e.Size
			if len(users[k]) == 0 && now.Sub(e.LastUse) >= opts.Grace {
				cands = append(cands, e)
			}
		}
		sort.Slice(cands, func(i, j int) bool {
			if !cands[i].LastUse.Equal(cands[j].LastUse) {
				return cands[i].LastUse.Before(cands[j].LastUse)
			}
			return cands[i].String() < cands[j].String()
		})
		for _, e := range cands {
			if err := ctx.Err(); err != nil {
				return true, err
			}
			if !opts.All && (opts.Budget <= 0 || res.Size <= opts.Budget) {
				break
			}
			t, err := s.toTrash(e.Dir)
			if err != nil {
				return true, err
			}
			trash = append(trash, t)
			delete(ix.Packages, e.String())
			res.Removed = append(res.Removed, *e)
			res.Freed += e.Size
			res.Size -= e.Size
		}
		t, err = s.gcViewsLocked(ix, opts.Grace)
		trash = append(trash, t...)
		return true, err
	})
	removeAll(trash)
	if err != nil {
		return res, fmt.Errorf("package cache gc: %w", err)
	}
	return res, nil
}

// gcViewsLocked trashes views that match no function's set and are older
// than grace (a sandbox may be starting with a fresh one).
func (s *Store) gcViewsLocked(ix *index, grace time.Duration) ([]string, error) {
	keep := map[string]bool{}
	for _, keys := range ix.Users {
		var set []Package
		for _, k := range keys {
			if p, err := ParsePackage(k); err == nil {
				set = append(set, p)
			}
		}
		keep[setHash(Cached(set))] = true
	}
	root := filepath.Join(s.dir, viewsDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading views: %w", err)
	}
	var trash []string
	for _, d := range ents {
		if keep[d.Name()] {
			continue
		}
		fi, err := d.Info()
		// File times are real time, whatever clock the Store uses.
		if err != nil || time.Since(fi.ModTime()) < grace {
			continue
		}
		t, err := s.toTrash(filepath.Join(root, d.Name()))
		if err != nil {
			return trash, err
		}
		trash = append(trash, t)
	}
	return trash, nil
}

// view returns the host directory holding one empty mount point per
// package of cached (sorted, deduplicated), creating it if needed.
func (s *Store) view(cached []Package) (string, error) {
	root := filepath.Join(s.dir, viewsDir)
	v := filepath.Join(root, setHash(cached))
	if fi, err := os.Stat(v); err == nil && fi.IsDir() {
		return v, nil
	}
	tmp, err := os.MkdirTemp(root, ".new-")
	if err != nil {
		return "", fmt.Errorf("creating package view: %w", err)
	}
	for _, p := range cached {
		if err := os.Mkdir(filepath.Join(tmp, pkgDir(p)), 0o755); err != nil {
			os.RemoveAll(tmp)
			return "", fmt.Errorf("creating package view: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("creating package view: %w", err)
	}
	if err := os.Rename(tmp, v); err != nil {
		os.RemoveAll(tmp)
		// Someone else made it first.
		if fi, serr := os.Stat(v); serr == nil && fi.IsDir() {
			return v, nil
		}
		return "", fmt.Errorf("creating package view: %w", err)
	}
	return v, nil
}
