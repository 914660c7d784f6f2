package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Format is an archive format recognised by its magic bytes.
type Format int

// Formats.
const (
	Unknown Format = iota
	TarGz
	Tar
	Zip
)

// String names the format.
func (f Format) String() string {
	switch f {
	case TarGz:
		return "tar.gz"
	case Tar:
		return "tar"
	case Zip:
		return "zip"
	}
	return "unknown"
}

// Detect returns the format of an archive from its first bytes (pass 512:
// a plain tar is recognised by its ustar magic at offset 257, an empty one
// by a zero first block).
func Detect(head []byte) Format {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return TarGz
	case bytes.HasPrefix(head, []byte("PK\x03\x04")), bytes.HasPrefix(head, []byte("PK\x05\x06")):
		return Zip
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return Tar
	case len(head) == 512 && bytes.Count(head, []byte{0}) == 512:
		return Tar // an empty tar is only end-of-archive zero blocks
	}
	return Unknown
}

// Extract unpacks the archive in r (size bytes; tar.gz, tar or zip,
// detected by magic bytes) into dst, which must be an empty directory or
// not exist yet (its parent must). See the package documentation for what
// is rejected.
func Extract(r io.ReaderAt, size int64, dst string, lim Limits) error {
	lim = lim.withDefaults()
	if size < 0 {
		return fmt.Errorf("negative archive size: %w", ErrFormat)
	}
	if size > lim.MaxBytes {
		return fmt.Errorf("archive is %d bytes, over the %d byte limit: %w", size, lim.MaxBytes, ErrTooLarge)
	}
	head := make([]byte, min(size, 512))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading archive: %w", err)
	}
	f := Detect(head)
	if f == Unknown {
		return fmt.Errorf("not a tar.gz, tar or zip archive: %w", ErrFormat)
	}
	w, err := newWriter(dst, lim)
	if err != nil {
		return err
	}
	sr := io.NewSectionReader(r, 0, size)
	switch f {
	case TarGz:
		zr, err := gzip.NewReader(sr)
		if err != nil {
			return fmt.Errorf("reading gzip: %v: %w", err, ErrFormat)
		}
		defer zr.Close()
		// Bound the decompressed stream too: tar headers and padding
		// are not file content but still cost time to inflate.
		budget := 2*lim.MaxBytes + int64(lim.MaxFiles)*4096 + 1<<20
		err = extractTar(&capReader{r: zr, left: budget, limit: budget}, w)
		if err != nil {
			return err
		}
	case Tar:
		if err := extractTar(sr, w); err != nil {
			return err
		}
	case Zip:
		if err := extractZip(r, size, w); err != nil {
			return err
		}
	}
	return w.finish()
}

// capReader fails with ErrTooLarge once more than limit bytes are read.
type capReader struct {
	r     io.Reader
	left  int64
	limit int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("archive expands beyond %d bytes: %w", c.limit, ErrTooLarge)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func extractTar(r io.Reader, w *writer) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		// ErrInsecurePath (GODEBUG tarinsecurepath=0) comes with a valid
		// header; the name checks below give the real verdict.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return fmt.Errorf("reading tar: %w", readErr(err))
		}
		if err := tarEntry(tr, hdr, w); err != nil {
			return err
		}
	}
}

func tarEntry(tr *tar.Reader, hdr *tar.Header, w *writer) error {
	switch hdr.Typeflag {
	case tar.TypeReg:
		return w.file(hdr.Name, hdr.Mode&0o111 != 0, hdr.Size, tr)
	case tar.TypeDir:
		return w.dir(hdr.Name)
	case tar.TypeSymlink:
		return w.symlink(hdr.Name, hdr.Linkname)
	case tar.TypeLink:
		return w.hardlink(hdr.Name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("entry %q: device file: %w", hdr.Name, ErrUnsafe)
	case tar.TypeFifo:
		return fmt.Errorf("entry %q: fifo: %w", hdr.Name, ErrUnsafe)
	case tar.TypeXGlobalHeader:
		return nil // metadata only (git archive writes one)
	}
	return fmt.Errorf("entry %q: unsupported tar entry type %q: %w", hdr.Name, hdr.Typeflag, ErrFormat)
}

func extractZip(r io.ReaderAt, size int64, w *writer) error {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return fmt.Errorf("reading zip: %v: %w", err, ErrFormat)
	}
	if len(zr.File) > w.lim.MaxFiles {
		return fmt.Errorf("zip has %d entries, more than %d: %w", len(zr.File), w.lim.MaxFiles, ErrTooLarge)
	}
	for _, f := range zr.File {
		if err := zipEntry(f, w); err != nil {
			return err
		}
	}
	return nil
}

func zipEntry(f *zip.File, w *writer) error {
	mode := f.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("entry %q: %v: %w", f.Name, err, ErrFormat)
		}
		defer rc.Close()
		t, err := io.ReadAll(io.LimitReader(rc, maxLinkLen+1))
		if err != nil {
			return fmt.Errorf("entry %q: %w", f.Name, readErr(err))
		}
		return w.symlink(f.Name, string(t))
	case mode.IsDir() || strings.HasSuffix(f.Name, "/"):
		return w.dir(f.Name)
	case mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return fmt.Errorf("entry %q: device file: %w", f.Name, ErrUnsafe)
	case mode&fs.ModeNamedPipe != 0:
		return fmt.Errorf("entry %q: fifo: %w", f.Name, ErrUnsafe)
	case mode&fs.ModeSocket != 0:
		return fmt.Errorf("entry %q: socket: %w", f.Name, ErrUnsafe)
	case !mode.IsRegular():
		return fmt.Errorf("entry %q: unsupported file type %v: %w", f.Name, mode.Type(), ErrUnsafe)
	}
	rc, err := f.Open()
	if err != nil {
		return fmt.Errorf("entry %q: %v: %w", f.Name, err, ErrFormat)
	}
	defer rc.Close()
	hint := int64(-1)
	if f.UncompressedSize64 < 1<<62 {
		hint = int64(f.UncompressedSize64)
	}
	return w.file(f.Name, mode&0o111 != 0, hint, rc)
}

// CopyDir copies the tree at src into dst (empty or not yet existing) with
// the same rules and limits as Extract: symlinks are copied as symlinks and
// must stay inside the tree, special files are rejected, modes are
// normalised. A src that is itself a symlink is followed. dst must not be
// inside src.
func CopyDir(src, dst string, lim Limits) error {
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if fi, err := os.Stat(src); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("copying %s: not a directory", src)
	}
	absSrc, err1 := filepath.Abs(src)
	absDst, err2 := filepath.Abs(dst)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if rel, err := filepath.Rel(absSrc, absDst); err == nil && filepath.IsLocal(rel) {
		return fmt.Errorf("copying %s: destination %s is inside the source", src, dst)
	}
	w, err := newWriter(dst, lim)
	if err != nil {
		return err
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copying: %w", err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return fmt.Errorf("copying: %w", err)
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copying: %w", err)
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			return w.dir(rel)
		case mode.IsRegular():
			return copyFile(w, p, rel, mode, info.Size())
		case mode&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("copying: %w", err)
			}
			return w.symlink(rel, t)
		case mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			return fmt.Errorf("entry %q: device file: %w", rel, ErrUnsafe)
		case mode&fs.ModeNamedPipe != 0:
			return fmt.Errorf("entry %q: fifo: %w", rel, ErrUnsafe)
		case mode&fs.ModeSocket != 0:
			return fmt.Errorf("entry %q: socket: %w", rel, ErrUnsafe)
		}
		return fmt.Errorf("entry %q: unsupported file type %v: %w", rel, mode.Type(), ErrUnsafe)
	})
	if err != nil {
		return err
	}
	return w.finish()
}

func copyFile(w *writer, p, rel string, mode fs.FileMode, size int64) error {
	// O_NOFOLLOW: the entry was a regular file when listed; refuse a
	// symlink swapped in since.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("copying: %w", err)
	}
	defer f.Close()
	return w.file(rel, mode&0o111 != 0, size, f)
}
