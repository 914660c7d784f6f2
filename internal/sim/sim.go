package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/trace"
)

// DefaultThreshold is the KiSS small/large boundary (pool.DefaultThreshold).
const DefaultThreshold = pool.DefaultThreshold

// Split is a partitioning of the pool's memory.
type Split struct {
	Name       string    // for output, e.g. "unified" or "80/20"
	Fractions  []float64 // memory share of each partition, summing to 1
	Thresholds []int64   // largest function size of each partition but the last
}

// Unified is the single-pool split.
func Unified() Split { return Split{Name: "unified", Fractions: []float64{1}} }

// ParseSplit parses "unified" or percentages like "80/20" (or "60/30/10"),
// small partitions first, with one size threshold in bytes between each
// pair of partitions.
func ParseSplit(s string, thresholds []int64) (Split, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "unified") || s == "100" {
		return Unified(), nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 {
		return Split{}, fmt.Errorf("split %q: want \"unified\" or percentages like 80/20: %w", s, ErrConfig)
	}
	if len(thresholds) != len(parts)-1 {
		return Split{}, fmt.Errorf("split %q needs %d thresholds, have %d: %w", s, len(parts)-1, len(thresholds), ErrConfig)
	}
	f, err := pool.ParsePercents(s)
	if err != nil {
		return Split{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return Split{Name: s, Fractions: f, Thresholds: thresholds}, nil
}

// Config is one simulated point.
type Config struct {
	Policy    string             // name, for output
	NewPolicy func() pool.Policy // required
	Memory    int64              // pool memory in bytes
	Split     Split              // zero value means unified
	Borrow    bool               // see pool.Config.Borrow
	// Observe, if not nil, is told of every change to a container (see
	// pool.Config.Observe), with the simulated time; an Event's Fn is
	// its function's index in Workload.Funcs.
	Observe func(pool.Event)
	// SmallMax classifies functions as small (size <= SmallMax) or large
	// for the split metrics; 0 means DefaultThreshold.
	SmallMax int64
	// SampleEvery is the memory sampling period; 0 means one minute,
	// negative disables sampling.
	SampleEvery time.Duration
	// Check verifies the engine's invariants while running (memory never
	// over capacity, consistent accounting); slow, for tests.
	Check bool
	// Progress, if set, is incremented as invocations are simulated.
	Progress *atomic.Int64
	// PerFunc counts invocations per function too (Result.Funcs), for
	// comparing a small workload with a live run function by function.
	PerFunc bool
	// Queue, if positive, lets an invocation that finds no room wait for
	// memory up to that long, as the live worker's requests do (its
	// on_drop: queue): it retries, in arrival order, whenever a container
	// is released, first for an idle container of its function and then
	// for room, and is a drop only if its wait ends first. Its run starts
	// when it gets a container. The partitions' Drops statistics then
	// also count the failed tries.
	Queue time.Duration
	// PassLimit, with Queue, bounds how long a waiting invocation that
	// does not fit lets later ones that do take the room first, as the
	// live worker's pass_limit: past it, for PassHold (0: until it
	// leaves), later ones in its partition wait behind it (they still
	// take an idle container of their own function). 0: no bound (first
	// fit). Unlike the worker's, the simulator's queue has no fair
	// shares: a waiter of a function over its share holds the others
	// back too.
	PassLimit, PassHold time.Duration
	// BusyAfter is how long an invocation must run to be charged its
	// function's Busy size: the live worker samples a call's memory
	// first that far into it (25 ms), so a shorter one grows unseen.
	BusyAfter time.Duration
}

// Class aggregates the invocations of one class of functions.
type Class struct {
	Invocations, Hits, Misses, Drops uint64
	// ColdTime sums the cold costs added to cold invocations; WarmTime sums
	// the warm execution times of every served invocation.
	ColdTime, WarmTime time.Duration
}

// ColdPct is the cold-start percentage, misses / (hits + misses).
func (c Class) ColdPct() float64 { return pct(c.Misses, c.Hits+c.Misses) }

// DropPct is the drop percentage, drops / invocations.
func (c Class) DropPct() float64 { return pct(c.Drops, c.Invocations) }

// ExecIncreasePct is the execution-time increase from cold starts,
// ColdTime / WarmTime, in percent.
func (c Class) ExecIncreasePct() float64 {
	if c.WarmTime == 0 {
		return 0
	}
	return 100 * float64(c.ColdTime) / float64(c.WarmTime)
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func (c *Class) add(d Class) {
	c.Invocations += d.Invocations
	c.Hits += d.Hits
	c.Misses += d.Misses
	c.Drops += d.Drops
	c.ColdTime += d.ColdTime
	c.WarmTime += d.WarmTime
}

// Sample is the pool's memory at one time.
type Sample struct {
	At    time.Duration
	Used  int64   // bytes of live containers
	Parts []int64 // bytes charged to each partition
}

// Result is the outcome of one simulated point.
type Result struct {
	Policy string // Config.Policy
	Memory int64  // pool bytes
	Split  string // split name
	Borrow bool

	// All counts every invocation; Small and Large split them by
	// Config.SmallMax.
	All, Small, Large Class
	Evictions         uint64        // idle containers evicted for room
	Growths           uint64        // invocations charged their function's Busy size
	Expirations       uint64        // idle containers whose keep-alive ended
	Prewarms          uint64        // containers started ahead of arrivals
	PeakUsed          int64         // most bytes of live containers at once
	Parts             []pool.Stats  // final per-partition statistics
	Samples           []Sample      // memory over time, every SampleEvery
	Wall              time.Duration // real time the run took
	// Funcs counts each function's invocations, by workload index, when
	// Config.PerFunc is set (ColdTime and WarmTime included).
	Funcs []Class

	checks uint64
}

// completion is a busy container and when its invocation ends. first
// marks a container's first invocation, after which it is charged its
// function's Paused size; idle, if positive, is the size a container
// grown to its function's Busy size for the invocation goes back to.
// With grow set it is instead when invocation call of the container is
// charged its growth (Func.GrowAt).
type completion struct {
	end   time.Duration
	id    pool.ID
	fn    int32
	first bool
	grow  bool
	idle  int64
	call  uint64
}

// compHeap is a min-heap of completions by end time.
type compHeap []completion

func (h *compHeap) push(c completion) {
	*h = append(*h, c)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p].end <= c.end {
			break
		}
		a[i] = a[p]
		i = p
	}
	a[i] = c
}

func (h *compHeap) pop() completion {
	a := *h
	top := a[0]
	n := len(a) - 1
	x := a[n]
	a = a[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && a[r].end < a[l].end {
			j = r
		}
		if a[j].end >= x.end {
			break
		}
		a[i] = a[j]
		i = j
	}
	if n > 0 {
		a[i] = x
	}
	*h = a
	return top
}

const never = time.Duration(math.MaxInt64)

// Run simulates one point.
func Run(ctx context.Context, w Workload, cfg Config) (Result, error) {
	start := time.Now()
	if cfg.NewPolicy == nil {
		return Result{}, fmt.Errorf("no policy: %w", ErrConfig)
	}
	if w.Open == nil || len(w.Funcs) == 0 {
		return Result{}, fmt.Errorf("empty workload: %w", ErrConfig)
	}
	if cfg.Memory <= 0 {
		return Result{}, fmt.Errorf("memory %d bytes: %w", cfg.Memory, ErrConfig)
	}
	sp := cfg.Split
	if len(sp.Fractions) == 0 {
		sp = Unified()
	}
	parts, err := pool.Split(cfg.Memory, sp.Fractions, sp.Thresholds)
	if err != nil {
		return Result{}, fmt.Errorf("split %q: %w", sp.Name, err)
	}
	e, err := pool.New(pool.Config{Partitions: parts, Borrow: cfg.Borrow, NewPolicy: cfg.NewPolicy, Observe: cfg.Observe})
	if err != nil {
		return Result{}, fmt.Errorf("creating pool: %w", err)
	}
	smallMax := cfg.SmallMax
	if smallMax == 0 {
		smallMax = DefaultThreshold
	}
	n := len(w.Funcs)
	fns := make([]pool.Fn, n)
	small := make([]bool, n)
	learned := make([]bool, n) // Start charged from here on
	kin := map[int32][]int{}   // functions by Func.Kin
	kinStart := map[int32]int64{}
	cold := make([]time.Duration, n)
	grows := false // some container may grow past the pool (Func.Busy)
	for i, f := range w.Funcs {
		if f.Paused < 0 {
			return Result{}, fmt.Errorf("function %d: paused size %d bytes: %w", i, f.Paused, ErrConfig)
		}
		if fns[i], err = e.AddFunc(f.Size, f.Cold); err != nil {
			return Result{}, fmt.Errorf("function %d: %w", i, err)
		}
		if f.Start < 0 {
			return Result{}, fmt.Errorf("function %d: start charge %d bytes: %w", i, f.Start, ErrConfig)
		}
		if f.Busy < 0 {
			return Result{}, fmt.Errorf("function %d: busy size %d bytes: %w", i, f.Busy, ErrConfig)
		}
		if f.GrowAt < 0 {
			return Result{}, fmt.Errorf("function %d: growth at %v: %w", i, f.GrowAt, ErrConfig)
		}
		grows = grows || f.Busy > 0
		if f.Kin > 0 {
			kin[f.Kin] = append(kin[f.Kin], i)
		}
		small[i] = f.Size <= smallMax
		cold[i] = f.Cold
	}
	var per []Class
	var scratch Class // counts nobody reads, when not per function
	if cfg.PerFunc {
		per = make([]Class, n)
	}
	every := cfg.SampleEvery
	if every == 0 {
		every = time.Minute
	}
	res := Result{Policy: cfg.Policy, Memory: cfg.Memory, Split: sp.Name, Borrow: cfg.Borrow}
	nextSample := never
	if every > 0 {
		nextSample = 0
	}
	var cls [2]Class // 0 small, 1 large
	comp := make(compHeap, 0, 1024)
	var inv trace.Invocation
	src := w.Open()
	var count, pending int64
	last := time.Duration(0)

	// Invocations waiting for memory (Config.Queue), in arrival order.
	type waiter struct {
		fn                 int32
		at, exec, deadline time.Duration
	}
	var waiting []waiter
	var failedTries, timeouts uint64 // engine drops that are not outcomes; outcomes the engine did not count
	classOf := func(fi int32) (*Class, *Class) {
		c := &cls[1]
		if small[fi] {
			c = &cls[0]
		}
		pf := &scratch
		if per != nil {
			pf = &per[fi]
		}
		return c, pf
	}
	// grow charges an invocation's container its function's Busy size,
	// if more than it is charged, evicting idle containers for it as the
	// live growth charge does, and returns the size to shrink back to
	// when the invocation ends (0: unchanged). (The live worker also lets
	// a call grow by a slack before it charges it; a paused sandbox,
	// measured, is far smaller than its calls' peaks.)
	grow := func(id pool.ID, fi int32, now time.Duration) (int64, error) {
		busy := w.Funcs[fi].Busy
		size, err := e.Size(id)
		if err != nil || busy <= size {
			return 0, err
		}
		if _, err := e.Resize(id, busy, now); err != nil {
			return 0, err
		}
		res.Growths++
		return size, nil
	}
	// Invocations whose growth is charged later (Func.GrowAt): the call
	// each container of them serves, and the size a grown one goes back
	// to at its end.
	var calls uint64
	growing := map[pool.ID]uint64{}
	grownFrom := map[pool.ID]int64{}
	// run holds container id, taken at at, for an invocation of fi whose
	// handler runs from from to end, and charges its growth at once or
	// schedules it.
	run := func(id pool.ID, fi int32, at, from, end time.Duration, first bool) error {
		f := &w.Funcs[fi]
		after := cmp.Or(f.GrowAt, cfg.BusyAfter)
		if f.Busy <= 0 || end-from < after {
			comp.push(completion{end: end, id: id, fn: fi, first: first})
			return nil
		}
		if f.GrowAt <= 0 {
			idle, err := grow(id, fi, at)
			if err != nil {
				return err
			}
			comp.push(completion{end: end, id: id, fn: fi, first: first, idle: idle})
			return nil
		}
		calls++
		growing[id] = calls
		comp.push(completion{end: from + after, id: id, fn: fi, grow: true, call: calls})
		comp.push(completion{end: end, id: id, fn: fi, first: first, call: calls})
		return nil
	}
	// passed reports whether waiter wt holds the later ones in its
	// partition back at now (Config.PassLimit): not once its wait has
	// ended (it is a drop at the next retry), nor when it needs more
	// than its partition holds (it borrows).
	partOf := func(fi int32) int {
		p, _ := e.Partition(fns[fi])
		return p
	}
	passed := func(wt waiter, now time.Duration) bool {
		waited := now - wt.at
		if cfg.PassLimit <= 0 || waited < cfg.PassLimit || cfg.PassHold > 0 && waited >= cfg.PassLimit+cfg.PassHold || wt.deadline < now {
			return false
		}
		return w.Funcs[wt.fn].Size <= e.Stats(partOf(wt.fn)).Capacity
	}
	// held reports whether an invocation of fi arriving at now must wait
	// behind a waiter passed for too long.
	held := func(fi int32, now time.Duration) bool {
		for _, wt := range waiting {
			if passed(wt, now) && partOf(wt.fn) == partOf(fi) {
				return true
			}
		}
		return false
	}
	retry := func(now time.Duration) error {
		kept := waiting[:0]
		var heldParts map[int]bool // partitions a waiter passed for too long holds
		for _, wt := range waiting {
			c, pf := classOf(wt.fn)
			if wt.deadline < now {
				c.Drops++
				pf.Drops++
				timeouts++
				continue
			}
			end := now + wt.exec
			id, ok := e.Acquire(fns[wt.fn], now)
			if ok {
				c.Hits++
				pf.Hits++
			} else {
				if heldParts[partOf(wt.fn)] {
					kept = append(kept, wt)
					continue
				}
				var err error
				id, _, err = e.Admit(fns[wt.fn], now)
				if err != nil {
					if !errors.Is(err, pool.ErrDrop) {
						return fmt.Errorf("admitting at %v: %w", now, err)
					}
					failedTries++
					kept = append(kept, wt)
					if passed(wt, now) {
						if heldParts == nil {
							heldParts = map[int]bool{}
						}
						heldParts[partOf(wt.fn)] = true
					}
					continue
				}
				c.Misses++
				c.ColdTime += cold[wt.fn]
				pf.Misses++
				pf.ColdTime += cold[wt.fn]
				end += cold[wt.fn]
			}
			c.WarmTime += wt.exec
			pf.WarmTime += wt.exec
			if err := run(id, wt.fn, now, end-wt.exec, end, !ok); err != nil {
				return fmt.Errorf("growing at %v: %w", now, err)
			}
			if u := e.Used(); u > res.PeakUsed {
				res.PeakUsed = u
			}
		}
		waiting = kept
		return nil
	}

	sample := func(at time.Duration) {
		s := Sample{At: at, Used: e.Used(), Parts: make([]int64, e.Partitions())}
		for i := range s.Parts {
			s.Parts[i] = e.Stats(i).Used
		}
		res.Samples = append(res.Samples, s)
		nextSample = at + every
	}
	// advance processes every event before t: completions at or before t,
	// expiries and samples strictly before t, pre-warms at or before t.
	advance := func(t time.Duration) error {
		for {
			next, kind := never, 0
			if len(comp) > 0 && comp[0].end <= t {
				next, kind = comp[0].end, 1
			}
			if x, ok := e.NextExpiry(); ok && x < t && x < next {
				next, kind = x, 2
			}
			if p, ok := e.NextPrewarm(); ok && p <= t && p < next {
				next, kind = p, 3
			}
			if nextSample < t && nextSample < next {
				next, kind = nextSample, 4
			}
			switch kind {
			case 0:
				return nil
			case 1:
				c := comp.pop()
				if c.grow {
					if growing[c.id] != c.call {
						break // ended first (a growth at its very end)
					}
					idle, err := grow(c.id, c.fn, c.end)
					if err != nil {
						return fmt.Errorf("growing at %v: %w", c.end, err)
					}
					if idle > 0 {
						grownFrom[c.id] = idle
					}
					if u := e.Used(); u > res.PeakUsed {
						res.PeakUsed = u
					}
					break
				}
				if err := e.Release(c.id, c.end); err != nil {
					return fmt.Errorf("releasing at %v: %w", c.end, err)
				}
				f := &w.Funcs[c.fn]
				back := c.idle
				if c.call != 0 {
					back = grownFrom[c.id]
					delete(grownFrom, c.id)
					delete(growing, c.id)
				}
				if (c.first || back > 0) && f.Paused > 0 {
					back = f.Paused
				}
				if back > 0 {
					if _, err := e.Resize(c.id, back, c.end); err != nil {
						return fmt.Errorf("resizing at %v: %w", c.end, err)
					}
				}
				if f.Start > 0 && !learned[c.fn] {
					// The worker learns a function's peak from its first
					// call on, and charges its kin that have none alike.
					if err := e.SetStartCharge(fns[c.fn], f.Start); err != nil {
						return err
					}
					learned[c.fn] = true
					if k := f.Kin; k > 0 && f.Start > kinStart[k] {
						kinStart[k] = f.Start
						for _, g := range kin[k] {
							if !learned[g] {
								if err := e.SetStartCharge(fns[g], min(kinStart[k], w.Funcs[g].Size)); err != nil {
									return err
								}
							}
						}
					}
				}
				if len(waiting) > 0 {
					if err := retry(c.end); err != nil {
						return err
					}
				}
			case 2:
				e.Expire(next)
			case 3:
				for _, fn := range e.Prewarm(next) {
					if _, err := e.Warm(fn, next); err != nil && !errors.Is(err, pool.ErrDrop) {
						return fmt.Errorf("prewarming at %v: %w", next, err)
					}
				}
			case 4:
				sample(next)
			}
			if cfg.Check {
				if err := check(e, &res, grows); err != nil {
					return fmt.Errorf("at %v: %w", next, err)
				}
			}
		}
	}

	for src.Next(&inv) {
		t := inv.At
		if t < last {
			return Result{}, fmt.Errorf("invocation %d at %v before the previous one at %v: %w", count, t, last, ErrConfig)
		}
		if inv.Func < 0 || int(inv.Func) >= n {
			return Result{}, fmt.Errorf("invocation %d: function %d of %d: %w", count, inv.Func, n, ErrConfig)
		}
		last = t
		if err := advance(t); err != nil {
			return Result{}, err
		}
		fi := inv.Func
		c, pf := classOf(fi)
		c.Invocations++
		pf.Invocations++
		end := t + inv.Exec
		id, ok := e.Acquire(fns[fi], t)
		if ok {
			c.Hits++
			pf.Hits++
		} else {
			var err error
			tried := !(cfg.Queue > 0 && held(fi, t))
			if tried {
				id, _, err = e.Admit(fns[fi], t)
			} else {
				err = pool.ErrDrop // it waits behind the one held up, untried
			}
			if err != nil {
				if !errors.Is(err, pool.ErrDrop) {
					return Result{}, fmt.Errorf("admitting at %v: %w", t, err)
				}
				if cfg.Queue > 0 {
					if tried {
						failedTries++
					}
					waiting = append(waiting, waiter{fn: fi, at: t, exec: inv.Exec, deadline: t + cfg.Queue})
					goto next
				}
				c.Drops++
				pf.Drops++
				goto next
			}
			c.Misses++
			c.ColdTime += cold[fi]
			pf.Misses++
			pf.ColdTime += cold[fi]
			end += cold[fi]
		}
		c.WarmTime += inv.Exec
		pf.WarmTime += inv.Exec
		if err := run(id, fi, t, end-inv.Exec, end, !ok); err != nil {
			return Result{}, fmt.Errorf("growing at %v: %w", t, err)
		}
		if u := e.Used(); u > res.PeakUsed {
			res.PeakUsed = u
		}
		if cfg.Check {
			if err := check(e, &res, grows); err != nil {
				return Result{}, fmt.Errorf("at %v: %w", t, err)
			}
		}
	next:
		count++
		if pending++; pending == 1<<16 {
			if cfg.Progress != nil {
				cfg.Progress.Add(pending)
			}
			pending = 0
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
		}
	}
	if cfg.Progress != nil {
		cfg.Progress.Add(pending)
	}
	endAt := max(w.Duration, last)
	if err := advance(endAt); err != nil {
		return Result{}, err
	}
	// Invocations still waiting get their chance as containers finish.
	for len(waiting) > 0 && len(comp) > 0 {
		if err := advance(comp[0].end); err != nil {
			return Result{}, err
		}
	}
	for _, wt := range waiting {
		c, pf := classOf(wt.fn)
		c.Drops++
		pf.Drops++
		timeouts++
	}
	if every > 0 {
		sample(endAt)
	}
	if w.Total > 0 && count != w.Total {
		return Result{}, fmt.Errorf("source yielded %d invocations, workload says %d: %w", count, w.Total, ErrConfig)
	}
	res.Small, res.Large = cls[0], cls[1]
	res.Funcs = per
	res.All.add(cls[0])
	res.All.add(cls[1])
	var engineCount uint64
	for i := range e.Partitions() {
		s := e.Stats(i)
		res.Parts = append(res.Parts, s)
		res.Evictions += s.Evictions
		res.Expirations += s.Expirations
		res.Prewarms += s.Prewarms
		engineCount += s.Hits + s.Misses + s.Drops
	}
	engineCount = engineCount - failedTries + timeouts
	// Every invocation must be counted exactly once, here and in the pool.
	if all := res.All; all.Hits+all.Misses+all.Drops != uint64(count) || all.Invocations != uint64(count) || engineCount != uint64(count) {
		return Result{}, fmt.Errorf("counted %d hits + %d misses + %d drops (pool: %d) for %d invocations", all.Hits, all.Misses, all.Drops, engineCount, count)
	}
	res.Wall = time.Since(start)
	return res, nil
}

// check verifies the pool's invariants cheaply on every event and fully
// every 4096 events. With over set, a partition
// may hold more than its capacity: a container grown in an invocation
// (Func.Busy) is charged its growth whether or not idle ones can make
// room, as memory in use cannot be refused.
func check(e *pool.Engine, res *Result, over bool) error {
	for i := range e.Partitions() {
		if s := e.Stats(i); s.Used > s.Capacity && !over {
			return fmt.Errorf("partition %d uses %d of %d bytes", i, s.Used, s.Capacity)
		}
	}
	res.checks++
	if res.checks%4096 == 0 {
		return e.Check(over)
	}
	return nil
}
