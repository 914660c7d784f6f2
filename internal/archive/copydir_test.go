package archive

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// mkSrc builds a source tree. Values: "d" dir, "l:target" symlink,
// "x:content" executable file, "fifo", "sock", "dev", else file content.
func mkSrc(t *testing.T, tree map[string]string) string {
	t.Helper()
	src := t.TempDir()
	for p, v := range tree {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case v == "d":
			err = os.MkdirAll(full, 0o700)
		case strings.HasPrefix(v, "l:"):
			err = os.Symlink(v[2:], full)
		case strings.HasPrefix(v, "x:"):
			err = os.WriteFile(full, []byte(v[2:]), 0o700)
		case v == "fifo":
			err = syscall.Mkfifo(full, 0o644)
		case v == "dev":
			err = syscall.Mknod(full, syscall.S_IFCHR|0o644, 1<<8|3) // like /dev/null
		case v == "sock":
			var l net.Listener
			l, err = net.Listen("unix", full)
			if err == nil {
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
			}
		default:
			err = os.WriteFile(full, []byte(v), 0o600)
		}
		if err != nil {
			t.Fatalf("building %s: %v", p, err)
		}
	}
	return src
}

func TestCopyDir(t *testing.T) {
	src := mkSrc(t, map[string]string{
		"f.py": "def f(e): return e", "bin/run": "x:#!/bin/sh", "empty": "d",
		"pkg/a.py": "a", "lib": "l:pkg", "pkg/up": "l:../f.py",
	})
	parent := t.TempDir()
	dst := filepath.Join(parent, "dst")
	if err := CopyDir(src, dst, Limits{}); err != nil {
		t.Fatalf("CopyDir: %v", err)
	}
	want := map[string]string{
		"f.py": "f 644 def f(e): return e", "bin": "d 755", "bin/run": "f 755 #!/bin/sh", "empty": "d 755",
		"pkg": "d 755", "pkg/a.py": "f 644 a", "lib": "l pkg", "pkg/up": "l ../f.py",
	}
	if got := readTree(t, dst); !reflect.DeepEqual(got, want) {
		t.Errorf("tree =\n%q\nwant\n%q", got, want)
	}
	onlyDst(t, parent)

	// A symlink to the source directory is followed.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(src, link)
	dst2 := filepath.Join(t.TempDir(), "dst")
	if err := CopyDir(link, dst2, Limits{}); err != nil {
		t.Fatalf("CopyDir via symlink: %v", err)
	}
	if got := readTree(t, dst2); !reflect.DeepEqual(got, want) {
		t.Errorf("tree via symlink = %q", got)
	}
}

func TestCopyDirBad(t *testing.T) {
	big := strings.Repeat("x", 700)
	tests := []struct {
		name string
		tree map[string]string
		lim  Limits
		want error
		msg  string
	}{
		{"symlink absolute", map[string]string{"p": "l:/etc/passwd"}, Limits{}, ErrUnsafe, "absolute"},
		{"symlink up", map[string]string{"a/p": "l:../../x"}, Limits{}, ErrUnsafe, "outside"},
		{"symlink chain", map[string]string{"d/l": "l:..", "e": "l:d/l/.."}, Limits{}, ErrUnsafe, "outside"},
		{"fifo", map[string]string{"p": "fifo"}, Limits{}, ErrUnsafe, "fifo"},
		{"socket", map[string]string{"s": "sock"}, Limits{}, ErrUnsafe, "socket"},
		{"too many files", map[string]string{"a": "", "b": "", "c": "", "d/e": ""}, Limits{MaxFiles: 4}, ErrTooLarge, "more than 4"},
		{"too many bytes", map[string]string{"a": big, "b": big}, Limits{MaxBytes: 1000}, ErrTooLarge, "1000"},
	}
	if os.Geteuid() == 0 {
		tests = append(tests, struct {
			name string
			tree map[string]string
			lim  Limits
			want error
			msg  string
		}{"device", map[string]string{"null": "dev"}, Limits{}, ErrUnsafe, "device"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := mkSrc(t, tt.tree)
			parent := t.TempDir()
			err := CopyDir(src, filepath.Join(parent, "dst"), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("CopyDir error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			onlyDst(t, parent)
		})
	}
}

func TestCopyDirArgs(t *testing.T) {
	src := mkSrc(t, map[string]string{"f.py": ""})
	tests := []struct{ name, src, dst string }{
		{"dst inside src", src, filepath.Join(src, "sub")},
		{"dst is src", src, src},
		{"src missing", filepath.Join(src, "missing"), filepath.Join(t.TempDir(), "d")},
		{"src is file", filepath.Join(src, "f.py"), filepath.Join(t.TempDir(), "d")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := CopyDir(tt.src, tt.dst, Limits{}); err == nil {
				t.Errorf("CopyDir(%s, %s) succeeded", tt.src, tt.dst)
			}
		})
	}
	if got := readTree(t, src); len(got) != 1 {
		t.Errorf("source changed: %v", got)
	}
}

func TestCopyDirManyFiles(t *testing.T) {
	tree := map[string]string{}
	for i := range 200 {
		tree[fmt.Sprintf("m/f%03d.py", i)] = fmt.Sprint(i)
	}
	src := mkSrc(t, tree)
	dst := filepath.Join(t.TempDir(), "dst")
	if err := CopyDir(src, dst, Limits{MaxFiles: 201}); err != nil {
		t.Fatalf("CopyDir: %v", err)
	}
	if got := readTree(t, dst); len(got) != 201 || got["m/f199.py"] != "f 644 199" {
		t.Errorf("copied %d nodes, f199 = %q", len(got), got["m/f199.py"])
	}
}
