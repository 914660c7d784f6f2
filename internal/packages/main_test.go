package packages

import (
	"archive/zip"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

var (
	initPath  string // hearth-init, built once
	testBase  string
	wheels    string // the test wheelhouse
	cgroupSeq atomic.Int32
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "packages: tests need root (namespaces, cgroups, mounts)")
		return 1
	}
	testBase = os.Getenv("HEARTH_TEST_BASE")
	if testBase == "" {
		testBase = "/var/lib/hearth/base"
	}
	if _, err := os.Stat(filepath.Join(testBase, "usr/bin/python3")); err != nil {
		fmt.Fprintf(os.Stderr, "packages: no base image at %s (set HEARTH_TEST_BASE): %v\n", testBase, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "hearth-pkgtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/hearth-run/hearth/cmd/hearth-init")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "packages: building hearth-init:", err)
		return 1
	}
	initPath = filepath.Join(dir, "hearth-init")
	wheels = filepath.Join(dir, "wheels")
	if err := makeWheelhouse(wheels); err != nil {
		fmt.Fprintln(os.Stderr, "packages: building the wheelhouse:", err)
		return 1
	}
	return m.Run()
}

// wheel describes a small pure-Python distribution.
type wheel struct {
	name, version string
	requires      []string            // Requires-Dist lines
	extras        map[string][]string // extra -> requirements
	files         map[string]string   // extra files, path -> content
}

// testWheels are the wheelhouse: dependencies between packages, two
// versions of alpha, an extra, and one wheel that resolves but cannot
// install (a file outside the install directory).
var testWheels = []wheel{
	{name: "alpha", version: "1.0"},
	{name: "alpha", version: "2.0"},
	{name: "beta", version: "1.0", requires: []string{"alpha>=1.5"}, extras: map[string][]string{"fast": {"gamma"}}},
	{name: "gamma", version: "0.3", requires: []string{"six"}},
	{name: "delta", version: "1.0", requires: []string{"alpha<2"}},
	{name: "Evil.Pkg", version: "1.0", files: map[string]string{"../../escape.py": "x = 1\n"}},
}

func makeWheelhouse(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, w := range testWheels {
		if err := w.write(dir); err != nil {
			return fmt.Errorf("%s %s: %w", w.name, w.version, err)
		}
	}
	return nil
}

// write writes w as dir/<name>-<version>-py3-none-any.whl: a zip with the
// module and a .dist-info, as the wheel format (PEP 427) lays it out.
func (w wheel) write(dir string) error {
	mod := strings.ToLower(strings.NewReplacer("-", "_", ".", "_").Replace(w.name))
	dist := fmt.Sprintf("%s-%s", mod, w.version)
	f, err := os.Create(filepath.Join(dir, dist+"-py3-none-any.whl"))
	if err != nil {
		return err
	}
	defer f.Close()
	z := zip.NewWriter(f)
	var meta strings.Builder
	fmt.Fprintf(&meta, "Metadata-Version: 2.1\nName: %s\nVersion: %s\n", w.name, w.version)
	for _, r := range w.requires {
		fmt.Fprintf(&meta, "Requires-Dist: %s\n", r)
	}
	for e, rs := range w.extras {
		fmt.Fprintf(&meta, "Provides-Extra: %s\n", e)
		for _, r := range rs {
			fmt.Fprintf(&meta, "Requires-Dist: %s ; extra == %q\n", r, e)
		}
	}
	files := map[string]string{
		mod + "/__init__.py":         fmt.Sprintf("VERSION = %q\n", w.version),
		dist + ".dist-info/METADATA": meta.String(),
		dist + ".dist-info/WHEEL":    "Wheel-Version: 1.0\nGenerator: hearth-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
		dist + ".dist-info/RECORD":   "",
	}
	for p, c := range w.files {
		files[p] = c
	}
	for p, c := range files {
		fw, err := z.Create(p)
		if err != nil {
			return err
		}
		if _, err := fw.Write([]byte(c)); err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return err
	}
	return f.Close()
}

// env is a cache under test with its own data dir and cgroup parent.
type env struct {
	c       *Cache
	factory *sandbox.Factory
	cg      *cgroup.Manager
	dir     string
}

// newEnv opens a cache over the test wheelhouse (no index). Everything
// is removed when the test ends.
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := cgroup.NewManager(fmt.Sprintf("hearth-pkgtest-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Close(context.Background()); err != nil {
			t.Errorf("closing cgroups: %v", err)
		}
	})
	f := &sandbox.Factory{InitPath: initPath, Base: testBase, Dir: filepath.Join(dir, "sandboxes")}
	t.Cleanup(func() {
		if m, err := sandbox.MountsUnder(dir); err != nil || len(m) > 0 {
			t.Errorf("mounts left under %s: %v %v", dir, m, err)
		}
	})
	cfg.Dir = filepath.Join(dir, "packages")
	cfg.Sandboxes = f
	cfg.Cgroups = cg
	if len(cfg.Index.FindLinks) == 0 && cfg.Index.URL == "" {
		cfg.Index = Index{NoIndex: true, FindLinks: []string{wheels}}
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &env{c: c, factory: f, cg: cg, dir: dir}
}

// codeDir writes a function's files (path -> content) into a fresh
// directory readable by the sandbox user.
func codeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func pkgs(t *testing.T, specs ...string) []Package {
	t.Helper()
	var out []Package
	for _, s := range specs {
		base := strings.HasPrefix(s, "base:")
		p, err := ParsePackage(strings.TrimPrefix(s, "base:"))
		if err != nil {
			t.Fatal(err)
		}
		p.Base = base
		out = append(out, p)
	}
	return out
}

func names(set []Package) string {
	var s []string
	for _, p := range set {
		x := p.String()
		if p.Base {
			x = "base:" + x
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}
