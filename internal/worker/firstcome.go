package worker

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Config.FirstCome: while calls run, their sandboxes' CPU weights follow
// the order in which the calls reached the worker: the earliest running
// call gets comeMax, the next half that, and so on down to a sandbox's
// 100 (a call running alone keeps 100: there is nothing to order). At a burst, when more calls want the CPUs than there are, the
// earlier ones then take most of it and end in turn, instead of all
// being stretched to the burst's end: a burst of n equal calls on one
// CPU ends on average after about (n+1)/2 calls' time rather than n.
// Alone on a CPU, any weight runs at full speed, and a call that waits
// (sleeps, I/O) leaves its share to the others.
//
// It treats every call alike, whatever its function's past, so it does
// not shift CPU between tenants as Config.ShortFirst does. Its bound is
// comeHold: a call running longer than that leaves the order at a
// sandbox's weight, so a call that spins keeps no lead over the calls
// after it for longer than that. No call gets less than a sandbox's
// weight, and the weights are shares among the sandboxes only: the
// worker, its zygotes and the rest of the host keep theirs.
const (
	comeMax  = 1600 // 16× a sandbox's
	comeHold = 2 * time.Second
	comeTick = 50 * time.Millisecond // how often calls past comeHold are let go
)

// comeWeight is the Config.FirstCome weight of the call of rank r among
// the running calls younger than comeHold (0: the earliest), or of one
// outside the order (r < 0).
func comeWeight(r int) uint64 {
	if r < 0 || r >= 8 {
		return sandboxWeight
	}
	return max(uint64(comeMax)>>r, sandboxWeight)
}

// firstCome keeps the running calls' arrival times and their sandboxes'
// weights by their order: on each call's start and end, and every
// comeTick while any runs, for the calls past comeHold.
type firstCome struct {
	set  func(inst *instance, weight uint64) // writes inst's CPU weight
	now  func() time.Time
	wake chan struct{} // a call was added to an empty set

	mu    sync.Mutex
	calls map[*instance]time.Time // running calls by sandbox: their arrival
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
	if len(order) == 1 {
		// Alone, its weight orders nothing: no cgroup write for it.
		fc.weighLocked(order[0], sandboxWeight)
		return
	}
	for r, inst := range order {
		fc.weighLocked(inst, comeWeight(r))
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
// moves the calls after it up.
func (fc *firstCome) done(inst *instance) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	delete(fc.calls, inst)
	fc.weighLocked(inst, sandboxWeight)
	fc.updateLocked()
}
