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
// escaping dir are rejected.
func unpackScratch(src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	type dirTime struct {
		p string
		t time.Time
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
		p := filepath.Join(dir, name)
		mode := fs.FileMode(h.Mode).Perm() | fs.FileMode(h.Mode)&(fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("unpacking scratch: %w", err)
			}
			dirs = append(dirs, dirTime{p, h.ModTime})
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("unpacking scratch: %w", err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpacking scratch: %w", err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return fmt.Errorf("unpacking scratch: %w", err)
			}
		default:
			continue
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			return fmt.Errorf("unpacking scratch: %w", err)
		}
		if h.Typeflag != tar.TypeSymlink {
			// chown clears setuid bits: chmod after it.
			if err := os.Chmod(p, mode); err != nil {
				return fmt.Errorf("unpacking scratch: %w", err)
			}
			if h.Typeflag == tar.TypeReg {
				os.Chtimes(p, h.ModTime, h.ModTime)
			}
		}
	}
	// Directory times last: creating entries changed them.
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i].p, dirs[i].t, dirs[i].t)
	}
	return nil
}
