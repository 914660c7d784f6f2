package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtract feeds arbitrary bytes to Extract. Whatever the input, it
// must not panic, must write nothing outside dst, and what it leaves in dst
// must obey the rules: plain files and directories with normalised modes,
// symlinks that resolve inside dst, totals within the limits. Run it with
// go test -fuzz FuzzExtract -fuzztime 20s ./internal/archive.
func FuzzExtract(f *testing.F) {
	seeds := [][]ent{
		{dirEnt("./"), file("f.py", "def f(e): return e"), dirEnt("pkg"), file("pkg/__init__.py", "")},
		{file("../evil", "x")},
		{file("/abs", "x")},
		{symlink("l", "/etc")},
		{symlink("l", "../x")},
		{dirEnt("d"), symlink("d/l", ".."), symlink("e", "d/l/.."), file("e/x", "")},
		{dirEnt("d"), symlink("l", "d"), file("l/x", "x")},
		{symlink("a", "b"), symlink("b", "a")},
		{file("a", "1"), hardlink("b", "a"), hardlink("c", "../a")},
		{special("null", tar.TypeChar), special("p", tar.TypeFifo)},
		{file("a", "1"), file("a", "2")},
		{{name: "s", typ: tar.TypeReg, body: "x", mode: 0o6777}},
	}
	for _, s := range seeds {
		f.Add(mkTar(f, s))
		f.Add(mkTgz(f, s))
		var zs []ent
		for _, e := range s {
			if e.typ != tar.TypeLink {
				zs = append(zs, e)
			}
		}
		f.Add(mkZip(f, zs))
	}
	f.Add(zipBomb(f, 128<<10, 10))
	f.Add([]byte("not an archive"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := Limits{MaxBytes: 64 << 10, MaxFiles: 64}
		parent := t.TempDir()
		dst := filepath.Join(parent, "dst")
		err := Extract(bytes.NewReader(data), int64(len(data)), dst, lim)
		if err != nil && !errors.Is(err, ErrUnsafe) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrFormat) {
			t.Errorf("error without a class: %v", err)
		}
		onlyDst(t, parent)
		checkTree(t, dst, lim, err == nil)
	})
}

// checkTree walks dst and checks what it holds. Limits apply to failed
// extractions too; the symlink rule only to successful ones (a failed
// extraction may stop before the final symlink check, and the caller
// removes the tree).
func checkTree(t *testing.T, dst string, lim Limits, ok bool) {
	t.Helper()
	if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
		if ok {
			t.Fatal("success without a destination")
		}
		return
	}
	realDst, err := filepath.EvalSymlinks(dst)
	if err != nil {
		t.Fatal(err)
	}
	var files int
	var size int64
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dst {
			return nil
		}
		files++
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := info.Mode()
		switch {
		case m.IsDir():
			if m&^fs.ModeDir != 0o755 {
				t.Errorf("%s: dir mode %v", p, m)
			}
		case m.IsRegular():
			size += info.Size()
			if m != 0o644 && m != 0o755 {
				t.Errorf("%s: file mode %v", p, m)
			}
		case m&fs.ModeSymlink != 0:
			if !ok {
				return nil
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling or a non-directory in the way
			}
			if r != realDst && !strings.HasPrefix(r, realDst+"/") {
				t.Errorf("%s resolves to %s, outside %s", p, r, realDst)
			}
		default:
			t.Errorf("%s: special file %v", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files > lim.MaxFiles {
		t.Errorf("%d entries, limit %d", files, lim.MaxFiles)
	}
	// One partially written file may overshoot by the byte that tripped
	// the limit.
	if size > lim.MaxBytes+1 {
		t.Errorf("%d bytes, limit %d", size, lim.MaxBytes)
	}
}
