package snapshot

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/fsutil"
)

// packScratch writes the scratch tree at dir to a tar file at dst,
// keeping modes, owners and times. Sockets and other special files are
// skipped: the runtime's socket is made afresh on restore.
func packScratch(dir, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// Through an os.Root: dir may be a /proc/self/fd/N magic link (a
	// /tmp mounted only in the sandbox), which a plain walk would not
	// descend, and nothing the sandbox left may lead the walk outside.
	root, err := os.OpenRoot(dir)
	if err != nil {
		f.Close()
		return err
	}
	defer root.Close()
	fsys := root.FS()
	tw := tar.NewWriter(f)
	err = fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		t := e.Type()
		if !(t.IsDir() || t.IsRegular() || t&fs.ModeSymlink != 0) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		link := ""
		if t&fs.ModeSymlink != 0 {
			if link, err = root.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = p
		if t.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if t.IsRegular() {
			src, err := root.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			return err
		}
		return nil
	})
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("packing scratch %s: %w", dir, err)
	}
	return nil
}

// unpackScratch extracts a tar written by packScratch into dir. Names
// escaping dir, or reaching through a symlink, are rejected: it reaches
// into dir only through descriptors of directories already open
// (fsutil.OpenBeneath, *at calls that do not follow a symlink), so not
// even a crafted tar can write, chown or chmod a host file on the
// worker's (root's) behalf.
func unpackScratch(src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("unpacking scratch: %w", err)
	}
	defer unix.Close(root)
	tr := tar.NewReader(f)
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("unpacking scratch: %w", err)
		}
		name := filepath.Clean(filepath.FromSlash(h.Name))
		if filepath.IsAbs(name) || name == "." || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("unpacking scratch: bad name %q: %w", h.Name, ErrCorrupt)
		}
		switch h.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
		default:
			continue
		}
		if err := unpackEntry(root, name, h, tr); err != nil {
			return fmt.Errorf("unpacking scratch: %s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{name, h.ModTime})
		}
	}
	// Directory times last: creating entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		setTimes(root, dirs[i].name, dirs[i].t)
	}
	return nil
}

// unpackEntry creates one entry, name, below the directory root.
func unpackEntry(root int, name string, h *tar.Header, r io.Reader) error {
	parent, base := filepath.Split(name)
	pfd := root
	if parent != "" {
		fd, err := fsutil.OpenBeneath(root, parent, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		pfd = fd
	}
	// Permissions and the sticky bit; no setuid or setgid bits.
	mode := uint32(h.Mode) & 0o1777
	switch h.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
			return err
		}
		fd, err := fsutil.OpenBeneath(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// chown clears setuid bits: chmod after it.
		if err := unix.Fchown(fd, h.Uid, h.Gid); err != nil {
			return err
		}
		return unix.Fchmod(fd, mode)
	case tar.TypeReg:
		fd, err := fsutil.OpenBeneath(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		out := os.NewFile(uintptr(fd), base)
		_, err = io.Copy(out, r)
		if err == nil {
			err = unix.Fchown(fd, h.Uid, h.Gid)
		}
		if err == nil {
			err = unix.Fchmod(fd, mode)
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := unix.Symlinkat(h.Linkname, pfd, base); err != nil {
			return err
		}
		if err := unix.Fchownat(pfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	setTimes(pfd, base, h.ModTime)
	return nil
}

// setTimes sets name's access and modification times to t, best effort,
// without following a symlink. name is relative to dirfd.
func setTimes(dirfd int, name string, t time.Time) {
	parent, base := filepath.Split(name)
	if parent != "" {
		fd, err := fsutil.OpenBeneath(dirfd, parent, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return
		}
		defer unix.Close(fd)
		dirfd = fd
	}
	ts := unix.NsecToTimespec(t.UnixNano())
	unix.UtimesNanoAt(dirfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
