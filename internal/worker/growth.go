package worker

import (
	"sync"
	"time"
)

// growthEvery is how often a sandbox in a call is measured against its
// charge. The first sample comes one period into the call, so a shorter
// call costs a timer and nothing else; a longer one a read of its
// cgroup's usage per period.
var growthEvery = 25 * time.Millisecond

// growthWatch charges the warm pool for memory a sandbox takes during
// its call (warmCache.grow), evicting paused sandboxes to make room. A
// sandbox is charged what it held when paused, or its function's start
// charge when new; without the watch, a call that grows past that would
// overrun the budget unseen until its sandbox is paused.
type growthWatch struct {
	w    *Worker
	inst *instance

	start time.Time // of the call

	mu      sync.Mutex // held by a sample; guards the fields below
	t       *time.Timer
	charge  int64         // the sandbox's charge when last looked up; 0: unknown
	grewAt  time.Duration // into the call, of the last growth charged; 0: none
	stopped bool
}

// watchGrowth starts watching inst's call, whose handler started at
// start (before now if it was sent with the sandbox's start).
func (w *Worker) watchGrowth(inst *instance, start time.Time) *growthWatch {
	g := &growthWatch{w: w, inst: inst, start: start}
	g.mu.Lock()
	g.t = time.AfterFunc(growthEvery, g.sample)
	g.mu.Unlock()
	return g
}

func (g *growthWatch) sample() {
	victims, grown := g.measure()
	if grown {
		g.w.metrics.growth.Inc()
	}
	// Outside the lock: once the worker is closing, destroyAsync
	// destroys in place, which stop must not wait for.
	g.w.destroyAsync(victims)
}

func (g *growthWatch) measure() (victims []*instance, grown bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return nil, false
	}
	defer g.t.Reset(growthEvery)
	m, err := g.inst.group.MemoryUsage()
	if err != nil {
		return nil, false // the sandbox is dying; its call fails and says why
	}
	usage := int64(m)
	// The pool's lock only when the sandbox may have outgrown its charge.
	if g.charge > 0 && usage <= g.charge+growthSlack(g.charge) {
		return nil, false
	}
	victims, g.charge, grown = g.w.cache.grow(g.inst, usage)
	if grown {
		g.grewAt = time.Since(g.start)
	}
	return victims, grown
}

// stop ends the watch; it may be called more than once. It waits for a
// measurement under way, so the caller may then release or destroy the
// sandbox, and hands nothing to another goroutine, so a short call's
// answer does not wait for the scheduler.
func (g *growthWatch) stop() {
	g.mu.Lock()
	g.stopped = true
	g.t.Stop()
	g.mu.Unlock()
}

// grew returns how far into the call its last growth was charged (0:
// none); for after stop.
func (g *growthWatch) grew() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.grewAt
}
