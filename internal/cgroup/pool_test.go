package cgroup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// newPool makes a pool on m, closed at clean-up with a check that it left
// no groups behind.
func newPool(t testing.TB, m *Manager, cfg PoolConfig) *Pool {
	t.Helper()
	p, err := m.NewPool(cfg)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("Pool.Close: %v", err)
		}
	})
	return p
}

// children lists the group directories below m's parent in its first
// hierarchy.
func children(t testing.TB, m *Manager) []string {
	t.Helper()
	ents, err := os.ReadDir(m.Dirs()[0])
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestPoolBadInput(t *testing.T) {
	requireRoot(t)
	m := newManager(t)
	for _, tt := range []struct {
		name string
		cfg  PoolConfig
		want error
	}{
		{"negative reserve", PoolConfig{Reserve: -1}, ErrBadLimits},
		{"slash in prefix", PoolConfig{Prefix: "a/b"}, ErrBadName},
		{"dot prefix", PoolConfig{Prefix: ".x"}, ErrBadName},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := m.NewPool(tt.cfg)
			if !errors.Is(err, tt.want) {
				if p != nil {
					p.Close(context.Background())
				}
				t.Fatalf("NewPool(%+v) = %v, want %v", tt.cfg, err, tt.want)
			}
		})
	}
	p := newPool(t, m, PoolConfig{Reserve: 1})
	if _, err := p.Get(ctxT(t), Limits{MemoryBytes: -1}); !errors.Is(err, ErrBadLimits) {
		t.Errorf("Get(bad limits) = %v, want ErrBadLimits", err)
	}
	t.Run("foreign", func(t *testing.T) {
		other := newManager(t)
		g := create(t, other, "foreign", Limits{})
		if err := p.Put(ctxT(t), g); !errors.Is(err, ErrBadName) {
			t.Errorf("Put(foreign group) = %v, want ErrBadName", err)
		}
	})
}

func TestPoolGetPutResets(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			p := newPool(t, m, PoolConfig{Reserve: 2})
			if err := p.Fill(ctx); err != nil {
				t.Fatalf("Fill: %v", err)
			}
			lim := Limits{MemoryBytes: 64 << 20, Pids: 32, CPUWeight: 50}
			if !hasLimits(m) {
				lim = Limits{}
			}
			g, err := p.Get(ctx, lim)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if s := p.Stats(); s.Hits != 1 || s.Misses != 0 {
				t.Errorf("after Get: %+v, want 1 hit, 0 misses", s)
			}
			if g.MemoryLimit() != lim.MemoryBytes {
				t.Errorf("MemoryLimit() = %d, want %d", g.MemoryLimit(), lim.MemoryBytes)
			}
			type fileVal struct{ dir, file, limited, reset string }
			var files []fileVal
			if m.Mode() == V1 {
				files = []fileVal{
					{g.dirs[m.mem], "memory.limit_in_bytes", "67108864", "9223372036854771712"},
					{g.dirs[m.pids], "pids.max", "32", "max"},
					{g.dirs[m.cpu], "cpu.shares", "512", "1024"},
				}
			} else if hasLimits(m) {
				files = []fileVal{
					{g.dirs[0], "memory.max", "67108864", "max"},
					{g.dirs[0], "pids.max", "32", "max"},
					{g.dirs[0], "cpu.weight", "50", "100"},
				}
			}
			for _, f := range files {
				if got := cat(t, filepath.Join(f.dir, f.file)); got != f.limited {
					t.Errorf("after Get: %s = %q, want %q", f.file, got, f.limited)
				}
			}
			// Leave a frozen process and some charged memory behind:
			// anonymous memory, which dies with it, and page cache of a
			// file on disk, which the clean must reclaim.
			cached := filepath.Join(t.TempDir(), "cached")
			pr := start(t, g, "/usr/bin/python3", "-S", "-c",
				"import sys, time; open(sys.argv[1], 'wb').write(bytes(8 << 20)); b = bytearray(8 << 20); time.sleep(60)", cached)
			if m.Mode() == V1 {
				waitFor(t, 10*time.Second, func() bool {
					u, _ := g.MemoryUsage()
					return u >= 16<<20
				})
			}
			if err := g.Freeze(ctx); err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			// The refiller has made up for the Get: a group it finished
			// after the Put would be the last in, and handed out below
			// instead of g (seen in CI on a slow host).
			if err := p.Fill(ctx); err != nil {
				t.Fatalf("Fill: %v", err)
			}
			if err := p.Put(ctx, g); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if !pr.killed(t) {
				t.Errorf("process left in the group was not killed: %v", pr.err)
			}
			for _, f := range files {
				if got := cat(t, filepath.Join(f.dir, f.file)); got != f.reset {
					t.Errorf("after Put: %s = %q, want %q", f.file, got, f.reset)
				}
			}
			if m.Mode() == V1 {
				if got := cat(t, filepath.Join(g.dirs[m.mem], "memory.failcnt")); got != "0" {
					t.Errorf("after Put: memory.failcnt = %q, want 0", got)
				}
				// The peak restarts from what is left: far below the 8 MiB used.
				if got := cat(t, filepath.Join(g.dirs[m.mem], "memory.max_usage_in_bytes")); len(got) > 6 {
					t.Errorf("after Put: memory.max_usage_in_bytes = %q, want under 1 MB", got)
				}
				if u, err := g.MemoryUsage(); err != nil || u > 1<<20 {
					t.Errorf("after Put: usage %d, %v; want the sandbox's charges given back", u, err)
				}
				if got := cat(t, filepath.Join(g.dirs[m.frz], "freezer.state")); got != "THAWED" {
					t.Errorf("after Put: freezer.state = %q, want THAWED", got)
				}
				// What the dead process used is not the next sandbox's.
				if m.acct >= 0 {
					if u, err := g.CPUUsage(); err != nil || u != 0 {
						t.Errorf("after Put: CPUUsage() = %v, %v; want 0", u, err)
					}
				}
			}
			if m.Mode() == V2 && m.enabled["memory"] {
				if u, err := g.MemoryUsage(); err != nil || u > 1<<20 {
					t.Errorf("after Put: usage %d, %v; want the page cache reclaimed", u, err)
				}
			}
			if s := p.Stats(); s.Reused != 1 || s.Quarantined != 0 {
				t.Errorf("after Put: %+v, want one reuse, nothing quarantined", s)
			}
			// It is handed out again (last in, first out), limited anew.
			h, err := p.Get(ctx, lim)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			defer h.Delete(ctx)
			if h != g {
				t.Errorf("Get after Put returned %s, want the returned %s", h.Name(), g.Name())
			}
			for _, f := range files {
				if got := cat(t, filepath.Join(f.dir, f.file)); got != f.limited {
					t.Errorf("after second Get: %s = %q, want %q", f.file, got, f.limited)
				}
			}
		})
	}
}

func TestPoolExhaustionFallsBack(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	p := newPool(t, m, PoolConfig{Reserve: 2})
	if err := p.Fill(ctx); err != nil {
		t.Fatalf("Fill: %v", err)
	}
	// Many Gets in a burst, half of them concurrent: the reserve and what
	// the refiller makes meanwhile are hits, the rest are created on
	// demand (a Get takes about a tenth of a create).
	const n = 60
	gs := make([]*Group, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	get := func(i int) {
		g, err := p.Get(ctx, Limits{Pids: 8})
		if err != nil {
			errs <- err
			return
		}
		gs[i] = g
	}
	for i := range n / 2 {
		get(i)
	}
	for i := n / 2; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(i)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Get under exhaustion: %v (want a fallback, never an error)", err)
	}
	s := p.Stats()
	t.Logf("burst of %d Gets: %d hits, %d misses", n, s.Hits, s.Misses)
	if s.Hits+s.Misses != n || s.Misses == 0 {
		t.Errorf("stats %+v: want %d gets, some of them misses", s, n)
	}
	seen := map[string]bool{}
	for _, g := range gs {
		if seen[g.Name()] {
			t.Errorf("group %s handed out twice", g.Name())
		}
		seen[g.Name()] = true
		if got := cat(t, filepath.Join(g.dirs[m.pids], "pids.max")); got != "8" {
			t.Errorf("%s: pids.max = %q, want 8", g.Name(), got)
		}
	}
	for _, g := range gs {
		if err := p.Put(ctx, g); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	s = p.Stats()
	if s.Reused+s.Removed != n || s.Ready > 4 {
		t.Errorf("after Put: %+v, want %d reused or removed and at most 4 ready", s, n)
	}
	// The refiller may still be making a group it started during the
	// burst; once it is done, it keeps it only if Puts left room.
	var got []string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s, got = p.Stats(), children(t, m)
		if len(got) == s.Ready || time.Now().After(end) {
			break
		}
	}
	if len(got) != s.Ready || s.Ready > 4 {
		t.Errorf("groups on disk %v, want the %d ready ones (at most 4)", got, s.Ready)
	}
}

func TestPoolQuarantine(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			var reported []string
			p := newPool(t, m, PoolConfig{Reserve: 2, OnQuarantine: func(name string, err error) {
				reported = append(reported, name)
			}})
			g, err := p.Get(ctx, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			start(t, g, "/bin/sleep", "60")
			// Freezing the parent keeps the group frozen whatever it asks:
			// a group whose processes cannot be made to exit and thaw.
			frz := m.Dirs()[m.frz]
			file, on, off := "freezer.state", "FROZEN", "THAWED"
			if m.Mode() == V2 {
				file, on, off = "cgroup.freeze", "1", "0"
			}
			if err := writeFile(filepath.Join(frz, file), on); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { writeFile(filepath.Join(frz, file), off) })
			sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			err = p.Put(sctx, g)
			cancel()
			if !errors.Is(err, ErrQuarantined) {
				t.Fatalf("Put of an uncleanable group = %v, want ErrQuarantined", err)
			}
			if err := writeFile(filepath.Join(frz, file), off); err != nil {
				t.Fatal(err)
			}
			s := p.Stats()
			if s.Quarantined != 1 || !slices.Equal(s.QuarantinedNames, []string{g.Name()}) || !slices.Equal(reported, []string{g.Name()}) {
				t.Errorf("stats %+v, reported %v; want %s quarantined", s, reported, g.Name())
			}
			for range 4 {
				h, err := p.Get(ctx, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if h == g {
					t.Fatalf("quarantined group %s handed out again", g.Name())
				}
				defer h.Delete(ctx)
			}
		})
	}
}

func TestPoolResetsOOMCount(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	if !hasLimits(m) {
		t.Fatalf("mode %s has no memory controller", m.Mode())
	}
	p := newPool(t, m, PoolConfig{Reserve: 1})
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := p.Get(ctx, Limits{MemoryBytes: 32 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	hog := start(t, g, "/usr/bin/python3", "-S", "-c", "b = bytearray(200 << 20)")
	if !hog.killed(t) {
		t.Fatalf("memory hog ended with %v, want SIGKILL", hog.err)
	}
	if n, err := g.OOMKills(); err != nil || n < 1 {
		t.Fatalf("OOMKills() = %d, %v; want >= 1", n, err)
	}
	if err := p.Put(ctx, g); err != nil {
		t.Fatal(err)
	}
	h, err := p.Get(ctx, Limits{MemoryBytes: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Delete(ctx)
	if h != g {
		t.Fatalf("got %s, want the returned %s (last in, first out)", h.Name(), g.Name())
	}
	if n, err := h.OOMKills(); err != nil || n != 0 {
		t.Errorf("OOMKills() of the reused group = %d, %v; want 0", n, err)
	}
	if hit, err := h.ReachedLimit(); err != nil || hit {
		t.Errorf("ReachedLimit() of the reused group = %v, %v; want false", hit, err)
	}
}

func TestPoolNoLeaks(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	before := children(t, m)
	p, err := m.NewPool(PoolConfig{Reserve: 4})
	if err != nil {
		t.Fatal(err)
	}
	const cycles = 1000
	lim := Limits{MemoryBytes: 64 << 20, Pids: 16, CPUWeight: 100}
	t0 := time.Now()
	for i := range cycles {
		g, err := p.Get(ctx, lim)
		if err != nil {
			t.Fatalf("cycle %d: Get: %v", i, err)
		}
		if i%2 == 0 {
			err = p.Put(ctx, g)
		} else {
			err = g.Delete(ctx) // owners may also just delete
		}
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	t.Logf("%d Get/Put cycles in %v (%+v)", cycles, time.Since(t0), p.Stats())
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if after := children(t, m); !slices.Equal(after, before) {
		t.Errorf("groups after %d cycles and Close: %v, want %v", cycles, after, before)
	}
	if _, err := p.Get(ctx, lim); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Get after Close = %v, want ErrPoolClosed", err)
	}
}

func TestPoolReleaseCleansInBackground(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	m := newManager(t)
	p := newPool(t, m, PoolConfig{Reserve: 2})
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := p.Get(ctx, Limits{Pids: 8})
	if err != nil {
		t.Fatal(err)
	}
	pr := start(t, g, "/bin/sleep", "60")
	p.Release(g)
	if !pr.killed(t) {
		t.Errorf("process in a released group was not killed: %v", pr.err)
	}
	waitFor(t, 10*time.Second, func() bool { return p.Stats().Reused == 1 })
	if got := cat(t, filepath.Join(g.dirs[m.pids], "pids.max")); got != "max" {
		t.Errorf("released group's pids.max = %q, want max", got)
	}
}

// TestPoolPutRemovesChildGroups: a group handed back with child groups
// (one nested two deep, in every hierarchy) is reused without them. The
// clean looks for children only where the directory's link count says
// there are some, so this fails if that count is misread.
func TestPoolPutRemovesChildGroups(t *testing.T) {
	for _, mc := range modes(t) {
		t.Run(mc.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := newManager(t, mc.opts...)
			p := newPool(t, m, PoolConfig{Reserve: 1})
			g, err := p.Get(ctx, Limits{})
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			for _, d := range g.dirs {
				if mayHaveChildren(d) {
					t.Fatalf("%s: a new group counted as having children", d)
				}
				if err := os.MkdirAll(filepath.Join(d, "a", "b"), 0o755); err != nil {
					t.Fatal(err)
				}
				if !mayHaveChildren(d) {
					t.Fatalf("%s: a group with a child counted as having none", d)
				}
			}
			if err := p.Put(ctx, g); err != nil {
				t.Fatalf("Put: %v", err)
			}
			for _, d := range g.dirs {
				if _, err := os.Stat(filepath.Join(d, "a")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: child group left after Put (%v)", d, err)
				}
			}
			h, err := p.Get(ctx, Limits{})
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			defer h.Delete(ctx)
			if h != g {
				t.Errorf("Get after Put returned %s, want the cleaned %s", h.Name(), g.Name())
			}
		})
	}
}
