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
	// file limit is shared with the worker's sockets and pipes.
	heldFDs atomic.Int64
	maxHeld = func() int64 {
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
			return 4096
		}
		return int64(rl.Cur / 8)
	}()
)

// holdDirs opens and registers a descriptor for each of dirs, as far as
// the budget allows; a directory left out is opened by path.
func holdDirs(dirs []string) {
	for _, d := range dirs {
		if heldFDs.Add(1) > maxHeld {
			heldFDs.Add(-1)
			return
		}
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			heldFDs.Add(-1)
			continue
		}
		if old, loaded := dirFDs.Swap(d, &dirFD{fd: fd}); loaded {
			old.(*dirFD).close()
		}
	}
}

// releaseDirs unregisters and closes the descriptors of dirs, waiting
// for any openat using one.
func releaseDirs(dirs []string) {
	for _, d := range dirs {
		if v, ok := dirFDs.LoadAndDelete(d); ok {
			v.(*dirFD).close()
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
func openHeld(path string, flags int) (fd int, err error, ok bool) {
	v, found := dirFDs.Load(filepath.Dir(path))
	if !found {
		return -1, nil, false
	}
	d := v.(*dirFD)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return -1, nil, false
	}
	for {
		fd, err = unix.Openat(d.fd, filepath.Base(path), flags, 0)
		if err != unix.EINTR {
			return fd, err, true
		}
	}
}
