package pool_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/pool/policy"
)

// TestObserve follows two functions through a 100 MB LRU pool and checks
// the events it reports, in order, with each container's charge and the
// pool's memory after each.
func TestObserve(t *testing.T) {
	var got []string
	e, err := pool.New(pool.Config{
		Partitions: []pool.Partition{{Capacity: 100 * mb}},
		NewPolicy:  func() pool.Policy { return policy.LRU{} },
		Observe: func(ev pool.Event) {
			got = append(got, fmt.Sprintf("%v %v f%d %d/%d", ev.At, ev.Op, ev.Fn, ev.Size/mb, ev.Used/mb))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e.AddFunc(60*mb, 0)
	b, _ := e.AddFunc(50*mb, 0)
	s := time.Second
	if _, ok := e.Acquire(a, 1*s); ok {
		t.Fatal("hit in an empty pool")
	}
	ia, _, err := e.Admit(a, 1*s)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ia, 2*s); err != nil {
		t.Fatal(err)
	}
	ia, ok := e.Acquire(a, 3*s)
	if !ok {
		t.Fatal("miss with a idle")
	}
	if _, err := e.Resize(ia, 70*mb, 3*s); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ia, 4*s); err != nil {
		t.Fatal(err)
	}
	e.Acquire(b, 5*s)
	ib, victims, err := e.Admit(b, 5*s) // evicts a: 70 + 50 > 100
	if err != nil || len(victims) != 1 {
		t.Fatalf("admit b: %v, victims %v", err, victims)
	}
	if err := e.Remove(ib); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"1s admit f0 60/60",
		"2s release f0 60/60",
		"3s hit f0 60/60",
		"3s resize f0 70/70",
		"4s release f0 70/70",
		"5s evict f0 70/0",
		"5s admit f1 50/50",
		"5s remove f1 50/0",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n%q\nwant\n%q", got, want)
	}
	// Only one observer call per change: misses and drops are not events.
	got = got[:0]
	big, _ := e.AddFunc(200*mb, 0)
	e.Acquire(big, 6*s)
	if _, _, err := e.Admit(big, 6*s); err == nil {
		t.Fatal("a 200 MB container fit in 100 MB")
	}
	if len(got) != 0 {
		t.Fatalf("a drop reported %q", got)
	}
}

// TestObserveExpire checks that an expiry is reported at the now given
// to Expire.
func TestObserveExpire(t *testing.T) {
	var got []pool.Event
	e, err := pool.New(pool.Config{
		Partitions: []pool.Partition{{Capacity: 100 * mb}},
		NewPolicy:  func() pool.Policy { return policy.TTL{Keep: time.Minute} },
		Observe:    func(ev pool.Event) { got = append(got, ev) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := e.AddFunc(10*mb, 0)
	id, _, _ := e.Admit(f, 0)
	_ = e.Release(id, time.Second)
	if ids := e.Expire(2 * time.Minute); len(ids) != 1 {
		t.Fatalf("expired %v", ids)
	}
	last := got[len(got)-1]
	if last.Op != pool.OpExpire || last.At != 2*time.Minute || last.ID != id || last.Used != 0 || last.Op.String() != "expire" {
		t.Fatalf("last event %+v", last)
	}
}
