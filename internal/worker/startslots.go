package worker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// startHold is the longest a start holds its turn (Config.MaxStarts):
// past it the start goes on outside the bound. A start that takes long,
// a big import or a handler that sleeps at import to hold the turns,
// keeps the others out for no longer than that.
var startHold = time.Second

// startTurns bounds the starts under way at once: n in all (nil: no
// bound, for n < 0), and half of them for one function, so that one
// function's starts leave the others turns.
type startTurns struct {
	all   chan struct{}
	perFn int

	mu  sync.Mutex
	fns map[string]chan struct{} // by function; dropped when none is held
	n   map[string]int           // turns held or waited for, by function
}

func newStartTurns(n int) *startTurns {
	if n < 0 {
		return nil
	}
	return &startTurns{all: make(chan struct{}, n), perFn: max(1, n/2),
		fns: map[string]chan struct{}{}, n: map[string]int{}}
}

// fn returns function name's own turns, counting one more user.
func (t *startTurns) fn(name string) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.fns[name]
	if c == nil {
		c = make(chan struct{}, t.perFn)
		t.fns[name] = c
	}
	t.n[name]++
	return c
}

// unuse counts one user of function name's turns less.
func (t *startTurns) unuse(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n[name]--; t.n[name] == 0 {
		delete(t.n, name)
		delete(t.fns, name)
	}
}

// startTurn waits for a start of function name to have its turn, at most
// Config.QueueTimeout, and returns the function that ends it; the turn
// also ends by itself after startHold. Waiting starts go in arrival
// order: a channel's blocked senders are woken first in, first out.
func (w *Worker) startTurn(ctx context.Context, name string) (func(), error) {
	t := w.starts
	if t == nil {
		return func() {}, nil
	}
	t0 := time.Now()
	timer := time.NewTimer(w.cfg.QueueTimeout)
	defer timer.Stop()
	mine := t.fn(name)
	acquire := func(c chan struct{}) error {
		select {
		case c <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stop:
			return ErrClosed
		case <-timer.C:
			return fmt.Errorf("%s: no turn to start within %v (%d starts under way at most): %w",
				name, w.cfg.QueueTimeout, cap(t.all), ErrTooMany)
		}
	}
	if err := acquire(mine); err != nil {
		t.unuse(name)
		return nil, err
	}
	if err := acquire(t.all); err != nil {
		<-mine
		t.unuse(name)
		return nil, err
	}
	w.metrics.turnWait.Observe(time.Since(t0).Seconds())
	var once sync.Once
	end := func(overrun bool) {
		once.Do(func() {
			// Counted before the turn is given back: whoever takes it
			// next sees the count.
			if overrun {
				w.metrics.turnOverruns.Inc()
			}
			<-t.all
			<-mine
			t.unuse(name)
		})
	}
	hold := time.AfterFunc(startHold, func() { end(true) })
	return func() { hold.Stop(); end(false) }, nil
}
