package worker

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestComeWeight(t *testing.T) {
	for _, c := range []struct {
		age  time.Duration
		want uint64
	}{
		{-time.Millisecond, 100}, // a clock step back: a sandbox's own
		{0, 100},
		{49 * time.Millisecond, 100},
		{comeStep, 200},
		{2 * comeStep, 400},
		{3 * comeStep, 800},
		{4 * comeStep, 1600},
		{time.Second, 1600}, // bounded
		{comeHold - time.Millisecond, 1600},
		{comeHold, 100}, // held long enough: no lead any more
		{time.Minute, 100},
	} {
		if got := comeWeight(c.age); got != c.want {
			t.Errorf("comeWeight(%v) = %d, want %d", c.age, got, c.want)
		}
	}
}

// TestFirstCome drives the bookkeeping on a fake clock: a call is
// weighed by its arrival as it is added, moves up as it ages, goes back
// to a sandbox's weight past comeHold and when done, and no weight is
// written that is already set.
func TestFirstCome(t *testing.T) {
	now := time.Unix(1000, 0)
	var writes []uint64
	fc := newFirstCome(func(inst *instance, w uint64) {
		inst.weight = w
		writes = append(writes, w)
	})
	fc.now = func() time.Time { return now }

	a, b := &instance{id: "a"}, &instance{id: "b"}
	fc.add(a, now) // arrived now: a sandbox's weight, no write
	if len(writes) != 0 {
		t.Fatalf("a call just arrived wrote %v", writes)
	}
	fc.add(b, now.Add(-150*time.Millisecond)) // waited 150 ms for its start
	if b.weight != 800 {
		t.Fatalf("a call that arrived 150 ms ago: weight %d, want 800", b.weight)
	}
	now = now.Add(60 * time.Millisecond)
	fc.update()
	if a.weight != 200 || b.weight != 1600 {
		t.Fatalf("after 60 ms: weights %d and %d, want 200 and 1600", a.weight, b.weight)
	}
	n := len(writes)
	fc.update()
	if len(writes) != n {
		t.Fatalf("an update with nothing changed wrote %v", writes[n:])
	}
	now = now.Add(comeHold - 100*time.Millisecond) // b past comeHold, a not
	fc.update()
	if a.weight != 1600 || b.weight != 100 {
		t.Fatalf("b past its hold: weights %d and %d, want 1600 and 100", a.weight, b.weight)
	}
	fc.done(a)
	if a.weight != 100 {
		t.Fatalf("a done: weight %d, want 100", a.weight)
	}
	n = len(writes)
	fc.done(b) // already back at 100
	if len(writes) != n {
		t.Fatalf("done at a sandbox's weight wrote %v", writes[n:])
	}
	fc.update()
	if len(writes) != n {
		t.Fatalf("an update with no call running wrote %v", writes[n:])
	}
}

// TestFirstComeRun: the loop wakes for a call added to an empty set,
// moves its weight with real time, and ends with its context.
func TestFirstComeRun(t *testing.T) {
	var mu sync.Mutex
	fc := newFirstCome(func(inst *instance, w uint64) {
		mu.Lock()
		inst.weight = w
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		fc.run(ctx)
		close(ended)
	}()
	time.Sleep(3 * comeTick) // idle: the loop waits for a call
	inst := &instance{id: "a"}
	fc.add(inst, time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		w := inst.weight
		mu.Unlock()
		if w == comeMax {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight %d 10 s after the call was added, want %d", w, comeMax)
		}
		time.Sleep(comeTick)
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end with its context")
	}
}
