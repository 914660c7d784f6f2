package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Starts past MaxStarts wait for a turn, in arrival order, and give up
// with their context; a negative bound is none.
func TestStartSlots(t *testing.T) {
	w := &Worker{starts: startSlots(2)}
	ctx := context.Background()
	var dones []func()
	for range 2 {
		done, err := w.startSlot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, done)
	}
	order := make(chan int, 2)
	for i := range 2 {
		go func() {
			done, err := w.startSlot(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			done()
		}()
		time.Sleep(20 * time.Millisecond) // queued in this order
	}
	select {
	case i := <-order:
		t.Fatalf("start %d got a turn while two were under way", i)
	case <-time.After(50 * time.Millisecond):
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := w.startSlot(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting past its deadline: %v", err)
	}
	dones[0]()
	if i := <-order; i != 0 {
		t.Errorf("start %d went first, want 0 (arrival order)", i)
	}
	if i := <-order; i != 1 {
		t.Errorf("then start %d, want 1", i)
	}
	dones[1]()

	w = &Worker{starts: startSlots(-1)}
	for range 100 {
		if _, err := w.startSlot(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
