package reserve

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// fake is a pool of ints: dirty ones are cleaned before new ones are made.
type fake struct {
	mu      sync.Mutex
	ready   []int
	dirty   []int
	size    int
	lastGet time.Time
	log     []string
}

func (f *fake) due() Due {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := Due{Short: len(f.ready) < f.size, SinceGet: time.Since(f.lastGet), Low: len(f.ready) == 0}
	if len(f.dirty) > 0 {
		d.Clean = func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.ready = append(f.ready, f.dirty[0])
			f.dirty = f.dirty[1:]
			f.log = append(f.log, "clean")
		}
	}
	return d
}

func (f *fake) add() (bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready = append(f.ready, 0)
	f.log = append(f.log, "make")
	return true, false
}

func TestLoopCleansThenMakesAndHoldsBack(t *testing.T) {
	f := &fake{size: 3, dirty: []int{7}, ready: []int{1}, lastGet: time.Now()}
	kick, stop, done := make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	go func() {
		Loop(kick, stop, 100*time.Millisecond, f.due, f.add)
		close(done)
	}()
	t0 := time.Now()
	kick <- struct{}{}
	for {
		f.mu.Lock()
		n := len(f.ready)
		f.mu.Unlock()
		if n == 3 {
			break
		}
		if time.Since(t0) > 5*time.Second {
			t.Fatal("reserve not refilled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A Get just happened and one was ready: it waited out the hold.
	if d := time.Since(t0); d < 90*time.Millisecond {
		t.Errorf("refilled after %v, within the 100ms hold", d)
	}
	f.mu.Lock()
	log := slices.Clone(f.log)
	f.mu.Unlock()
	if !slices.Equal(log, []string{"clean", "make"}) {
		t.Errorf("work %v, want the clean before the make", log)
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Loop did not stop")
	}
}
