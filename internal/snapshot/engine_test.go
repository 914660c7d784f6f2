package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

// dumpSource invokes src once (so state exists), then dumps and seals it
// into a new dir.
func dumpSource(t *testing.T, e *snaptest.Env, src *snaptest.Source, key string) (string, *Descriptor) {
	t.Helper()
	r, _ := src.Invoke(t)
	if r.N != 1 || r.InitS < 1 || r.NFile != 1 {
		t.Fatalf("source first invoke: %+v", r)
	}
	dir := filepath.Join(e.Work, "snap-"+key)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := engine.Dump(ctx, DumpSpec{
		Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(), Socket: snaptest.Socket, LeaveRunning: true,
		Key: key, Function: "slow", Revision: "r1", BaseImage: "test-base", Packages: []string{"numpy"},
	}, dir)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if err := Seal(dir, d); err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func TestDumpRestore(t *testing.T) {
	e := needEnv(t)
	src := e.StartSource(t, e.CodeDir(t))
	dir, d := dumpSource(t, e, src, "slow-r1")
	t.Logf("dump %v, %d files, %d bytes", d.DumpTime, len(d.Files), d.Bytes)
	if len(d.Mounts) != 2 || d.Socket != snaptest.Socket {
		t.Fatalf("descriptor mounts %+v socket %q", d.Mounts, d.Socket)
	}
	if err := Verify(dir, d); err != nil {
		t.Fatal(err)
	}

	// The source keeps running (LeaveRunning) and keeps its state.
	if r, _ := src.Invoke(t); r.N != 2 {
		t.Fatalf("source after dump: n=%d, want 2", r.N)
	}

	// Two concurrent restores of the same snapshot.
	const copies = 2
	boxes := make([]*Restored, copies)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for i := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			id := fmt.Sprintf("rst-%d", e.Seq())
			g := e.NewGroup(t, id)
			s, err := engine.Restore(ctx, dir, d, RestoreSpec{
				ID: id, Group: g,
				Binds: e.Binds(src.Code),
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			t.Cleanup(func() { s.Destroy(context.Background()) })
			boxes[i] = s
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("restores: %v", errs)
	}
	var results []snaptest.Result
	for _, s := range boxes {
		t.Logf("restore %s: criu %v, pid %d, reseeded %v", s.ID(), s.RestoreTime, s.InitPid(), s.Reseeded)
		if !s.Reseeded {
			t.Errorf("%s: reseed signal not sent", s.ID())
		}
		r, ready := snaptest.Invoke(t, s.SocketPath(snaptest.Socket))
		t.Logf("  first invoke: ready in %v: %+v", ready, r)
		// State from before the dump: one call made, the file written once.
		if r.N != 2 || r.NFile != 2 || r.Sum != 499999500000 || r.InitS < 1 {
			t.Errorf("%s: state not intact: %+v", s.ID(), r)
		}
		if len(r.Hooks) != 1 || r.Hooks[0] != 1 {
			t.Errorf("%s: after-restore hooks ran %v, want [1]", s.ID(), r.Hooks)
		}
		results = append(results, r)
		// Each copy is its own pid namespace: its init is pid 1 there.
		if ns := nsPid(t, s.InitPid()); ns != "1" {
			t.Errorf("%s: pid in its namespace %s, want 1", s.ID(), ns)
		}
		// With the source's privileges: none.
		st := procStatus(t, s.InitPid())
		for k, want := range map[string]string{"Uid": "65534", "Gid": "65534", "CapEff": "0000000000000000",
			"CapBnd": "0000000000000000", "NoNewPrivs": "1"} {
			if got := st[k]; got != want {
				t.Errorf("%s: %s %q, want %q", s.ID(), k, got, want)
			}
		}
		// And in its own cgroup.
		pids, err := s.Group().Pids()
		if err != nil || len(pids) != 1 || pids[0] != s.InitPid() {
			t.Errorf("%s: cgroup pids %v (%v), want [%d]", s.ID(), pids, err, s.InitPid())
		}
	}
	if results[0].R == results[1].R || results[0].NP == results[1].NP {
		t.Errorf("restored copies share PRNG state: %+v vs %+v", results[0], results[1])
	}
	// Each copy has a file system of its own (Scratch is a path through
	// the sandbox's descriptor: compare what it reaches).
	var st0, st1 unix.Stat_t
	if err := unix.Stat(boxes[0].Scratch(), &st0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(boxes[1].Scratch(), &st1); err != nil {
		t.Fatal(err)
	}
	if st0.Dev == st1.Dev {
		t.Error("copies share a scratch dir")
	}
	// Scratch contents were restored per copy: writes do not leak.
	for _, s := range boxes {
		b, err := os.ReadFile(filepath.Join(s.Scratch(), "state.txt"))
		if err != nil || string(b) != "xx" {
			t.Errorf("%s: scratch state.txt %q (%v), want xx", s.ID(), b, err)
		}
	}
	// Restores leave the shared snapshot untouched (no logs, no stats).
	n := 0
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			n++
		}
		return nil
	})
	if n != len(d.Files)+1 {
		t.Errorf("snapshot dir holds %d files after restores, want %d", n, len(d.Files)+1)
	}
	// A restored copy pauses and resumes like any sandbox.
	if err := boxes[1].Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := boxes[1].Unpause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r, _ := snaptest.Invoke(t, boxes[1].SocketPath(snaptest.Socket)); r.N != 3 {
		t.Errorf("after pause/unpause: n=%d, want 3", r.N)
	}
	// Destroy cleans up: the process is gone and so is the dir.
	s := boxes[0]
	sdir := filepath.Join(e.SbDir, s.ID())
	if _, err := os.Stat(filepath.Join(sdir, "scratch")); err != nil {
		t.Fatalf("the restored sandbox's scratch: %v", err)
	}
	if s.ExitStatus() != -1 {
		t.Errorf("exit status %d while running", s.ExitStatus())
	}
	if err := s.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Error("Done not closed after Destroy")
	}
	if _, err := os.Stat(sdir); !os.IsNotExist(err) {
		t.Errorf("scratch left behind: %v", err)
	}
	if ms, err := sandbox.MountsUnder(sdir); err != nil || len(ms) > 0 {
		t.Errorf("mounts left behind: %v (%v)", ms, err)
	}
	if st := s.ExitStatus(); st != 128+9 {
		t.Errorf("exit status after Destroy %d, want %d (SIGKILL)", st, 128+9)
	}
}

func TestEngineBadInput(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		spec DumpSpec
	}{
		{"bad key", DumpSpec{Key: "../x", Pid: 100, Scratch: "/tmp", Socket: "s"}},
		{"no pid", DumpSpec{Key: "k", Scratch: "/tmp", Socket: "s"}},
		{"pid 1", DumpSpec{Key: "k", Pid: 1, Scratch: "/tmp", Socket: "s"}},
		{"no socket", DumpSpec{Key: "k", Pid: 100, Scratch: "/tmp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := engine.Dump(ctx, tc.spec, t.TempDir()); !errors.Is(err, ErrInvalid) {
				t.Fatalf("dump: %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := NewEngine(ctx, EngineConfig{}); !errors.Is(err, ErrDisabled) {
		t.Errorf("engine without criu: %v", err)
	}
	if _, err := NewEngine(ctx, EngineConfig{CRIU: e.CRIU}); !errors.Is(err, ErrInvalid) {
		t.Errorf("engine without dirs: %v", err)
	}

	src := e.StartSource(t, e.CodeDir(t))
	dir, d := dumpSource(t, e, src, "bad-input")
	g := e.NewGroup(t, fmt.Sprintf("rst-%d", e.Seq()))
	t.Run("missing bind", func(t *testing.T) {
		_, err := engine.Restore(ctx, dir, d, RestoreSpec{ID: "x1", Group: g, Binds: nil})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("restore: %v, want ErrInvalid", err)
		}
	})
	t.Run("other base image", func(t *testing.T) {
		eng, err := NewEngine(ctx, EngineConfig{CRIU: e.CRIU, Base: e.Base, Dir: e.SbDir, BaseID: "another-image"})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		_, err = eng.Restore(ctx, dir, d, RestoreSpec{ID: "x0", Group: g, Binds: e.Binds(src.Code)})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("restore: %v, want ErrInvalid", err)
		}
	})
	t.Run("bad id", func(t *testing.T) {
		_, err := engine.Restore(ctx, dir, d, RestoreSpec{ID: "a/b", Group: g, Binds: e.Binds(src.Code)})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("restore: %v, want ErrInvalid", err)
		}
	})
	t.Run("images missing", func(t *testing.T) {
		// Unverified damage reaches CRIU: the restore fails cleanly.
		if err := os.Rename(filepath.Join(dir, imagesDir, "pstree.img"), filepath.Join(dir, "pstree.bak")); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(filepath.Join(dir, "pstree.bak"), filepath.Join(dir, imagesDir, "pstree.img"))
		_, err := engine.Restore(ctx, dir, d, RestoreSpec{ID: "x2", Group: g, Binds: e.Binds(src.Code)})
		if err == nil {
			t.Fatal("restore without pstree.img succeeded")
		}
		if _, err := os.Stat(filepath.Join(e.SbDir, "x2")); !os.IsNotExist(err) {
			t.Fatalf("failed restore left its dir: %v", err)
		}
		if pids, _ := g.Pids(); len(pids) != 0 {
			t.Fatalf("failed restore left processes %v", pids)
		}
	})
	t.Run("open connection", func(t *testing.T) {
		c, err := runtime.Dial(ctx, src.SB.SocketPath(snaptest.Socket))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = engine.Dump(ctx, DumpSpec{Key: "busy", Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(),
			Socket: snaptest.Socket, LeaveRunning: true}, t.TempDir())
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("dump with a connection open: %v, want ErrUnsupported", err)
		}
	})
}
