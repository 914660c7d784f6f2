package registry

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/archive"
	"github.com/hearth-run/hearth/internal/function"
)

func open(t *testing.T, dir string, opts Options) *Registry {
	t.Helper()
	r, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// srcDir writes files (path -> content) into a fresh directory.
func srcDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
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

// tgz packs files into a tar.gz in sorted order.
func tgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range sortedKeys(files) {
		c := files[p]
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o600, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range sortedKeys(files) {
		w, err := zw.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[p]))
	}
	zw.Close()
	return buf.Bytes()
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func arc(b []byte) Source { return Source{Archive: bytes.NewReader(b), Size: int64(len(b))} }

var (
	v1 = map[string]string{"f.py": "def f(e):\n    return 1\n"}
	v2 = map[string]string{"f.py": "def f(e):\n    return 2\n", "function.yaml": "memory_mb: 64\nenv: {A: b}\n"}
)

// serves checks that name is deployed with the code in files.
func serves(t *testing.T, r *Registry, name string, files map[string]string) Function {
	t.Helper()
	fn, err := r.Get(name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	for p, c := range files {
		b, err := os.ReadFile(filepath.Join(fn.CodeDir, p))
		if err != nil || string(b) != c {
			t.Fatalf("%s: %s = %q, %v; want %q", name, p, b, err, c)
		}
	}
	sum, err := digest(fn.CodeDir)
	if err != nil || sum.rev != fn.Revision {
		t.Fatalf("%s: code dir hashes to %s (%v), revision %s", name, sum.rev, err, fn.Revision)
	}
	return fn
}

// noLeftovers checks that the only revision dir of each function is the
// current one and that staging is empty.
func noLeftovers(t *testing.T, r *Registry) {
	t.Helper()
	root := filepath.Join(r.dir, codeRoot)
	staged, err := os.ReadDir(filepath.Join(root, stagingDir))
	if err != nil || len(staged) != 0 {
		t.Errorf("staging holds %v (%v)", staged, err)
	}
	fns, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{stagingDir: true}
	for _, fn := range fns {
		want[dirName(fn.Name)] = true
		revs, err := os.ReadDir(filepath.Join(root, dirName(fn.Name)))
		if err != nil || len(revs) != 1 || revs[0].Name() != fn.Revision {
			t.Errorf("%s: revision dirs %v (%v), want only %s", fn.Name, revs, err, fn.Revision)
		}
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if !want[e.Name()] {
			t.Errorf("leftover %s in %s", e.Name(), root)
		}
	}
}

func TestDeployGetList(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	before := time.Now().Add(-time.Second)
	tests := []struct {
		name  string
		src   Source
		files map[string]string
	}{
		{"from-dir", Source{Dir: srcDir(t, v2)}, v2},
		{"from-tgz", arc(tgz(t, v2)), v2},
		{"from-zip", arc(zipOf(t, v1)), v1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fn, err := r.Deploy(context.Background(), tt.name, tt.src)
			if err != nil {
				t.Fatalf("Deploy: %v", err)
			}
			got := serves(t, r, tt.name, tt.files)
			if !reflect.DeepEqual(got, fn) {
				t.Errorf("Get = %+v, Deploy returned %+v", got, fn)
			}
			var size int64
			for _, c := range tt.files {
				size += int64(len(c))
			}
			if fn.Size != size || fn.Files != len(tt.files) {
				t.Errorf("size, files = %d, %d; want %d, %d", fn.Size, fn.Files, size, len(tt.files))
			}
			if len(fn.Revision) != 64 || fn.ShortRevision() != fn.Revision[:16] {
				t.Errorf("revision %q, short %q", fn.Revision, fn.ShortRevision())
			}
			if fn.DeployedAt.Before(before) || fn.DeployedAt.After(time.Now()) {
				t.Errorf("DeployedAt %v", fn.DeployedAt)
			}
			if fn.Spec.Handler != "f.f" {
				t.Errorf("handler %q", fn.Spec.Handler)
			}
			fi, err := os.Stat(filepath.Join(fn.CodeDir, "f.py"))
			if err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("f.py mode %v, %v; want 0644", fi.Mode(), err)
			}
		})
	}
	// Same content from a directory and from a tar.gz: same revision.
	a, _ := r.Get("from-dir")
	b, _ := r.Get("from-tgz")
	if a.Revision != b.Revision {
		t.Errorf("dir and tgz of the same code: revisions %s and %s", a.Revision, b.Revision)
	}
	if a.Spec.MemoryMB != 64 || a.Spec.Env["A"] != "b" {
		t.Errorf("spec not loaded: %+v", a.Spec)
	}
	fns, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fns {
		names = append(names, f.Name)
	}
	if want := []string{"from-dir", "from-tgz", "from-zip"}; !reflect.DeepEqual(names, want) {
		t.Errorf("List names = %v, want %v", names, want)
	}
	noLeftovers(t, r)
}

func TestRedeploy(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	first, err := r.Deploy(ctx, "fn", arc(tgz(t, v1)))
	if err != nil {
		t.Fatal(err)
	}
	// Identical code: a no-op returning the same Function.
	again, err := r.Deploy(ctx, "fn", Source{Dir: srcDir(t, v1)})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("identical redeploy changed the function:\n%+v\n%+v", again, first)
	}
	// New code: a new revision, and the old directory goes.
	second, err := r.Deploy(ctx, "fn", arc(tgz(t, v2)))
	if err != nil {
		t.Fatal(err)
	}
	if second.Revision == first.Revision || second.CodeDir == first.CodeDir {
		t.Fatalf("new code kept revision %s", first.Revision)
	}
	if _, err := os.Stat(first.CodeDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old revision dir still there: %v", err)
	}
	serves(t, r, "fn", v2)
	// Back to the first code: its revision again.
	third, err := r.Deploy(ctx, "fn", arc(tgz(t, v1)))
	if err != nil {
		t.Fatal(err)
	}
	if third.Revision != first.Revision {
		t.Errorf("redeploying v1 gave %s, want %s", third.Revision, first.Revision)
	}
	serves(t, r, "fn", v1)
	noLeftovers(t, r)
}

func TestDeployBad(t *testing.T) {
	errReq := errors.New("requirement check failed")
	r := open(t, t.TempDir(), Options{
		MaxBytes: 4096, MaxFiles: 10,
		CheckRequirements: func(reqs []string) error {
			for _, q := range reqs {
				if q != "numpy" {
					return fmt.Errorf("%q: %w", q, errReq)
				}
			}
			return nil
		},
	})
	ctx := context.Background()
	if _, err := r.Deploy(ctx, "fn", arc(tgz(t, v1))); err != nil {
		t.Fatal(err)
	}
	many := map[string]string{}
	for i := range 11 {
		many[fmt.Sprintf("m%d.py", i)] = ""
	}
	evilSymlink := func() []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "f.py", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"})
		tw.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name string
		fn   string
		src  Source
		want error
	}{
		{"bad name empty", "", arc(tgz(t, v1)), ErrInvalid},
		{"bad name dot", ".staging", arc(tgz(t, v1)), ErrInvalid},
		{"bad name slash", "a/b", arc(tgz(t, v1)), ErrInvalid},
		{"bad name dotdot", "..", arc(tgz(t, v1)), ErrInvalid},
		{"bad name long", strings.Repeat("a", 65), arc(tgz(t, v1)), ErrInvalid},
		{"bad name caret", "^fn", arc(tgz(t, v1)), ErrInvalid},
		{"bad name space", "f n", arc(tgz(t, v1)), ErrInvalid},
		{"bad name unicode", "fé", arc(tgz(t, v1)), ErrInvalid},
		{"no source", "fn", Source{}, ErrInvalid},
		{"two sources", "fn", Source{Archive: bytes.NewReader(nil), Dir: "/tmp"}, ErrInvalid},
		{"traversal", "fn", arc(tgz(t, map[string]string{"../f.py": "x"})), archive.ErrUnsafe},
		{"absolute", "fn", arc(tgz(t, map[string]string{"/f.py": "x"})), archive.ErrUnsafe},
		{"symlink out", "fn", arc(evilSymlink()), archive.ErrUnsafe},
		{"too large", "fn", arc(tgz(t, map[string]string{"f.py": strings.Repeat("#", 5000)})), archive.ErrTooLarge},
		{"too many files", "fn", arc(zipOf(t, many)), archive.ErrTooLarge},
		{"not an archive", "fn", arc([]byte("def f(e): pass")), archive.ErrFormat},
		{"no handler", "fn", arc(tgz(t, map[string]string{"main.py": ""})), function.ErrInvalid},
		{"bad yaml", "fn", arc(tgz(t, map[string]string{"f.py": "", "function.yaml": "memory_mb: 1"})), function.ErrInvalid},
		{"unknown network", "fn", arc(tgz(t, map[string]string{"f.py": "", "function.yaml": "network: carrier-pigeon"})), function.ErrInvalid},
		{"requirement", "fn", arc(tgz(t, map[string]string{"f.py": "", "requirements.txt": "numpy\nscipy\n"})), errReq},
		{"missing dir", "fn", Source{Dir: filepath.Join(t.TempDir(), "nope")}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Deploy(ctx, tt.fn, tt.src)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Deploy error = %v, want %v", err, tt.want)
			}
			if tt.want != os.ErrNotExist && !errors.Is(err, ErrInvalid) {
				t.Errorf("bad input %v does not match ErrInvalid", err)
			}
			serves(t, r, "fn", v1)
			noLeftovers(t, r)
		})
	}
	// A satisfied requirement deploys.
	if _, err := r.Deploy(ctx, "np", arc(tgz(t, map[string]string{"f.py": "", "requirements.txt": "numpy # ok\n"}))); err != nil {
		t.Errorf("satisfied requirement: %v", err)
	}
}

func TestGetDelete(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	if _, err := r.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing = %v, want ErrNotFound", err)
	}
	// A name no function can have is not found, not bad input.
	if _, err := r.Get("../x"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		t.Errorf("Get bad name = %v, want ErrNotFound", err)
	}
	if err := r.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete missing = %v, want ErrNotFound", err)
	}
	if err := r.Delete("a.b"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		t.Errorf("Delete bad name = %v, want ErrNotFound", err)
	}
	fn, err := r.Deploy(context.Background(), "fn", arc(tgz(t, v1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Delete("fn"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := r.Get("fn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(fn.CodeDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("code still there after Delete: %v", err)
	}
	if err := r.Delete("fn"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v", err)
	}
	if fns, err := r.List(); err != nil || len(fns) != 0 {
		t.Errorf("List after Delete = %v, %v", fns, err)
	}
}

func TestCanceled(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	if _, err := r.Deploy(context.Background(), "fn", arc(tgz(t, v1))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Deploy(ctx, "fn", arc(tgz(t, v2))); !errors.Is(err, context.Canceled) {
		t.Errorf("Deploy with canceled ctx = %v", err)
	}
	// A deploy waiting for the name's lock gives up when ctx ends.
	unlock, err := r.lock(context.Background(), "fn")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = r.Deploy(ctx, "fn", arc(tgz(t, v2)))
	unlock()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Deploy waiting on lock = %v", err)
	}
	serves(t, r, "fn", v1)
	noLeftovers(t, r)
	if len(r.locks) != 0 {
		t.Errorf("locks left: %v", r.locks)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]Function{}
	for i, files := range []map[string]string{v1, v2} {
		fn, err := r.Deploy(ctx, fmt.Sprintf("fn%d", i), arc(tgz(t, files)))
		if err != nil {
			t.Fatal(err)
		}
		want[fn.Name] = fn
	}
	// Only one process may hold the registry.
	if _, err := Open(dir, Options{LockTimeout: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Open = %v, want in use", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = open(t, dir, Options{})
	for name, w := range want {
		got := serves(t, r, name, map[string]string{})
		if !reflect.DeepEqual(got, w) {
			t.Errorf("after restart %s = %+v, want %+v", name, got, w)
		}
	}
	serves(t, r, "fn0", v1)
	serves(t, r, "fn1", v2)
	noLeftovers(t, r)
}

// TestCrashLeftovers reopens a registry whose data dir holds what a crash
// at each step of a deploy or delete leaves: a staging tree, a renamed
// revision without metadata, the old revision after a commit, code of a
// function whose metadata is gone.
func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old, err := r.Deploy(context.Background(), "fn", arc(tgz(t, v1)))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	root := filepath.Join(dir, codeRoot)
	mk := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p, "f.py"), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(stagingDir + "/fn.123/code")                        // crashed while extracting
	mk("fn/" + strings.Repeat("ab", 32))                   // crashed after rename, before commit
	mk("ghost/" + strings.Repeat("cd", 32))                // first deploy crashed before commit
	mk("Bad Name/x")                                       // not ours at all
	mk("Fn/" + strings.Repeat("ef", 32))                   // capitals are written ^f
	mk("^/" + strings.Repeat("ef", 32))                    // nor is this an encoded name
	os.WriteFile(filepath.Join(root, "stray"), nil, 0o644) // a stray file

	r = open(t, dir, Options{})
	got := serves(t, r, "fn", v1)
	if !reflect.DeepEqual(got, old) {
		t.Errorf("after crash fn = %+v, want %+v", got, old)
	}
	if _, err := r.Get("ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ghost = %v, want ErrNotFound", err)
	}
	noLeftovers(t, r)
	// The registry works normally afterwards.
	if _, err := r.Deploy(context.Background(), "fn", arc(tgz(t, v2))); err != nil {
		t.Fatal(err)
	}
	serves(t, r, "fn", v2)
	noLeftovers(t, r)
}

func TestConcurrentDeploys(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	versions := make([]map[string]string, 6)
	for i := range versions {
		versions[i] = map[string]string{"f.py": fmt.Sprintf("def f(e):\n    return %d\n", i%3)}
	}
	revs := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, files := range versions {
		data := tgz(t, files)
		for _, name := range []string{"shared", fmt.Sprintf("own%d", i)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn, err := r.Deploy(context.Background(), name, arc(data))
				if err != nil {
					t.Errorf("Deploy %s: %v", name, err)
					return
				}
				mu.Lock()
				revs[fn.Revision] = true
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if len(revs) != 3 {
		t.Errorf("%d distinct revisions, want 3", len(revs))
	}
	fn := serves(t, r, "shared", map[string]string{})
	if !revs[fn.Revision] {
		t.Errorf("shared serves unknown revision %s", fn.Revision)
	}
	for i, files := range versions {
		serves(t, r, fmt.Sprintf("own%d", i), files)
	}
	noLeftovers(t, r)
	if len(r.locks) != 0 {
		t.Errorf("locks left: %v", r.locks)
	}
}

func TestDigest(t *testing.T) {
	base := map[string]string{"a.py": "a", "d/b.py": "b"}
	sum := func(t *testing.T, files map[string]string, change func(dir string)) string {
		dir := srcDir(t, files)
		if change != nil {
			change(dir)
		}
		s, err := digest(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s.rev
	}
	ref := sum(t, base, nil)
	tests := []struct {
		name   string
		files  map[string]string
		change func(dir string)
		same   bool
	}{
		{"same content", map[string]string{"d/b.py": "b", "a.py": "a"}, nil, true},
		{"content", map[string]string{"a.py": "A", "d/b.py": "b"}, nil, false},
		{"name", map[string]string{"a2.py": "a", "d/b.py": "b"}, nil, false},
		{"moved", map[string]string{"a.py": "a", "e/b.py": "b"}, nil, false},
		{"boundary", map[string]string{"a.py": "ad", "d/b.py": ""}, nil, false},
		{"mode", base, func(d string) { os.Chmod(filepath.Join(d, "a.py"), 0o755) }, false},
		{"empty dir", base, func(d string) { os.Mkdir(filepath.Join(d, "e"), 0o755) }, false},
		{"symlink", base, func(d string) { os.Symlink("a.py", filepath.Join(d, "l")) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sum(t, tt.files, tt.change); (got == ref) != tt.same {
				t.Errorf("digest %s vs %s, want same=%v", got, ref, tt.same)
			}
		})
	}
}

// crashEnv names the environment variable that turns TestCrashHelper into
// a deploy loop for TestKilledDeploy.
const crashEnv = "HEARTH_REGISTRY_CRASH_HELPER"

// bigVersion is code with enough files that a deploy takes a while.
func bigVersion(tag string) map[string]string {
	files := map[string]string{"f.py": "def f(e):\n    return '" + tag + "'\n"}
	for i := range 150 {
		files[fmt.Sprintf("pkg/m%03d.py", i)] = strings.Repeat("x = '"+tag+"'\n", 50)
	}
	return files
}

// TestCrashHelper is not a test on its own: run by TestKilledDeploy with
// crashEnv set, it deploys two versions in turn until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		return
	}
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := tgz(t, bigVersion("a")), tgz(t, bigVersion("b"))
	os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644)
	for i := 0; ; i++ {
		src := a
		if i%2 == 1 {
			src = b
		}
		if _, err := r.Deploy(context.Background(), "fn", arc(src)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKilledDeploy kills a process in the middle of deploying, at several
// points in time, and checks that reopening the registry serves a complete
// revision (one of those deployed) and leaves nothing behind.
func TestKilledDeploy(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deploy(context.Background(), "fn", arc(tgz(t, v1))); err != nil {
		t.Fatal(err)
	}
	r.Close()
	known := map[string]bool{}
	for _, v := range []map[string]string{v1, bigVersion("a"), bigVersion("b")} {
		s, err := digest(srcDir(t, v))
		if err != nil {
			t.Fatal(err)
		}
		known[s.rev] = true
	}
	seen := map[string]bool{}
	for i, delay := range []time.Duration{0, 2, 5, 9, 14, 20, 27, 35, 44, 54, 70, 90, 600} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			os.Remove(filepath.Join(dir, "ready"))
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
			cmd.Env = append(os.Environ(), crashEnv+"="+dir)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until it has the database open, then let it deploy
			// for a while before killing it.
			for start := time.Now(); ; time.Sleep(time.Millisecond) {
				if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
					break
				}
				if time.Since(start) > 10*time.Second {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatal("helper did not start")
				}
			}
			time.Sleep(delay * time.Millisecond)
			cmd.Process.Kill()
			cmd.Wait()
			r := open(t, dir, Options{})
			fn := serves(t, r, "fn", map[string]string{})
			if !known[fn.Revision] {
				t.Errorf("serving unknown revision %s", fn.Revision)
			}
			seen[fn.Revision] = true
			noLeftovers(t, r)
			r.Close()
		})
	}
	// The helper deploys every ~50 ms; after 600 ms at least one deploy
	// must have committed, or the helper never worked.
	if len(seen) < 2 {
		t.Errorf("only %d revision(s) served after kills: the helper did not deploy", len(seen))
	}
}

// TestNamesAreCaseSensitive: Lambda's names (letters of both cases,
// digits, "_" and "-", up to 64) deploy; names that differ only in case
// are different functions whose code never shares a directory, even
// where the file system folds case, and survive a reopen.
func TestNamesAreCaseSensitive(t *testing.T) {
	dir := t.TempDir()
	r := open(t, dir, Options{})
	ctx := context.Background()
	v3 := map[string]string{"f.py": "def f(e):\n    return 3\n"}
	code := map[string]map[string]string{"Foo": v1, "foo": v2, "FOO": v3}
	long := strings.Repeat("Ab_-9", 12) + "Zz-_" // 64 characters
	code[long] = v2
	code["-lead"] = v1
	code["_Lead"] = v3
	folded := map[string]string{}
	for name, files := range code {
		if _, err := r.Deploy(ctx, name, arc(tgz(t, files))); err != nil {
			t.Fatalf("Deploy %q: %v", name, err)
		}
	}
	for name, files := range code {
		fn := serves(t, r, name, files)
		if fn.Name != name {
			t.Errorf("Get(%q).Name = %q", name, fn.Name)
		}
		key := strings.ToLower(filepath.Dir(fn.CodeDir))
		if other, ok := folded[key]; ok {
			t.Errorf("%q and %q share the code dir %s when case folds", name, other, key)
		}
		folded[key] = name
	}
	fns, err := r.List()
	if err != nil || len(fns) != len(code) {
		t.Fatalf("List = %d functions (%v), want %d", len(fns), err, len(code))
	}
	if err := r.Delete("foo"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get("foo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted foo: %v", err)
	}
	delete(code, "foo")
	r.Close()
	r = open(t, dir, Options{}) // the sweep must keep every encoded dir
	for name, files := range code {
		serves(t, r, name, files)
	}
	noLeftovers(t, r)
}

func TestDirName(t *testing.T) {
	for _, c := range []struct{ name, dir string }{
		{"foo", "foo"},
		{"Foo", "^foo"},
		{"FOO", "^f^o^o"},
		{"a-B_c9", "a-^b_c9"},
	} {
		if got := dirName(c.name); got != c.dir {
			t.Errorf("dirName(%q) = %q, want %q", c.name, got, c.dir)
		}
		if got, ok := nameOfDir(c.dir); !ok || got != c.name {
			t.Errorf("nameOfDir(%q) = %q, %v; want %q", c.dir, got, ok, c.name)
		}
	}
	for _, bad := range []string{"Foo", "^", "x^", "^F", "^1", "a b", ".staging", "", strings.Repeat("a", 65)} {
		if name, ok := nameOfDir(bad); ok {
			t.Errorf("nameOfDir(%q) = %q, want no name", bad, name)
		}
	}
}

func TestValidateHook(t *testing.T) {
	errBig := errors.New("too much memory")
	r := open(t, t.TempDir(), Options{Validate: func(s function.Spec) error {
		if s.MemoryMB > 1024 {
			return fmt.Errorf("memory_mb %d: %w", s.MemoryMB, errBig)
		}
		return nil
	}})
	ctx := context.Background()
	if _, err := r.Deploy(ctx, "fn", arc(tgz(t, v1))); err != nil {
		t.Fatal(err)
	}
	big := map[string]string{"f.py": "def f(e):\n    return 3\n", "function.yaml": "memory_mb: 2048\n"}
	_, err := r.Deploy(ctx, "fn", arc(tgz(t, big)))
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, errBig) || !strings.Contains(err.Error(), "memory_mb 2048") {
		t.Fatalf("Deploy refused by Validate: %v, want ErrInvalid and the hook's error", err)
	}
	serves(t, r, "fn", v1)
	noLeftovers(t, r)
}

// exists reports whether path is there.
func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestLeaseKeepsRetiredCode(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	first, err := r.Deploy(ctx, "fn", arc(tgz(t, v1)))
	if err != nil {
		t.Fatal(err)
	}
	leased, release, err := r.Lease("fn")
	if err != nil || leased.Revision != first.Revision {
		t.Fatalf("Lease: %+v %v", leased, err)
	}
	// A redeploy serves the new code; the leased revision's stays.
	second, err := r.Deploy(ctx, "fn", arc(tgz(t, v2)))
	if err != nil {
		t.Fatal(err)
	}
	serves(t, r, "fn", v2)
	if b, err := os.ReadFile(filepath.Join(leased.CodeDir, "f.py")); err != nil || string(b) != v1["f.py"] {
		t.Fatalf("leased code after a redeploy: %q %v", b, err)
	}
	if again, rel2, err := r.Lease("fn"); err != nil || again.Revision != second.Revision {
		t.Fatalf("Lease after redeploy: %+v %v", again, err)
	} else {
		rel2()
	}
	release()
	release() // idempotent
	if exists(t, leased.CodeDir) {
		t.Error("retired code still there after its last lease")
	}
	noLeftovers(t, r)

	t.Run("redeployed while leased", func(t *testing.T) {
		old, release, err := r.Lease("fn")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Deploy(ctx, "fn", arc(tgz(t, v1))); err != nil {
			t.Fatal(err)
		}
		var before, after os.FileInfo
		before, _ = os.Stat(old.CodeDir)
		// Back to the leased code: its directory serves again, the same
		// one, and its lease's release leaves it.
		if _, err := r.Deploy(ctx, "fn", arc(tgz(t, v2))); err != nil {
			t.Fatal(err)
		}
		after, _ = os.Stat(old.CodeDir)
		if before == nil || after == nil || !os.SameFile(before, after) {
			t.Errorf("redeploying leased code replaced its directory")
		}
		release()
		serves(t, r, "fn", v2)
		noLeftovers(t, r)
	})

	t.Run("delete", func(t *testing.T) {
		held, release, err := r.Lease("fn")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Delete("fn"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.Lease("fn"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lease after Delete: %v", err)
		}
		if !exists(t, filepath.Join(held.CodeDir, "f.py")) {
			t.Fatal("leased code removed by Delete")
		}
		release()
		if exists(t, filepath.Dir(held.CodeDir)) {
			t.Error("function dir still there after the last lease")
		}
		noLeftovers(t, r)
	})
}

// Leases taken while the code is redeployed over and over always hold a
// directory with the code of the revision they name, and Get returns the
// last deployed revision.
func TestLeaseRacesDeploys(t *testing.T) {
	r := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	version := func(i int) map[string]string {
		return map[string]string{"f.py": fmt.Sprintf("def f(e):\n    return %d\n", i)}
	}
	content := map[string]string{} // revision -> f.py
	var mu sync.Mutex
	deploy := func(i int) {
		fn, err := r.Deploy(ctx, "fn", arc(tgz(t, version(i))))
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		content[fn.Revision] = version(i)["f.py"]
		mu.Unlock()
		// Readers racing the deploy never leave a stale record cached.
		if cur, err := r.Get("fn"); err != nil || cur.Revision != fn.Revision {
			t.Errorf("Get after deploying %s: %s, %v", fn.ShortRevision(), cur.ShortRevision(), err)
		}
	}
	deploy(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				fn, release, err := r.Lease("fn")
				if err != nil {
					t.Error(err)
					return
				}
				b, err := os.ReadFile(filepath.Join(fn.CodeDir, "f.py"))
				mu.Lock()
				want, known := content[fn.Revision]
				mu.Unlock()
				if err != nil || (known && string(b) != want) {
					t.Errorf("leased revision %s: f.py %q, %v; want %q", fn.ShortRevision(), b, err, want)
				}
				release()
			}
		}()
	}
	for i := 1; i <= 30; i++ {
		deploy(i % 3)
	}
	close(stop)
	wg.Wait()
	noLeftovers(t, r)
}
