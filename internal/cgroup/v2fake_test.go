package cgroup

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
)

// TestV2LimitFiles checks, on a fake file tree, which files a v2 Create
// writes: this host's cgroup2 has no controllers, so a full v2 host's
// memory, pids and cpu files cannot be tested for real here.
func TestV2LimitFiles(t *testing.T) {
	tests := []struct {
		name string
		lim  Limits
		swap bool
		want map[string]string // file -> content; "" means must not exist
	}{
		{"all", Limits{MemoryBytes: 64 << 20, Pids: 32, CPUWeight: 250, CPUs: 1.5}, true,
			map[string]string{"memory.max": "67108864", "memory.swap.max": "0", "pids.max": "32", "cpu.weight": "250", "cpu.max": "150000 100000"}},
		{"quota-only", Limits{CPUs: 0.25}, true,
			map[string]string{"cpu.weight": "", "cpu.max": "25000 100000"}},
		{"no-swap-accounting", Limits{MemoryBytes: 1 << 20}, false,
			map[string]string{"memory.max": "1048576", "memory.swap.max": "", "pids.max": "", "cpu.weight": ""}},
		{"none", Limits{}, true,
			map[string]string{"memory.max": "", "memory.swap.max": "", "pids.max": "", "cpu.weight": "", "cpu.max": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			parent, err := cgroup2.NewManager(root, "/hearth", &cgroup2.Resources{})
			if err != nil {
				t.Fatal(err)
			}
			m := &Manager{
				mode: V2, root: root, parent: "hearth", hiers: []string{root},
				v2: parent, swap: tt.swap, groups: map[string]*Group{},
				enabled: map[string]bool{"memory": true, "pids": true, "cpu": true},
			}
			g, err := m.Create("sb", tt.lim)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			for file, want := range tt.want {
				b, err := os.ReadFile(filepath.Join(g.Dirs()[0], file))
				switch {
				case want == "" && err == nil:
					t.Errorf("%s written (%q), want untouched", file, b)
				case want != "" && string(b) != want:
					t.Errorf("%s = %q, %v; want %q", file, b, err, want)
				}
			}
			// Re-limiting (a pooled group handed to a function) writes
			// the quota; resetting it writes no quota. The first set
			// after a v2 create writes every file (the library's create
			// leaves them unknown), the next only what changed: the
			// quota. (Files are emptied first: a fake file is not
			// truncated by a write; an empty one was not written.)
			for i, lim := range []struct {
				lim  Limits
				want string
			}{{Limits{CPUs: 0.5}, "50000 100000"}, {Limits{}, "max 100000"}} {
				for _, f := range []string{"memory.max", "memory.swap.max", "pids.max", "cpu.weight", "cpu.max"} {
					os.WriteFile(filepath.Join(g.Dirs()[0], f), nil, 0o644)
				}
				if err := g.SetLimits(lim.lim); err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(filepath.Join(g.Dirs()[0], "cpu.max")); string(b) != lim.want {
					t.Errorf("after SetLimits(%+v) cpu.max = %q, want %q", lim.lim, b, lim.want)
				}
				b, _ := os.ReadFile(filepath.Join(g.Dirs()[0], "pids.max"))
				if written := len(b) > 0; written != (i == 0) {
					t.Errorf("set %d: pids.max %q: written %v, want %v (only the first set after create)", i, b, written, i == 0)
				}
			}
		})
	}
}

// TestV2ReachedLimit checks, on a fake file tree, that v2's ReachedLimit
// reads the "oom" events counted since the group was last cleaned.
func TestV2ReachedLimit(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	parent, err := cgroup2.NewManager(root, "/hearth", &cgroup2.Resources{})
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{
		mode: V2, root: root, parent: "hearth", hiers: []string{root},
		v2: parent, groups: map[string]*Group{},
		enabled: map[string]bool{"memory": true, "pids": true, "cpu": true},
	}
	g, err := m.Create("sb", Limits{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	events := func(oom int) {
		t.Helper()
		s := "low 0\nhigh 0\nmax 12\noom " + strconv.Itoa(oom) + "\noom_kill 0\n"
		if err := os.WriteFile(filepath.Join(g.Dirs()[0], "memory.events"), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	events(0)
	if hit, err := g.ReachedLimit(); err != nil || hit {
		t.Errorf("no oom events: ReachedLimit() = %v, %v; want false", hit, err)
	}
	events(2)
	if hit, err := g.ReachedLimit(); err != nil || !hit {
		t.Errorf("2 oom events: ReachedLimit() = %v, %v; want true", hit, err)
	}
	if err := m.resetCounters(g); err != nil {
		t.Fatal(err)
	}
	if hit, err := g.ReachedLimit(); err != nil || hit {
		t.Errorf("after a clean: ReachedLimit() = %v, %v; want false", hit, err)
	}
	events(3)
	if hit, err := g.ReachedLimit(); err != nil || !hit {
		t.Errorf("an oom event after the clean: ReachedLimit() = %v, %v; want true", hit, err)
	}
}
