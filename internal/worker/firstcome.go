package worker

import (
	"bytes"
	"cmp"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
)

// Config.FirstCome: while calls run, their sandboxes' CPU weights follow
// the order in which the calls reached the worker. A call runs from the
// start of its sandbox's load (a start it waits for: Worker.connect),
// with at least a sandbox's weight while it loads, or from its thaw. The
// running calls
// that arrived less than comeHold ago share the weight they would have
// by default, a sandbox's 100 each: each after the first four gets
// comeTail, and the first four share the rest in proportion to
// comeRank, 16 parts for the earliest, then 8, 4 and 2.
// At a burst, when more calls want the CPUs than there are, the earlier
// ones then take most of it and end in turn, instead of all being
// stretched to the burst's end: a burst of n equal calls on one CPU ends
// on average after about (n+1)/2 calls' time rather than n. Alone on a
// CPU, any weight runs at full speed, and a call that waits (sleeps,
// I/O) leaves its share to the others.
//
// A young call that has used comeCPU of CPU running its handler (its
// sandbox's load not counted) goes to the end of the order: at a burst
// led by a few calls that need far more CPU than the rest, the order by
// arrival alone made the rest wait behind them (in `hearth bench weights
// --heavy 2`, the light calls' mean response doubled). A call's CPU is
// its sandbox's (sandboxCPU), read every comeTick while at least two
// calls are young, from the first such reading on. Where the host keeps
// no CPU count per cgroup (v1 without cpuacct), it is the sum over the
// sandbox's live processes and the children they reaped: a call can hide
// CPU from it (children left unreaped), which wins it no more than the
// order by arrival, within comeHold.
//
// The young calls' weights add up to what they would be by default (but
// for loads raised to a sandbox's weight, which take no more than an
// unranked start did), so they take nothing from the calls past comeHold
// (a sandbox's weight each, as by default) nor from the rest of the
// host: the order only moves CPU among calls that arrived within
// comeHold of each other, from later to earlier, whatever their
// functions. A call alone keeps 100.
const (
	comeHold = 2 * time.Second
	comeCPU  = 300 * time.Millisecond
	comeTick = 50 * time.Millisecond // how often the young calls' CPU and age are read
)

// comeRank is the share of the call of rank r < comeTop (0: the
// earliest) among the first comeTop young running calls.
func comeRank(r int) uint64 { return 16 >> r }

const (
	comeTop = 4 // the young calls ranked by comeRank; the later get comeTail
	// comeTail is the weight of each young call after the first comeTop.
	// It is fixed so that a call's start or end rewrites the first
	// comeTop's weights and its own, not every young call's: with the
	// tail's weight a share of 100·n too, a burst of 200 calls made
	// about 7,300 weight writes (20-30 µs each, under the lock), against
	// about 2,000 now.
	comeTail = sandboxWeight / 4
	comeMax  = 10000 // the highest weight a cgroup takes
)

// comeWeights returns the weights of n young running calls, earliest
// first. Together they have 100·n, as by default: comeTail each after
// the first comeTop, which share the rest by comeRank. A weight above
// comeMax is cut to it, which takes from no one (from 249 young calls
// on, when the earliest has 400 times a tail call's weight).
func comeWeights(n int) []uint64 {
	top := min(n, comeTop)
	var parts uint64
	for r := range top {
		parts += comeRank(r)
	}
	share := sandboxWeight*uint64(n) - comeTail*uint64(n-top)
	w := make([]uint64, n)
	for r := range n {
		if r >= top {
			w[r] = comeTail
			continue
		}
		w[r] = min(comeMax, max(1, (comeRank(r)*share+parts/2)/parts))
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

	// cpu reads the CPU time inst's processes have used so far.
	cpu func(inst *instance) (time.Duration, bool)

	mu      sync.Mutex
	calls   map[*instance]*comeCall // running calls by sandbox
	stopped bool                    // the worker is closing: no more writes
}

// comeCall is one running call.
type comeCall struct {
	arrived time.Time
	cpu0    time.Duration // its sandbox's CPU when first read; -1 before
	heavy   bool          // has used comeCPU: last in the order
	loading bool          // its sandbox's handler loads (load): at least sandboxWeight
}

func newFirstCome(set func(*instance, uint64)) *firstCome {
	return &firstCome{set: set, now: time.Now, cpu: sandboxCPU, wake: make(chan struct{}, 1),
		calls: make(map[*instance]*comeCall)}
}

// sandboxCPU is the CPU time inst's sandbox has used: its cgroup's own
// count where the host keeps one (v2, or v1 with cpuacct), else procCPU.
func sandboxCPU(inst *instance) (time.Duration, bool) {
	if d, err := inst.group.CPUUsage(); err == nil {
		return d, true
	}
	return procCPU(inst.group)
}

// procCPU sums the CPU time of the processes in g, from /proc/PID/stat
// with their waited-for children's (at most comeProcs of them, so that a
// sandbox full of processes costs the worker no more).
func procCPU(g *cgroup.Group) (time.Duration, bool) {
	pids, err := g.Pids()
	if err != nil || len(pids) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, pid := range pids[:min(len(pids), comeProcs)] {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // gone since
		}
		if d, ok := statCPU(b); ok {
			sum += d
		}
	}
	return sum, true
}

// comeProcs bounds the processes sandboxCPU reads per sandbox.
const comeProcs = 16

// statCPU returns utime + stime + cutime + cstime of a /proc/PID/stat
// line: fields 14 to 17, counted after the command's closing
// parenthesis (the command may hold spaces and parentheses).
func statCPU(b []byte) (time.Duration, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 15 {
		return 0, false
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	// USER_HZ: 100 on every Linux ABI.
	return time.Duration(ticks) * 10 * time.Millisecond, true
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

// update reads the young calls' CPU, outside the lock, and gives each
// running call the weight of its rank.
func (fc *firstCome) update() {
	now := fc.now()
	fc.mu.Lock()
	var probe []*comeCall
	var insts []*instance
	young := 0
	for inst, c := range fc.calls {
		if now.Sub(c.arrived) < comeHold {
			young++
			if !c.heavy {
				probe, insts = append(probe, c), append(insts, inst)
			}
		}
	}
	fc.mu.Unlock()
	if young < 2 {
		// Alone or none: no order to keep, nothing to read. A call's
		// CPU is counted from the first tick at which it has company.
		probe, insts = nil, nil
	}
	used := make([]time.Duration, len(insts))
	ok := make([]bool, len(insts))
	for i, inst := range insts {
		used[i], ok[i] = fc.cpu(inst)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for i, c := range probe {
		switch {
		case !ok[i] || fc.calls[insts[i]] != c: // unread, or done since
		case c.cpu0 < 0:
			c.cpu0 = used[i]
		case used[i]-c.cpu0 >= comeCPU:
			c.heavy = true
		}
	}
	fc.updateLocked()
}

func (fc *firstCome) updateLocked() {
	if fc.stopped {
		return
	}
	now := fc.now()
	order := make([]*instance, 0, len(fc.calls))
	for inst, c := range fc.calls {
		if now.Sub(c.arrived) >= comeHold {
			fc.weighLocked(inst, sandboxWeight)
			continue
		}
		order = append(order, inst)
	}
	slices.SortFunc(order, func(a, b *instance) int {
		ca, cb := fc.calls[a], fc.calls[b]
		return cmp.Or(compareBool(ca.heavy, cb.heavy), ca.arrived.Compare(cb.arrived), cmp.Compare(a.id, b.id))
	})
	for i, w := range comeWeights(len(order)) {
		if fc.calls[order[i]].loading {
			w = max(w, sandboxWeight)
		}
		fc.weighLocked(order[i], w)
	}
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

func (fc *firstCome) weighLocked(inst *instance, want uint64) {
	if want != cmp.Or(inst.weight, sandboxWeight) {
		fc.set(inst, want)
	}
}

// load counts the call that inst's start is for, which reached the
// worker at arrived, as running from its handler's load on
// (Worker.connect), and weighs the running calls by their new order.
// While it loads, the sandbox has at least a sandbox's weight: a call
// that came before the running ones loads ahead of them, and one that
// came after loads as fast as an unranked start would (measured in the
// replay: ranked down to its place, a fork start's median load grew from
// 44 to 65 ms with up to 5 calls running, and from 58 to 134 ms with 6
// to 11).
func (fc *firstCome) load(inst *instance, arrived time.Time) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if _, ok := fc.calls[inst]; ok || fc.stopped {
		return
	}
	fc.addLocked(inst, arrived)
	fc.calls[inst].loading = true
	fc.updateLocked()
}

// running counts inst's call, which reached the worker at arrived, as
// running its handler: added if no start added it (a warm call), else
// its CPU counted afresh, so that its load's, spent while the call
// waited for it, does not send it to the end of the order.
func (fc *firstCome) running(inst *instance, arrived time.Time) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.stopped {
		return
	}
	c, ok := fc.calls[inst]
	if !ok {
		fc.addLocked(inst, arrived)
		fc.updateLocked()
		return
	}
	changed := c.heavy || c.loading
	c.arrived, c.cpu0, c.heavy, c.loading = arrived, -1, false, false
	if changed {
		fc.updateLocked()
	}
}

func (fc *firstCome) addLocked(inst *instance, arrived time.Time) {
	if len(fc.calls) == 0 {
		select {
		case fc.wake <- struct{}{}:
		default:
		}
	}
	fc.calls[inst] = &comeCall{arrived: arrived, cpu0: -1}
}

// done ends inst's call, gives its sandbox a sandbox's weight back, and
// moves the calls after it up. A call already done is left alone.
func (fc *firstCome) done(inst *instance) { fc.remove(inst, true) }

// forget drops inst, whose sandbox is being destroyed, with no write to
// its group, and moves the calls after it up.
func (fc *firstCome) forget(inst *instance) { fc.remove(inst, false) }

func (fc *firstCome) remove(inst *instance, reset bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if _, ok := fc.calls[inst]; !ok || fc.stopped {
		return
	}
	delete(fc.calls, inst)
	if reset {
		fc.weighLocked(inst, sandboxWeight)
	}
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
