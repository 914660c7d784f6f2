package cgroup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hybridV2 is this kind of host's controller-less cgroup2 mount. On it, v2
// freeze, kill and attach are real while limits are unavailable.
const hybridV2 = "/sys/fs/cgroup/unified"

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
}

type modeCase struct {
	name string
	opts []Option
}

// modes lists the cgroup setups to test on this host: the detected one and,
// on a hybrid host, the cgroup2 side too.
func modes(t testing.TB) []modeCase {
	requireRoot(t)
	cs := []modeCase{{name: "detected"}}
	if isFS(hybridV2, unix.CGROUP2_SUPER_MAGIC) {
		cs = append(cs, modeCase{name: "v2-hybrid", opts: []Option{WithMode(V2), WithRoot(hybridV2)}})
		if !isFS(DefaultRoot, unix.CGROUP2_SUPER_MAGIC) {
			// v1 as on a host without the cgroup2 mount: kills freeze.
			cs = append(cs, modeCase{name: "v1-legacy", opts: []Option{withoutUnified()}})
		}
	}
	return cs
}

func testParent(t testing.TB) string {
	n := strings.NewReplacer("/", "-", "#", "-").Replace(t.Name())
	return fmt.Sprintf("hearth-test-%d-%s", os.Getpid(), n)
}

// newManager makes a manager with a parent unique to the test and checks
// at clean-up that Close left nothing behind.
func newManager(t testing.TB, opts ...Option) *Manager {
	t.Helper()
	m, err := NewManager(testParent(t), opts...)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, d := range m.Dirs() {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("parent %s left behind (stat: %v)", d, err)
				removeTree(ctx, d)
			}
		}
	})
	return m
}

func create(t testing.TB, m *Manager, name string, lim Limits) *Group {
	t.Helper()
	g, err := m.Create(name, lim)
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	return g
}

// start runs a command that joins g before exec, through the descriptors
// from ProcsFiles, the way a zygote child will.
func start(t testing.TB, g *Group, args ...string) *proc {
	t.Helper()
	fs, err := g.ProcsFiles()
	if err != nil {
		t.Fatalf("ProcsFiles: %v", err)
	}
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()
	var join strings.Builder
	for i := range fs {
		fmt.Fprintf(&join, "echo 0 >&%d || exit 99; ", 3+i)
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", join.String() + `exec "$@"`, "sh"}, args...)...)
	cmd.ExtraFiles = fs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", args, err)
	}
	p := &proc{Pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	// Wait until it has joined: its pid is listed in the group.
	waitFor(t, 5*time.Second, func() bool {
		pids, _ := g.Pids()
		return slices.Contains(pids, p.Pid)
	})
	return p
}

// startOutside runs a command in the test's own groups, for the test to
// move; it is killed and collected at clean-up.
func startOutside(t testing.TB, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", args, err)
	}
	p := &proc{Pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
	return p
}

// proc is a started process whose exit is collected in the background.
type proc struct {
	Pid  int
	done chan struct{}
	err  error
}

// killed waits up to 10 s for p to exit and reports whether SIGKILL ended it.
func (p *proc) killed(t testing.TB) bool {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d did not exit", p.Pid)
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		return false
	}
	ws, _ := ee.Sys().(syscall.WaitStatus)
	return ws.Signal() == syscall.SIGKILL
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func cat(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// hasLimits reports whether memory, pids and cpu limits work in m.
func hasLimits(m *Manager) bool {
	return m.mode == V1 || (m.enabled["memory"] && m.enabled["pids"] && m.enabled["cpu"])
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewManagerBadInput(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		parent string
		opts   []Option
		want   error
	}{
		{"", nil, ErrBadName},
		{"/abs", nil, ErrBadName},
		{"a/../b", nil, ErrBadName},
		{"a//b", nil, ErrBadName},
		{"..", nil, ErrBadName},
		{"ok", []Option{WithMode("v3")}, ErrBadMode},
		{"ok", []Option{WithRoot(t.TempDir())}, ErrNoCgroups},
	}
	for _, tt := range tests {
		t.Run(tt.parent, func(t *testing.T) {
			m, err := NewManager(tt.parent, tt.opts...)
			if !errors.Is(err, tt.want) {
				if m != nil {
					m.Close(context.Background())
				}
				t.Fatalf("NewManager(%q) = %v, want %v", tt.parent, err, tt.want)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	want := V1
	if isFS(DefaultRoot, unix.CGROUP2_SUPER_MAGIC) {
		want = V2
	}
	if m.Mode() != want {
		t.Errorf("Mode() = %q, want %q", m.Mode(), want)
	}
	if want == V1 {
		v1 := m.Dirs()
		if isFS(hybridV2, unix.CGROUP2_SUPER_MAGIC) && m.uni == 0 {
			if want := filepath.Join(hybridV2, m.Parent()); v1[0] != want {
				t.Errorf("first hierarchy %s, want the hybrid cgroup2 mount's %s", v1[0], want)
			}
			v1 = v1[1:]
		} else if m.uni >= 0 {
			t.Errorf("uni = %d without a hybrid cgroup2 mount", m.uni)
		} else if isFS(hybridV2, unix.CGROUP2_SUPER_MAGIC) {
			// Not used: only right on a kernel without cgroup.kill.
			probe := filepath.Join(hybridV2, testParent(t)+"-probe")
			if err := os.Mkdir(probe, 0o755); err == nil {
				_, err := os.Stat(filepath.Join(probe, "cgroup.kill"))
				os.Remove(probe)
				if err == nil {
					t.Errorf("hybrid cgroup2 mount with cgroup.kill, and not used")
				}
			}
		}
		if len(v1) < 1 || len(v1) > 5 {
			t.Errorf("v1 parent in %d hierarchies, want 1..5: %v", len(v1), v1)
		}
		// cpuacct is used wherever it is mounted, apart from cpu or not.
		if isFS(filepath.Join(DefaultRoot, "cpuacct"), unix.CGROUP_SUPER_MAGIC) && m.acct < 0 {
			t.Errorf("cpuacct is mounted but not used: %v", m.Dirs())
		}
		// Only the needed hierarchies get a directory.
		for _, c := range []string{"blkio", "devices", "cpuset", "perf_event"} {
			d := filepath.Join(DefaultRoot, c, m.Parent())
			if _, err := os.Stat(d); err == nil {
				t.Errorf("parent created in unneeded hierarchy %s", d)
			}
		}
	}
}

func TestCreateBadInput(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			m := newManager(t, mc.opts...)
			create(t, m, "dup", Limits{})
			tests := []struct {
				name string
				lim  Limits
				want error
			}{
				{"", Limits{}, ErrBadName},
				{"..", Limits{}, ErrBadName},
				{".hidden", Limits{}, ErrBadName},
				{"a/b", Limits{}, ErrBadName},
				{"sp ace", Limits{}, ErrBadName},
				{strings.Repeat("x", 256), Limits{}, ErrBadName},
				{"negmem", Limits{MemoryBytes: -1}, ErrBadLimits},
				{"negpids", Limits{Pids: -1}, ErrBadLimits},
				{"weight", Limits{CPUWeight: 10001}, ErrBadLimits},
				{"negcpus", Limits{CPUs: -1}, ErrBadLimits},
				{"tinycpus", Limits{CPUs: 0.001}, ErrBadLimits},
				{"dup", Limits{}, ErrExists},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					g, err := m.Create(tt.name, tt.lim)
					if !errors.Is(err, tt.want) {
						t.Fatalf("Create(%q, %+v) = %v, want %v", tt.name, tt.lim, err, tt.want)
					}
					if g != nil {
						t.Fatal("non-nil group on error")
					}
				})
			}
			if _, err := m.Create("bad", Limits{Pids: -5}); err == nil {
				t.Fatal("no error")
			}
			for _, d := range m.dirs("bad") {
				if _, err := os.Stat(d); err == nil {
					t.Errorf("failed Create left %s", d)
				}
			}
		})
	}
}

func TestCreateLimits(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	if !hasLimits(m) {
		t.Fatalf("detected mode %s has no memory/pids/cpu controllers", m.Mode())
	}
	tests := []struct {
		name string
		lim  Limits
		// expected file contents: v1 and v2
		v1, v2 map[string]string
	}{
		{
			name: "limits",
			lim:  Limits{MemoryBytes: 64 << 20, Pids: 64, CPUWeight: 50, CPUs: 0.5},
			v1: map[string]string{"memory.limit_in_bytes": "67108864", "pids.max": "64", "cpu.shares": "512",
				"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"},
			v2: map[string]string{"memory.max": "67108864", "pids.max": "64", "cpu.weight": "50", "cpu.max": "50000 100000"},
		},
		{
			name: "tiny-weight",
			lim:  Limits{MemoryBytes: 1 << 30, Pids: 1, CPUWeight: 1},
			v1:   map[string]string{"memory.limit_in_bytes": "1073741824", "pids.max": "1", "cpu.shares": "10"},
			v2:   map[string]string{"memory.max": "1073741824", "pids.max": "1", "cpu.weight": "1"},
		},
		{
			name: "none",
			lim:  Limits{},
			v1: map[string]string{"memory.limit_in_bytes": "9223372036854771712", "pids.max": "max", "cpu.shares": "1024",
				"cpu.cfs_quota_us": "-1"},
			v2: map[string]string{"memory.max": "max", "pids.max": "max", "cpu.weight": "100", "cpu.max": "max 100000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := create(t, m, tt.name, tt.lim)
			t.Cleanup(func() { g.Delete(context.Background()) })
			want := tt.v1
			if m.Mode() == V2 {
				want = tt.v2
			}
			for file, val := range want {
				found := false
				for _, d := range g.Dirs() {
					if b, err := os.ReadFile(filepath.Join(d, file)); err == nil {
						found = true
						if got := strings.TrimSpace(string(b)); got != val {
							t.Errorf("%s = %q, want %q", file, got, val)
						}
					}
				}
				if !found {
					t.Errorf("%s not found in %v", file, g.Dirs())
				}
			}
			if g.MemoryLimit() != tt.lim.MemoryBytes {
				t.Errorf("MemoryLimit() = %d, want %d", g.MemoryLimit(), tt.lim.MemoryBytes)
			}
			if m.swap && tt.lim.MemoryBytes > 0 {
				file, val := "memory.memsw.limit_in_bytes", strconv.FormatInt(tt.lim.MemoryBytes, 10)
				if m.Mode() == V2 {
					file, val = "memory.swap.max", "0"
				}
				if got := cat(t, filepath.Join(g.dirs[m.mem], file)); got != val {
					t.Errorf("%s = %q, want %q", file, got, val)
				}
			}
		})
	}
}

// TestSetLimitsWritesChanges: a set writes only the files whose value
// differs from the group's last write, and all of them again after a
// failed one. A file changed behind the manager's back shows which were
// written: the test's way in, not the worker's (only the manager writes
// them).
func TestSetLimitsWritesChanges(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			m := newManager(t, mc.opts...)
			if !hasLimits(m) {
				t.Skip("no memory, pids and cpu controllers for this manager's groups")
			}
			g := create(t, m, "diff", Limits{MemoryBytes: 64 << 20, Pids: 16})
			pids, mem := filepath.Join(g.dirs[m.pids], "pids.max"), filepath.Join(g.dirs[m.mem], "memory.limit_in_bytes")
			if m.Mode() == V2 {
				mem = filepath.Join(g.dirs[m.mem], "memory.max")
			}
			if err := g.SetLimits(Limits{}); err != nil { // a pooled group's first set: v2 writes all
				t.Fatal(err)
			}
			if err := os.WriteFile(pids, []byte("7"), 0); err != nil {
				t.Fatal(err)
			}
			if err := g.SetLimits(Limits{MemoryBytes: 32 << 20}); err != nil {
				t.Fatal(err)
			}
			if got := cat(t, pids); got != "7" {
				t.Errorf("pids.max = %q after a set that left pids alone: written again", got)
			}
			if got := cat(t, mem); got != "33554432" {
				t.Errorf("memory limit = %q, want 33554432", got)
			}
			if err := g.SetLimits(Limits{MemoryBytes: 32 << 20, Pids: 9}); err != nil {
				t.Fatal(err)
			}
			if got := cat(t, pids); got != "9" {
				t.Errorf("pids.max = %q after a set of 9", got)
			}
			// A weight lowered for a dying sandbox is set back for the
			// next tenant.
			if err := g.SetCPUWeight(1); err != nil {
				t.Fatal(err)
			}
			if err := g.SetLimits(Limits{MemoryBytes: 32 << 20, Pids: 9}); err != nil {
				t.Fatal(err)
			}
			cpuFile, want := filepath.Join(g.dirs[m.cpu], "cpu.shares"), "1024"
			if m.Mode() == V2 {
				cpuFile, want = filepath.Join(g.dirs[m.cpu], "cpu.weight"), "100"
			}
			if got := cat(t, cpuFile); got != want {
				t.Errorf("%s = %q after SetCPUWeight(1) and a set of the default weight, want %q", filepath.Base(cpuFile), got, want)
			}
			if m.Mode() != V1 {
				return // a v2 memory.max below usage reclaims or kills; it does not fail
			}
			// A failed set (v1 refuses a memory limit below what the
			// group holds and cannot reclaim) leaves the files unknown:
			// the next set writes every one.
			start(t, g, "/usr/bin/python3", "-S", "-c", "import time; b = bytearray(16 << 20); time.sleep(60)")
			waitFor(t, 10*time.Second, func() bool { u, _ := g.MemoryUsage(); return u >= 16<<20 })
			if err := g.SetLimits(Limits{MemoryBytes: 4 << 20, Pids: 9}); err == nil {
				t.Skip("this host took a memory limit below the group's anonymous memory (swap to reclaim into): no failed set to test")
			}
			if err := os.WriteFile(pids, []byte("7"), 0); err != nil {
				t.Fatal(err)
			}
			if err := g.SetLimits(Limits{MemoryBytes: 64 << 20, Pids: 9}); err != nil {
				t.Fatal(err)
			}
			if got := cat(t, pids); got != "9" {
				t.Errorf("pids.max = %q after a set that followed a failed one, want 9 (all written)", got)
			}
		})
	}
}

func TestSetLimitsAndCPUWeight(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	g := create(t, m, "relimit", Limits{MemoryBytes: 64 << 20, Pids: 16, CPUWeight: 1})
	t.Cleanup(func() { g.Delete(context.Background()) })
	file, want := "cpu.shares", "10"
	if m.Mode() == V2 {
		file, want = "cpu.weight", "1"
	}
	cpuFile := func() string {
		for _, d := range g.Dirs() {
			if b, err := os.ReadFile(filepath.Join(d, file)); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		t.Fatalf("%s not found in %v", file, g.Dirs())
		return ""
	}
	if got := cpuFile(); got != want {
		t.Fatalf("%s = %q, want %q", file, got, want)
	}
	// A spare gets its function's limits: a bigger memory limit, the
	// default weight.
	if err := g.SetLimits(Limits{MemoryBytes: 128 << 20, Pids: 16, CPUWeight: 100}); err != nil {
		t.Fatal(err)
	}
	if g.MemoryLimit() != 128<<20 {
		t.Errorf("MemoryLimit() = %d after SetLimits", g.MemoryLimit())
	}
	want = "1024"
	if m.Mode() == V2 {
		want = "100"
	}
	if got := cpuFile(); got != want {
		t.Errorf("after SetLimits %s = %q, want %q", file, got, want)
	}
	// A dying sandbox gets the lowest weight.
	if err := g.SetCPUWeight(1); err != nil {
		t.Fatal(err)
	}
	want = "10"
	if m.Mode() == V2 {
		want = "1"
	}
	if got := cpuFile(); got != want {
		t.Errorf("after SetCPUWeight(1) %s = %q, want %q", file, got, want)
	}
	for _, bad := range []uint64{0, 10001} {
		if err := g.SetCPUWeight(bad); !errors.Is(err, ErrBadLimits) {
			t.Errorf("SetCPUWeight(%d) = %v, want ErrBadLimits", bad, err)
		}
	}
	if err := g.SetLimits(Limits{Pids: -1}); !errors.Is(err, ErrBadLimits) {
		t.Errorf("SetLimits with negative pids = %v, want ErrBadLimits", err)
	}
	// A CPU quota comes and goes with the limits: a pooled group handed
	// to a function gets the function's, a group put back none.
	file, want = "cpu.cfs_quota_us", "25000"
	if m.Mode() == V2 {
		file, want = "cpu.max", "25000 100000"
	}
	if err := g.SetLimits(Limits{MemoryBytes: 128 << 20, CPUs: 0.25}); err != nil {
		t.Fatal(err)
	}
	if got := cpuFile(); got != want {
		t.Errorf("after SetLimits(CPUs 0.25) %s = %q, want %q", file, got, want)
	}
	if err := g.SetLimits(Limits{}); err != nil {
		t.Fatal(err)
	}
	want = "-1"
	if m.Mode() == V2 {
		want = "max 100000"
	}
	if got := cpuFile(); got != want {
		t.Errorf("after SetLimits({}) %s = %q, want %q", file, got, want)
	}
}

func TestAddAndPids(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			g := create(t, m, "add", Limits{})
			cmd := exec.Command("/bin/sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			if err := g.Add(cmd.Process.Pid); err != nil {
				t.Fatalf("Add: %v", err)
			}
			p, err := g.Pids()
			if err != nil || !slices.Equal(p, []int{cmd.Process.Pid}) {
				t.Fatalf("Pids() = %v, %v; want [%d]", p, err, cmd.Process.Pid)
			}
			// The kernel agrees: every hierarchy lists the new path.
			cg := cat(t, fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
			want := "/" + m.Parent() + "/add"
			if n := strings.Count(cg, ":"+want+"\n") + strings.Count(cg+"\n", ":"+want+"\n"); n < len(g.Dirs()) {
				t.Errorf("/proc/pid/cgroup lists %s in fewer than %d hierarchies:\n%s", want, len(g.Dirs()), cg)
			}
			// A child joining through ProcsFiles lands in the group too.
			c2 := start(t, g, "/bin/sleep", "60")
			p, _ = g.Pids()
			if len(p) != 2 || !slices.Contains(p, c2.Pid) {
				t.Errorf("Pids() = %v, want both %d and %d", p, cmd.Process.Pid, c2.Pid)
			}
			if err := g.Add(0); !errors.Is(err, ErrBadPid) {
				t.Errorf("Add(0) = %v, want ErrBadPid", err)
			}
			if err := g.Delete(ctx); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if err := cmd.Wait(); err == nil || cmd.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Errorf("process not killed by Delete: %v", err)
			}
			for _, d := range g.Dirs() {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists after Delete", d)
				}
			}
			if err := g.Add(os.Getpid()); !errors.Is(err, ErrDeleted) {
				t.Errorf("Add after Delete = %v, want ErrDeleted", err)
			}
			if err := g.Delete(ctx); err != nil {
				t.Errorf("second Delete: %v", err)
			}
		})
	}
}

func TestOOMKill(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	if !hasLimits(m) {
		t.Fatalf("mode %s has no memory controller", m.Mode())
	}
	g := create(t, m, "oom", Limits{MemoryBytes: 32 << 20, Pids: 16})
	t.Cleanup(func() { g.Delete(ctx) })
	if n, err := g.OOMKills(); err != nil || n != 0 {
		t.Fatalf("OOMKills() before = %d, %v; want 0", n, err)
	}
	if hit, err := g.ReachedLimit(); err != nil || hit {
		t.Fatalf("ReachedLimit() before = %v, %v; want false", hit, err)
	}
	cmd := start(t, g, "/usr/bin/python3", "-S", "-c", "import time; time.sleep(0.2); b = bytearray(200 << 20); print('survived')")
	if !cmd.killed(t) {
		t.Fatalf("memory hog ended with %v, want SIGKILL", cmd.err)
	}
	n, err := g.OOMKills()
	if err != nil || n < 1 {
		t.Fatalf("OOMKills() = %d, %v; want >= 1", n, err)
	}
	if hit, err := g.ReachedLimit(); err != nil || !hit {
		t.Errorf("ReachedLimit() = %v, %v; want true", hit, err)
	}
	if u, err := g.MemoryUsage(); err != nil || u > 32<<20 {
		t.Errorf("MemoryUsage() = %d, %v; want <= 32 MiB", u, err)
	}
}

func TestMemoryUsage(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	g := create(t, m, "mem", Limits{MemoryBytes: 256 << 20})
	start(t, g, "/usr/bin/python3", "-S", "-c", "import time; b = bytearray(40 << 20); time.sleep(60)")
	waitFor(t, 10*time.Second, func() bool {
		u, _ := g.MemoryUsage()
		return u >= 40<<20
	})
	total, err := m.Usage()
	if err != nil || total < 40<<20 {
		t.Errorf("Manager.Usage() = %d, %v; want >= 40 MiB", total, err)
	}
	// Far below its limit, the group never reached it.
	if hit, err := g.ReachedLimit(); err != nil || hit {
		t.Errorf("ReachedLimit() = %v, %v; want false", hit, err)
	}
}

// TestCPUUsage: a group's CPU count keeps what a child used after it
// exited, before its parent reaps it (a /proc sum would have lost it) and
// after.
func TestCPUUsage(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			m := newManager(t, mc.opts...)
			if m.acct < 0 {
				t.Skip("no cpuacct hierarchy on this v1 host: CPUUsage is ErrNoController")
			}
			g := create(t, m, "cpu", Limits{})
			// The child spins 0.3 s of its own CPU (not wall time: a busy
			// host only makes it slower) and exits; the parent sees it
			// exit without reaping it (WNOWAIT), says so, and waits for
			// a line before reaping.
			out := filepath.Join(t.TempDir(), "out")
			fifo := filepath.Join(t.TempDir(), "go")
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			start(t, g, "/usr/bin/python3", "-S", "-c", `import os, sys, time
pid = os.fork()
if pid == 0:
    while time.process_time() < 0.3: pass
    os._exit(0)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
open(sys.argv[1], "w").write("exited")
open(sys.argv[2]).read()
os.waitpid(pid, 0)
open(sys.argv[1], "w").write("reaped")
time.sleep(60)`, out, fifo)
			read := func(what string) time.Duration {
				t.Helper()
				waitFor(t, 30*time.Second, func() bool {
					b, _ := os.ReadFile(out)
					return string(b) == what
				})
				u, err := g.CPUUsage()
				if err != nil {
					t.Fatalf("%s: CPUUsage: %v", what, err)
				}
				if u < 300*time.Millisecond {
					t.Errorf("%s: CPUUsage() = %v, want at least the child's 300ms", what, u)
				}
				return u
			}
			u := read("exited")
			if err := os.WriteFile(fifo, []byte("go\n"), 0); err != nil {
				t.Fatal(err)
			}
			if r := read("reaped"); r < u {
				t.Errorf("CPUUsage() went back from %v to %v", u, r)
			}
		})
	}
}

// TestCpuacctOptional: a v1 host whose cpuacct hierarchy is missing, or
// where the parent cannot be made in it (read-only here), still gets a
// manager, with no CPU count, or cpu's where cpuacct shares its mount.
// The roots are bind mounts of this host's hierarchies.
func TestCpuacctOptional(t *testing.T) {
	requireRoot(t)
	if isFS(DefaultRoot, unix.CGROUP2_SUPER_MAGIC) {
		t.Skip("cgroup v2 host: no v1 hierarchies to bind")
	}
	for _, ro := range []bool{false, true} {
		t.Run(map[bool]string{false: "absent", true: "read-only"}[ro], func(t *testing.T) {
			root := t.TempDir()
			bind := func(c string, flags uintptr) {
				t.Helper()
				dst := filepath.Join(root, c)
				if err := os.Mkdir(dst, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := unix.Mount(filepath.Join(DefaultRoot, c), dst, "", unix.MS_BIND, ""); err != nil {
					t.Fatalf("bind %s: %v", c, err)
				}
				t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
				if flags != 0 {
					if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
						t.Fatalf("remount %s: %v", c, err)
					}
				}
			}
			for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
				bind(c, 0)
			}
			if ro {
				bind("cpuacct", unix.MS_RDONLY)
			}
			m := newManager(t, WithMode(V1), WithRoot(root))
			shared := false
			if _, err := os.Stat(filepath.Join(m.hiers[m.cpu], "cpuacct.usage")); err == nil {
				shared = true
			}
			if shared && m.acct != m.cpu || !shared && m.acct != -1 {
				t.Errorf("acct %d (cpu %d, cpuacct in cpu's mount %v): %v", m.acct, m.cpu, shared, m.Dirs())
			}
			g := create(t, m, "g", Limits{})
			_, err := g.CPUUsage()
			if shared && err != nil || !shared && !errors.Is(err, ErrNoController) {
				t.Errorf("CPUUsage: %v (cpuacct in cpu's mount %v)", err, shared)
			}
			if err := g.Delete(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPeakMemory: the peak keeps what a process used and gave back.
func TestPeakMemory(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	if !hasLimits(m) {
		t.Fatalf("mode %s has no memory controller", m.Mode())
	}
	g := create(t, m, "peak", Limits{MemoryBytes: 256 << 20})
	start(t, g, "/usr/bin/python3", "-S", "-c",
		"import time; b = bytearray(48 << 20); del b; print('freed', flush=True); time.sleep(60)")
	waitFor(t, 10*time.Second, func() bool {
		p, _ := g.PeakMemory()
		u, _ := g.MemoryUsage()
		return p >= 48<<20 && u < 24<<20
	})
	p, err := g.PeakMemory()
	if err != nil || p >= 256<<20 {
		t.Errorf("PeakMemory() = %d, %v; want 48 MiB to the limit", p, err)
	}
	if err := g.ResetPeak(); err != nil {
		t.Fatal(err)
	}
	if m.Mode() == V1 {
		// The peak restarts from what is charged now.
		if p, err := g.PeakMemory(); err != nil || p >= 24<<20 {
			t.Errorf("after ResetPeak: PeakMemory() = %d, %v; want under 24 MiB", p, err)
		}
	}
}

func TestPidsLimitContainsForkBomb(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	if !hasLimits(m) {
		t.Fatalf("mode %s has no pids controller", m.Mode())
	}
	const limit = 12
	g := create(t, m, "bomb", Limits{Pids: limit})
	// A real fork bomb: every process forks forever and retries when the
	// kernel refuses.
	bomb := start(t, g, "/usr/bin/python3", "-S", "-c", `
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
`)
	events := filepath.Join(g.dirs[2%len(g.dirs)], "pids.events")
	if m.Mode() == V2 {
		events = filepath.Join(g.dirs[0], "pids.events")
	} else {
		for _, d := range g.dirs {
			if _, err := os.Stat(filepath.Join(d, "pids.events")); err == nil {
				events = filepath.Join(d, "pids.events")
			}
		}
	}
	// The kernel refused forks at the limit.
	waitFor(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(events)
		n, err := parseKey(b, "max", events)
		return err == nil && n > 0
	})
	p, err := g.Pids()
	if err != nil || len(p) > limit || len(p) < limit/2 {
		t.Errorf("Pids() = %d pids, %v; want between %d and %d", len(p), err, limit/2, limit)
	}
	if err := g.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if p, _ := g.Pids(); len(p) != 0 {
		t.Errorf("after Kill: %v", p)
	}
	if !bomb.killed(t) {
		t.Errorf("bomb: %v, want SIGKILL", bomb.err)
	}
}

// cpuTicks returns utime+stime of pid.
func cpuTicks(t testing.TB, pid int) int {
	s := cat(t, fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.Atoi(f[11])
	k, _ := strconv.Atoi(f[12])
	return u + k
}

// runsWithin bounds waitRuns: a frozen process never gets a tick, and a
// running one gets one long before, even where both cores are busy and
// page faults slow (on such a PVM guest a new shell got no tick in its
// first 200 ms).
const runsWithin = 10 * time.Second

// waitRuns waits until pid has used CPU since the call, at most
// runsWithin, and returns its ticks before and after.
func waitRuns(t testing.TB, pid int) (before, after int) {
	t.Helper()
	before = cpuTicks(t, pid)
	end := time.Now().Add(runsWithin)
	for {
		time.Sleep(20 * time.Millisecond)
		if after = cpuTicks(t, pid); after > before || time.Now().After(end) {
			return before, after
		}
	}
}

func TestFreezeThaw(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			g := create(t, m, "freeze", Limits{})
			cmd := start(t, g, "/bin/sh", "-c", "while :; do :; done")
			pid := cmd.Pid
			if err := g.Freeze(ctx); err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			a := cpuTicks(t, pid)
			time.Sleep(300 * time.Millisecond)
			if b := cpuTicks(t, pid); b != a {
				t.Errorf("frozen process used CPU: %d -> %d ticks", a, b)
			}
			if err := g.Freeze(ctx); err != nil {
				t.Fatalf("second Freeze: %v", err)
			}
			if err := g.Thaw(ctx); err != nil {
				t.Fatalf("Thaw: %v", err)
			}
			if a, b := waitRuns(t, pid); b <= a {
				t.Errorf("thawed process used no CPU: %d -> %d ticks in %v", a, b, runsWithin)
			}
		})
	}
}

// TestKillPartlyJoined: a process in one v1 hierarchy of the group only
// (the last but one, as one caught midway through joining them all) is
// found and killed, and the group is empty only once it is gone from
// there: emptiness is not read off the first hierarchy alone.
func TestKillPartlyJoined(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	if m.Mode() != V1 || len(m.hiers) < 2 {
		t.Skip("needs several cgroup v1 hierarchies")
	}
	g := create(t, m, "partly", Limits{})
	p := startOutside(t, "/bin/sleep", "60")
	last := g.dirs[len(g.dirs)-2]
	if err := addV1([]string{last}, p.Pid); err != nil {
		t.Fatal(err)
	}
	if pids, err := g.Pids(); err != nil || !slices.Equal(pids, []int{p.Pid}) {
		t.Fatalf("Pids() = %v, %v; want [%d] (in %s only)", pids, err, p.Pid, last)
	}
	frozen := frozenKills.Load()
	if err := g.Kill(ctxT(t)); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if m.uni >= 0 && frozenKills.Load() == frozen {
		t.Errorf("Kill of a process outside the unified group did not fall back to the freeze")
	}
	if !p.killed(t) {
		t.Errorf("process in %s only: %v, want SIGKILL", last, p.err)
	}
	if pids, err := g.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("Pids() after Kill = %v, %v", pids, err)
	}
}

func TestKillFrozen(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			g := create(t, m, "kill", Limits{})
			cmd := start(t, g, "/bin/sh", "-c", "sleep 60 & sleep 60 & while :; do :; done")
			waitFor(t, 5*time.Second, func() bool { p, _ := g.Pids(); return len(p) == 3 })
			if err := g.Freeze(ctx); err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			if err := g.Kill(ctx); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if p, err := g.Pids(); err != nil || len(p) != 0 {
				t.Fatalf("Pids() after Kill = %v, %v", p, err)
			}
			if !cmd.killed(t) {
				t.Errorf("main process: %v, want SIGKILL", cmd.err)
			}
			// Kill leaves the group thawed and usable.
			c := start(t, g, "/bin/sh", "-c", "while :; do :; done")
			if a, b := waitRuns(t, c.Pid); b <= a {
				t.Errorf("process started after Kill does not run: %d -> %d ticks in %v", a, b, runsWithin)
			}
			if err := g.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			// Killing an empty group is a no-op.
			if err := g.Kill(ctx); err != nil {
				t.Fatalf("Kill empty: %v", err)
			}
		})
	}
}

// TestUnifiedKill: on a v1 host with a hybrid cgroup2 mount, a group's
// processes are in its cgroup2 group too, whether they joined through
// ProcsFiles or Add, and a kill there ends them all: a fork loop's and
// v1-frozen ones included. It leaves the group thawed.
func TestUnifiedKill(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	if m.Mode() != V1 || m.uni < 0 {
		t.Skip("needs a v1 host with a hybrid cgroup2 mount that has cgroup.kill (Linux 5.14)")
	}
	ctx := ctxT(t)
	g := create(t, m, "uni", Limits{})
	if !strings.HasPrefix(g.dirs[m.uni], hybridV2+"/") {
		t.Fatalf("unified group %s not under %s", g.dirs[m.uni], hybridV2)
	}
	fs, err := g.ProcsFiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		f.Close()
	}
	if want := filepath.Join(g.dirs[m.uni], "cgroup.procs"); fs[0].Name() != want {
		t.Errorf("ProcsFiles()[0] = %s, want %s: a joiner must be there before any v1 group", fs[0].Name(), want)
	}
	loop := start(t, g, "/bin/sh", "-c", "while :; do sleep 60 & done")
	added := startOutside(t, "/bin/sleep", "60")
	if err := g.Add(added.Pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { p, _ := g.Pids(); return len(p) >= 6 })
	if err := g.Freeze(ctx); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	// Held still: every hierarchy lists the same processes.
	uni, err := readProcs(g.dirs[m.uni])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(uni)
	if !slices.Contains(uni, added.Pid) || !slices.Contains(uni, loop.Pid) {
		t.Errorf("unified group lists %v: want %d (Add) and %d (ProcsFiles) among them", uni, added.Pid, loop.Pid)
	}
	for _, d := range g.dirs {
		p, err := readProcs(d)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(p)
		if !slices.Equal(p, uni) {
			t.Errorf("%s lists %v, the unified group %v", d, p, uni)
		}
	}
	frozen := frozenKills.Load()
	if err := g.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if n := frozenKills.Load() - frozen; n != 0 {
		t.Errorf("Kill froze the group (%d times): want cgroup.kill alone", n)
	}
	if !loop.killed(t) || !added.killed(t) {
		t.Errorf("fork loop: %v, added: %v; want both SIGKILL", loop.err, added.err)
	}
	if p, err := g.Pids(); err != nil || len(p) != 0 {
		t.Errorf("Pids() after Kill = %v, %v", p, err)
	}
	if s := cat(t, filepath.Join(g.dirs[m.frz], "freezer.state")); s != "THAWED" {
		t.Errorf("freezer.state after Kill = %s, want THAWED", s)
	}
}

// TestKillUnfreezable: a task in a killable sleep, which the v1 freezer
// cannot freeze but SIGKILL ends, does not hold a kill until its ctx
// ends. The sleep is a lookup on a FUSE mount whose server answered INIT
// and then nothing: the freezer's wake-up interrupts the request, and
// FUSE then waits for it killably (fuseStuck). That is the test's way to
// make one; a tenant can reach other killable sleeps.
func TestKillUnfreezable(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			dir, queued, abort := fuseStuck(t)
			m := newManager(t, mc.opts...)
			g := create(t, m, "stuck", Limits{})
			// A shell that waits for its stat, stuck: both in the group.
			p := start(t, g, "/bin/sh", "-c", "stat "+dir+"/x; sleep 60")
			// Cleaned up before each process's own clean-up (which
			// waits for it): a test that fails with the stat stuck (or
			// frozen) must not wait for it forever.
			unstick := func() {
				abort()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				g.Thaw(ctx)
			}
			t.Cleanup(unstick)
			queued()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			begin := time.Now()
			if err := g.Kill(ctx); err != nil {
				t.Fatalf("Kill with a task that cannot freeze: %v (after %v)", err, time.Since(begin))
			}
			took := time.Since(begin)
			t.Logf("Kill took %v", took)
			if !p.killed(t) {
				t.Errorf("shell: %v, want SIGKILL", p.err)
			}
			if pids, err := g.Pids(); err != nil || len(pids) != 0 {
				t.Errorf("Pids() after Kill = %v, %v", pids, err)
			}
			if m.Mode() != V1 || m.uni >= 0 {
				return // cgroup.kill: no freeze
			}
			// A kill whose ctx ends while it waits for the freeze still
			// kills what it lists, and leaves the group thawed.
			p = start(t, g, "/bin/sh", "-c", "stat "+dir+"/y; sleep 60")
			t.Cleanup(unstick)
			queued()
			short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := g.Kill(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Kill with a ctx shorter than the freeze = %v, want its deadline", err)
			}
			if !p.killed(t) {
				t.Errorf("shell, its kill's ctx ended mid-freeze: %v, want SIGKILL", p.err)
			}
			if s := cat(t, filepath.Join(g.dirs[m.frz], "freezer.state")); s != "THAWED" {
				t.Errorf("freezer.state after a kill whose ctx ended = %s, want THAWED", s)
			}
		})
	}
}

// fuseStuck mounts a FUSE file system whose server (the test) answers
// INIT and no other request. It returns the mount point, a function that
// waits until a request is queued, and one that aborts the connection
// and unmounts (also at clean-up): any request still waiting fails. The
// request is left queued: one the server has read is waited for
// uninterruptibly, even by a killed task; a queued one killably.
func fuseStuck(t *testing.T) (string, func(), func()) {
	t.Helper()
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no FUSE device to make an unfreezable task with: %v", err)
	}
	dir := t.TempDir()
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", dev.Fd())
	if err := unix.Mount("hearth-test", dir, "fuse", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		dev.Close()
		t.Skipf("cannot mount FUSE to make an unfreezable task with: %v", err)
	}
	var once sync.Once
	abort := func() { once.Do(func() { dev.Close(); unix.Unmount(dir, unix.MNT_DETACH) }) }
	t.Cleanup(abort)
	// The INIT request: a 40-byte fuse_in_header (len, opcode, unique
	// at 8), then fuse_init_in.
	buf := make([]byte, 1<<17)
	fd := int(dev.Fd())
	n, err := unix.Read(fd, buf)
	if err != nil || n < 40 || binary.LittleEndian.Uint32(buf[4:]) != 26 { // FUSE_INIT
		t.Fatalf("reading FUSE INIT: %d bytes, %v", n, err)
	}
	// fuse_out_header (len, error, unique), then a 64-byte
	// fuse_init_out: version 7.31, max_write 64 KiB (a read needs room
	// for that and the headers), the rest zero.
	out := make([]byte, 16+64)
	binary.LittleEndian.PutUint32(out[0:], uint32(len(out)))
	copy(out[8:16], buf[8:16])
	binary.LittleEndian.PutUint32(out[16:], 7)
	binary.LittleEndian.PutUint32(out[20:], 31)
	binary.LittleEndian.PutUint32(out[36:], 1<<16)
	if _, err := unix.Write(fd, out); err != nil {
		t.Fatalf("answering FUSE INIT: %v", err)
	}
	return dir, func() {
		t.Helper()
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		// Go's preemption signals interrupt the wait (EINTR): wait again
		// for what is left of the 5 s.
		end := time.Now().Add(5 * time.Second)
		for {
			n, err := unix.Poll(pfd, int(max(time.Until(end), 0)/time.Millisecond))
			if n == 1 {
				return
			}
			if err != unix.EINTR || time.Now().After(end) {
				t.Fatalf("no FUSE request within 5 s (poll: %v)", err)
			}
		}
	}, abort
}

func TestSweepAfterCrash(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			// The "crashed" worker: groups with processes, one frozen, one
			// with a nested group, and the manager dropped without Close.
			old, err := NewManager(testParent(t), mc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			var cmds []*proc
			for i := range 3 {
				g := create(t, old, fmt.Sprintf("sb%d", i), Limits{})
				cmds = append(cmds, start(t, g, "/bin/sleep", "60"))
				if i == 1 {
					// Thawed before the process's clean-up waits for it,
					// should Sweep fail.
					t.Cleanup(func() { g.setFrozen(context.Background(), false, 0) })
					if err := g.Freeze(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if i == 2 {
					if err := os.Mkdir(filepath.Join(g.dirs[0], "nested"), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			// A process caught half-way through a zygote join: frozen in
			// one group ("zy"), already listed in another ("a-sb", which
			// sorts first) in the hierarchy a move writes first. On v2 a
			// move is one write: no half-way.
			want := 3
			if old.Mode() == V1 {
				zy := create(t, old, "zy", Limits{})
				sb := create(t, old, "a-sb", Limits{})
				c := start(t, zy, "/bin/sleep", "60")
				// Before the process's own clean-up, which waits for it:
				// a failing Sweep must not leave it frozen for good.
				t.Cleanup(func() { zy.setFrozen(context.Background(), false, 0) })
				if err := zy.Freeze(ctx); err != nil {
					t.Fatal(err)
				}
				if err := addV1(sb.dirs[:1], c.Pid); err != nil {
					t.Fatal(err)
				}
				cmds = append(cmds, c)
				want += 2
			}
			m := newManager(t, mc.opts...)
			own := create(t, m, "mine", Limits{})
			n, err := m.Sweep(ctx)
			if err != nil || n != want {
				t.Fatalf("Sweep() = %d, %v; want %d", n, err, want)
			}
			for i, c := range cmds {
				if !c.killed(t) {
					t.Errorf("sb%d process: %v, want SIGKILL", i, c.err)
				}
			}
			for _, d := range m.Dirs() {
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if e.IsDir() && e.Name() != "mine" && e.Name() != pinName {
						t.Errorf("left after Sweep: %s/%s", d, e.Name())
					}
				}
			}
			if _, err := os.Stat(own.dirs[0]); err != nil {
				t.Errorf("Sweep removed the manager's own group: %v", err)
			}
			if n, err := m.Sweep(ctx); err != nil || n != 0 {
				t.Errorf("second Sweep() = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestFreezerPin checks that a v1 manager keeps its empty pin group
// frozen through kills, sweeps and freezes of its groups, and removes it
// on Close.
func TestFreezerPin(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			opts := append([]Option{WithFreezerPin()}, mc.opts...)
			m, err := NewManager(testParent(t), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if m.Mode() != V1 {
				// v2's freezer keeps no such key: nothing to pin.
				if m.pin != "" {
					t.Errorf("v2 manager pinned %s", m.pin)
				}
				m.Close(ctx)
				return
			}
			pin := filepath.Join(m.hiers[m.frz], m.parent, pinName)
			frozen := func(when string) {
				t.Helper()
				b, err := os.ReadFile(filepath.Join(pin, "freezer.state"))
				if err != nil || strings.TrimSpace(string(b)) != "FROZEN" {
					t.Fatalf("%s: pin state %q, %v; want FROZEN", when, b, err)
				}
			}
			frozen("after NewManager")
			g := create(t, m, "g", Limits{})
			start(t, g, "/bin/sleep", "60")
			if err := g.Freeze(ctx); err != nil {
				t.Fatal(err)
			}
			if err := g.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			frozen("after a kill")
			if n, err := m.Sweep(ctx); err != nil || n != 0 {
				t.Fatalf("Sweep() = %d, %v; want 0 (the pin is the manager's)", n, err)
			}
			frozen("after Sweep")
			// A second manager of the parent (a restarted worker) adopts it.
			m2, err := NewManager(m.parent, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if m2.pin != pin {
				t.Errorf("second manager's pin %q, want %q", m2.pin, pin)
			}
			if err := m.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			m2.Close(ctx)
			if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin left after Close (stat: %v)", err)
			}
			// A crashed worker's pin: a manager without the option (the
			// reaper's) sweeps it.
			m3, err := NewManager(testParent(t), opts...)
			if err != nil {
				t.Fatal(err)
			}
			reaper, err := NewManager(m3.parent, mc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := reaper.Sweep(ctx); err != nil || n != 1 {
				t.Errorf("reaper's Sweep() = %d, %v; want 1 (the pin)", n, err)
			}
			if err := reaper.Close(ctx); err != nil {
				t.Fatalf("reaper's Close: %v", err)
			}
			if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin left after the reaper (stat: %v)", err)
			}
		})
	}
}

func TestSetWeight(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			m := newManager(t, mc.opts...)
			if err := m.SetWeight(0); !errors.Is(err, ErrBadLimits) {
				t.Errorf("SetWeight(0) = %v, want ErrBadLimits", err)
			}
			if err := m.SetWeight(10001); !errors.Is(err, ErrBadLimits) {
				t.Errorf("SetWeight(10001) = %v, want ErrBadLimits", err)
			}
			err := m.SetWeight(300)
			if m.Mode() == V2 && errors.Is(err, ErrNoController) {
				t.Skipf("no cpu controller for %s's children on this host: %v", m.parent, err)
			}
			if err != nil {
				t.Fatal(err)
			}
			file, want := "cpu.shares", "3072"
			if m.Mode() == V2 {
				file, want = "cpu.weight", "300"
			}
			b, err := os.ReadFile(filepath.Join(m.hiers[m.cpu], m.parent, file))
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("%s = %q, %v; want %s", file, b, err, want)
			}
		})
	}
	if DefaultWeight(2) != 200 || DefaultWeight(0) != 100 || DefaultWeight(64) != 1000 {
		t.Errorf("DefaultWeight: 2 CPUs %d, 0 %d, 64 %d; want 200, 100, 1000", DefaultWeight(2), DefaultWeight(0), DefaultWeight(64))
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m, err := NewManager(testParent(t), mc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				g := create(t, m, fmt.Sprintf("g%d", i), Limits{})
				if i > 0 {
					start(t, g, "/bin/sleep", "60")
				}
				if i == 2 {
					g.Freeze(ctx)
				}
			}
			if err := m.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for _, d := range m.Dirs() {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left after Close", d)
				}
			}
		})
	}
}

func TestV2WithoutControllers(t *testing.T) {
	requireRoot(t)
	if !isFS(hybridV2, unix.CGROUP2_SUPER_MAGIC) {
		t.Skip("no hybrid cgroup2 mount on this host")
	}
	if b, _ := os.ReadFile(filepath.Join(hybridV2, "cgroup.controllers")); hasWord(string(b), "memory") {
		t.Skip("the hybrid cgroup2 mount has controllers")
	}
	m := newManager(t, WithMode(V2), WithRoot(hybridV2))
	for _, lim := range []Limits{{MemoryBytes: 1 << 20}, {Pids: 3}, {CPUWeight: 10}} {
		if _, err := m.Create("lim", lim); !errors.Is(err, ErrNoController) {
			t.Errorf("Create with %+v = %v, want ErrNoController", lim, err)
		}
	}
	g := create(t, m, "plain", Limits{})
	if _, err := g.OOMKills(); !errors.Is(err, ErrNoController) {
		t.Errorf("OOMKills() = %v, want ErrNoController", err)
	}
	if _, err := g.MemoryUsage(); !errors.Is(err, ErrNoController) {
		t.Errorf("MemoryUsage() = %v, want ErrNoController", err)
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in, key string
		want    uint64
		ok      bool
	}{
		{"oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill", 3, true},
		{"low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n", "oom_kill", 2, true},
		{"low 0\nmax 7\n", "oom_kill", 0, false},
		{"oom_kill x\n", "oom_kill", 0, false},
		{"", "max", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := parseKey([]byte(tt.in), tt.key, "f")
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseKey(%q, %q) = %d, %v; want %d, ok=%v", tt.in, tt.key, got, err, tt.want, tt.ok)
			}
		})
	}
}

// TestKnownEmpty: a group whose processes all came in through Add is
// known empty after a kill, without reading its cgroup.procs files, until
// the next Add; a group whose paths or cgroup.procs files were handed out
// never is. A pool's clean relies on it: a process added after the kill
// is still found and killed there.
func TestKnownEmpty(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			p := newPool(t, m, PoolConfig{Reserve: 1})
			g, err := p.Get(ctx, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if g.knownEmpty() {
				t.Fatal("a group never killed is known empty")
			}
			add := func() *proc {
				t.Helper()
				pr := startOutside(t, "/bin/sleep", "60")
				if err := g.Add(pr.Pid); err != nil {
					t.Fatalf("Add: %v", err)
				}
				return pr
			}
			pr := add()
			if g.knownEmpty() {
				t.Fatal("known empty with a process added")
			}
			if err := g.Kill(ctx); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if !pr.killed(t) {
				t.Fatalf("pid %d: %v, want SIGKILL", pr.Pid, pr.err)
			}
			if !g.knownEmpty() {
				t.Fatal("not known empty after a kill of a group joined through Add only")
			}
			// Added after the kill: the clean must look, and kill it.
			late := add()
			if g.knownEmpty() {
				t.Fatal("known empty after an Add that followed the kill")
			}
			if err := p.Put(ctx, g); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if !late.killed(t) {
				t.Errorf("process added after the kill survived the clean: %v", late.err)
			}
			if pids, err := g.Pids(); err != nil || len(pids) != 0 {
				t.Errorf("Pids() after the clean = %v, %v", pids, err)
			}
			// Shared: never known empty again, whatever the kills.
			h, err := p.Get(ctx, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Delete(ctx)
			fs, err := h.ProcsFiles()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				f.Close()
			}
			if err := h.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if h.knownEmpty() {
				t.Error("a group whose cgroup.procs files were handed out is known empty")
			}
			// So is one whose paths were (the criu runner's way in).
			k := create(t, m, "paths", Limits{})
			defer k.Delete(ctx)
			if err := k.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if !k.knownEmpty() {
				t.Fatal("a new group, killed empty, is not known empty")
			}
			_ = k.Dirs()
			if k.knownEmpty() {
				t.Error("a group whose paths were handed out is known empty")
			}
		})
	}
}
