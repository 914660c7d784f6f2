package worker

import (
	"sync"
	"time"
)

// busyGate counts invocations under way (a start, if any, and the call),
// so that work that can wait (tearing down a sandbox whose call is done,
// making spares) keeps out of a burst on a machine with few cores: done
// as soon as the starts are, it delays the burst's last answers.
type busyGate struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed while n == 0
}

func newBusyGate() *busyGate {
	g := &busyGate{idle: make(chan struct{})}
	close(g.idle)
	return g
}

func (g *busyGate) enter() {
	g.mu.Lock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()
}

func (g *busyGate) leave() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// wait returns once no invocation is under way, or after max, or when
// stop closes.
func (g *busyGate) wait(max time.Duration, stop <-chan struct{}) {
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
