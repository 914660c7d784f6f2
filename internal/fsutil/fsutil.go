// Package fsutil holds small file-system helpers shared by the caches.
package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DiskUsage sums the blocks allocated to everything under dir, in bytes:
// what a cache really costs on disk, sparse files and small-file slack
// included, unlike the apparent size.
func DiskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	return n, err
}

// beneath is how OpenBeneath resolves: inside the directory, no symlink
// (nor /proc magic link) on the way.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// OpenBeneath opens name, relative to the directory dirfd, with
// openat2(2): a component that is a symlink, or a path leaving dirfd,
// fails (ELOOP, EXDEV). It is how the worker, as root, reaches into a
// tree that untrusted code can write, such as a sandbox's /tmp.
func OpenBeneath(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
			Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: beneath})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a rename raced the lookup
		}
		return fd, err
	}
}

// Orphaned reports whether path names a dir (base name prefix + PID,
// then sep and more, or nothing) that a process left: the process is
// gone, not this one, and the dir has not changed for a minute, as a
// process in another pid namespace may be using it.
func Orphaned(path, prefix, sep string) bool {
	rest, ok := strings.CutPrefix(filepath.Base(path), prefix)
	if !ok {
		return false
	}
	pidStr, _, _ := strings.Cut(rest, sep)
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		return false
	}
	st, err := os.Lstat(path)
	return err == nil && st.IsDir() && time.Since(st.ModTime()) > time.Minute
}
