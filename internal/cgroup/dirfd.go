package cgroup

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A group's files are opened relative to a descriptor of its directory
// (O_PATH) held for the group's life, not by their full paths: each
// open otherwise walks /sys/fs/cgroup/HIERARCHY/PARENT/GROUP again, and
// the worker opens tens of a sandbox's files per start (limits, freezer
// state, cgroup.procs). The walk was half of the worker's CPU in openat,
// which was a sixth of its CPU per fork start.
//
// The descriptors are found by directory (dirFDs), so the path-based
// helpers (writeFile, readFile) use them unchanged; any other path, or a
// group whose directory could not be held, is opened by its path.

// The control files a group's users write again and again (its limits,
// freezer state, cgroup.procs for a join, counters reset on each clean:
// some twenty writes per fork start) are also kept open, once written,
// until the directory's descriptor is closed: opening and closing a
// cgroupfs file cost more than the write itself.

// dirFD is a held directory. fd is -1 once closed; mu keeps it, and the
// files, open while an openat or a write uses one, so a number cannot be
// reused under it.
type dirFD struct {
	mu sync.RWMutex
	fd int
	// cgfs is set for a directory of a cgroup file system, where a write
	// ignores the file offset: only there are files held for writing;
	// v2 for one of the cgroup2 file system.
	cgfs, v2 bool
	// files are the directory's files held open, for writing
	// (writeHeld) or reading (readHeld); dead ones were dropped from it
	// but may still be in a caller's hands, and close with the rest. fmu
	// guards both.
	fmu   sync.Mutex
	files map[heldKey]*heldFile
	dead  []int
}

// heldKey names a held file and the way it is open.
type heldKey struct {
	name  string
	write bool
}

// heldFile is a file held open; mu keeps one read of the whole file at a
// time (a read at offset 0 restarts the file's walk).
type heldFile struct {
	mu sync.Mutex
	fd int
}

var (
	dirFDs sync.Map // directory path → *dirFD
	// heldFDs counts the descriptors held, at most maxHeld: a host's
	// file limit is shared with the worker's sockets and pipes, and
	// every process the worker starts copies its descriptor table.
	heldFDs atomic.Int64
	maxHeld atomic.Int64
	// heldFiles counts the files held open for writing or reading, at
	// most maxHeld too: a budget of their own, so that groups made later
	// still get their directories held.
	heldFiles atomic.Int64
)

func init() {
	n := int64(1024)
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		n = min(n, int64(rl.Cur/8))
	}
	maxHeld.Store(n)
}

// holdDirs opens and registers a descriptor for each of dirs, as far as
// the budget allows, and returns them (nil where a directory is left
// out, to be opened by path) for releaseDirs.
func holdDirs(dirs []string) []*dirFD {
	held := make([]*dirFD, len(dirs))
	for i, d := range dirs {
		if heldFDs.Add(1) > maxHeld.Load() {
			heldFDs.Add(-1)
			break
		}
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			heldFDs.Add(-1)
			continue
		}
		held[i] = &dirFD{fd: fd}
		held[i].cgfs, held[i].v2 = cgroupFS(fd)
		if old, loaded := dirFDs.Swap(d, held[i]); loaded {
			old.(*dirFD).close()
		}
	}
	return held
}

// releaseDirs unregisters and closes held, the descriptors holdDirs gave
// for dirs, waiting for any openat using one. Another group's under the
// same path stays.
func releaseDirs(dirs []string, held []*dirFD) {
	for i, h := range held {
		if h != nil {
			dirFDs.CompareAndDelete(dirs[i], h)
			h.close()
		}
	}
}

func (d *dirFD) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
		heldFDs.Add(-1)
	}
	d.fmu.Lock()
	defer d.fmu.Unlock()
	for _, f := range d.files {
		d.dead = append(d.dead, f.fd)
	}
	for _, fd := range d.dead {
		unix.Close(fd)
		heldFiles.Add(-1)
	}
	d.files, d.dead = nil, nil
}

// heldDir returns path's held directory, read-locked (the caller unlocks
// d.mu) and open, and path's base name; nil if there is none.
func heldDir(path string) (d *dirFD, base string) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	if filepath.Join(dir, base) != path {
		return nil, ""
	}
	v, found := dirFDs.Load(dir)
	if !found {
		return nil, ""
	}
	d = v.(*dirFD)
	d.mu.RLock()
	if d.fd < 0 {
		d.mu.RUnlock()
		return nil, ""
	}
	return d, base
}

// writeHeld writes s to path through a descriptor of it held open with
// its directory's (opened on the first write), as writeFile does. ok is
// false, and nothing done, if the directory is not held or the budget is
// spent: the caller opens the file by path.
func writeHeld(path, s string) (ok bool, err error) {
	d, base := heldDir(path)
	if d == nil {
		return false, nil
	}
	defer d.mu.RUnlock()
	if !d.cgfs {
		return false, nil
	}
	k := heldKey{base, true}
	f, ok, err := d.hold(k)
	if !ok {
		return false, nil
	}
	if err != nil {
		return true, &os.PathError{Op: "open", Path: path, Err: err}
	}
	err = writeAll(f.fd, s)
	if err == unix.ENODEV {
		// The group was removed under a stale registration (a Sweep's
		// group, never held): by path, as if never held.
		d.drop(k, f)
		return false, nil
	}
	return true, err
}

// hold returns the held file k, opening it if it is not held yet; ok
// false past the budget. The caller holds d.mu for reading, with d.fd
// open.
func (d *dirFD) hold(k heldKey) (f *heldFile, ok bool, err error) {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	if f, found := d.files[k]; found {
		return f, true, nil
	}
	if heldFiles.Add(1) > maxHeld.Load() {
		heldFiles.Add(-1)
		return nil, false, nil
	}
	flags := unix.O_RDONLY
	if k.write {
		flags = unix.O_WRONLY
	}
	var fd int
	for {
		fd, err = unix.Openat(d.fd, k.name, flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		heldFiles.Add(-1)
		return nil, true, err
	}
	if d.files == nil {
		d.files = make(map[heldKey]*heldFile)
	}
	f = &heldFile{fd: fd}
	d.files[k] = f
	return f, true, nil
}

// drop forgets the held file k, if it is still f. Its descriptor is
// closed with the directory's (close), when no caller can hold it: one
// may be about to use it now, and a number closed here could be reused
// meanwhile.
func (d *dirFD) drop(k heldKey, f *heldFile) {
	d.fmu.Lock()
	defer d.fmu.Unlock()
	if d.files[k] == f {
		delete(d.files, k)
		d.dead = append(d.dead, f.fd)
	}
}

// cgroupFS reports whether the directory fd is on a cgroup (v1 or v2)
// file system, and whether on cgroup2's.
func cgroupFS(fd int) (cgfs, v2 bool) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false, false
	}
	return st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC, st.Type == unix.CGROUP2_SUPER_MAGIC
}

// rereadable are the files read through a held descriptor (readHeld):
// cgroupfs shows them anew on each read from offset 0, as the worker
// reads them on every start (a freezer's state while it freezes or
// thaws, a clean's memory figures). Not v1's cgroup.procs, whose open
// file keeps the pid list of its first read; v2's restarts its walk, and
// is read through one on cgroup2 only.
var rereadable = map[string]bool{
	"freezer.state": true, "cgroup.events": true, "cgroup.freeze": true,
	"memory.stat": true, "memory.oom_control": true, "memory.events": true,
}

// readHeld reads the whole of path, as readFile does, through a
// descriptor held open with its directory's (opened on the first read):
// for rereadable files of a held cgroupfs directory only, else ok is
// false and nothing is done.
func readHeld(path string) (b []byte, ok bool, err error) {
	if base := filepath.Base(path); !rereadable[base] && base != "cgroup.procs" {
		return nil, false, nil
	}
	d, base := heldDir(path)
	if d == nil {
		return nil, false, nil
	}
	defer d.mu.RUnlock()
	if !d.cgfs || base == "cgroup.procs" && !d.v2 {
		return nil, false, nil
	}
	k := heldKey{base, false}
	f, ok, err := d.hold(k)
	if !ok {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err = readAll(f.fd, true)
	if err == unix.ENODEV {
		// Removed under a stale registration, or made again (a
		// controller disabled and enabled): by path.
		d.drop(k, f)
		return nil, false, nil
	}
	if err != nil {
		return nil, true, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return b, true, nil
}

// openHeld opens path relative to its directory's held descriptor, if
// there is one (ok false otherwise).
func openHeld(path string, flags int) (fd int, ok bool, err error) {
	d, base := heldDir(path)
	if d == nil {
		return -1, false, nil // not held, or not clean (a trailing slash): by path
	}
	defer d.mu.RUnlock()
	for {
		fd, err = unix.Openat(d.fd, base, flags, 0)
		if err != unix.EINTR {
			return fd, true, err
		}
	}
}

// statHeld fstats the held directory dir (ok false if it is not held),
// without the walk a stat by path makes.
func statHeld(dir string, st *unix.Stat_t) (ok bool, err error) {
	v, found := dirFDs.Load(dir)
	if !found {
		return false, nil
	}
	d := v.(*dirFD)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return false, nil
	}
	return true, unix.Fstat(d.fd, st)
}
