package cgroup

import (
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

// dirFD is a held directory. fd is -1 once closed; mu keeps it open
// while an openat uses it, so the number cannot be reused under it.
type dirFD struct {
	mu sync.RWMutex
	fd int
}

var (
	dirFDs sync.Map // directory path → *dirFD
	// heldFDs counts the descriptors held, at most maxHeld: a host's
	// file limit is shared with the worker's sockets and pipes, and
	// every process the worker starts copies its descriptor table.
	heldFDs atomic.Int64
	maxHeld atomic.Int64
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
}

// openHeld opens path relative to its directory's held descriptor, if
// there is one (ok false otherwise).
func openHeld(path string, flags int) (fd int, ok bool, err error) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	if filepath.Join(dir, base) != path {
		return -1, false, nil // not clean (a trailing slash): by path
	}
	v, found := dirFDs.Load(dir)
	if !found {
		return -1, false, nil
	}
	d := v.(*dirFD)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return -1, false, nil
	}
	for {
		fd, err = unix.Openat(d.fd, base, flags, 0)
		if err != unix.EINTR {
			return fd, true, err
		}
	}
}
