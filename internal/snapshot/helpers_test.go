package snapshot

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/snapshot/python"
)

// env is what the privileged tests share, set up once in TestMain.
type testEnv struct {
	base    string // base image
	init    string // execinit binary
	bin     *criu.Binary
	rt      string // installed runtime
	work    string // temp root for sandboxes, code, snapshots
	cg      *cgroup.Manager
	home    *cgroup.Group
	factory *sandbox.Factory
	engine  *Engine
}

var (
	env    *testEnv
	envErr error // why env is nil
	seq    atomic.Int32
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			envErr = fmt.Errorf("snapshot tests need root (namespaces, cgroups, CRIU)")
			return m.Run()
		}
		e, cleanup, err := setupEnv()
		if err != nil {
			envErr = err
		}
		env = e
		defer cleanup()
		return m.Run()
	}()
	os.Exit(code)
}

func setupEnv() (*testEnv, func(), error) {
	nop := func() {}
	ctx := context.Background()
	e := &testEnv{base: os.Getenv("HEARTH_TEST_BASE")}
	if e.base == "" {
		e.base = "/var/lib/hearth/base"
	}
	if _, err := os.Stat(filepath.Join(e.base, "usr/bin/python3")); err != nil {
		return nil, nop, fmt.Errorf("no base image at %s (run scripts/setup.sh or set HEARTH_TEST_BASE): %w", e.base, err)
	}
	work, err := os.MkdirTemp("", "hearth-snap-test-")
	if err != nil {
		return nil, nop, err
	}
	e.work = work
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		os.RemoveAll(work)
	}
	fail := func(err error) (*testEnv, func(), error) { cleanup(); return nil, nop, err }
	e.init = filepath.Join(work, "execinit")
	build := exec.Command("go", "build", "-o", e.init, "./testdata/execinit")
	if out, err := build.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("building execinit: %v: %s", err, out))
	}
	bin, err := criu.Find(ctx, os.Getenv("HEARTH_CRIU_ROOT"))
	if err != nil {
		return fail(fmt.Errorf("CRIU (run scripts/criu.sh): %w", err))
	}
	e.bin = bin
	e.rt = filepath.Join(work, "rt")
	if err := os.MkdirAll(e.rt, 0o755); err != nil {
		return fail(err)
	}
	if err := runtime.Install(e.rt); err != nil {
		return fail(err)
	}
	if e.cg, err = cgroup.NewManager(fmt.Sprintf("hearth-snaptest-%d", os.Getpid())); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { e.cg.Close(context.Background()) })
	if e.home, err = e.cg.Create("home", cgroup.Limits{}); err != nil {
		return fail(err)
	}
	sbDir := filepath.Join(work, "sandboxes")
	e.factory = &sandbox.Factory{InitPath: e.init, Base: e.base, Dir: sbDir, Home: e.home}
	if err := os.MkdirAll(sbDir, 0o755); err != nil {
		return fail(err)
	}
	if e.engine, err = NewEngine(ctx, EngineConfig{CRIU: bin, Base: e.base, Dir: sbDir}); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { e.engine.Close() })
	return e, cleanup, nil
}

func needEnv(t *testing.T) *testEnv {
	t.Helper()
	if env == nil {
		t.Fatalf("test environment: %v", envErr)
	}
	return env
}

// slowHandler is the test function: numpy plus a 1 s init, a counter that
// survives restores and a random draw that must differ between copies.
const slowHandler = `import time, random
import numpy
import hearth_snapshot
hearth_snapshot.install()
T0 = time.time()
time.sleep(1.0)
DATA = numpy.arange(1000000, dtype=numpy.int64)
INIT_S = time.time() - T0
N = 0
HOOKS = []

@hearth_snapshot.after_restore
def _hook():
    HOOKS.append(hearth_snapshot.restores)

def f(event, ctx):
    global N
    N += 1
    with open("/tmp/state.txt", "a") as fh:
        fh.write("x")
    with open("/tmp/state.txt") as fh:
        n_file = len(fh.read())
    return {"n": N, "sum": int(DATA.sum()), "init_s": INIT_S, "r": random.random(),
            "np": float(numpy.random.random()), "hooks": HOOKS, "n_file": n_file, "e": event}
`

// codeDir writes the slow handler and hearth_snapshot into a new dir.
func codeDir(t *testing.T, e *testEnv) string {
	t.Helper()
	dir := filepath.Join(e.work, fmt.Sprintf("code-%d", seq.Add(1)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f.py"), []byte(slowHandler), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := python.Install(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// source is a sandbox running the slow handler, ready to be dumped.
type source struct {
	sb   *sandbox.Sandbox
	grp  *cgroup.Group
	code string
}

const sockName = "rt.sock"

func newGroup(t *testing.T, e *testEnv, name string) *cgroup.Group {
	t.Helper()
	g, err := e.cg.Create(name, cgroup.Limits{MemoryBytes: 512 << 20, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Delete(context.Background()) })
	return g
}

func startSource(t *testing.T, e *testEnv, code string) *source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("src-%d", seq.Add(1))
	g := newGroup(t, e, id)
	env := append(runtime.Env(runtime.Options{Handler: "f.f", Function: "slow", Revision: "r1"}),
		"PATH=/usr/bin:/bin", "HOME=/tmp", "OPENBLAS_NUM_THREADS=1")
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go drain(outR)
	defer outW.Close()
	sb, err := e.factory.Create(ctx, sandbox.Config{
		ID: id,
		Binds: []sandbox.Bind{
			{Source: code, Target: runtime.CodeDir},
			{Source: e.rt, Target: runtime.MountPoint},
		},
		Group: g, Command: runtime.Argv("/usr/bin/python3"), Env: env, Dir: runtime.CodeDir,
		Socket: sockName, Stdout: outW, Stderr: outW,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Destroy(context.Background()) })
	return &source{sb: sb, grp: g, code: code}
}

func drain(f *os.File) {
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if n > 0 && os.Getenv("HEARTH_TEST_VERBOSE") != "" {
			os.Stderr.Write(buf[:n])
		}
		if err != nil {
			f.Close()
			return
		}
	}
}

type result struct {
	N     int     `json:"n"`
	Sum   int64   `json:"sum"`
	InitS float64 `json:"init_s"`
	R     float64 `json:"r"`
	NP    float64 `json:"np"`
	Hooks []int   `json:"hooks"`
	NFile int     `json:"n_file"`
	Event any     `json:"e"`
}

// invoke connects to a runtime socket, waits for READY and invokes once.
func invoke(t *testing.T, path string) (result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := runtime.Dial(ctx, path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatalf("ready %s: %v", path, err)
	}
	ready := time.Since(t0)
	resp, err := c.Invoke(ctx, runtime.Request{ID: "t", Event: []byte(`{"k":1}`)})
	if err != nil {
		t.Fatalf("invoke %s: %v", path, err)
	}
	if resp.Err != nil {
		t.Fatalf("invoke %s: handler error %v", path, resp.Err)
	}
	var r result
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Fatalf("invoke %s: %v: %s", path, err, resp.Body)
	}
	return r, ready
}

func splitLines(s string) []string { return strings.Split(s, "\n") }
func fieldsOf(s string) []string   { return strings.Fields(s) }
