package sandbox_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/seccomp"
)

var initPath, base string

func TestMain(m *testing.M) {
	base = os.Getenv("HEARTH_TEST_BASE")
	if base == "" {
		base = "/var/lib/hearth/base"
	}
	if err := image.Validate(base); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox tests need a base image:", err)
		os.Exit(1)
	}
	if err := image.Prepare(base); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "hearth-sandbox-test-")
	if err != nil {
		panic(err)
	}
	initPath = filepath.Join(dir, "hearth-init")
	if out, err := exec.Command("go", "build", "-o", initPath, "github.com/hearth-run/hearth/cmd/hearth-init").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building hearth-init: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type env struct {
	f  *sandbox.Factory
	cg *cgroup.Manager
}

func setup(t testing.TB) *env {
	t.Helper()
	cg, err := cgroup.NewManager(fmt.Sprintf("hearth-sbtest-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	if err != nil {
		t.Fatal(err)
	}
	home, err := cg.Create("init", cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	filter := filepath.Join(t.TempDir(), "seccomp.bpf")
	if err := seccomp.WriteFile(filter); err != nil {
		t.Fatal(err)
	}
	f := &sandbox.Factory{InitPath: initPath, Base: base, Dir: t.TempDir(), Home: home, Seccomp: filter}
	if err := f.Prepare(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		home.Delete(ctx)
		if _, err := f.Sweep(); err != nil {
			t.Error(err)
		}
		if err := cg.Close(ctx); err != nil {
			t.Errorf("cgroups left: %v", err)
		}
		if m, _ := sandbox.MountsUnder(f.Dir); len(m) > 0 {
			t.Errorf("mounts left: %v", m)
		}
	})
	return &env{f: f, cg: cg}
}

func (e *env) create(t testing.TB, id string, cmd []string, out io.Writer) *sandbox.Sandbox {
	t.Helper()
	g, err := e.cg.Create(id, cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	cfg := sandbox.Config{ID: id, Group: g, Command: cmd, Socket: "s.sock"}
	if out != nil {
		cfg.Stdout, cfg.Stderr = out, out
	}
	sb, err := e.f.Create(context.Background(), cfg)
	if err != nil {
		g.Delete(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sb.Destroy(context.Background())
		g.Delete(context.Background())
	})
	return sb
}

func TestMainProcessIsIsolated(t *testing.T) {
	e := setup(t)
	var out strings.Builder
	sb := e.create(t, "main", []string{"/usr/bin/python3", "-S", "-c", `
import os
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print(os.getuid(), os.getppid(), st["CapEff"].strip(), st["NoNewPrivs"].strip(), sorted(os.listdir("/tmp")),
      sorted(int(f) for f in os.listdir("/proc/self/fd")))
`}, &out)
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("main process did not exit")
	}
	if sb.ExitStatus() != 0 {
		t.Fatalf("exit %d: %s", sb.ExitStatus(), out.String())
	}
	// uid nobody, a child of init (pid 1), no capabilities, no_new_privs,
	// the socket in /tmp, and no descriptor beyond stdio and the socket
	// (3; 4 is listdir's own): hearth-init's writable cgroup.procs files
	// must not leak, or the process could leave its cgroup.
	if got, want := strings.TrimSpace(out.String()), "65534 1 0000000000000000 1 ['s.sock'] [0, 1, 2, 3, 4]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestHolderExposesNamespacesAndListener(t *testing.T) {
	e := setup(t)
	sb := e.create(t, "holder", nil, nil)
	ns, err := sb.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range ns {
			f.Close()
		}
	}()
	self, _ := os.Readlink("/proc/self/ns/mnt")
	theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", sb.InitPid()))
	if len(ns) != 4 || self == theirs {
		t.Errorf("namespaces %d, mnt %s vs host %s", len(ns), theirs, self)
	}
	l := sb.TakeListener()
	if l == nil {
		t.Fatal("no listener")
	}
	l.Close()
	if sb.TakeListener() != nil {
		t.Error("listener handed out twice")
	}
	if _, err := os.Stat(sb.SocketPath("s.sock")); err != nil {
		t.Error(err)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := sb.Scratch(); p != "" {
		t.Errorf("scratch path %q after Destroy", p)
	}
	if c, err := sb.Dial("s.sock"); err == nil {
		c.Close()
		t.Error("dialled a destroyed sandbox")
	}
}

func BenchmarkCreateDestroy(b *testing.B) {
	for _, mode := range []string{"holder", "python"} {
		b.Run(mode, func(b *testing.B) {
			e := setup(b)
			var cmd []string
			if mode == "python" {
				cmd = []string{"/usr/bin/python3", "-S", "-c", "pass"}
			}
			for i := 0; i < b.N; i++ {
				g, err := e.cg.Create(fmt.Sprint("b", i), cgroup.Limits{MemoryBytes: 64 << 20})
				if err != nil {
					b.Fatal(err)
				}
				sb, err := e.f.Create(context.Background(), sandbox.Config{ID: fmt.Sprint("b", i), Group: g, Command: cmd, Socket: "s"})
				if err != nil {
					b.Fatal(err)
				}
				if mode == "python" {
					<-sb.Done()
				}
				sb.Destroy(context.Background())
				g.Delete(context.Background())
			}
		})
	}
}

// TestExecRunsMainProcessAsPid1: in exec mode (sandboxes to be
// checkpointed) the main process is the sandbox's pid 1, unprivileged,
// in its cgroup, with no extra descriptors, and the host's mounts are
// detached (pivot_root), not merely hidden by a chroot.
func TestExecRunsMainProcessAsPid1(t *testing.T) {
	e := setup(t)
	g, err := e.cg.Create("exec", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(context.Background())
	var out strings.Builder
	sb, err := e.f.Create(context.Background(), sandbox.Config{ID: "exec", Group: g, Socket: "s.sock", Exec: true,
		Stdout: &out, Stderr: &out, Command: []string{"/usr/bin/python3", "-S", "-c", fmt.Sprintf(`
import os
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
mounts = open("/proc/self/mountinfo").read()
print(os.getpid(), os.getuid(), st["CapEff"].strip(), st["NoNewPrivs"].strip(),
      sorted(int(f) for f in os.listdir("/proc/self/fd")), "exec" in open("/proc/self/cgroup").read(),
      %q in mounts)
`, e.f.Dir)}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("main process did not exit")
	}
	if sb.ExitStatus() != 0 {
		t.Fatalf("exit %d: %s", sb.ExitStatus(), out.String())
	}
	if got, want := strings.TrimSpace(out.String()), "1 65534 0000000000000000 1 [0, 1, 2, 3, 4] True False"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestExecNeedsACommand(t *testing.T) {
	e := setup(t)
	g, err := e.cg.Create("noexec", cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(context.Background())
	for _, cfg := range []sandbox.Config{
		{ID: "nocmd", Group: g, Exec: true},
		{ID: "zygote", Group: g, Exec: true, Zygote: true, Command: []string{"/bin/true"}},
	} {
		t.Run(cfg.ID, func(t *testing.T) {
			sb, err := e.f.Create(context.Background(), cfg)
			if err == nil {
				sb.Destroy(context.Background())
				t.Fatal("created")
			}
		})
	}
}

// filterProbe prints the main process's seccomp mode, the errno of
// keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING), which the
// filter denies (unfiltered: ENOKEY), and the same from a forked child.
const filterProbe = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def probe():
    st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    r = libc.syscall(250, 0, -2, 0)  # keyctl on x86-64
    return "%s/%d" % (st["Seccomp"].strip(), ctypes.get_errno() if r < 0 else 0)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, probe().encode())
    os._exit(0)
os.waitpid(pid, 0)
print(probe(), os.read(r, 64).decode())
`

// TestMainProcessIsFiltered: the factory's seccomp filter holds the main
// process, started by a fork or an exec of hearth-init, and its children.
func TestMainProcessIsFiltered(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probe calls keyctl by its x86-64 number")
	}
	e := setup(t)
	for _, exec := range []bool{false, true} {
		t.Run(fmt.Sprint("exec=", exec), func(t *testing.T) {
			id := fmt.Sprint("filtered-", exec)
			g, err := e.cg.Create(id, cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Delete(context.Background())
			var out strings.Builder
			sb, err := e.f.Create(context.Background(), sandbox.Config{ID: id, Group: g, Exec: exec,
				Stdout: &out, Stderr: &out, Command: []string{"/usr/bin/python3", "-S", "-c", filterProbe}})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Destroy(context.Background())
			select {
			case <-sb.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("main process did not exit")
			}
			if got, want := strings.TrimSpace(out.String()), "2/1 2/1"; sb.ExitStatus() != 0 || got != want {
				t.Errorf("exit %d, got %q, want %q (seccomp mode 2, EPERM, in the process and its child)", sb.ExitStatus(), got, want)
			}
		})
	}
}

// TestUnreadableFilterStartsNothing: a filter that cannot be read fails
// the sandbox closed; the main process never runs unfiltered.
func TestUnreadableFilterStartsNothing(t *testing.T) {
	e := setup(t)
	for _, content := range []string{"", "short"} {
		t.Run(fmt.Sprintf("%q", content), func(t *testing.T) {
			f := *e.f
			f.Seccomp = filepath.Join(t.TempDir(), "seccomp.bpf")
			if content != "" {
				os.WriteFile(f.Seccomp, []byte(content), 0o644)
			}
			g, err := e.cg.Create("badfilter", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Delete(context.Background())
			var out strings.Builder
			sb, err := f.Create(context.Background(), sandbox.Config{ID: "badfilter", Group: g, Stdout: &out, Stderr: &out,
				Command: []string{"/bin/touch", "/tmp/ran"}})
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Destroy(context.Background())
			select {
			case <-sb.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("init did not exit")
			}
			if sb.ExitStatus() != 125 || !strings.Contains(out.String(), "seccomp filter") {
				t.Errorf("exit %d, output %q: want 125 and a seccomp filter error", sb.ExitStatus(), out.String())
			}
			if _, err := os.Stat(filepath.Join(sb.Scratch(), "ran")); !os.IsNotExist(err) {
				t.Errorf("the main process ran (%v)", err)
			}
		})
	}
}

// TestLiveSandboxesHoldNoThread: a live sandbox's init is awaited in Go's
// poller, not in a wait4 that holds an OS thread for the sandbox's life.
// 12 holders add far fewer than 12 threads, and each one's Done still
// closes when it is destroyed.
func TestLiveSandboxesHoldNoThread(t *testing.T) {
	e := setup(t)
	threads := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// One first, so the runtime's own threads for making sandboxes exist.
	first := e.create(t, "warm", nil, nil)
	time.Sleep(100 * time.Millisecond)
	before := threads()
	const n = 12
	var sbs []*sandbox.Sandbox
	for i := range n {
		sbs = append(sbs, e.create(t, fmt.Sprintf("h%d", i), nil, nil))
	}
	time.Sleep(200 * time.Millisecond)
	grew := threads() - before
	t.Logf("%d live sandboxes added %d threads", n, grew)
	if grew >= n/2 {
		t.Errorf("%d live sandboxes added %d threads, want far fewer", n, grew)
	}
	for _, sb := range append(sbs, first) {
		if err := sb.Destroy(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-sb.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("Done still open 5 s after Destroy")
		}
	}
}
