package worker

import "sync"

// dumpTurns lets background snapshot creations run one at a time, the
// most wanted first rather than in arrival order: under steady load each
// waits up to snapshotDelay for a quiet moment and then dumps, so a queue
// of tens takes minutes, and a function started often should not wait
// behind many started once.
type dumpTurns struct {
	mu      sync.Mutex
	held    bool
	seq     uint64
	waiting map[string]*dumpWaiter // by snapshot key: one creation per key
}

type dumpWaiter struct {
	seq  uint64 // arrival order, for ties
	turn chan struct{}
}

func newDumpTurns() *dumpTurns { return &dumpTurns{waiting: map[string]*dumpWaiter{}} }

// acquire waits for key's turn and reports true when it has it, or false
// if stop closed first. The caller gives the turn back with release.
func (q *dumpTurns) acquire(key string, stop <-chan struct{}, rank func(string) float64) bool {
	q.mu.Lock()
	if !q.held {
		q.held = true
		q.mu.Unlock()
		return true
	}
	q.seq++
	wt := &dumpWaiter{seq: q.seq, turn: make(chan struct{})}
	q.waiting[key] = wt
	q.mu.Unlock()
	select {
	case <-wt.turn:
		return true
	case <-stop:
	}
	q.mu.Lock()
	if q.waiting[key] == wt {
		delete(q.waiting, key)
		q.mu.Unlock()
		return false
	}
	q.mu.Unlock()
	// Given the turn as stop closed: pass it on.
	q.release(rank)
	return false
}

// release gives the turn to the waiting key that rank puts highest
// (the earliest among equals), or frees it.
func (q *dumpTurns) release(rank func(string) float64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var best string
	var bestRank float64
	var bw *dumpWaiter
	for k, wt := range q.waiting {
		r := rank(k)
		if bw == nil || r > bestRank || r == bestRank && wt.seq < bw.seq {
			best, bestRank, bw = k, r, wt
		}
	}
	if bw == nil {
		q.held = false
		return
	}
	delete(q.waiting, best)
	close(bw.turn)
}
