package worker

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Config.FirstCome: while calls run, their sandboxes' CPU weights follow
// the order in which the calls reached the worker. The running calls
// that arrived less than comeHold ago share the weight they would have
// by default, a sandbox's 100 each, in proportion to comeRank: 16 parts
// for the earliest, 8 for the next, then 4, 2, and 1 for each later one.
// At a burst, when more calls want the CPUs than there are, the earlier
// ones then take most of it and end in turn, instead of all being
// stretched to the burst's end: a burst of n equal calls on one CPU ends
// on average after about (n+1)/2 calls' time rather than n. Alone on a
// CPU, any weight runs at full speed, and a call that waits (sleeps,
// I/O) leaves its share to the others.
//
// The young calls' weights add up to what they would be by default, so
// they take nothing from the calls past comeHold (a sandbox's weight
// each, as by default) nor from the rest of the host: the order only
// moves CPU among calls that arrived within comeHold of each other, from
// later to earlier, whatever their functions. A call alone keeps 100.
const (
	comeHold = 2 * time.Second
	comeTick = 50 * time.Millisecond // how often calls past comeHold are let go
)

// comeRank is the share of the call of rank r (0: the earliest) among
// the young running calls: halving per rank down to 1.
func comeRank(r int) uint64 {
	if r >= 4 {
		return 1
	}
	return 16 >> r
}

// comeWeights returns the weights of n young running calls, earliest
// first: their comeRank shares of 100·n, each at least 1.
func comeWeights(n int) []uint64 {
	var sum uint64
	for r := range n {
		sum += comeRank(r)
	}
	w := make([]uint64, n)
	for r := range n {
		w[r] = max(1, (comeRank(r)*sandboxWeight*uint64(n)+sum/2)/sum)
	}
	return w
}

// firstCome keeps the running calls' arrival times and their sandboxes'
// weights by their order: on each call's start and end, and every
// comeTick while any runs, for the calls past comeHold.
type firstCome struct {
	set  func(inst *instance, weight uint64) // writes inst's CPU weight
	now  func() time.Time
	wake chan struct{} // a call was added to an empty set

	mu      sync.Mutex
	calls   map[*instance]time.Time // running calls by sandbox: their arrival
	stopped bool                    // the worker is closing: no more writes
}

func newFirstCome(set func(*instance, uint64)) *firstCome {
	return &firstCome{set: set, now: time.Now, wake: make(chan struct{}, 1),
		calls: make(map[*instance]time.Time)}
}

// run moves the weights until ctx ends.
func (fc *firstCome) run(ctx context.Context) {
	t := time.NewTicker(comeTick)
	defer t.Stop()
	for {
		fc.mu.Lock()
		idle := len(fc.calls) == 0
		fc.mu.Unlock()
		if idle {
			select {
			case <-fc.wake:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-t.C:
			fc.update()
		case <-ctx.Done():
			return
		}
	}
}

// update gives each running call the weight of its rank.
func (fc *firstCome) update() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.updateLocked()
}

func (fc *firstCome) updateLocked() {
	if fc.stopped {
		return
	}
	now := fc.now()
	order := make([]*instance, 0, len(fc.calls))
	for inst, arrived := range fc.calls {
		if now.Sub(arrived) >= comeHold {
			fc.weighLocked(inst, sandboxWeight)
			continue
		}
		order = append(order, inst)
	}
	slices.SortFunc(order, func(a, b *instance) int {
		return cmp.Or(fc.calls[a].Compare(fc.calls[b]), cmp.Compare(a.id, b.id))
	})
	for i, w := range comeWeights(len(order)) {
		fc.weighLocked(order[i], w)
	}
}

func (fc *firstCome) weighLocked(inst *instance, want uint64) {
	if want != cmp.Or(inst.weight, sandboxWeight) {
		fc.set(inst, want)
	}
}

// add counts inst's call, which reached the worker at arrived, as
// running, and weighs the running calls by their new order.
func (fc *firstCome) add(inst *instance, arrived time.Time) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.stopped {
		return
	}
	if len(fc.calls) == 0 {
		select {
		case fc.wake <- struct{}{}:
		default:
		}
	}
	fc.calls[inst] = arrived
	fc.updateLocked()
}

// done ends inst's call, gives its sandbox a sandbox's weight back, and
// moves the calls after it up. A call already done is left alone.
func (fc *firstCome) done(inst *instance) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if _, ok := fc.calls[inst]; !ok || fc.stopped {
		return
	}
	delete(fc.calls, inst)
	fc.weighLocked(inst, sandboxWeight)
	fc.updateLocked()
}

// stop ends all writes: the worker is destroying the sandboxes, and
// their groups go back to the pools.
func (fc *firstCome) stop() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.stopped = true
	clear(fc.calls)
}
