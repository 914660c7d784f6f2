package reserve

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Config configures a Pool of resources of type T: how many to keep, and
// the functions that make, clean and destroy one. Make, Destroy and
// Closed are required.
type Config[T any] struct {
	// Reserve is how many ready resources the refiller keeps (0: none;
	// the pool then only keeps what comes back).
	Reserve int
	// MaxIdle caps the ready resources: a clean one that comes back is
	// kept while fewer are ready and destroyed otherwise, and so is one
	// the refiller finishes after Puts refilled the reserve. Values below
	// Reserve count as Reserve.
	MaxIdle int
	// RefillDelay is how long the refiller waits after the last Take
	// before it cleans or makes resources, unless the reserve is low (see
	// Level); negative: no wait.
	RefillDelay time.Duration
	// Retry, if positive, is how long the refiller waits after a failed
	// Make before it tries again; zero waits for the next Take or
	// Release (Take's caller makes one itself meanwhile).
	Retry time.Duration
	// CleanTimeout bounds the cleaning of one released resource in the
	// background (default 10 s).
	CleanTimeout time.Duration

	// Make makes a resource for the reserve. ctx ends when the pool
	// closes.
	Make func(ctx context.Context) (T, error)
	// Clean makes a resource that came back as good as new; nil if
	// resources never come back (Put and Release then destroy them).
	Clean func(ctx context.Context, t T) error
	// Destroy removes a resource for good.
	Destroy func(ctx context.Context, t T) error
	// Discard, if set, is given each resource that Clean, or Destroy
	// after a Put, failed on, with the error: the pool forgets it, and
	// Discard must see it destroyed or kept aside. If nil, it is
	// destroyed.
	Discard func(t T, err error)
	// Closed is the error Take and Fill return once the pool is closed.
	Closed error
}

// Stats counts a pool's work since it was made.
type Stats struct {
	Ready   int   // clean resources waiting
	Hits    int64 // Takes served from the reserve
	Misses  int64 // Takes that found none ready
	Made    int64 // resources the refiller made (some then destroyed: MaxIdle ready)
	Reused  int64 // Puts that kept a resource ready
	Removed int64 // Puts that destroyed a clean resource (MaxIdle ready)
}

// Pool keeps resources made ahead of need, so that the critical path
// takes a ready one instead of making it: a refiller tops the reserve up
// in the background (see Loop), and resources that come back are cleaned
// and kept, up to MaxIdle. What is resource-specific (how to make, clean
// and destroy one, and what Take's caller does on a miss) comes with the
// Config.
//
// A Pool is safe for concurrent use. Close destroys the ready and
// released resources; those still out are their owners'.
type Pool[T any] struct {
	cfg Config[T]

	life   context.Context // ends at Close; Make's context
	cancel context.CancelFunc
	kick   chan struct{} // wakes the refiller
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	ready   []T       // guarded by mu; clean, waiting to be taken
	dirty   []T       // guarded by mu; released, waiting to be cleaned
	lastGet time.Time // guarded by mu
	st      Stats     // guarded by mu
	closed  bool      // guarded by mu
}

// New starts a pool; its reserve fills in the background (Fill waits for
// it). The caller must Close it.
func New[T any](cfg Config[T]) *Pool[T] {
	cfg.Reserve = max(cfg.Reserve, 0)
	cfg.MaxIdle = max(cfg.MaxIdle, cfg.Reserve)
	if cfg.CleanTimeout <= 0 {
		cfg.CleanTimeout = 10 * time.Second
	}
	if cfg.Discard == nil {
		destroy := cfg.Destroy
		cfg.Discard = func(t T, _ error) { destroy(context.Background(), t) }
	}
	p := &Pool[T]{cfg: cfg, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.life, p.cancel = context.WithCancel(context.Background())
	go p.refill()
	p.wake()
	return p
}

// Take hands out a ready resource, the most recently cleaned first. ok
// is false when none is ready (counted as a miss): the caller makes one
// itself. Take fails with Config.Closed once the pool is closed. Either
// way it wakes the refiller.
func (p *Pool[T]) Take() (t T, ok bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return t, false, p.cfg.Closed
	}
	p.lastGet = time.Now()
	if n := len(p.ready); n > 0 {
		t, ok = p.ready[n-1], true
		p.ready = p.ready[:n-1]
		p.st.Hits++
	} else {
		p.st.Misses++
	}
	p.mu.Unlock()
	p.wake()
	return t, ok, nil
}

// Put cleans t and keeps it ready, or destroys it when MaxIdle are ready
// or the pool is closed. If cleaning or destroying fails, t goes to
// Discard and Put returns that error. Put blocks while it cleans; call
// it off the critical path.
func (p *Pool[T]) Put(ctx context.Context, t T) error {
	if p.cfg.Clean == nil {
		return p.destroy(ctx, t)
	}
	if err := p.cfg.Clean(ctx, t); err != nil {
		p.cfg.Discard(t, err)
		return err
	}
	p.mu.Lock()
	if !p.closed && len(p.ready) < p.cfg.MaxIdle {
		p.ready = append(p.ready, t)
		p.st.Reused++
		p.mu.Unlock()
		return nil
	}
	p.st.Removed++
	p.mu.Unlock()
	return p.destroy(ctx, t)
}

func (p *Pool[T]) destroy(ctx context.Context, t T) error {
	if err := p.cfg.Destroy(ctx, t); err != nil {
		p.cfg.Discard(t, err)
		return err
	}
	return nil
}

// Release hands t back without waiting: the refiller cleans it (as Put
// does) once Takes have quietened down. After Close, t is destroyed.
func (p *Pool[T]) Release(t T) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.cfg.Destroy(context.Background(), t) // a closed pool keeps nothing aside
		return
	}
	p.dirty = append(p.dirty, t)
	p.mu.Unlock()
	p.wake()
}

// Fill blocks until the reserve is full or ctx ends.
func (p *Pool[T]) Fill(ctx context.Context) error {
	for {
		p.mu.Lock()
		n, closed := len(p.ready), p.closed
		p.mu.Unlock()
		if closed {
			return p.cfg.Closed
		}
		if n >= p.cfg.Reserve {
			return nil
		}
		p.wake()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// Stats returns the pool's counters.
func (p *Pool[T]) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.Ready = len(p.ready)
	return s
}

// Closed reports whether Close has been called.
func (p *Pool[T]) Closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close stops the refiller, then destroys the ready and released
// resources. Closing twice is harmless.
func (p *Pool[T]) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	p.cancel()
	<-p.done
	p.mu.Lock()
	left := append(p.ready, p.dirty...)
	p.ready, p.dirty = nil, nil
	p.mu.Unlock()
	var errs []error
	for _, t := range left {
		if err := p.cfg.Destroy(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pool[T]) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// refill cleans released resources and makes new ones until the reserve
// is full, whenever woken; it holds back while Takes keep coming unless
// the reserve runs low.
func (p *Pool[T]) refill() {
	defer close(p.done)
	Loop(p.kick, p.stop, p.cfg.RefillDelay, p.due, p.makeOne)
}

func (p *Pool[T]) due() Due {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := Level(p.closed, len(p.ready), p.cfg.Reserve, p.lastGet)
	if len(p.dirty) > 0 {
		d.Clean = p.cleanOne
	}
	return d
}

// cleanOne cleans the oldest released resource back into the reserve.
func (p *Pool[T]) cleanOne() {
	p.mu.Lock()
	if len(p.dirty) == 0 {
		p.mu.Unlock()
		return
	}
	t := p.dirty[0]
	p.dirty = p.dirty[1:]
	p.mu.Unlock()
	// Close ends a clean in progress (and waits for it): the resource
	// goes to Discard, as any unclean one does.
	ctx, cancel := context.WithTimeout(p.life, p.cfg.CleanTimeout)
	p.Put(ctx, t) // a failure went to Discard
	cancel()
}

// makeOne makes a resource for the reserve. One finished after Puts
// filled the pool to MaxIdle is destroyed: the pool never holds more.
func (p *Pool[T]) makeOne() (more, closed bool) {
	t, err := p.cfg.Make(p.life)
	if err != nil {
		if p.cfg.Retry > 0 {
			go func() {
				select {
				case <-time.After(p.cfg.Retry):
					p.wake()
				case <-p.stop:
				}
			}()
		}
		return false, false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.cfg.Destroy(context.Background(), t)
		return false, true
	}
	p.st.Made++
	if len(p.ready) >= p.cfg.MaxIdle {
		p.mu.Unlock()
		p.cfg.Destroy(context.Background(), t)
		return false, false
	}
	p.ready = append(p.ready, t)
	p.mu.Unlock()
	return true, false
}
