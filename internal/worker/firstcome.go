package worker

import (
	"cmp"
	"context"
	"sync"
	"time"
)

// Config.FirstCome: while a call runs, its sandbox's CPU weight grows
// with the time since the call reached the worker, doubling every
// comeStep from a sandbox's 100 to comeMax. At a burst, when more calls
// want the CPUs than there are, the earlier ones then take most of it
// and end in turn, instead of all being stretched to the burst's end: a
// burst of n equal calls on one CPU ends on average after about (n+1)/2
// calls' time rather than n. Alone on a CPU, any weight runs at full
// speed, and a call that waits (sleeps, I/O) leaves its share to others.
//
// It treats every call alike, whatever its function's past, so it does
// not shift CPU between tenants as Config.ShortFirst does. Its bound is
// comeHold: a call running longer than that goes back to a sandbox's
// weight, so a call that spins keeps no lead over the calls after it
// for longer than that. The weights are shares among the sandboxes
// only: the worker, its zygotes and the rest of the host keep theirs.
const (
	comeStep = 50 * time.Millisecond
	comeMax  = 1600 // 16× a sandbox's, reached after 4 steps
	comeHold = 2 * time.Second
	comeTick = 25 * time.Millisecond
)

// comeWeight is the Config.FirstCome weight of a call that reached the
// worker age ago and has been running (or starting) since.
func comeWeight(age time.Duration) uint64 {
	if age < 0 || age >= comeHold {
		return sandboxWeight
	}
	w := uint64(sandboxWeight)
	for s := comeStep; s <= age && w < comeMax; s += comeStep {
		w *= 2
	}
	return min(w, comeMax)
}

// firstCome keeps the running calls' arrival times and moves their
// sandboxes' weights as they age, every comeTick while any runs.
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

// update gives each running call the weight of its age.
func (fc *firstCome) update() {
	now := fc.now()
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for inst, arrived := range fc.calls {
		fc.weighLocked(inst, comeWeight(now.Sub(arrived)))
	}
}

func (fc *firstCome) weighLocked(inst *instance, want uint64) {
	if want != cmp.Or(inst.weight, sandboxWeight) {
		fc.set(inst, want)
	}
}

// add counts inst's call, which reached the worker at arrived, as
// running, and weighs it at once: a call that waited for its start is
// already old.
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
	fc.weighLocked(inst, comeWeight(fc.now().Sub(arrived)))
}

// done ends inst's call and gives its sandbox a sandbox's weight back.
func (fc *firstCome) done(inst *instance) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	delete(fc.calls, inst)
	fc.weighLocked(inst, sandboxWeight)
}
