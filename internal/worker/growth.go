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

	mu      sync.Mutex // held by a sample; guards the fields below
	t       *time.Timer
	stopped bool
}

// watchGrowth starts watching inst's call.
func (w *Worker) watchGrowth(inst *instance) *growthWatch {
	g := &growthWatch{w: w, inst: inst}
	g.mu.Lock()
	g.t = time.AfterFunc(growthEvery, g.sample)
	g.mu.Unlock()
	return g
}

func (g *growthWatch) sample() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	if m, err := g.inst.group.MemoryUsage(); err == nil { // else the sandbox is dying; its call fails and says why
		victims, grown := g.w.cache.grow(g.inst, int64(m))
		if grown {
			g.w.metrics.growth.Inc()
		}
		g.w.destroyAsync(victims)
	}
	g.t.Reset(growthEvery)
}

// stop ends the watch. It waits for a sample under way, so the caller
// may then release or destroy the sandbox; it hands nothing to another
// goroutine, so a short call's answer does not wait for the scheduler.
func (g *growthWatch) stop() {
	g.mu.Lock()
	g.stopped = true
	g.t.Stop()
	g.mu.Unlock()
}
