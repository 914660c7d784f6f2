package worker

import (
	"cmp"
	"math"
	"time"
)

// Config.ShortFirst: a call's sandbox gets a CPU weight by how long its
// function's calls have run lately (wall time, every call the handler
// ran): a sandbox's 100 for calls of about shortRef, up to twice that
// for shorter ones and down to half for longer ones, in steps of √2. At
// a burst, when more sandboxes run than there are CPUs, a call that
// usually takes 150 ms then gets four times the share of one that takes
// two seconds, so it ends soon instead of being stretched by them; alone
// on a CPU, any weight runs at full speed.
//
// The weight comes from past calls, not the one running: a function
// whose calls are mostly short gets 200 for its rare long one too. The
// bounds keep that, and any function's share, within twice a sandbox's
// (and its CPU quota applies as ever).
const shortRef = 500 * time.Millisecond

// shortSteps are the weights, from shortest to longest calls: √2 apart,
// so that a function's moving average moves its weight (a cgroup write)
// only now and then.
var shortSteps = [...]uint64{200, 141, 100, 71, 50}

// shortWeight is the CPU weight of a call of a function whose calls have
// run for run on average (0: none yet, a sandbox's own 100): the step
// nearest 100·shortRef/run, on a log scale.
func shortWeight(run time.Duration) uint64 {
	if run <= 0 {
		return sandboxWeight
	}
	k := math.Round(2 * math.Log2(float64(shortRef)/float64(run)))
	k = min(max(k, -2), 2)
	return shortSteps[2-int(k)]
}

// sandboxWeight is the CPU weight a sandbox's limits give it (limits).
const sandboxWeight = 100

// observeRun folds a call's run time into st's moving average (weight
// 0.3 for the new call: a function whose calls get longer loses its
// priority within a few calls).
func (st *fnState) observeRun(d time.Duration) {
	for {
		old := st.run.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)*3/10
		}
		if st.run.CompareAndSwap(old, next) {
			return
		}
	}
}

// weigh gives inst, about to run a call of st's function, its
// Config.ShortFirst weight. A sandbox serves one call at a time, and
// Config.FirstCome (which sets inst.weight under its own lock) is not on
// with ShortFirst, so inst.weight needs no lock here.
func (w *Worker) weigh(inst *instance, st *fnState) {
	if !w.cfg.ShortFirst {
		return
	}
	want := shortWeight(time.Duration(st.run.Load()))
	have := cmp.Or(inst.weight, sandboxWeight)
	if want == have {
		return
	}
	w.setWeight(inst, want)
}

// setWeight sets the CPU weight of inst's sandbox for the call it runs
// (Config.ShortFirst, Config.FirstCome).
func (w *Worker) setWeight(inst *instance, weight uint64) {
	if err := inst.group.SetCPUWeight(weight); err != nil {
		w.log.Debug("weighing a call's CPU", "sandbox", inst.id, "weight", weight, "err", err)
		return
	}
	inst.weight = weight
}
