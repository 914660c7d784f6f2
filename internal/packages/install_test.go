package packages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// inode identifies a directory, to tell "reused" from "reinstalled".
func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestInstallOnce(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	code := codeDir(t, map[string]string{"requirements.txt": "beta[fast]\n"})

	t0 := time.Now()
	set, err := e.c.Install(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first deploy (resolve + install 3 packages): %v", time.Since(t0))
	cached := Cached(set)
	if got := names(cached); got != "alpha==2.0 beta==1.0 gamma==0.3" {
		t.Fatalf("cached set %q", got)
	}
	st := e.c.Stats()
	if st.Installed != 3 || st.PipRuns != 2 {
		t.Errorf("first deploy: %+v, want 3 installs in 2 pip runs (resolve, install)", st)
	}
	ino := map[string]uint64{}
	for _, p := range cached {
		dir := e.c.path(p)
		ino[p.String()] = inode(t, dir)
		mod := strings.ReplaceAll(p.Name, "-", "_")
		b, err := os.ReadFile(filepath.Join(dir, mod, "__init__.py"))
		if err != nil || !strings.Contains(string(b), p.Version) {
			t.Errorf("%s: module file %q, %v", p, b, err)
		}
		// Owned by root and writable by nobody else, whatever the
		// installer user did.
		err = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			s := fi.Sys().(*syscall.Stat_t)
			if s.Uid != 0 || s.Gid != 0 || fi.Mode().Perm()&0o022 != 0 {
				t.Errorf("%s: uid %d gid %d mode %v", path, s.Uid, s.Gid, fi.Mode())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("modules", func(t *testing.T) {
		for _, p := range cached {
			mods, err := e.c.Modules(p)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(p.Name, "-", "_"); strings.Join(mods, " ") != want {
				t.Errorf("%s: modules %v, want [%s]", p, mods, want)
			}
		}
		if _, err := e.c.Modules(Package{Name: "nosuch", Version: "1"}); !errors.Is(err, ErrNotInstalled) {
			t.Errorf("Modules of a missing package: %v", err)
		}
	})

	t.Run("second deploy reuses", func(t *testing.T) {
		t0 := time.Now()
		set2, err := e.c.Install(ctx, code)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("second deploy (resolve only): %v", time.Since(t0))
		if names(set2) != names(set) {
			t.Errorf("second resolve %q, first %q", names(set2), names(set))
		}
		st2 := e.c.Stats()
		if st2.Installed != st.Installed || st2.PipRuns != st.PipRuns+1 {
			t.Errorf("second deploy: %+v after %+v, want only a resolve", st2, st)
		}
		for _, p := range cached {
			if inode(t, e.c.path(p)) != ino[p.String()] {
				t.Errorf("%s was reinstalled", p)
			}
		}
	})

	t.Run("concurrent deploys install once", func(t *testing.T) {
		before := e.c.Stats()
		want := pkgs(t, "alpha==1.0", "delta==1.0")
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = e.c.Ensure(ctx, want)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Ensure %d: %v", i, err)
			}
		}
		after := e.c.Stats()
		if n := after.Installed - before.Installed; n != 2 {
			t.Errorf("%d installs for 2 packages", n)
		}
		// Waiters share the leader's run; a goroutine that comes after
		// it finished finds the packages installed and runs nothing.
		if n := after.PipRuns - before.PipRuns; n != 1 {
			t.Errorf("%d pip runs, want 1", n)
		}
		for _, p := range want {
			if !e.c.has(p) {
				t.Errorf("%s not installed", p)
			}
		}
	})

	t.Run("index", func(t *testing.T) {
		ents, err := e.c.List()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, en := range ents {
			got = append(got, en.String())
			if en.Size <= 0 || en.Installed.IsZero() || en.LastUse.Before(en.Installed) {
				t.Errorf("%s: %+v", en, en)
			}
			if en.Dir != e.c.path(en.Package) {
				t.Errorf("%s: dir %s", en, en.Dir)
			}
		}
		if s := strings.Join(got, " "); s != "alpha==1.0 alpha==2.0 beta==1.0 delta==1.0 gamma==0.3" {
			t.Errorf("List: %s", s)
		}
		left, _ := os.ReadDir(filepath.Join(e.c.Dir(), tmpDir))
		if len(left) > 0 {
			t.Errorf("temp dirs left: %v", left)
		}
	})
}

func TestFailedInstall(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	// Evil.Pkg resolves (its metadata is fine) but its wheel holds a file
	// outside the install directory, which pip refuses to install.
	code := codeDir(t, map[string]string{"requirements.txt": "evil-pkg\nalpha==1.0\n"})
	set, err := e.c.Install(ctx, code)
	if !errors.Is(err, ErrInstall) {
		t.Fatalf("Install: set %v, err %v; want ErrInstall", set, err)
	}
	t.Logf("deploy error: %v", err)
	if !strings.Contains(err.Error(), "evil-pkg==1.0") || !strings.Contains(err.Error(), "outside") {
		t.Errorf("error lacks the package or pip's message: %v", err)
	}
	evil := Package{Name: "evil-pkg", Version: "1.0"}
	if _, err := os.Stat(e.c.path(evil)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed package directory: %v", err)
	}
	ents, err := e.c.List()
	if err != nil {
		t.Fatal(err)
	}
	// alpha installed fine in the same run and stays: it is complete.
	if len(ents) != 1 || ents[0].String() != "alpha==1.0" {
		t.Errorf("index after a failed install: %+v", ents)
	}
	for _, d := range []string{tmpDir, trashDir} {
		if left, _ := os.ReadDir(filepath.Join(e.c.Dir(), d)); len(left) > 0 {
			t.Errorf("%s left: %v", d, left)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "escape.py")); err == nil {
		t.Errorf("the wheel wrote outside its directory")
	}
	// A second attempt fails the same way: failures are not cached as
	// installs.
	if err := e.c.Ensure(ctx, []Package{evil}); !errors.Is(err, ErrInstall) {
		t.Errorf("second Ensure: %v", err)
	}
}

// sandboxResult is what probe.py reports from inside a function sandbox.
type sandboxResult struct {
	Versions map[string]string `json:"versions"`
	Files    map[string]string `json:"files"`
	Listing  []string          `json:"listing"`
	Writes   map[string]string `json:"writes"`
}

// probe imports each module from the packages on HEARTH_PATH and tries
// to write into every package directory.
const probe = `
import json, os, sys, importlib
sys.path[:0] = [p for p in os.environ["HEARTH_PATH"].split(":") if p]
out = {"versions": {}, "files": {}, "listing": sorted(os.listdir("/hearth-pkgs")), "writes": {}}
for m in sys.argv[1:]:
    mod = importlib.import_module(m)
    out["versions"][m] = mod.VERSION
    out["files"][m] = mod.__file__
for d in ["/hearth-pkgs"] + [p for p in os.environ["HEARTH_PATH"].split(":") if p]:
    try:
        open(d + "/x", "w").close()
        out["writes"][d] = "ok"
    except OSError as e:
        out["writes"][d] = e.strerror
print(json.dumps(out))
`

// runProbe runs probe.py in a function sandbox that mounts set as the
// worker will: Mounts in order, read-only, and HEARTH_PATH from SysPath.
func runProbe(t *testing.T, e *env, set []Package, modules ...string) sandboxResult {
	t.Helper()
	binds, err := e.c.Mounts(set)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("probe-%d", cgroupSeq.Add(1))
	grp, err := e.cg.Create(id, cgroup.Limits{MemoryBytes: 256 << 20, Pids: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer grp.Delete(context.Background())
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sb, err := e.factory.Create(ctx, sandbox.Config{
		ID:      id,
		Binds:   binds,
		Group:   grp,
		Command: append([]string{"/usr/bin/python3", "-S", "-c", probe}, modules...),
		Env:     []string{EnvPath + "=" + strings.Join(SysPath(set), ":")},
		Stdout:  &out,
		Stderr:  &errb,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-ctx.Done():
	}
	status := sb.ExitStatus()
	if err := sb.Destroy(context.Background()); err != nil {
		t.Error(err)
	}
	if status != 0 {
		t.Fatalf("probe exited %d: %s", status, errb.String())
	}
	var r sandboxResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("probe output %q: %v", out.String(), err)
	}
	return r
}

func TestSandboxSeesOwnVersionsReadOnly(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	// Two functions pinning different versions of alpha.
	fns := []struct {
		reqs    string
		modules []string
		want    map[string]string
		dirs    []string
	}{
		{"alpha==1.0\n", []string{"alpha"}, map[string]string{"alpha": "1.0"}, []string{"alpha-1.0"}},
		{"beta\n", []string{"alpha", "beta"}, map[string]string{"alpha": "2.0", "beta": "1.0"}, []string{"alpha-2.0", "beta-1.0"}},
	}
	for _, fn := range fns {
		t.Run(strings.TrimSpace(fn.reqs), func(t *testing.T) {
			set, err := e.c.Install(ctx, codeDir(t, map[string]string{"requirements.txt": fn.reqs}))
			if err != nil {
				t.Fatal(err)
			}
			r := runProbe(t, e, set, fn.modules...)
			for m, v := range fn.want {
				if r.Versions[m] != v {
					t.Errorf("%s: imported version %q, want %q", m, r.Versions[m], v)
				}
				if want := MountPoint + "/" + m + "-" + v + "/" + m + "/__init__.py"; r.Files[m] != want {
					t.Errorf("%s: loaded from %s, want %s", m, r.Files[m], want)
				}
			}
			if got := strings.Join(r.Listing, " "); got != strings.Join(fn.dirs, " ") {
				t.Errorf("/hearth-pkgs holds %q, want exactly %q", got, fn.dirs)
			}
			if len(r.Writes) != len(fn.dirs)+1 {
				t.Errorf("write attempts: %v", r.Writes)
			}
			for d, res := range r.Writes {
				if res != "Read-only file system" {
					t.Errorf("writing in %s: %q, want a read-only file system", d, res)
				}
			}
		})
	}
}
