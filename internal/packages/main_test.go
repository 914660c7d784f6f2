package packages

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/packages/wheeltest"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/seccomp"
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

// testWheels are the wheelhouse: dependencies between packages, two
// versions of alpha, an extra, and one wheel that resolves but cannot
// install (a file outside the install directory).
var testWheels = []wheeltest.Wheel{
	{Name: "alpha", Version: "1.0"},
	{Name: "alpha", Version: "2.0"},
	{Name: "beta", Version: "1.0", Requires: []string{"alpha>=1.5"}, Extras: map[string][]string{"fast": {"gamma"}}},
	{Name: "gamma", Version: "0.3", Requires: []string{"six"}},
	{Name: "delta", Version: "1.0", Requires: []string{"alpha<2"}},
	{Name: "Evil.Pkg", Version: "1.0", Files: map[string]string{"../../escape.py": "x = 1\n"}},
}

func makeWheelhouse(dir string) error { return wheeltest.House(dir, testWheels...) }

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
	filter := filepath.Join(dir, "seccomp.bpf")
	if err := seccomp.WriteFile(filter); err != nil {
		t.Fatal(err)
	}
	f := &sandbox.Factory{InitPath: initPath, Base: testBase, Dir: filepath.Join(dir, "sandboxes"), Seccomp: filter}
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
