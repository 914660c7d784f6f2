package pool_test

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/pool/policy"
)

const mb = 1 << 20

func TestSplit(t *testing.T) {
	tests := []struct {
		name  string
		total int64
		fr    []float64
		th    []int64
		want  []pool.Partition
		err   bool
	}{
		{"unified", 1000, []float64{1}, nil, []pool.Partition{{MaxSize: math.MaxInt64, Capacity: 1000}}, false},
		{"kiss", 1001, []float64{0.8, 0.2}, []int64{225}, []pool.Partition{{225, 800}, {math.MaxInt64, 201}}, false},
		{"three", 100, []float64{0.5, 0.3, 0.2}, []int64{10, 20}, []pool.Partition{{10, 50}, {20, 30}, {math.MaxInt64, 20}}, false},
		{"sum", 100, []float64{0.5, 0.4}, []int64{10}, nil, true},
		{"count", 100, []float64{0.5, 0.5}, nil, nil, true},
		{"zero fraction", 100, []float64{0, 1}, []int64{10}, nil, true},
		{"decreasing", 100, []float64{0.5, 0.3, 0.2}, []int64{20, 10}, nil, true},
		{"negative", -1, []float64{1}, nil, nil, true},
		{"empty", 100, nil, nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pool.Split(tc.total, tc.fr, tc.th)
			if tc.err {
				if !errors.Is(err, pool.ErrConfig) {
					t.Fatalf("err %v, want ErrConfig", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Split = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func lru() pool.Policy { return policy.LRU{} }

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  pool.Config
	}{
		{"no partitions", pool.Config{NewPolicy: lru}},
		{"no policy", pool.Config{Partitions: []pool.Partition{{Capacity: 1}}}},
		{"nil policy", pool.Config{Partitions: []pool.Partition{{Capacity: 1}}, NewPolicy: func() pool.Policy { return nil }}},
		{"negative capacity", pool.Config{Partitions: []pool.Partition{{Capacity: -1}}, NewPolicy: lru}},
		{"zero bound", pool.Config{Partitions: []pool.Partition{{Capacity: 1}, {Capacity: 1}}, NewPolicy: lru}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pool.New(tc.cfg); !errors.Is(err, pool.ErrConfig) {
				t.Fatalf("New: %v, want ErrConfig", err)
			}
		})
	}
}

func newLRU(t *testing.T, borrow bool, parts ...pool.Partition) *pool.Engine {
	t.Helper()
	e, err := pool.New(pool.Config{Partitions: parts, Borrow: borrow, NewPolicy: lru})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestFuncErrors(t *testing.T) {
	e := newLRU(t, false, pool.Partition{Capacity: 10 * mb})
	for _, tc := range []struct {
		size int64
		cold time.Duration
	}{{0, 0}, {-1, 0}, {1, -time.Second}} {
		if _, err := e.AddFunc(tc.size, tc.cold); !errors.Is(err, pool.ErrConfig) {
			t.Fatalf("AddFunc(%d, %v): %v, want ErrConfig", tc.size, tc.cold, err)
		}
	}
	if _, _, err := e.Admit(7, 0); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("Admit(unknown): %v", err)
	}
	if _, ok := e.Acquire(7, 0); ok {
		t.Fatal("Acquire(unknown) hit")
	}
	if err := e.SetFunc(7, mb, 0); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("SetFunc(unknown): %v", err)
	}
	if _, err := e.Warm(7, 0); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("Warm(unknown): %v", err)
	}
	for _, id := range []pool.ID{0, 1 << 40, math.MaxUint64} {
		if err := e.Release(id, 0); !errors.Is(err, pool.ErrNotFound) {
			t.Fatalf("Release(%#x): %v", id, err)
		}
		if err := e.Remove(id); !errors.Is(err, pool.ErrNotFound) {
			t.Fatalf("Remove(%#x): %v", id, err)
		}
		if _, err := e.Resize(id, mb, 0); !errors.Is(err, pool.ErrNotFound) {
			t.Fatalf("Resize(%#x): %v", id, err)
		}
	}
	// A function larger than the whole pool is always a drop.
	big, _ := e.AddFunc(11*mb, 0)
	if _, _, err := e.Admit(big, 0); !errors.Is(err, pool.ErrDrop) {
		t.Fatalf("Admit(too big): %v", err)
	}
}

// TestRemoveFunc forgets a function once its containers are gone, so a
// long-lived engine holds state only for live functions: its id is
// reused, and a removed id is unknown.
func TestRemoveFunc(t *testing.T) {
	e := newLRU(t, false, pool.Partition{Capacity: 10 * mb})
	a, _ := e.AddFunc(2*mb, 0)
	b, _ := e.AddFunc(3*mb, 0)
	id, _, err := e.Admit(a, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveFunc(a); !errors.Is(err, pool.ErrState) {
		t.Fatalf("RemoveFunc with a container: %v, want ErrState", err)
	}
	if err := e.Release(id, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveFunc(a); !errors.Is(err, pool.ErrState) {
		t.Fatalf("RemoveFunc with an idle container: %v, want ErrState", err)
	}
	if err := e.Remove(id); err != nil {
		t.Fatal(err)
	}
	if err := e.RemoveFunc(a); err != nil {
		t.Fatalf("RemoveFunc: %v", err)
	}
	if n := e.Funcs(); n != 1 {
		t.Errorf("Funcs = %d after removing one of two", n)
	}
	if _, _, err := e.Admit(a, 0); !errors.Is(err, pool.ErrNotFound) {
		t.Errorf("Admit(removed): %v, want ErrNotFound", err)
	}
	if _, ok := e.Acquire(a, 0); ok {
		t.Error("Acquire(removed) hit")
	}
	if err := e.RemoveFunc(a); !errors.Is(err, pool.ErrNotFound) {
		t.Errorf("RemoveFunc twice: %v, want ErrNotFound", err)
	}
	// The id comes back, with the new function's size.
	c, _ := e.AddFunc(4*mb, 0)
	if c != a {
		t.Errorf("AddFunc after RemoveFunc = %d, want %d reused", c, a)
	}
	if _, _, err := e.Admit(c, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Admit(b, 0); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(0); s.Used != 7*mb || s.Containers != 2 {
		t.Errorf("stats after reuse: %+v", s)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
	// Many functions come and go: the engine keeps as many ids as were
	// ever live at once.
	for range 1000 {
		f, err := e.AddFunc(mb, 0)
		if err != nil {
			t.Fatal(err)
		}
		if f > 2 {
			t.Fatalf("id %d: ids of removed functions not reused", f)
		}
		if err := e.RemoveFunc(f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResize(t *testing.T) {
	e := newLRU(t, false, pool.Partition{Capacity: 10 * mb})
	a, _ := e.AddFunc(2*mb, 0)
	b, _ := e.AddFunc(3*mb, 0)
	c, _ := e.AddFunc(3*mb, 0)
	ia, _, _ := e.Admit(a, 0)
	ib, _, _ := e.Admit(b, 0)
	ic, _, _ := e.Admit(c, 0)
	e.Release(ib, 1)
	e.Release(ic, 2)
	// a grows from 2 to 6 MB: used 12 > 10, so the LRU idle b goes.
	ev, err := e.Resize(ia, 6*mb, 0)
	if err != nil || !slices.Equal(ev, []pool.ID{ib}) {
		t.Fatalf("Resize grow = %v, %v; want [%v]", ev, err, ib)
	}
	if u := e.Stats(0).Used; u != 9*mb {
		t.Fatalf("used %d MB, want 9", u/mb)
	}
	// Growing the idle c past capacity evicts nothing else (only busy a is
	// left) and overcommits.
	if ev, err := e.Resize(ic, 5*mb, 0); err != nil || len(ev) != 0 {
		t.Fatalf("Resize overcommit = %v, %v", ev, err)
	}
	if s := e.Stats(0); s.Used != 11*mb || s.Idle != 5*mb {
		t.Fatalf("stats %+v", s)
	}
	if err := e.Check(false); err == nil {
		t.Fatal("Check(false) accepted an overcommitted partition")
	}
	if err := e.Check(true); err != nil {
		t.Fatal(err)
	}
	// Shrinking gives it back.
	if _, err := e.Resize(ia, 1*mb, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Resize(ia, 0, 0); !errors.Is(err, pool.ErrConfig) {
		t.Fatalf("Resize to 0: %v", err)
	}
}

func TestBorrowLoanReturned(t *testing.T) {
	parts, _ := pool.Split(10*mb, []float64{0.5, 0.5}, []int64{2 * mb})
	e := newLRU(t, true, parts...)
	small, _ := e.AddFunc(1*mb, 0)
	large, _ := e.AddFunc(7*mb, 0)
	id, _, err := e.Admit(large, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(0); s.Lent != 2*mb || s.Used != 2*mb {
		t.Fatalf("small partition after loan: %+v", s)
	}
	// The small partition has 3 MB left; a fourth small container drops
	// because its memory is on loan.
	for i := range 4 {
		_, _, err := e.Admit(small, time.Duration(i))
		if (i < 3) != (err == nil) {
			t.Fatalf("small admit %d: %v", i, err)
		}
	}
	if err := e.Remove(id); err != nil {
		t.Fatal(err)
	}
	if s := e.Stats(0); s.Lent != 0 || s.Used != 3*mb {
		t.Fatalf("loan not returned: %+v", s)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
}

func TestBorrowReclaim(t *testing.T) {
	parts, _ := pool.Split(10*mb, []float64{0.5, 0.5}, []int64{2 * mb})
	e := newLRU(t, true, parts...)
	small, _ := e.AddFunc(1*mb, 0)
	large, _ := e.AddFunc(7*mb, 0)
	id, _, err := e.Admit(large, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Idle, the large container's 2 MB loan can be reclaimed: the small
	// partition fills its 5 MB by evicting it.
	if err := e.Release(id, 1); err != nil {
		t.Fatal(err)
	}
	var evicted []pool.ID
	for i := range 5 {
		_, ev, err := e.Admit(small, time.Duration(2+i))
		if err != nil {
			t.Fatalf("small admit %d: %v", i, err)
		}
		evicted = append(evicted, ev...)
	}
	if !slices.Equal(evicted, []pool.ID{id}) {
		t.Fatalf("evicted %v, want the idle borrower %v", evicted, id)
	}
	if s0, s1 := e.Stats(0), e.Stats(1); s0.Lent != 0 || s0.Used != 5*mb || s1.Evictions != 1 || s1.Containers != 0 {
		t.Fatalf("after reclaim: small %+v large %+v", s0, s1)
	}
	// Now the small partition is full and the large one empty: five more
	// small containers borrow from it, an eleventh drops.
	for i := range 6 {
		_, ev, err := e.Admit(small, time.Duration(10+i))
		if (i < 5) != (err == nil) || len(ev) != 0 {
			t.Fatalf("small admit %d with the small partition full: %v, %v", 6+i, ev, err)
		}
	}
	if s0, s1 := e.Stats(0), e.Stats(1); s0.Borrowed != 5*mb || s1.Lent != 5*mb || s1.Used != 5*mb || s0.Drops != 1 {
		t.Fatalf("after borrowing: small %+v large %+v", s0, s1)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
}

func TestOversize(t *testing.T) {
	// 70/30 of 1000 MB: the large partition holds 300 MB.
	parts, _ := pool.Split(1000*mb, []float64{0.7, 0.3}, []int64{225 * mb})
	t.Run("static pools drop", func(t *testing.T) {
		e := newLRU(t, false, parts...)
		big, _ := e.AddFunc(400*mb, 0)
		if p, _ := e.Partition(big); p != 1 {
			t.Fatalf("400 MB routed to %d, want the large partition", p)
		}
		if _, _, err := e.Admit(big, 0); !errors.Is(err, pool.ErrDrop) {
			t.Fatalf("Admit: %v, want ErrDrop", err)
		}
		if (pool.Config{Partitions: parts}).Fits(400 * mb) {
			t.Error("Fits(400 MB) without Oversize")
		}
	})

	e, err := pool.New(pool.Config{Partitions: parts, Oversize: true, NewPolicy: lru})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := e.AddFunc(100*mb, 0)
	large, _ := e.AddFunc(250*mb, 0)
	mid, _ := e.AddFunc(400*mb, 0)
	whole, _ := e.AddFunc(1000*mb, 0)
	for _, tc := range []struct {
		fn   pool.Fn
		part int
	}{{small, 0}, {large, 1}, {mid, 0}, {whole, 0}} {
		if p, _ := e.Partition(tc.fn); p != tc.part {
			t.Errorf("function %d routed to %d, want %d", tc.fn, p, tc.part)
		}
	}
	check := func() {
		t.Helper()
		if err := e.Check(false); err != nil {
			t.Fatal(err)
		}
	}
	// Larger than its partition: placed in the largest one, no loan.
	im, _, err := e.Admit(mid, 0)
	if err != nil {
		t.Fatalf("400 MB: %v", err)
	}
	check()
	if s := e.Stats(0); s.Used != 400*mb || s.Borrowed != 0 {
		t.Fatalf("after the 400 MB container: %+v", s)
	}
	// Idle containers everywhere: the whole-memory function evicts them
	// all, its own partition's first, and borrows the large partition.
	e.Release(im, 1)
	is, _, _ := e.Admit(small, 2)
	e.Release(is, 3)
	il, _, _ := e.Admit(large, 4)
	e.Release(il, 5)
	check()
	iw, ev, err := e.Admit(whole, 6)
	if err != nil {
		t.Fatalf("1000 MB with idle containers: %v", err)
	}
	if !slices.Equal(ev, []pool.ID{im, is, il}) {
		t.Fatalf("evicted %v, want %v", ev, []pool.ID{im, is, il})
	}
	check()
	if s0, s1 := e.Stats(0), e.Stats(1); s0.Borrowed != 300*mb || s1.Lent != 300*mb || s0.Used != 700*mb {
		t.Fatalf("loan: %+v %+v", s0, s1)
	}
	// Busy, it holds everything: others drop until it is idle, then
	// evict it.
	if _, _, err := e.Admit(large, 7); !errors.Is(err, pool.ErrDrop) {
		t.Fatalf("large while the whole pool is busy: %v", err)
	}
	e.Release(iw, 8)
	_, ev, err = e.Admit(large, 9)
	if err != nil || !slices.Equal(ev, []pool.ID{iw}) {
		t.Fatalf("large after release: %v %v, want the idle borrower evicted", ev, err)
	}
	check()
	// A busy container in the lender leaves too little: nothing is
	// evicted and the call drops.
	is, _, _ = e.Admit(small, 10)
	e.Release(is, 11)
	if _, ev, err := e.Admit(whole, 12); !errors.Is(err, pool.ErrDrop) || len(ev) != 0 {
		t.Fatalf("1000 MB beside a busy 250 MB: %v %v", ev, err)
	}
	check()
	for _, tc := range []struct {
		size int64
		fits bool
	}{{100 * mb, true}, {700 * mb, true}, {1000 * mb, true}, {1000*mb + 1, false}} {
		if got := e.Fits(tc.size); got != tc.fits {
			t.Errorf("Fits(%d) = %v", tc.size, got)
		}
	}
}

func TestUsage(t *testing.T) {
	e := newLRU(t, false, pool.Partition{Capacity: 100 * mb})
	a, _ := e.AddFunc(10*mb, 0)
	b, _ := e.AddFunc(20*mb, 0)
	want := func(fn pool.Fn, u pool.Usage) {
		t.Helper()
		got, err := e.Usage(fn)
		if err != nil || got != u {
			t.Fatalf("Usage(%d) = %+v, %v; want %+v", fn, got, err, u)
		}
		if err := e.Check(false); err != nil {
			t.Fatal(err)
		}
	}
	i1, _, _ := e.Admit(a, 0)
	i2, _, _ := e.Admit(a, 1)
	e.Admit(b, 2)
	want(a, pool.Usage{Containers: 2, Busy: 2, BusySize: 20 * mb})
	want(b, pool.Usage{Containers: 1, Busy: 1, BusySize: 20 * mb})
	e.Resize(i1, 4*mb, 0)
	want(a, pool.Usage{Containers: 2, Busy: 2, BusySize: 14 * mb})
	e.Release(i1, 3)
	want(a, pool.Usage{Containers: 2, Busy: 1, BusySize: 10 * mb})
	e.Resize(i1, 2*mb, 0) // idle: no busy bytes change
	want(a, pool.Usage{Containers: 2, Busy: 1, BusySize: 10 * mb})
	if id, ok := e.Acquire(a, 4); !ok || id != i1 {
		t.Fatalf("Acquire: %v %v", id, ok)
	}
	want(a, pool.Usage{Containers: 2, Busy: 2, BusySize: 12 * mb})
	e.Remove(i2)
	want(a, pool.Usage{Containers: 1, Busy: 1, BusySize: 2 * mb})
	if _, err := e.Usage(9); !errors.Is(err, pool.ErrNotFound) {
		t.Fatalf("Usage(unknown): %v", err)
	}
}

// TestStartCharge: a function's start charge decides what its new
// containers take of a partition, not where they go.
func TestStartCharge(t *testing.T) {
	e := newLRU(t, false, pool.Partition{MaxSize: 4 * mb, Capacity: 10 * mb}, pool.Partition{Capacity: 10 * mb})
	a, _ := e.AddFunc(8*mb, 0) // routed to the second partition
	if err := e.SetStartCharge(a, -1); !errors.Is(err, pool.ErrConfig) {
		t.Fatalf("SetStartCharge(-1) = %v, want ErrConfig", err)
	}
	if err := e.SetStartCharge(a, 3*mb); err != nil {
		t.Fatal(err)
	}
	// Three fit where one 8 MB container would leave room for no second.
	var ids []pool.ID
	for i := range 3 {
		id, ev, err := e.Admit(a, time.Duration(i))
		if err != nil || len(ev) != 0 {
			t.Fatalf("Admit %d = %v, %v", i, ev, err)
		}
		ids = append(ids, id)
	}
	if p, _ := e.Partition(a); p != 1 {
		t.Fatalf("partition %d, want 1: the size routes", p)
	}
	if s := e.Stats(1); s.Used != 9*mb || s.Containers != 3 {
		t.Fatalf("stats %+v, want 9 MB in 3 containers", s)
	}
	if u, _ := e.Usage(a); u.BusySize != 9*mb {
		t.Fatalf("busy size %d, want 9 MB", u.BusySize)
	}
	if _, _, err := e.Admit(a, 3); !errors.Is(err, pool.ErrDrop) {
		t.Fatalf("fourth Admit: %v, want ErrDrop (only busy containers)", err)
	}
	// A pre-warm is charged the same.
	e.Release(ids[0], 4)
	e.Remove(ids[0])
	if _, err := e.Warm(a, 5); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	if s := e.Stats(1); s.Used != 9*mb {
		t.Fatalf("after Warm: used %d MB, want 9", s.Used/mb)
	}
	// 0 charges the size again.
	if err := e.SetStartCharge(a, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Admit(a, 6); !errors.Is(err, pool.ErrDrop) {
		t.Fatalf("Admit at the size with 1 MB free: %v, want ErrDrop", err)
	}
	if err := e.Check(false); err != nil {
		t.Fatal(err)
	}
	// Above the size, the size counts.
	e2 := newLRU(t, false, pool.Partition{Capacity: 10 * mb})
	b, _ := e2.AddFunc(8*mb, 0)
	if err := e2.SetStartCharge(b, 20*mb); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e2.Admit(b, 0); err != nil {
		t.Fatalf("Admit charged above its size: %v, want it charged its 8 MB", err)
	}
	if s := e2.Stats(0); s.Used != 8*mb {
		t.Fatalf("used %d MB, want 8", s.Used/mb)
	}
}
