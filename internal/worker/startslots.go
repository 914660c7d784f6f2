package worker

import "context"

// startSlots returns the tokens of max starts under way at once (nil:
// no bound, for max < 0).
func startSlots(max int) chan struct{} {
	if max < 0 {
		return nil
	}
	return make(chan struct{}, max)
}

// startSlot waits for a start's turn (Config.MaxStarts) and returns the
// function that gives it back. Waiting starts go in arrival order: a
// channel's blocked senders are woken first in, first out.
func (w *Worker) startSlot(ctx context.Context) (func(), error) {
	if w.starts == nil {
		return func() {}, nil
	}
	select {
	case w.starts <- struct{}{}:
		return func() { <-w.starts }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
