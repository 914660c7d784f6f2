// Package policytest is the conformance suite every pool.Policy runs, in
// the style of containerd's SnapshotterSuite: properties that must hold for
// any policy when driven through the real pool engine (memory never over
// capacity, busy containers never evicted, every invocation counted once,
// determinism, sane priorities and keep-alives).
package policytest

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
)

const mb = 1 << 20

// Run runs the suite against policies made by newPolicy.
func Run(t *testing.T, newPolicy func() pool.Policy) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, func() pool.Policy)
	}{
		{"WarmHit", testWarmHit},
		{"DropWhenAllBusy", testDrop},
		{"EvictsOnlyIdle", testEvictsOnlyIdle},
		{"RandomInvariants", testRandom},
		{"Deterministic", testDeterministic},
		{"SanePolicyValues", testSane},
		{"StaleID", testStale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newPolicy) })
	}
}

func engine(t *testing.T, newPolicy func() pool.Policy, parts []pool.Partition, borrow bool) *pool.Engine {
	t.Helper()
	e, err := pool.New(pool.Config{Partitions: parts, Borrow: borrow, NewPolicy: newPolicy})
	if err != nil {
		t.Fatalf("pool.New: %v", err)
	}
	return e
}

func addFn(t *testing.T, e *pool.Engine, size int64, cold time.Duration) pool.Fn {
	t.Helper()
	fn, err := e.AddFunc(size, cold)
	if err != nil {
		t.Fatalf("AddFunc: %v", err)
	}
	return fn
}

func testWarmHit(t *testing.T, np func() pool.Policy) {
	e := engine(t, np, []pool.Partition{{Capacity: 100 * mb}}, false)
	fn := addFn(t, e, 10*mb, time.Second)
	if _, ok := e.Acquire(fn, 0); ok {
		t.Fatal("hit on an empty pool")
	}
	id, ev, err := e.Admit(fn, 0)
	if err != nil || len(ev) != 0 {
		t.Fatalf("Admit = %v, %v, %v", id, ev, err)
	}
	if err := e.Release(id, time.Second); err != nil {
		t.Fatal(err)
	}
	got, ok := e.Acquire(fn, time.Second)
	if !ok || got != id {
		t.Fatalf("Acquire after release = %v, %v; want %v, true", got, ok, id)
	}
	if s := e.Stats(0); s.Hits != 1 || s.Misses != 1 || s.Drops != 0 || s.Containers != 1 || s.IdleCount != 0 {
		t.Fatalf("stats %+v", s)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
}

func testDrop(t *testing.T, np func() pool.Policy) {
	e := engine(t, np, []pool.Partition{{Capacity: 30 * mb}}, false)
	fn := addFn(t, e, 10*mb, time.Second)
	var ids []pool.ID
	for i := range 3 {
		e.Acquire(fn, time.Duration(i))
		id, _, err := e.Admit(fn, time.Duration(i))
		if err != nil {
			t.Fatalf("Admit %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	e.Acquire(fn, 10)
	_, ev, err := e.Admit(fn, 10)
	if !errors.Is(err, pool.ErrDrop) {
		t.Fatalf("Admit into a pool full of busy containers: err %v, want ErrDrop", err)
	}
	if len(ev) != 0 {
		t.Fatalf("a drop evicted %v", ev)
	}
	if s := e.Stats(0); s.Drops != 1 || s.Misses != 3 || s.Used != 30*mb {
		t.Fatalf("stats after drop %+v", s)
	}
	// Free one: the next cold start of another function evicts exactly it.
	other := addFn(t, e, 10*mb, time.Second)
	if err := e.Release(ids[1], 20); err != nil {
		t.Fatal(err)
	}
	e.Acquire(other, 30)
	_, ev, err = e.Admit(other, 30)
	if err != nil || !slices.Equal(ev, []pool.ID{ids[1]}) {
		t.Fatalf("Admit after a release = %v, %v; want eviction of %v", ev, err, ids[1])
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
}

func testEvictsOnlyIdle(t *testing.T, np func() pool.Policy) {
	e := engine(t, np, []pool.Partition{{Capacity: 40 * mb}}, false)
	a := addFn(t, e, 20*mb, time.Second)
	b := addFn(t, e, 10*mb, time.Second)
	c := addFn(t, e, 10*mb, time.Second)
	d := addFn(t, e, 20*mb, time.Second)
	busyA, _, _ := e.Admit(a, 0)
	idleB, _, _ := e.Admit(b, 0)
	busyC, _, _ := e.Admit(c, 0)
	if err := e.Release(idleB, time.Second); err != nil {
		t.Fatal(err)
	}
	// d needs 20 MB but only the 10 MB idle b can go: drop, nothing evicted.
	if _, ev, err := e.Admit(d, 2*time.Second); !errors.Is(err, pool.ErrDrop) || len(ev) != 0 {
		t.Fatalf("Admit(d) = %v, %v; want ErrDrop, no evictions", ev, err)
	}
	e.Release(busyC, 3*time.Second)
	_, ev, err := e.Admit(d, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ev)
	want := []pool.ID{idleB, busyC}
	slices.Sort(want)
	if !slices.Equal(ev, want) {
		t.Fatalf("evicted %v, want %v (never the busy %v)", ev, want, busyA)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
}

// workload drives an engine with a random but seeded mix of operations and
// returns a log of everything observable, checking invariants throughout.
func workload(t *testing.T, np func() pool.Policy, seed uint64, borrow bool) []uint64 {
	t.Helper()
	parts, err := pool.Split(600*mb, []float64{0.7, 0.3}, []int64{100 * mb})
	if err != nil {
		t.Fatal(err)
	}
	e := engine(t, np, parts, borrow)
	r := rand.New(rand.NewPCG(seed, 42))
	var fns []pool.Fn
	for i := range 12 {
		size := int64(10+r.IntN(200)) * mb
		if i%4 == 0 {
			size = 150 * mb
		}
		fns = append(fns, addFn(t, e, size, time.Duration(r.IntN(2000))*time.Millisecond))
	}
	var log []uint64
	busy := map[pool.ID]bool{}
	var busyList []pool.ID
	var arrivals uint64
	now := time.Duration(0)
	note := func(ids []pool.ID, what string) {
		for _, id := range ids {
			if busy[id] {
				t.Fatalf("%s returned busy container %#x", what, id)
			}
			log = append(log, uint64(id))
		}
	}
	for step := range 4000 {
		now += time.Duration(r.IntN(int(3 * time.Minute)))
		note(e.Expire(now), "Expire")
		for _, fn := range e.Prewarm(now) {
			if id, err := e.Warm(fn, now); err == nil {
				log = append(log, uint64(id))
			} else if !errors.Is(err, pool.ErrDrop) {
				t.Fatalf("Warm: %v", err)
			}
		}
		switch op := r.IntN(10); {
		case op < 6:
			fn := fns[r.IntN(len(fns))]
			arrivals++
			if id, ok := e.Acquire(fn, now); ok {
				busy[id] = true
				busyList = append(busyList, id)
				log = append(log, 1, uint64(id))
				break
			}
			id, ev, err := e.Admit(fn, now)
			note(ev, "Admit")
			if errors.Is(err, pool.ErrDrop) {
				log = append(log, 2)
				break
			}
			if err != nil {
				t.Fatalf("step %d: Admit: %v", step, err)
			}
			busy[id] = true
			busyList = append(busyList, id)
			log = append(log, 3, uint64(id))
		case op < 9 && len(busyList) > 0:
			i := r.IntN(len(busyList))
			id := busyList[i]
			busyList = slices.Delete(busyList, i, i+1)
			delete(busy, id)
			if err := e.Release(id, now); err != nil {
				t.Fatalf("step %d: Release: %v", step, err)
			}
		case len(busyList) > 0:
			i := r.IntN(len(busyList))
			id := busyList[i]
			busyList = slices.Delete(busyList, i, i+1)
			delete(busy, id)
			if err := e.Remove(id); err != nil {
				t.Fatalf("step %d: Remove: %v", step, err)
			}
		}
		if err := e.Check(false); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if u := e.Used(); u > 600*mb {
			t.Fatalf("step %d: %d bytes used of %d", step, u, 600*mb)
		}
	}
	var got uint64
	for i := range e.Partitions() {
		s := e.Stats(i)
		got += s.Hits + s.Misses + s.Drops
	}
	if got != arrivals {
		t.Fatalf("hits+misses+drops = %d, want %d arrivals", got, arrivals)
	}
	return log
}

func testRandom(t *testing.T, np func() pool.Policy) {
	for _, borrow := range []bool{false, true} {
		for seed := range uint64(3) {
			workload(t, np, seed, borrow)
		}
	}
}

func testDeterministic(t *testing.T, np func() pool.Policy) {
	a := workload(t, np, 7, false)
	b := workload(t, np, 7, false)
	if !slices.Equal(a, b) {
		t.Fatalf("two runs of the same workload differ (%d vs %d events)", len(a), len(b))
	}
	if len(a) == 0 {
		t.Fatal("workload logged nothing")
	}
}

func testSane(t *testing.T, np func() pool.Policy) {
	p := np()
	clock := 0.0
	for i, e := range []pool.Entry{
		{Fn: 0, Size: 1, ColdCost: 0, Freq: 0, Now: 0},
		{Fn: 1, Size: 1 << 40, ColdCost: time.Hour, Freq: 1 << 40, Now: time.Hour},
		{Fn: 2, Size: mb, ColdCost: time.Millisecond, Freq: 1, Now: 24 * time.Hour},
	} {
		p.Arrive(e.Fn, e.Now, -1)
		p.Arrive(e.Fn, e.Now, time.Minute)
		prio := p.Priority(e, clock)
		if math.IsNaN(prio) || math.IsInf(prio, 0) {
			t.Fatalf("entry %d: priority %v", i, prio)
		}
		next := p.Evicted(prio, clock)
		if math.IsNaN(next) || next < clock {
			t.Fatalf("entry %d: clock went from %v to %v", i, clock, next)
		}
		clock = next
		if k := p.KeepAlive(e.Fn, e.Now); k < 0 && k != pool.Forever {
			t.Fatalf("entry %d: keep-alive %v", i, k)
		}
		if at, keep, ok := p.Prewarm(e.Fn, e.Now); ok && (at < e.Now || keep < 0) {
			t.Fatalf("entry %d: prewarm at %v keep %v (now %v)", i, at, keep, e.Now)
		}
	}
}

func testStale(t *testing.T, np func() pool.Policy) {
	e := engine(t, np, []pool.Partition{{Capacity: 100 * mb}}, false)
	fn := addFn(t, e, 10*mb, time.Second)
	id, _, err := e.Admit(fn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Remove(id); err != nil {
		t.Fatal(err)
	}
	id2, _, _ := e.Admit(fn, 1) // reuses the slot with a new generation
	if id2 == id {
		t.Fatalf("slot reuse returned the stale ID %#x", id)
	}
	if err := e.Release(id, 2); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("Release(stale) = %v, want ErrNotFound", err)
	}
	if err := e.Release(id2, 2); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(id2, 3); !errors.Is(err, pool.ErrState) {
		t.Fatalf("double Release = %v, want ErrState", err)
	}
}
