package worker

import (
	"sync"
	"time"
)

// startGate counts starts under way, so that work that can wait (the
// teardown of a sandbox whose call is done) keeps out of a burst of
// starts on a machine with few cores.
type startGate struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
}

func newStartGate() *startGate {
	g := &startGate{idle: make(chan struct{})}
	close(g.idle)
	return g
}

func (g *startGate) enter() {
	g.mu.Lock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()
}

func (g *startGate) leave() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// wait returns once no start is under way, or after max, or when stop
// closes.
func (g *startGate) wait(max time.Duration, stop <-chan struct{}) {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-stop:
	}
}
