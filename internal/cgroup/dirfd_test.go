package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHeldDirs: a group's files are opened through descriptors of its
// directories, held from Create to Delete and then closed: none is left
// open after many groups, and a group made again under the same name is
// reached through its own.
func TestHeldDirs(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			m := newManager(t, mc.opts...)
			fds := func() int {
				ents, err := os.ReadDir("/proc/self/fd")
				if err != nil {
					t.Fatal(err)
				}
				return len(ents)
			}
			before, held, files := fds(), heldFDs.Load(), heldFiles.Load()
			for range 20 {
				g := create(t, m, "held", Limits{})
				if got := heldFDs.Load() - held; got != int64(len(g.dirs)) {
					t.Fatalf("%d descriptors held for %d directories", got, len(g.dirs))
				}
				procs := filepath.Join(g.dirs[len(g.dirs)-1], "cgroup.procs")
				fd, ok, err := openHeld(procs, unix.O_RDONLY|unix.O_CLOEXEC)
				if !ok || err != nil {
					t.Fatalf("openHeld(%s) = %v, %v", procs, ok, err)
				}
				unix.Close(fd)
				// Through the held descriptor: the group's own file.
				start(t, g, "/bin/sleep", "60")
				if pids, err := g.Pids(); err != nil || len(pids) != 1 {
					t.Fatalf("Pids() = %v, %v", pids, err)
				}
				// The freezer's file (v2: its cgroup.freeze, and the
				// cgroup.events it polls) is written and read through
				// descriptors opened once, held until Delete.
				var first int64
				for i := range 3 {
					if err := g.Freeze(ctxT(t)); err != nil {
						t.Fatal(err)
					}
					if err := g.Thaw(ctxT(t)); err != nil {
						t.Fatal(err)
					}
					n := heldFiles.Load() - files
					if i == 0 {
						first = n
					} else if n != first {
						t.Fatalf("%d files held after %d freezes and thaws, %d after the first", n, i+1, first)
					}
				}
				if first < 2 {
					t.Errorf("%d files held after freezes and thaws, want the freezer's written and read", first)
				}
				if err := g.Delete(ctxT(t)); err != nil {
					t.Fatal(err)
				}
				if got := heldFiles.Load(); got != files {
					t.Fatalf("%d files held after Delete, want %d", got, files)
				}
				if _, ok, _ := openHeld(procs, unix.O_RDONLY); ok {
					t.Fatalf("%s still held after Delete", procs)
				}
			}
			if got := heldFDs.Load(); got != held {
				t.Errorf("%d descriptors held after the groups were deleted, want %d", got, held)
			}
			if got := fds(); got > before+2 {
				t.Errorf("%d descriptors open after 20 groups, %d before", got, before)
			}
		})
	}
}

// TestHeldDirsBudget: past the budget a group's files are opened by
// path, and work the same.
func TestHeldDirsBudget(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	saved := maxHeld.Load()
	maxHeld.Store(heldFDs.Load())
	t.Cleanup(func() { maxHeld.Store(saved) })
	g := create(t, m, "unheld", Limits{MemoryBytes: 64 << 20})
	if _, ok, _ := openHeld(filepath.Join(g.dirs[0], "cgroup.procs"), unix.O_RDONLY); ok {
		t.Fatal("a descriptor was held past the budget")
	}
	start(t, g, "/bin/sleep", "60")
	if err := g.Kill(ctxT(t)); err != nil {
		t.Fatalf("Kill by paths: %v", err)
	}
	if err := g.Delete(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseKeepsNewer: releasing an old holder of a path leaves the
// descriptor of a newer one (a group made again under the same name)
// registered, and the counter balanced.
func TestReleaseKeepsNewer(t *testing.T) {
	dir := t.TempDir()
	held := heldFDs.Load()
	old := holdDirs([]string{dir})
	newer := holdDirs([]string{dir})
	if old[0] == nil || newer[0] == nil {
		t.Fatal("no descriptor held")
	}
	releaseDirs([]string{dir}, old)
	v, ok := dirFDs.Load(dir)
	if !ok || v.(*dirFD) != newer[0] {
		t.Fatalf("after the old holder's release: %v, %v; want the newer descriptor", v, ok)
	}
	releaseDirs([]string{dir}, newer)
	if _, ok := dirFDs.Load(dir); ok {
		t.Error("still registered after both releases")
	}
	if got := heldFDs.Load(); got != held {
		t.Errorf("held %d, want %d", got, held)
	}
}

// TestHeldReadsFresh: a file read through a held descriptor shows what
// is there now at every read, not what its first read saw: the freezer's
// state across a freeze and a thaw, and a cgroup2 cgroup.procs (v1's is
// never read through one) across a join and a kill.
func TestHeldReadsFresh(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			g := create(t, m, "fresh", Limits{})
			defer g.Delete(ctx)
			procs := filepath.Join(g.dirs[0], "cgroup.procs")
			read := func(path string) string {
				t.Helper()
				b, err := readFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
			if got := read(procs); got != "" {
				t.Fatalf("cgroup.procs of a new group = %q", got)
			}
			p := startOutside(t, "/bin/sleep", "60")
			if err := g.Add(p.Pid); err != nil {
				t.Fatal(err)
			}
			if got, want := read(procs), fmt.Sprintf("%d\n", p.Pid); got != want {
				t.Errorf("cgroup.procs after Add = %q, want %q", got, want)
			}
			if m.Mode() == V1 {
				state := filepath.Join(g.dirs[m.frz], "freezer.state")
				if got := read(state); got != "THAWED\n" {
					t.Errorf("freezer.state = %q, want THAWED", got)
				}
				if err := g.Freeze(ctx); err != nil {
					t.Fatal(err)
				}
				if got := read(state); got != "FROZEN\n" {
					t.Errorf("freezer.state after Freeze = %q, want FROZEN", got)
				}
				if err := g.Thaw(ctx); err != nil {
					t.Fatal(err)
				}
				if got := read(state); got != "THAWED\n" {
					t.Errorf("freezer.state after Thaw = %q, want THAWED", got)
				}
			}
			if err := g.Kill(ctx); err != nil {
				t.Fatal(err)
			}
			if got := read(procs); got != "" {
				t.Errorf("cgroup.procs after Kill = %q, want empty", got)
			}
			var held bool
			if v, ok := dirFDs.Load(g.dirs[0]); ok {
				d := v.(*dirFD)
				d.fmu.Lock()
				_, held = d.files[heldKey{"cgroup.procs", false}]
				d.fmu.Unlock()
				if want := d.v2; held != want {
					t.Errorf("cgroup.procs held for reading: %v, want %v (cgroup2: %v)", held, want, d.v2)
				}
			}
		})
	}
}
