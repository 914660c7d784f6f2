package worker

import (
	"testing"
	"time"
)

// TestDumpTurnsMostWantedFirst checks that the turn goes to the waiting
// key rank puts highest, the earliest among equals, that a stop takes a
// waiter out, and that the last release frees the turn.
func TestDumpTurnsMostWantedFirst(t *testing.T) {
	q := newDumpTurns()
	ranks := map[string]float64{"b": 1, "c": 5, "d": 1}
	rank := func(k string) float64 { return ranks[k] }
	never := make(chan struct{})
	if !q.acquire("a", never, rank) {
		t.Fatal("a free turn not given")
	}
	got := make(chan string, 4)
	wait := func(key string, stop <-chan struct{}) {
		go func() {
			if q.acquire(key, stop, rank) {
				got <- key
			} else {
				got <- "stopped " + key
			}
		}()
	}
	stopE := make(chan struct{})
	for _, k := range []string{"b", "c", "d"} {
		wait(k, never)
		waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.waiting[k] != nil })
	}
	wait("e", stopE)
	waitFor(t, func() bool { q.mu.Lock(); defer q.mu.Unlock(); return q.waiting["e"] != nil })
	close(stopE)
	if k := <-got; k != "stopped e" {
		t.Fatalf("got %q, want e stopped", k)
	}
	for _, want := range []string{"c", "b", "d"} { // c ranks highest; b came before d
		q.release(rank)
		select {
		case k := <-got:
			if k != want {
				t.Fatalf("turn went to %s, want %s", k, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no turn given after a release; want %s", want)
		}
	}
	q.release(rank)
	if q.held || len(q.waiting) != 0 {
		t.Fatalf("turn still held (%v) or waiters left (%d) after the last release", q.held, len(q.waiting))
	}
	if !q.acquire("f", never, rank) {
		t.Fatal("a freed turn not given")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
