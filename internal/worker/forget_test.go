package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/snapshot"
)

// testFns is a registry of function records in memory, for bookkeeping
// tests that start no sandbox.
type testFns struct {
	mu  sync.Mutex
	fns map[string]registry.Function
}

func (f *testFns) Get(name string) (registry.Function, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn, ok := f.fns[name]
	if !ok {
		return registry.Function{}, fmt.Errorf("function %s: %w", name, registry.ErrNotFound)
	}
	return fn, nil
}

// Lease is Get: the records have no code directory to keep.
func (f *testFns) Lease(name string) (registry.Function, func(), error) {
	fn, err := f.Get(name)
	return fn, func() {}, err
}

func (f *testFns) List() ([]registry.Function, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []registry.Function
	for _, fn := range f.fns {
		out = append(out, fn)
	}
	return out, nil
}

func (f *testFns) set(fn registry.Function) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns[fn.Name] = fn
}

func (f *testFns) delete(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.fns, name)
}

// TestRetireFreesFunctionState deploys, runs and deletes many functions,
// and redeploys some, through the worker's bookkeeping (state, logs,
// package sets, the pool's functions): after each delete nothing of the
// function is left, and a redeploy frees the old revision's share.
func TestRetireFreesFunctionState(t *testing.T) {
	c := newTestCache(t, 1<<30, PoolConfig{Policy: "hist"})
	w := c.w
	fns := &testFns{fns: map[string]registry.Function{}}
	w.fns = fns
	w.logs = newLogStore(1000, 1<<20)
	w.pkgCache = map[fnKey][]string{}
	run := func(fn registry.Function) {
		t.Helper()
		st, err := w.fnState(fn)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			st.logs.add(runtime.Stdout, fmt.Sprintf("%s line %d", fn.Name, i))
		}
		w.pkgMu.Lock()
		w.pkgCache[fnKey{fn.Name, fn.Revision}] = []string{}
		w.pkgMu.Unlock()
		inst := fakeStart(t, c, fn)
		fakePark(t, c, inst, 10*mib)
		if c.remove(inst) == false {
			t.Fatal("idle instance not removed")
		}
	}
	for i := range 500 {
		fn := testFn(fmt.Sprintf("fn-%d", i), 64)
		fns.set(fn)
		run(fn)
		if i%5 == 0 {
			// A redeploy: the old revision's share goes, the function's
			// state and logs stay.
			fn.Revision = "r2"
			fns.set(fn)
			w.Retire(fn.Name, fn.Revision)
			run(fn)
			if _, ok := w.pkgCache[fnKey{fn.Name, "r1"}]; ok {
				t.Fatalf("%s: package set of the retired revision kept", fn.Name)
			}
			if tl := w.Logs(fn.Name, 0, 0); len(tl.Lines) != 40 {
				t.Fatalf("%s: %d lines after a redeploy, want 40", fn.Name, len(tl.Lines))
			}
		}
		fns.delete(fn.Name)
		w.Retire(fn.Name, "")
		if _, err := w.fnState(fn); err == nil {
			t.Fatalf("%s: state made for a deleted function", fn.Name)
		}
	}
	if n := len(w.state); n != 0 {
		t.Errorf("%d function states left", n)
	}
	if b, n := w.logs.usage(); b != 0 || n != 0 || len(w.logs.rings) != 0 {
		t.Errorf("logs left: %d bytes, %d lines, %d rings", b, n, len(w.logs.rings))
	}
	if n := len(w.pkgCache); n != 0 {
		t.Errorf("%d package sets left", n)
	}
	if n := c.funcs(); n != 0 {
		t.Errorf("%d function revisions left in the pool", n)
	}
	if n := c.e.Funcs(); n != 0 {
		t.Errorf("%d functions left in the pool engine", n)
	}
	if len(c.info) > 2 {
		t.Errorf("pool ids not reused: %d ids for at most 2 functions at once", len(c.info))
	}
}

// TestRetireWaitsForBusySandboxes retires a revision with a sandbox in a
// call: the pool frees the revision once the sandbox is gone, not before.
func TestRetireWaitsForBusySandboxes(t *testing.T) {
	c := newTestCache(t, 1<<30, PoolConfig{})
	fn := testFn("busy", 64)
	inst := fakeStart(t, c, fn) // busy
	c.retire(fn.Name, fn.Revision)
	if n := c.funcs(); n != 1 {
		t.Fatalf("revision with a busy sandbox freed: %d left", n)
	}
	c.forget(inst)
	if n, e := c.funcs(), c.e.Funcs(); n != 0 || e != 0 {
		t.Errorf("revision kept after its last sandbox went: cache %d, engine %d", n, e)
	}
	// A reservation that fails to start is the last sandbox too.
	_, id, err := c.take(context.Background(), fn)
	if err != nil {
		t.Fatal(err)
	}
	c.retire(fn.Name, fn.Revision)
	c.abort(id)
	if n := c.funcs(); n != 0 {
		t.Errorf("revision kept after its reservation was aborted: %d", n)
	}
}

// TestSnapshotsForget drops the measures of the given revisions only.
func TestSnapshotsForget(t *testing.T) {
	s := &snapshots{fresh: map[string]time.Duration{}, worth: map[string]bool{}, busy: map[string]bool{}, fail: map[string]time.Time{}}
	for _, rev := range []string{"r1", "r2"} {
		k := snapshot.Key("f", rev)
		s.fresh[k], s.worth[k], s.fail[k] = time.Second, true, time.Now()
	}
	s.forget("f", []string{"r1"})
	k1, k2 := snapshot.Key("f", "r1"), snapshot.Key("f", "r2")
	if _, ok := s.fresh[k1]; ok || len(s.fresh) != 1 || len(s.worth) != 1 || len(s.fail) != 1 {
		t.Errorf("after forgetting r1: fresh %v worth %v fail %v", s.fresh, s.worth, s.fail)
	}
	if _, ok := s.worth[k2]; !ok {
		t.Error("r2 forgotten too")
	}
	var none *snapshots
	none.forget("f", []string{"r1"}) // snapshots off: nothing to do
}
