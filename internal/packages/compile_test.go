package packages

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// newCompiler returns a compiler over e's installer sandboxes and cgroup
// parent, as a worker shares them with its cache.
func newCompiler(t *testing.T, e *env, cfg CompileConfig) *Compiler {
	t.Helper()
	cfg.Sandboxes, cfg.Cgroups = e.factory, e.cg
	c, err := NewCompiler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// groupsLeft lists the child groups left below e's cgroup parent.
func groupsLeft(t *testing.T, e *env) []string {
	t.Helper()
	var left []string
	for _, d := range e.cg.Dirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			if ent.IsDir() {
				left = append(left, filepath.Join(d, ent.Name()))
			}
		}
	}
	return left
}

// importProbe imports f and pkg.mod from /code and prints what they
// return.
const importProbe = `
import sys
sys.path.insert(0, "/code")
import f, pkg.mod
print(f.v(), pkg.mod.v())
`

// runImport runs importProbe in a sandbox with code bound read-only at
// /code, as a function sandbox sees it, and returns its output.
func runImport(t *testing.T, e *env, code string) string {
	t.Helper()
	var out bytes.Buffer
	err := e.c.runner.run(context.Background(), job{
		kind: "probe", prog: "the probe",
		argv:    []string{"/usr/bin/python3", "-S", "-B", "-c", importProbe},
		binds:   []sandbox.Bind{{Source: code, Target: codePoint}},
		limits:  cgroup.Limits{MemoryBytes: 256 << 20, Pids: 16},
		timeout: 30 * time.Second,
		collect: func(res result) error {
			out.WriteString(res.output)
			if res.status != 0 {
				t.Errorf("probe exited %d: %s", res.status, res.output)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

func TestCompile(t *testing.T) {
	e := newEnv(t, Config{})
	c := newCompiler(t, e, CompileConfig{})
	code := codeDir(t, map[string]string{
		"f.py":            "def v(): return 'f1'\n",
		"pkg/__init__.py": "",
		"pkg/mod.py":      "def v(): return 'mod1'\n",
		"bad.py":          "def (:\n",
		"data.txt":        "not python\n",
	})
	// A __pycache__ that leads out of the tree gets nothing written
	// through it.
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(code, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(code, "sub", "s.py"), []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(code, "sub", "__pycache__")); err != nil {
		t.Fatal(err)
	}

	n, err := c.Compile(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("installed %d caches, want 3 (f, pkg/__init__, pkg/mod)", n)
	}
	for _, p := range []string{"f", "pkg/__init__", "pkg/mod"} {
		dir, mod := filepath.Split(p)
		pyc := filepath.Join(code, dir, "__pycache__", mod+"."+c.tag+".pyc")
		b, err := os.ReadFile(pyc)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if len(b) < 16 || binary.LittleEndian.Uint32(b[4:8]) != pycUncheckedHash {
			t.Errorf("%s: not an unchecked-hash cache: % x", p, b[:min(len(b), 16)])
		}
		for _, f := range []string{pyc, filepath.Dir(pyc)} {
			fi, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			want := os.FileMode(0o644)
			if fi.IsDir() {
				want = 0o755 | os.ModeDir
			}
			if st.Uid != 0 || fi.Mode() != want {
				t.Errorf("%s: uid %d mode %v, want root and %v", f, st.Uid, fi.Mode(), want)
			}
		}
	}
	if m, _ := filepath.Glob(filepath.Join(code, "__pycache__", "bad.*")); len(m) > 0 {
		t.Errorf("a cache for a file that does not compile: %v", m)
	}
	if ents, _ := os.ReadDir(outside); len(ents) > 0 {
		t.Errorf("written through a symlinked __pycache__: %v", ents)
	}
	if left := groupsLeft(t, e); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}

	// Imports use the caches without looking at the source: change the
	// source, and the cached code still runs.
	for p, v := range map[string]string{"f.py": "f2", "pkg/mod.py": "mod2"} {
		if err := os.WriteFile(filepath.Join(code, p), []byte("def v(): return '"+v+"'\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := runImport(t, e, code); got != "f1 mod1" {
		t.Errorf("imports returned %q, want the cached code's %q", got, "f1 mod1")
	}
}

// listBomb is a small source that makes CPython's compiler use about
// 700 MiB and 5 s (3.13, unconstrained): a list display of a million
// constants.
func listBomb(n int) string { return "x = [" + strings.Repeat("1,", n) + "]\n" }

func TestCompileBomb(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct {
		name string
		cfg  CompileConfig
		want error
	}{
		{"memory", CompileConfig{MemoryBytes: 64 << 20, Timeout: time.Minute}, ErrOutOfMemory},
		{"time", CompileConfig{MemoryBytes: 2 << 30, Timeout: time.Second}, ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCompiler(t, e, tc.cfg)
			code := codeDir(t, map[string]string{"f.py": "def f(e): return 1\n", "bomb.py": listBomb(1_000_000)})
			t0 := time.Now()
			n, err := c.Compile(context.Background(), code)
			took := time.Since(t0)
			t.Logf("%v after %v", err, took)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Compile: %d caches, %v; want %v", n, err, tc.want)
			}
			if n != 0 {
				t.Errorf("a failed compile installed %d caches", n)
			}
			if m, _ := filepath.Glob(filepath.Join(code, "__pycache__", "*")); len(m) > 0 {
				t.Errorf("caches after a failed compile: %v", m)
			}
			if took > tc.cfg.Timeout+10*time.Second {
				t.Errorf("Compile took %v, limit %v", took, tc.cfg.Timeout)
			}
			if left := groupsLeft(t, e); len(left) > 0 {
				t.Errorf("cgroups left: %v", left)
			}
		})
	}

	t.Run("cancel", func(t *testing.T) {
		c := newCompiler(t, e, CompileConfig{MemoryBytes: 2 << 30, Timeout: time.Minute})
		code := codeDir(t, map[string]string{"bomb.py": listBomb(1_000_000)})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		_, err := c.Compile(ctx, code)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeout) {
			t.Errorf("Compile with an ending context: %v", err)
		}
		if took := time.Since(t0); took > 10*time.Second {
			t.Errorf("Compile returned %v after its context ended", took)
		}
		if left := groupsLeft(t, e); len(left) > 0 {
			t.Errorf("cgroups left: %v", left)
		}
	})
}

// TestCompileOutputChecks feeds install what a subverted compiler could
// leave in its output: links out of the tree, special files, huge files,
// caches of another kind or for files that do not exist.
func TestCompileOutputChecks(t *testing.T) {
	c := &Compiler{tag: "cpython-313"}
	code := codeDir(t, map[string]string{
		"good.py": "", "link.py": "", "rel.py": "", "fifo.py": "", "big.py": "", "checked.py": "",
		"d/viadir.py": "", "e/viacache.py": "", "p/__pycache__/keep.txt": "", "q/q.py": "",
	})
	out := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	pyc := func(flags uint32) []byte {
		b := make([]byte, 32)
		binary.LittleEndian.PutUint32(b[4:8], flags)
		copy(b[16:], "bytecode")
		return b
	}
	if err := os.WriteFile(secret, pyc(1), 0o600); err != nil {
		t.Fatal(err)
	}
	write := func(p string, b []byte) {
		t.Helper()
		p = filepath.Join(out, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	name := func(mod string) string { return mod + ".cpython-313.pyc" }
	write("__pycache__/"+name("good"), pyc(1))
	write("__pycache__/"+name("checked"), pyc(3))
	write("__pycache__/"+name("absent"), pyc(1)) // no absent.py
	if err := os.Symlink(secret, filepath.Join(out, "__pycache__", name("link"))); err != nil {
		t.Fatal(err)
	}
	// A link to another cache of the output.
	if err := os.Symlink(name("good"), filepath.Join(out, "__pycache__", name("rel"))); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(out, "__pycache__", name("fifo")), 0o644); err != nil {
		t.Fatal(err)
	}
	write("__pycache__/"+name("big"), nil)
	if err := os.Truncate(filepath.Join(out, "__pycache__", name("big")), maxPyc+1); err != nil {
		t.Fatal(err)
	}
	// A directory and a __pycache__ of the output that are links (within
	// it).
	write("elsewhere/__pycache__/"+name("viadir"), pyc(1))
	if err := os.Symlink("elsewhere", filepath.Join(out, "d")); err != nil {
		t.Fatal(err)
	}
	write("elsewhere/"+name("viacache"), pyc(1))
	if err := os.MkdirAll(filepath.Join(out, "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere", filepath.Join(out, "e", "__pycache__")); err != nil {
		t.Fatal(err)
	}
	// In the code: a __pycache__ that is a file, which is left alone.
	write("q/__pycache__/"+name("q"), pyc(1))
	if err := os.WriteFile(filepath.Join(code, "q", "__pycache__"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}

	n, err := c.install(out, code)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("installed %d caches, want 1 (good)", n)
	}
	var got []string
	filepath.WalkDir(code, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".pyc") {
			rel, _ := filepath.Rel(code, p)
			got = append(got, rel)
		}
		return nil
	})
	if strings.Join(got, " ") != "__pycache__/"+name("good") {
		t.Errorf("caches in the code: %v, want only good's", got)
	}
	if b, err := os.ReadFile(filepath.Join(code, "__pycache__", name("good"))); err != nil || !bytes.Equal(b, pyc(1)) {
		t.Errorf("good's cache: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(code, "q", "__pycache__")); string(b) != "mine" {
		t.Errorf("the code's own file q/__pycache__ became %q", b)
	}
	// A missing output directory is no cache, not an error.
	if n, err := c.install(filepath.Join(out, "none"), code); n != 0 || err != nil {
		t.Errorf("install from nothing: %d, %v", n, err)
	}
}

func TestCompileMissingDir(t *testing.T) {
	e := newEnv(t, Config{})
	c := newCompiler(t, e, CompileConfig{})
	if n, err := c.Compile(context.Background(), filepath.Join(t.TempDir(), "missing")); n != 0 || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Compile of a missing dir: %d, %v", n, err)
	}
}
