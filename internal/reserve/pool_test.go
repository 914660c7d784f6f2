package reserve

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

var errClosed = errors.New("closed")

// ints is a resource world of numbered resources: it records what was
// made, cleaned and destroyed, and can hold Make until told to go on.
type ints struct {
	mu        sync.Mutex
	next      int
	destroyed []int
	discarded []int
	dirtyOnes map[int]bool  // Clean fails for these
	gate      chan struct{} // if not nil, Make waits for it
	making    chan struct{} // if not nil, Make signals it started
	stuck     chan struct{} // if not nil, Clean signals it and waits for its ctx
}

func (w *ints) config() Config[int] {
	return Config[int]{
		Closed: errClosed,
		Make: func(ctx context.Context) (int, error) {
			if w.making != nil {
				w.making <- struct{}{}
			}
			if w.gate != nil {
				select {
				case <-w.gate:
				case <-ctx.Done():
					return 0, ctx.Err()
				}
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			w.next++
			return w.next, nil
		},
		Clean: func(ctx context.Context, n int) error {
			if w.stuck != nil {
				w.stuck <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.dirtyOnes[n] {
				return errors.New("stuck")
			}
			return nil
		},
		Destroy: func(ctx context.Context, n int) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.destroyed = append(w.destroyed, n)
			return nil
		},
		Discard: func(n int, err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.discarded = append(w.discarded, n)
		},
	}
}

func (w *ints) gone() ([]int, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.destroyed), slices.Clone(w.discarded)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPoolTakePutRelease(t *testing.T) {
	w := &ints{dirtyOnes: map[int]bool{}}
	cfg := w.config()
	cfg.Reserve, cfg.MaxIdle, cfg.RefillDelay = 2, 3, -1
	p := New(cfg)
	defer p.Close(context.Background())
	if err := p.Fill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a, ok, err := p.Take()
	if err != nil || !ok {
		t.Fatalf("Take = %d, %v, %v; want a ready one", a, ok, err)
	}
	w.mu.Lock()
	w.dirtyOnes[a] = true
	w.mu.Unlock()
	if err := p.Put(ctxT(t), a); err == nil {
		t.Fatalf("Put of an uncleanable resource succeeded")
	}
	if _, discarded := w.gone(); !slices.Equal(discarded, []int{a}) {
		t.Errorf("discarded %v, want [%d]", discarded, a)
	}
	b, _, _ := p.Take()
	p.Release(b)
	waitFor(t, func() bool { return p.Stats().Reused == 1 })
	if s := p.Stats(); s.Hits != 2 || s.Ready > cfg.MaxIdle {
		t.Errorf("stats %+v: want 2 hits, at most %d ready", s, cfg.MaxIdle)
	}
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Take(); !errors.Is(err, errClosed) {
		t.Errorf("Take after Close = %v, want the Closed error", err)
	}
	if err := p.Fill(ctxT(t)); !errors.Is(err, errClosed) {
		t.Errorf("Fill after Close = %v, want the Closed error", err)
	}
	destroyed, _ := w.gone()
	if s := p.Stats(); len(destroyed) != int(s.Made)-1 {
		t.Errorf("destroyed %v of %d made (one discarded): want all the others", destroyed, s.Made)
	}
}

// TestPoolMakeKeepsMaxIdle holds the refiller's Make until Puts have
// filled the pool to MaxIdle: what it then makes is destroyed.
func TestPoolMakeKeepsMaxIdle(t *testing.T) {
	w := &ints{gate: make(chan struct{}), making: make(chan struct{}, 8)}
	cfg := w.config()
	cfg.Reserve, cfg.MaxIdle, cfg.RefillDelay = 1, 1, -1
	p := New(cfg)
	defer p.Close(context.Background())
	<-w.making
	w.gate <- struct{}{}
	if err := p.Fill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a, ok, _ := p.Take()
	if !ok {
		t.Fatal("Take after Fill found none ready")
	}
	<-w.making // the refiller is making one; Put fills the reserve meanwhile
	if err := p.Put(ctxT(t), a); err != nil {
		t.Fatal(err)
	}
	w.gate <- struct{}{}
	waitFor(t, func() bool { d, _ := w.gone(); return len(d) == 1 })
	if s := p.Stats(); s.Ready != 1 || s.Made != 2 {
		t.Errorf("stats %+v: want the one Put kept and the late one destroyed", s)
	}
}

// TestPoolCloseEndsAClean releases a resource whose clean only ends with
// its ctx: Close must not wait the clean's timeout out (a worker's
// shutdown has 4.5 s in all), and the resource goes to Discard.
func TestPoolCloseEndsAClean(t *testing.T) {
	w := &ints{stuck: make(chan struct{}, 1)}
	cfg := w.config()
	cfg.Reserve, cfg.MaxIdle, cfg.RefillDelay, cfg.CleanTimeout = 1, 1, -1, time.Minute
	p := New(cfg)
	if err := p.Fill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a, _, _ := p.Take()
	p.Release(a)
	<-w.stuck
	t0 := time.Now()
	if err := p.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("Close took %v with a clean in progress", d)
	}
	if _, discarded := w.gone(); !slices.Equal(discarded, []int{a}) {
		t.Errorf("discarded %v, want [%d]: the clean Close ended", discarded, a)
	}
}

func TestPoolRetriesFailedMake(t *testing.T) {
	var mu sync.Mutex
	fails := 2
	cfg := Config[int]{
		Reserve: 1, RefillDelay: -1, Retry: 10 * time.Millisecond, Closed: errClosed,
		Make: func(context.Context) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			if fails > 0 {
				fails--
				return 0, errors.New("not now")
			}
			return 1, nil
		},
		Destroy: func(context.Context, int) error { return nil },
	}
	p := New(cfg)
	defer p.Close(context.Background())
	// No Take or Fill wakes the refiller: only Retry does.
	waitFor(t, func() bool { return p.Stats().Ready == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met in 10 s")
		}
	}
}
