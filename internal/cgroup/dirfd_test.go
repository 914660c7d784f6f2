package cgroup

import (
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
				// Written twice through one descriptor, held until Delete.
				for range 2 {
					if err := g.Freeze(ctxT(t)); err != nil {
						t.Fatal(err)
					}
					if err := g.Thaw(ctxT(t)); err != nil {
						t.Fatal(err)
					}
				}
				if got := heldFiles.Load() - files; got != 1 {
					t.Errorf("%d files held after freezes and thaws, want 1 (the freezer's)", got)
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
