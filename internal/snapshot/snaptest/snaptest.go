// Package snaptest holds test fixtures for the snapshot packages: real
// sandboxes running a slow-init Python handler (numpy plus a 1 s sleep),
// and a real S3 server (versitygw) on loopback. Everything it makes is
// removed by the returned cleanups or t.Cleanup.
//
// The sandboxes use testdata/execinit, a stand-in for hearth-init with the
// exec mode snapshots need, until internal/sandbox grows that mode.
package snaptest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/snapshot/python"
)

// Socket names the runtime's socket in a sandbox's scratch dir.
const Socket = "rt.sock"

// SlowHandler is the test function: numpy plus a 1 s init, a counter and
// a /tmp file that survive restores, random draws that must differ between
// restored copies, and an after-restore hook.
const SlowHandler = `import time, random
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

// ErrUnavailable reports a host where CRIU is installed but cannot
// snapshot (its probe failed): a host limit, which tests skip on by name.
var ErrUnavailable = errors.New("snapshots unavailable on this host")

// Skip skips t when err is ErrUnavailable, naming the probe's reason, and
// fails it for any other error.
func Skip(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("host limit: %v", err)
	}
	t.Fatalf("test environment: %v", err)
}

// Env is the shared fixture of a test binary.
type Env struct {
	Base    string // base image
	Init    string // execinit binary
	RT      string // installed runtime
	Work    string // temp root
	SbDir   string // sandboxes dir
	CG      *cgroup.Manager
	Home    *cgroup.Group
	Factory *sandbox.Factory
	CRIU    *criu.Binary
	seq     atomic.Int32
}

// Setup builds the fixture: it needs root, a base image
// ($HEARTH_TEST_BASE, default /var/lib/hearth/base) and CRIU
// ($HEARTH_CRIU_ROOT or scripts/criu.sh's default). Call cleanup when done.
func Setup(name string) (*Env, func(), error) {
	nop := func() {}
	if os.Geteuid() != 0 {
		return nil, nop, fmt.Errorf("snapshot tests need root (namespaces, cgroups, CRIU)")
	}
	ctx := context.Background()
	e := &Env{Base: os.Getenv("HEARTH_TEST_BASE")}
	if e.Base == "" {
		e.Base = filepath.Join(image.DefaultDataDir, "base")
	}
	if _, err := os.Stat(filepath.Join(e.Base, "usr/bin/python3")); err != nil {
		return nil, nop, fmt.Errorf("no base image at %s (run scripts/setup.sh or set HEARTH_TEST_BASE): %w", e.Base, err)
	}
	work, err := os.MkdirTemp("", "hearth-"+name+"-")
	if err != nil {
		return nil, nop, err
	}
	e.Work = work
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		os.RemoveAll(work)
	}
	fail := func(err error) (*Env, func(), error) { cleanup(); return nil, nop, err }
	// $HEARTH_TEST_INIT overrides the stand-in, e.g. with a hearth-init
	// that has the exec mode (wrapped to pass -exec).
	if e.Init = os.Getenv("HEARTH_TEST_INIT"); e.Init == "" {
		e.Init = filepath.Join(work, "execinit")
		build := exec.Command("go", "build", "-o", e.Init, "github.com/hearth-run/hearth/internal/snapshot/testdata/execinit")
		if out, err := build.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("building execinit: %v: %s", err, out))
		}
	}
	// The worker's own probe: on a host where criu cannot dump (see
	// criu.Probe), the tests say so by name instead of hanging.
	if e.CRIU, _, err = criu.Probe(ctx, os.Getenv("HEARTH_CRIU_ROOT"), 10*time.Second); err != nil {
		if errors.Is(err, criu.ErrSelfTest) || errors.Is(err, criu.ErrCheck) {
			return fail(fmt.Errorf("%w: %w", ErrUnavailable, err))
		}
		return fail(fmt.Errorf("CRIU (run scripts/criu.sh): %w", err))
	}
	e.RT = filepath.Join(work, "rt")
	if err := os.MkdirAll(e.RT, 0o755); err != nil {
		return fail(err)
	}
	if err := runtime.Install(e.RT); err != nil {
		return fail(err)
	}
	if e.CG, err = cgroup.NewManager(fmt.Sprintf("hearth-%s-%d", name, os.Getpid())); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { e.CG.Close(context.Background()) })
	if e.Home, err = e.CG.Create("home", cgroup.Limits{}); err != nil {
		return fail(err)
	}
	e.SbDir = filepath.Join(work, "sandboxes")
	if err := os.MkdirAll(e.SbDir, 0o755); err != nil {
		return fail(err)
	}
	// Filtered as the worker's sandboxes are, so that checkpoints carry
	// the seccomp filter.
	e.Factory = &sandbox.Factory{InitPath: e.Init, Base: e.Base, Dir: e.SbDir, Home: e.Home,
		Seccomp: filepath.Join(e.RT, runtime.SeccompFile)}
	return e, cleanup, nil
}

// Seq returns a number unique within the test binary.
func (e *Env) Seq() int { return int(e.seq.Add(1)) }

// CodeDir writes the slow handler and hearth_snapshot into a new dir.
func (e *Env) CodeDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(e.Work, fmt.Sprintf("code-%d", e.Seq()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f.py"), []byte(SlowHandler), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := python.Install(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Binds returns the bind sources a restore of a source needs.
func (e *Env) Binds(code string) []sandbox.Bind {
	return []sandbox.Bind{{Source: code, Target: runtime.CodeDir}, {Source: e.RT, Target: runtime.MountPoint}}
}

// NewGroup makes a cgroup deleted at the end of the test.
func (e *Env) NewGroup(t testing.TB, name string) *cgroup.Group {
	t.Helper()
	g, err := e.CG.Create(name, cgroup.Limits{MemoryBytes: 512 << 20, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Delete(context.Background()) })
	return g
}

// Source is a sandbox running the slow handler.
type Source struct {
	SB    *sandbox.Sandbox
	Group *cgroup.Group
	Code  string
}

// StartSource starts the slow handler in a sandbox whose pid 1 is the
// runtime, destroyed at the end of the test.
func (e *Env) StartSource(t testing.TB, code string) *Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("src-%d", e.Seq())
	g := e.NewGroup(t, id)
	env := append(runtime.Env(runtime.Options{Handler: "f.f", Function: "slow", Revision: "r1"}),
		"PATH=/usr/bin:/bin", "HOME=/tmp", "OPENBLAS_NUM_THREADS=1")
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go drain(outR)
	defer outW.Close()
	sb, err := e.Factory.Create(ctx, sandbox.Config{
		ID: id,
		Binds: []sandbox.Bind{
			{Source: code, Target: runtime.CodeDir},
			{Source: e.RT, Target: runtime.MountPoint},
		},
		Group: g, Command: runtime.Argv("/usr/bin/python3"), Env: env, Dir: runtime.CodeDir,
		Socket: Socket, Stdout: outW, Stderr: outW,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Destroy(context.Background()) })
	return &Source{SB: sb, Group: g, Code: code}
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

// Result is the slow handler's answer.
type Result struct {
	N     int     `json:"n"`
	Sum   int64   `json:"sum"`
	InitS float64 `json:"init_s"`
	R     float64 `json:"r"`
	NP    float64 `json:"np"`
	Hooks []int   `json:"hooks"`
	NFile int     `json:"n_file"`
	Event any     `json:"e"`
}

// Invoke connects to a runtime socket, waits for READY and invokes once.
// It returns the answer and the time to READY.
func Invoke(t testing.TB, path string) (Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := runtime.Dial(ctx, path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	return invoke(ctx, t, c, path, t0)
}

// Invoke invokes the source's runtime once, through the sandbox's Dial:
// the first connection is the one the sandbox made before its runtime
// ran (the runtime answers it first), later ones dial its socket.
func (s *Source) Invoke(t testing.TB) (Result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	c, err := s.SB.Dial(Socket)
	if err != nil {
		t.Fatalf("dial %s: %v", s.SB.ID(), err)
	}
	return invoke(ctx, t, runtime.NewConn(c), s.SB.ID(), t0)
}

func invoke(ctx context.Context, t testing.TB, c *runtime.Conn, path string, t0 time.Time) (Result, time.Duration) {
	t.Helper()
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
	var r Result
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Fatalf("invoke %s: %v: %s", path, err, resp.Body)
	}
	return r, ready
}
