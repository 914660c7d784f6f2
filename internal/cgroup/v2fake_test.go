package cgroup

import (
	"os"
	"path/filepath"
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
		{"all", Limits{MemoryBytes: 64 << 20, Pids: 32, CPUWeight: 250}, true,
			map[string]string{"memory.max": "67108864", "memory.swap.max": "0", "pids.max": "32", "cpu.weight": "250"}},
		{"no-swap-accounting", Limits{MemoryBytes: 1 << 20}, false,
			map[string]string{"memory.max": "1048576", "memory.swap.max": "", "pids.max": "", "cpu.weight": ""}},
		{"none", Limits{}, true,
			map[string]string{"memory.max": "", "memory.swap.max": "", "pids.max": "", "cpu.weight": ""}},
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
		})
	}
}
