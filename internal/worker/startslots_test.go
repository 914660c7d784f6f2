package worker

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Starts past MaxStarts wait for a turn, in arrival order; one function
// takes half the turns at most; a start holds its turn for startHold at
// most; a wait ends with its context, with the worker, or after
// QueueTimeout; a negative bound is none.
func TestStartTurns(t *testing.T) {
	// Turns and waits that outlast any stall of a busy host, but where
	// the test lets them run out (below).
	old := startHold
	startHold = 30 * time.Second
	t.Cleanup(func() { startHold = old })
	newW := func(max int) *Worker {
		return &Worker{cfg: Config{QueueTimeout: 30 * time.Second}, starts: newStartTurns(max), stop: make(chan struct{}), metrics: newMetrics()}
	}
	w := newW(4)
	ctx := context.Background()
	turn := func(name string) func() {
		t.Helper()
		done, err := w.startTurn(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return done
	}
	a1, a2 := turn("a"), turn("a")
	// a holds its half: its third waits, while b goes.
	third := make(chan func(), 1)
	go func() {
		done, err := w.startTurn(ctx, "a")
		if err != nil {
			t.Error(err)
		}
		third <- done
	}()
	b1 := turn("b")
	select {
	case <-third:
		t.Fatal("a's third start got a turn while a held half of them")
	case <-time.After(50 * time.Millisecond):
	}
	a1()
	a3 := <-third

	// All four held: later starts wait, in arrival order.
	b2 := turn("b")
	order := make(chan string, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done, err := w.startTurn(ctx, name)
			if err != nil {
				t.Error(err)
				return
			}
			order <- name
			done()
		}()
		// Queued in this order: c parked in its wait before d starts
		// (a sleep instead let a preempted c arrive second on a busy host).
		waitTurnWaiters(t, i+1)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := w.startTurn(cctx, "e"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting past its context: %v", err)
	}
	b1()
	for _, want := range []string{"c", "d"} {
		select {
		case got := <-order:
			if got != want {
				t.Errorf("%s went, want %s (arrival order: c, then d)", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no turn for %s within 30 s of b's", want)
		}
	}
	wg.Wait() // c and d gave their turns back
	a2()
	a3()
	b2()
	a3() // a turn ended twice is given back once
	w.starts.mu.Lock()
	left, fns := len(w.starts.all), len(w.starts.fns)
	w.starts.mu.Unlock()
	if left != 0 || fns != 0 {
		t.Errorf("%d turns held and %d functions known after all ended", left, fns)
	}

	// A turn not given back ends after startHold; a wait ends after
	// QueueTimeout, or when the worker closes. The bounds are far apart
	// (20 ms, startHold's 1 s, 10 s), so that a test thread preempted on
	// a busy host does not see one pass before the other.
	startHold = time.Second
	w = newW(1)
	w.cfg.QueueTimeout = 20 * time.Millisecond
	tA := time.Now()
	turn("a")
	if _, err := w.startTurn(ctx, "b"); !errors.Is(err, ErrTooMany) {
		t.Errorf("a wait past QueueTimeout: %v, want ErrTooMany", err)
	}
	w.cfg.QueueTimeout = 10 * time.Second
	t0 := time.Now()
	turn("b")
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("a's turn, never ended, held b for %v, want about startHold (%v)", d, startHold)
	}
	if d := time.Since(tA); d < startHold {
		t.Errorf("a's turn ran out %v after it began, before startHold (%v)", d, startHold)
	}
	// Metrics: a's turn ran out, b's did not yet; a and b waited (the
	// timed-out wait is not counted).
	if n := counterValue(t, w.metrics.turnOverruns); n != 1 {
		t.Errorf("hearth_start_turn_overruns_total %v, want 1", n)
	}
	if n := histCount(t, w.metrics.turnWait); n != 2 {
		t.Errorf("hearth_start_turn_wait_seconds counts %d waits, want 2", n)
	}
	go close(w.stop)
	if _, err := w.startTurn(ctx, "c"); !errors.Is(err, ErrClosed) {
		t.Errorf("a wait when the worker closes: %v, want ErrClosed", err)
	}

	w = newW(-1)
	for range 100 {
		if _, err := w.startTurn(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
}

// waitTurnWaiters waits until n goroutines that TestStartTurns started
// are parked in startTurn's wait for a turn (a select), at most 10 s.
func waitTurnWaiters(t *testing.T, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		got := 0
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, ").startTurn(") && strings.Contains(g, ".TestStartTurns in goroutine") {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d starts waiting for a turn after 10 s, want %d", got, n)
		}
	}
}
