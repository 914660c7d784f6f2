package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DialAt connects to the unix socket name in the directory dir, a
// sandbox's /tmp, without following a symlink: the sandbox's user writes
// in that dir, and the worker dials as root in the host's mount
// namespace, so a symlink there would connect it to any socket on the
// host.
//
// The socket must be owned by the worker (as listenUnix leaves it), in a
// directory owned by the worker that is sticky or not writable by others
// (a sandbox's /tmp is a root-owned 1777 file system). The sandbox's user
// can then neither remove nor rename the socket: what is checked with
// fstatat(AT_SYMLINK_NOFOLLOW) is what the connect through the
// directory's descriptor reaches. Errors name the socket, never a host
// path.
func DialAt(dir *os.File, name string) (net.Conn, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return nil, fmt.Errorf("socket %q: not a plain name: %w", name, ErrUnsafeSocket)
	}
	fd := int(dir.Fd())
	if err := checkSocket(fd, name, os.Geteuid()); err != nil {
		return nil, err
	}
	c, err := net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/%s", fd, name))
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", name, errnoOf(err))
	}
	return c, nil
}

// DialIn is DialAt for a directory known by its path, which must not be
// a symlink itself.
func DialIn(dir, name string) (net.Conn, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: opening its directory: %w", name, errnoOf(err))
	}
	d := os.NewFile(uintptr(fd), "dir")
	defer d.Close()
	return DialAt(d, name)
}

// checkSocket checks that name in directory dirfd is a socket owned by
// uid that only uid can remove or replace.
func checkSocket(dirfd int, name string, uid int) error {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return fmt.Errorf("socket %s: %w", name, err)
	}
	if int(st.Uid) != uid || st.Mode&unix.S_ISVTX == 0 && st.Mode&0o022 != 0 {
		return fmt.Errorf("socket %s: its directory is owned by uid %d, mode %o (others could replace it): %w",
			name, st.Uid, st.Mode&0o7777, ErrUnsafeSocket)
	}
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("socket %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("socket %s: not a socket (type %o; a symlink?): %w", name, st.Mode&unix.S_IFMT, ErrUnsafeSocket)
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("socket %s: owned by uid %d, not the worker: %w", name, st.Uid, ErrUnsafeSocket)
	}
	return nil
}

// errnoOf strips an error down to its errno, whose message names no
// path; other errors are returned as they are.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}
