package runtime

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/seccomp"
)

func TestParseHandler(t *testing.T) {
	tests := []struct {
		in       string
		mod, fn  string
		wantFail bool
	}{
		{"f.f", "f", "f", false},
		{"lambda_function.lambda_handler", "lambda_function", "lambda_handler", false},
		{"pkg.sub.mod.h2", "pkg.sub.mod", "h2", false},
		{"dir/mod.h", "dir/mod", "h", false},
		{"f", "", "", true},
		{".f", "", "", true},
		{"f.", "", "", true},
		{"f.2x", "", "", true},
		{"a..b.f", "", "", true},
		{"/abs.f", "", "", true},
		{"../up.f", "", "", true},
		{"mod-x.f", "", "", true},
		{"mod.f f", "", "", true},
		{"", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			mod, fn, err := ParseHandler(tt.in)
			if tt.wantFail {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseHandler(%q) = %q, %q, %v; want ErrInvalid", tt.in, mod, fn, err)
				}
				return
			}
			if err != nil || mod != tt.mod || fn != tt.fn {
				t.Fatalf("ParseHandler(%q) = %q, %q, %v; want %q, %q", tt.in, mod, fn, err, tt.mod, tt.fn)
			}
		})
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want []string
	}{
		{"defaults", Options{}, []string{"HEARTH_HANDLER=f.f", "HEARTH_FUNCTION=", "HEARTH_REVISION="}},
		{"full", Options{
			Handler: "lambda_function.lambda_handler", Function: "hello", Revision: "abc",
			MemoryMB: 256, Timeout: 1500 * time.Millisecond, Path: []string{"/pkgs/a", "/pkgs/b"}, CodeDir: "/c",
		}, []string{
			"HEARTH_HANDLER=lambda_function.lambda_handler", "HEARTH_FUNCTION=hello", "HEARTH_REVISION=abc",
			"HEARTH_MEMORY_MB=256", "HEARTH_TIMEOUT_S=2", "HEARTH_PATH=/pkgs/a:/pkgs/b", "HEARTH_CODE=/c",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := Env(tt.o); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Env = %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"handler", Options{Handler: "nodot"}},
		{"memory", Options{MemoryMB: -1}},
		{"timeout", Options{Timeout: -time.Second}},
		{"relative path", Options{Path: []string{"rel"}}},
		{"colon path", Options{Path: []string{"/a:b"}}},
		{"code dir", Options{CodeDir: "code"}},
		{"nul", Options{Function: "a\x00b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.Validate(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestArgv(t *testing.T) {
	want := []string{"/usr/bin/python3", "-S", "-B", "/hearth/server.py"}
	if got := Argv("/usr/bin/python3"); !reflect.DeepEqual(got, want) {
		t.Errorf("Argv = %q, want %q", got, want)
	}
}

func TestInstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rt")
	// Twice: idempotent, and a changed file is replaced.
	for i := range 2 {
		if err := Install(dir); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := Compile(context.Background(), []string{python}, nil, dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "hearthrt.py"), []byte("stale"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The replaced module's unchecked cache went with it; the others stay.
	if m, _ := filepath.Glob(filepath.Join(dir, "__pycache__", "hearthrt.*.pyc")); len(m) != 0 {
		t.Errorf("stale caches kept: %v", m)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "__pycache__", "zygote.*.pyc")); len(m) != 1 {
		t.Errorf("caches of unchanged modules: %v", m)
	}
	n := 0
	err := fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			return err
		}
		want := fs.FileMode(0o644)
		if d.IsDir() {
			want = fs.ModeDir | 0o755
		}
		if st.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), want)
		}
		if !d.IsDir() {
			n++
			a, _ := fs.ReadFile(FS(), p)
			b, _ := os.ReadFile(filepath.Join(dir, p))
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs from the embedded copy", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Errorf("installed %d files, want server.py and hearthrt.py", n)
	}
	filter, err := seccomp.Filter()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, SeccompFile)); err != nil || !bytes.Equal(b, filter) {
		t.Errorf("%s: %d bytes (%v), want the seccomp filter's %d", SeccompFile, len(b), err, len(filter))
	}
	if st, err := os.Stat(filepath.Join(dir, SeccompFile)); err != nil || st.Mode() != 0o644 {
		t.Errorf("%s: mode %v (%v), want 0644", SeccompFile, st.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Errorf("left temp file %s", e.Name())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Compile(ctx, []string{python}, nil, dir); err != nil {
		t.Fatal(err)
	}
	pycs, _ := filepath.Glob(filepath.Join(dir, "__pycache__", "hearthrt.*.pyc"))
	if len(pycs) != 1 {
		t.Fatalf("compiled files: %v", pycs)
	}
	if st, err := os.Stat(pycs[0]); err != nil || st.Mode() != 0o644 {
		t.Errorf("pyc mode: %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(pycs[0])); err != nil || st.Mode() != fs.ModeDir|0o755 {
		t.Errorf("cache dir mode: %v %v", st.Mode(), err)
	}
	if err := Install(filepath.Join(dir, "server.py", "x")); err == nil {
		t.Error("Install under a file succeeded")
	}
	if err := Compile(ctx, []string{"/nonexistent/python"}, nil, dir); err == nil {
		t.Error("Compile with a missing interpreter succeeded")
	}
}

func TestHandlerErrorJSON(t *testing.T) {
	tests := []struct {
		e    HandlerError
		want string
	}{
		{HandlerError{Type: "T", Message: "m"}, `{"errorType":"T","errorMessage":"m","stackTrace":[]}`},
		{HandlerError{Type: "T", Message: `"q"`, StackTrace: []string{"a\n", "b"}},
			`{"errorType":"T","errorMessage":"\"q\"","stackTrace":["a\n","b"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := tt.e.MarshalJSON()
			if err != nil || string(b) != tt.want {
				t.Errorf("MarshalJSON = %s, %v; want %s", b, err, tt.want)
			}
			if got := tt.e.Error(); got != tt.e.Type+": "+tt.e.Message {
				t.Errorf("Error = %q", got)
			}
		})
	}
}

func TestCompileCode(t *testing.T) {
	code := writeCode(t, map[string]string{
		"f.py":            "def f(e):\n    return e\n",
		"pkg/__init__.py": "",
		"pkg/m.py":        "X = 1\n",
		"bad.py":          "def f(\n",
		"data.txt":        "not python",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Twice: idempotent.
	for range 2 {
		if err := Compile(ctx, []string{python}, nil, code); err != nil {
			t.Fatal(err)
		}
	}
	tag := "cpython-3"
	for _, src := range []string{"f.py", "pkg/__init__.py", "pkg/m.py"} {
		dir, base := filepath.Split(src)
		m, _ := filepath.Glob(filepath.Join(code, dir, "__pycache__", base[:len(base)-3]+"."+tag+"*.pyc"))
		if len(m) != 1 {
			t.Errorf("%s: cache files %v", src, m)
			continue
		}
		b, err := os.ReadFile(m[0])
		if err != nil {
			t.Fatal(err)
		}
		// PEP 552 flags: hash-based (bit 0), not checked (bit 1).
		if len(b) < 16 || b[4] != 1 {
			t.Errorf("%s: flags %v, want unchecked hash", src, b[4:8])
		}
	}
	if m, _ := filepath.Glob(filepath.Join(code, "__pycache__", "bad.*")); len(m) != 0 {
		t.Errorf("syntax error compiled: %v", m)
	}
	if err := Compile(ctx, []string{python}, nil, filepath.Join(code, "missing")); err == nil {
		t.Error("Compile of a missing dir succeeded")
	}
}
