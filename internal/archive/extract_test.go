package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// readTree describes every node under dir: "f MODE content", "d MODE" or
// "l target".
func readTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := info.Mode()
		switch {
		case m.IsDir():
			out[rel] = fmt.Sprintf("d %o", m.Perm()|m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		case m&fs.ModeSymlink != 0:
			tg, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "l " + tg
		case m.IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("f %o %s", m.Perm()|m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), b)
		default:
			out[rel] = "special " + m.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// onlyDst checks that the parent of dst holds nothing but dst (which is
// not created when the input is refused up front): extraction wrote
// nowhere else.
func onlyDst(t testing.TB, parent string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 1 || len(ents) == 1 && ents[0].Name() != "dst" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("parent of dst holds %v, want only dst", names)
	}
}

type format struct {
	name  string
	build func(testing.TB, []ent) []byte
}

var (
	fTar = format{"tar", mkTar}
	fTgz = format{"tgz", mkTgz}
	fZip = format{"zip", mkZip}
)

func extractBytes(t testing.TB, data []byte, lim Limits) (string, string, error) {
	t.Helper()
	parent := t.TempDir()
	dst := filepath.Join(parent, "dst")
	err := Extract(bytes.NewReader(data), int64(len(data)), dst, lim)
	return parent, dst, err
}

func TestExtractGood(t *testing.T) {
	tests := []struct {
		name    string
		formats []format
		ents    []ent
		want    map[string]string
	}{
		{"files and dirs", []format{fTar, fTgz, fZip},
			[]ent{dirEnt("./"), file("./f.py", "def f(e): return e"), dirEnt("pkg/"), file("pkg/__init__.py", "x=1")},
			map[string]string{"f.py": "f 644 def f(e): return e", "pkg": "d 755", "pkg/__init__.py": "f 644 x=1"}},
		{"modes normalised, setuid stripped", []format{fTar, fTgz, fZip},
			[]ent{
				{name: "run.sh", typ: tar.TypeReg, body: "#!/bin/sh", mode: 0o4755},
				{name: "secret", typ: tar.TypeReg, body: "s", mode: 0o600},
				{name: "group", typ: tar.TypeReg, body: "g", mode: 0o2775},
				{name: "d", typ: tar.TypeDir, mode: 0o1777},
				{name: "ro", typ: tar.TypeDir, mode: 0o500},
			},
			map[string]string{"run.sh": "f 755 #!/bin/sh", "secret": "f 644 s", "group": "f 755 g", "d": "d 755", "ro": "d 755"}},
		{"implicit parents then explicit dir", []format{fTar, fZip},
			[]ent{file("a/b/c.py", "c"), dirEnt("a/"), dirEnt("a/b")},
			map[string]string{"a": "d 755", "a/b": "d 755", "a/b/c.py": "f 644 c"}},
		{"symlinks inside", []format{fTar, fTgz, fZip},
			[]ent{
				file("pkg/a.py", "a"), symlink("lib", "pkg"), symlink("pkg/self", "."),
				symlink("x/up", "../pkg/a.py"), symlink("dangling", "nothing/here"),
				symlink("chain", "lib/a.py"), symlink("pkg/root", ".."),
			},
			map[string]string{"pkg": "d 755", "pkg/a.py": "f 644 a", "lib": "l pkg", "pkg/self": "l .",
				"x": "d 755", "x/up": "l ../pkg/a.py", "dangling": "l nothing/here", "chain": "l lib/a.py", "pkg/root": "l .."}},
		{"hard link", []format{fTar, fTgz},
			[]ent{file("a.py", "a"), hardlink("b.py", "a.py"), hardlink("d/c.py", "./a.py")},
			map[string]string{"a.py": "f 644 a", "b.py": "f 644 a", "d": "d 755", "d/c.py": "f 644 a"}},
		{"global pax header", []format{fTar, fTgz},
			[]ent{{typ: tar.TypeXGlobalHeader}, file("f.py", "")},
			map[string]string{"f.py": "f 644 "}},
		{"empty", []format{fTar, fTgz, fZip}, nil, map[string]string{}},
	}
	for _, tt := range tests {
		for _, f := range tt.formats {
			t.Run(tt.name+"/"+f.name, func(t *testing.T) {
				parent, dst, err := extractBytes(t, f.build(t, tt.ents), Limits{})
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				if got := readTree(t, dst); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("tree =\n%q\nwant\n%q", got, tt.want)
				}
				if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("dst mode = %v, %v; want 0755", fi.Mode(), err)
				}
				onlyDst(t, parent)
			})
		}
	}
}

func TestExtractBad(t *testing.T) {
	small := Limits{MaxBytes: 1 << 20, MaxFiles: 5}
	var many []ent
	for i := range 6 {
		many = append(many, file(fmt.Sprintf("f%d.py", i), ""))
	}
	tests := []struct {
		name    string
		formats []format
		ents    []ent
		lim     Limits
		want    error
		msg     string
	}{
		{"dotdot", []format{fTar, fTgz, fZip}, []ent{file("../evil.py", "x")}, Limits{}, ErrUnsafe, "traversal"},
		{"deep dotdot", []format{fTar, fTgz, fZip}, []ent{file("a/b/../../../evil.py", "x")}, Limits{}, ErrUnsafe, "traversal"},
		{"dotdot cleaning inside", []format{fTar, fZip}, []ent{file("a/../b.py", "x")}, Limits{}, ErrUnsafe, "traversal"},
		{"dot then dotdot", []format{fTar, fZip}, []ent{file("./../x", "x")}, Limits{}, ErrUnsafe, "traversal"},
		{"absolute", []format{fTar, fTgz, fZip}, []ent{file("/tmp/evil.py", "x")}, Limits{}, ErrUnsafe, "absolute"},
		{"absolute dir", []format{fTar, fZip}, []ent{dirEnt("/etc/")}, Limits{}, ErrUnsafe, "absolute"},
		{"backslash", []format{fTar, fZip}, []ent{file(`..\evil.py`, "x")}, Limits{}, ErrUnsafe, "backslash"},
		{"symlink absolute", []format{fTar, fTgz, fZip}, []ent{symlink("passwd", "/etc/passwd")}, Limits{}, ErrUnsafe, "absolute target"},
		{"symlink up", []format{fTar, fTgz, fZip}, []ent{symlink("up", "..")}, Limits{}, ErrUnsafe, "outside"},
		{"symlink escapes after clean", []format{fTar, fZip}, []ent{symlink("a/l", "b/../../../etc")}, Limits{}, ErrUnsafe, "outside"},
		{"symlink chain escapes", []format{fTar, fTgz, fZip},
			[]ent{dirEnt("d"), symlink("d/l", ".."), symlink("e", "d/l/..")}, Limits{}, ErrUnsafe, "resolves outside"},
		{"symlink chain escapes via later link", []format{fTar, fZip},
			[]ent{symlink("e", "d/l/x"), dirEnt("d"), symlink("d/l", "../..")}, Limits{}, ErrUnsafe, "outside"},
		{"symlink loop", []format{fTar, fZip}, []ent{symlink("a", "b"), symlink("b", "a")}, Limits{}, ErrUnsafe, "loop"},
		{"symlink empty", []format{fTar}, []ent{symlink("a", "")}, Limits{}, ErrFormat, "empty target"},
		{"write through symlink", []format{fTar, fTgz, fZip},
			[]ent{dirEnt("d"), symlink("l", "d"), file("l/x.py", "x")}, Limits{}, ErrUnsafe, "not a directory"},
		{"write below file", []format{fTar, fZip}, []ent{file("a", "x"), file("a/b", "y")}, Limits{}, ErrUnsafe, "not a directory"},
		{"hard link outside", []format{fTar, fTgz}, []ent{hardlink("p", "../../etc/passwd")}, Limits{}, ErrUnsafe, "outside"},
		{"hard link absolute", []format{fTar}, []ent{hardlink("p", "/etc/passwd")}, Limits{}, ErrUnsafe, "outside"},
		{"hard link missing", []format{fTar}, []ent{hardlink("p", "nothing")}, Limits{}, ErrUnsafe, "not a regular file"},
		{"hard link to symlink", []format{fTar}, []ent{file("a", ""), symlink("l", "a"), hardlink("p", "l")}, Limits{}, ErrUnsafe, "not a regular file"},
		{"hard link to dir", []format{fTar}, []ent{dirEnt("d"), hardlink("p", "d")}, Limits{}, ErrUnsafe, "not a regular file"},
		{"char device", []format{fTar, fTgz, fZip}, []ent{special("null", tar.TypeChar)}, Limits{}, ErrUnsafe, "device"},
		{"block device", []format{fTar, fZip}, []ent{special("sda", tar.TypeBlock)}, Limits{}, ErrUnsafe, "device"},
		{"fifo", []format{fTar, fTgz, fZip}, []ent{special("p", tar.TypeFifo)}, Limits{}, ErrUnsafe, "fifo"},
		{"socket", []format{fZip}, []ent{special("s", 's')}, Limits{}, ErrUnsafe, "socket"},
		{"duplicate file", []format{fTar, fTgz, fZip}, []ent{file("a.py", "1"), file("a.py", "2")}, Limits{}, ErrUnsafe, "duplicate"},
		{"duplicate after cleaning", []format{fTar, fZip}, []ent{file("a.py", "1"), file("./a.py", "2")}, Limits{}, ErrUnsafe, "duplicate"},
		{"duplicate dir", []format{fTar, fZip}, []ent{dirEnt("d"), dirEnt("d/")}, Limits{}, ErrUnsafe, "duplicate"},
		{"dir over file", []format{fTar, fZip}, []ent{file("d", ""), dirEnt("d")}, Limits{}, ErrUnsafe, "duplicate"},
		{"file over dir", []format{fTar, fZip}, []ent{dirEnt("d"), file("d", "")}, Limits{}, ErrUnsafe, "duplicate"},
		{"symlink over file", []format{fTar, fZip}, []ent{file("a", ""), symlink("a", "b")}, Limits{}, ErrUnsafe, "duplicate"},
		{"root as file", []format{fTar}, []ent{file(".", "")}, Limits{}, ErrUnsafe, "root"},
		{"hard links multiply size", []format{fTgz},
			[]ent{file("a", strings.Repeat("x", 400)), hardlink("b", "a"), hardlink("c", "a")}, Limits{MaxBytes: 1000}, ErrTooLarge, "exceeds"},
		{"too many files", []format{fTar, fTgz, fZip}, many, small, ErrTooLarge, "more than 5"},
		{"too many implicit dirs", []format{fTar, fZip}, []ent{file("a/b/c/d/e/f.py", "")}, small, ErrTooLarge, "more than 5"},
		{"too many bytes", []format{fTgz, fZip},
			[]ent{file("a", strings.Repeat("x", 600)), file("b", strings.Repeat("y", 600))}, Limits{MaxBytes: 1000}, ErrTooLarge, "exceed"},
		{"tar over size", []format{fTar},
			[]ent{file("a", strings.Repeat("x", 600)), file("b", strings.Repeat("y", 600))}, Limits{MaxBytes: 2000}, ErrTooLarge, "over the 2000 byte limit"},
	}
	for _, tt := range tests {
		for _, f := range tt.formats {
			t.Run(tt.name+"/"+f.name, func(t *testing.T) {
				parent, _, err := extractBytes(t, f.build(t, tt.ents), tt.lim)
				if !errors.Is(err, tt.want) {
					t.Fatalf("Extract error = %v, want %v", err, tt.want)
				}
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("error %q does not mention %q", err, tt.msg)
				}
				onlyDst(t, parent)
			})
		}
	}
}

func TestExtractBombs(t *testing.T) {
	lim := Limits{MaxBytes: 1 << 20, MaxFiles: 100}
	tests := []struct {
		name string
		data func(t *testing.T) []byte
		want error
	}{
		// Headers claim 10 bytes; 8 MiB come out. archive/zip stops
		// reading past the claimed size; the limit on bytes written is
		// checked below either way.
		{"zip bomb lying header", func(t *testing.T) []byte { return zipBomb(t, 8<<20, 10) }, ErrFormat},
		{"zip bomb", func(t *testing.T) []byte { return zipBomb(t, 8<<20, 8<<20) }, ErrTooLarge},
		{"zip bomb hidden size", func(t *testing.T) []byte { return zipBomb(t, 8<<20, 1<<63) }, ErrTooLarge},
		{"tgz bomb", func(t *testing.T) []byte {
			return mkTgz(t, []ent{file("zeros", string(make([]byte, 8<<20)))})
		}, ErrTooLarge},
		{"archive over size", func(t *testing.T) []byte {
			return mkTar(t, []ent{file("a", strings.Repeat("x", 1<<20))})
		}, ErrTooLarge},
		{"not an archive", func(t *testing.T) []byte { return []byte("print('hello')\n") }, ErrFormat},
		{"empty input", func(t *testing.T) []byte { return nil }, ErrFormat},
		{"bzip2", func(t *testing.T) []byte { return []byte("BZh91AY&SY") }, ErrFormat},
		{"truncated tgz", func(t *testing.T) []byte {
			b := mkTgz(t, []ent{file("a.py", strings.Repeat("abc", 1000))})
			return b[:len(b)/2]
		}, ErrFormat},
		{"corrupt gzip", func(t *testing.T) []byte { return []byte{0x1f, 0x8b, 0, 0, 0} }, ErrFormat},
		{"gzip of garbage", func(t *testing.T) []byte { return gz(t, bytes.Repeat([]byte("garbage!"), 200)) }, ErrFormat},
		{"corrupt zip", func(t *testing.T) []byte {
			b := mkZip(t, []ent{file("a.py", strings.Repeat("abc", 1000))})
			return b[:len(b)-30]
		}, ErrFormat},
		{"zip bad crc", func(t *testing.T) []byte {
			b := mkZip(t, []ent{{name: "a.py", typ: tar.TypeReg, body: "hello world hello world"}})
			// Flip a byte of the compressed data (after the 30-byte
			// local header and the 4-byte name).
			b[30+4+2] ^= 0xff
			return b
		}, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, dst, err := extractBytes(t, tt.data(t), lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Extract error = %v, want %v", err, tt.want)
			}
			var total int64
			filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if fi, err := d.Info(); err == nil {
						total += fi.Size()
					}
				}
				return nil
			})
			if total > lim.MaxBytes+1 {
				t.Errorf("wrote %d bytes, limit %d", total, lim.MaxBytes)
			}
			onlyDst(t, parent)
		})
	}
}

func TestExtractDst(t *testing.T) {
	data := mkTar(t, []ent{file("a", "x")})
	parent := t.TempDir()
	full := filepath.Join(parent, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	notDir := filepath.Join(parent, "file")
	os.WriteFile(notDir, nil, 0o644)
	empty := filepath.Join(parent, "empty")
	os.Mkdir(empty, 0o700)
	tests := []struct {
		name, dst string
		ok        bool
	}{
		{"not empty", full, false},
		{"not a dir", notDir, false},
		{"no parent", filepath.Join(parent, "no", "dst"), false},
		{"empty dir", empty, true},
		{"new", filepath.Join(parent, "new"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Extract(bytes.NewReader(data), int64(len(data)), tt.dst, Limits{})
			if (err == nil) != tt.ok {
				t.Fatalf("Extract(%s) = %v, want ok=%v", tt.dst, err, tt.ok)
			}
			if tt.ok {
				if got := readTree(t, tt.dst); got["a"] != "f 644 x" {
					t.Errorf("tree = %v", got)
				}
			}
		})
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want Format
	}{
		{"tar", mkTar(t, []ent{file("a", "")}), Tar},
		{"tgz", mkTgz(t, []ent{file("a", "")}), TarGz},
		{"zip", mkZip(t, []ent{file("a", "")}), Zip},
		{"empty zip", mkZip(t, nil), Zip},
		{"text", []byte("hello"), Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Detect(tt.data); got != tt.want {
				t.Errorf("Detect = %v, want %v", got, tt.want)
			}
		})
	}
}
