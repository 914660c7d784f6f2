package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// writeFile writes s to an existing cgroupfs file. Unlike os.WriteFile it
// never creates the file, so a missing controller file is reported as such.
// Like readFile it makes its system calls directly: an os.File of a
// regular file costs an epoll registration that fails, and the worker
// reads and writes tens of these files per start.
func writeFile(path, s string) error {
	ok, err := writeHeld(path, s)
	if !ok {
		var fd int
		if fd, err = open(path, unix.O_WRONLY); err != nil {
			return err
		}
		err = writeAll(fd, s)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return err // the open's, which names the path
		}
		return fmt.Errorf("writing %q to %s: %w", s, path, err)
	}
	return nil
}

// writeAll writes s to fd in one write, as cgroupfs wants it.
func writeAll(fd int, s string) error {
	n, err := unix.Write(fd, []byte(s))
	for err == unix.EINTR {
		// A signal in a long write (force_empty's or memory.reclaim's
		// reclaim, a shrinking limit): the kernel stopped, go on.
		n, err = unix.Write(fd, []byte(s))
	}
	if err == nil && n < len(s) {
		err = io.ErrShortWrite
	}
	return err
}

// readFile reads a whole cgroupfs (or procfs) file, as os.ReadFile does;
// see writeFile.
func readFile(path string) ([]byte, error) {
	if b, ok, err := readHeld(path); ok {
		return b, err
	}
	fd, err := open(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b, err := readAll(fd, false)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// readAll reads fd to its end: from its offset, or with pread from 0
// (a held file, read again and again).
func readAll(fd int, pread bool) ([]byte, error) {
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		var n int
		var err error
		if pread {
			n, err = unix.Pread(fd, b[len(b):cap(b)], int64(len(b)))
		} else {
			n, err = unix.Read(fd, b[len(b):cap(b)])
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// open opens path with flags (and O_CLOEXEC), retrying on EINTR; its
// error is an *os.PathError, so errors.Is(err, os.ErrNotExist) holds.
func open(path string, flags int) (int, error) {
	if fd, ok, err := openHeld(path, flags|unix.O_CLOEXEC); ok {
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// readUint reads a file holding a single unsigned number ("max" reads as
// the largest uint64).
func readUint(path string) (uint64, error) {
	b, err := readFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return ^uint64(0), nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	return v, nil
}

// readKey reads the value of key from a flat "key value" file such as
// memory.events (v2) or memory.oom_control (v1).
func readKey(path, key string) (uint64, error) {
	b, err := readFile(path)
	if err != nil {
		return 0, err
	}
	return parseKey(b, key, path)
}

func parseKey(b []byte, key, path string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s in %s: %w", key, path, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}

// readProcs lists the pids in dir/cgroup.procs.
func readProcs(dir string) ([]int, error) {
	b, err := readFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parsing cgroup.procs in %s: %w", dir, err)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// firstProcs lists the pids of the first of dirs that has any, or none
// if all are empty: whether a group is empty, for one read in the usual
// case where its processes are in every hierarchy (a kill waits through
// several such checks, and each read opens a cgroupfs file).
func firstProcs(dirs []string) ([]int, error) {
	for _, d := range dirs {
		p, err := readProcs(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if len(p) > 0 {
			return p, nil
		}
	}
	return nil, nil
}

// procsUnion lists the pids in any of dirs, sorted and without duplicates.
// A missing dir counts as empty.
func procsUnion(dirs []string) ([]int, error) {
	var all []int
	for _, d := range dirs {
		p, err := readProcs(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		all = append(all, p...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// poll calls done until it reports true. It spins (yielding the
// processor) for the first spin (spinFor where a caller waits on it),
// then sleeps with an exponential back-off: the kernel usually finishes a
// freeze or an exit within tens of microseconds, and Go's shortest sleep
// costs about that much again.
func poll(ctx context.Context, spin time.Duration, done func() (bool, error)) error {
	start := time.Now()
	delay := 20 * time.Microsecond
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Since(start) < spin {
			runtime.Gosched()
			continue
		}
		time.Sleep(delay)
		if delay < 2*time.Millisecond {
			delay *= 2
		}
	}
}

// spinFor is how long poll busy-waits before it starts to sleep.
const spinFor = 200 * time.Microsecond

// killAll sends SIGKILL to every pid, ignoring ones that are already gone.
func killAll(pids []int) error {
	for _, p := range pids {
		if err := unix.Kill(p, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("killing pid %d: %w", p, err)
		}
	}
	return nil
}

// removeTree removes the cgroup directory dir and any child groups below
// it, killing whatever still runs there. It is the slow, thorough path used
// by Delete and Sweep; the common case is a single successful rmdir.
func removeTree(ctx context.Context, dir string) error {
	err := unix.Rmdir(dir)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return poll(ctx, spinFor, func() (bool, error) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return true, nil
			}
			return false, fmt.Errorf("removing %s: %w", dir, err)
		}
		for _, e := range ents {
			if e.IsDir() {
				if err := removeTree(ctx, filepath.Join(dir, e.Name())); err != nil {
					return false, err
				}
			}
		}
		pids, err := readProcs(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("removing %s: %w", dir, err)
		}
		if err := killAll(pids); err != nil {
			return false, fmt.Errorf("removing %s: %w", dir, err)
		}
		err = unix.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return true, nil
		case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY):
			return false, nil // tasks still exiting
		default:
			return false, fmt.Errorf("removing %s: %w", dir, err)
		}
	})
}

// isFS reports whether dir is the root or a directory of a file system with
// the given magic number.
func isFS(dir string, magic int64) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return int64(st.Type) == magic
}

// validName reports whether s can name a group: one plain path element.
func validName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '@':
		default:
			return false
		}
	}
	return true
}

// validParent reports whether s is a clean relative path of valid names.
func validParent(s string) bool {
	if s == "" {
		return false
	}
	for _, el := range strings.Split(s, "/") {
		if !validName(el) {
			return false
		}
	}
	return true
}

// isAgain reports EAGAIN, which memory.reclaim returns when it could not
// reclaim the whole amount asked for.
func isAgain(err error) bool { return errors.Is(err, unix.EAGAIN) }
