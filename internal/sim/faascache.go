package sim

// FaasCache compatibility mode.
//
// RunFaasCache reproduces the semantics of the simulator of FaasCache
// (Fuerst and Sharma, ASPLOS'21; github.com/aFuerst/faascache-sim, whose
// LambdaScheduler.py was read for reference, not copied), so our figures
// can be checked against the reference simulator of the field. Its rules
// differ from Run's in many small ways, each of which changes the counts:
//
// Trace (its gen/trace_split_funcs.py):
//   - functions invoked fewer than twice in the trace are left out;
//   - memory is divided among an app's functions: each function gets
//     ceil(M / n) MB, where M is the AverageAllocatedMb of the app's first
//     row in memory.csv (per app or per function alike) and n the number
//     of distinct functions durations.csv lists for the app, counting
//     those invoked fewer than twice or not at all. The function's own
//     memory row is not used. (Run takes that row undivided, or a per-app
//     value divided over the app's loaded functions.) Cold (miss) run time
//     is int(Maximum) ms and warm (hit) run time int(Average) ms,
//     truncated;
//   - arrivals are equidistant in float milliseconds: a minute with n
//     invocations starting at s (minute index × 60000, the first column
//     being minute 0) has them at s + i×(60000/n);
//   - arrivals at the same instant (every function's first of a minute,
//     and any that coincide) are served in the order of the functions in
//     FaasCache's joined table, since its combined trace is the
//     per-function lists concatenated in that order and stably sorted by
//     time. FaasCache fixes no order of its own: its table join decides
//     it. With the pandas its scripts need (1.x; Debian's 1.5.3 was used),
//     the inner join on HashApp groups each app's functions together, apps
//     in the order of their first function in invocations.csv and
//     functions within an app in file order; NewFaasCacheTrace orders
//     them so. (pandas 2.2 changed inner joins to keep the left order,
//     which would be plain invocations.csv order, but its sum over the
//     invocation rows, which holds text columns, fails there.)
//
// Simulation (its LambdaScheduler.runActivation), all at arrivals only:
//   - a container is busy until its start plus its run time and free at
//     any arrival at or after that end;
//   - a hit takes the first free container of the function in the order
//     of the pool's heap array and runs for the average; a miss runs for
//     the maximum;
//   - a miss that does not fit evicts, unless every container is busy:
//     it pops the heap (lowest priority first), setting busy containers
//     aside, until it has freed at least the new container's full size (not
//     just the shortfall) or the heap is empty; the clock becomes the
//     priority of the last container evicted. If the container still does
//     not fit, the invocation is a drop (evictions are not undone);
//   - priorities are per function, not per container: after each served
//     invocation every container of the function gets the same new
//     priority. LRU: the start time of the function's latest invocation.
//     GD: clock + freq × (max − avg) / MB, where freq sums the uses of the
//     function's containers now in the pool (an evicted container takes
//     its uses with it). FREQ: clock + freq × (max − avg). TTL: LRU order,
//     plus a lazy purge of the requested function's free containers whose
//     last start is more than 10 minutes old, done when it is requested;
//   - ties between equal priorities fall where Python's heapq puts them.
//     The pool is re-heapified after every step exactly as FaasCache does
//     (and heapify moves equal elements even in a valid heap), so the heap
//     array here is kept identical to FaasCache's.
//
// Input FaasCache would read differently, all of which the loader reports
// as skipped rows (hearth sim lists them): a function whose own memory.csv
// row is missing or unreadable is dropped here, where FaasCache would size
// it from its app's first row; of duplicate invocations.csv rows the first
// is kept here, where FaasCache keeps the first invoked at least twice;
// FaasCache counts the first durations row with an empty HashFunction
// among its app's functions.
//
// Hits and misses are what FaasCache logs as "hit" and "miss"; drops are
// its capacity_misses. Memory held by busy containers counts against the
// capacity. Its HIST, LND, SIZE and RAND policies are not reproduced.
//
// Run differs on every point above: it evicts only the shortfall, one
// idle container at a time, by per-container priorities set when a
// container is released; a cold start adds max − avg to a sampled
// execution time; equidistant arrivals are exact integer nanoseconds;
// sizes are not rounded and functions invoked once are kept. Its counts are
// therefore not FaasCache's.
//
// The golden tests in faascache_test.go hold the figures FaasCache itself
// produced on sample100-min480-959 (one function per app) and on two small
// traces made to exercise the memory division and the tie order (several
// functions per app, interleaved, many equal arrival times); all of them
// match. On a held-out 500-function excerpt of the same Azure data, issue
// #15 found the counts matching FaasCache at all six points tried once
// memory was divided its way.
//
// Speed, CPU time on one core. sample100-min480-959 at 8 GB (339,644
// invocations), measured in one session on a host shared with other work:
// FaasCache simulates 4,456/s with LRU and 3,244/s with GD (CPU time of its
// runActivation loop); this mode 443,000/s and 282,000/s
// (BenchmarkFaasCache -cpu 1), about 100 and 87 times as fast; Run does
// the trace at 6.6 to 6.9 million per second (BenchmarkRun, at 4 GB),
// about 1,500 times. On the larger 500-function excerpt
// the pool holds more containers, which costs this mode more than it costs
// FaasCache: issue #15 measured it at about 54 times FaasCache there, and
// Run at about 2,350 times (not re-measured here: that excerpt is not in
// the shared data). This mode is slower than Run because it must heapify
// the whole pool two or three times per invocation, as FaasCache does, to
// keep ties in the same places.

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/internal/trace"
)

// FaasCacheTTL is the keep-alive of FaasCache's TTL policy, the default of
// FaasCacheConfig.TTL.
const FaasCacheTTL = 10 * time.Minute

// FaasCachePolicies returns the policy names RunFaasCache accepts, in the
// order of the fcPolicy constants.
func FaasCachePolicies() []string { return []string{"lru", "gd", "freq", "ttl"} }

// FaasCacheFunc is one function as FaasCache sees it.
type FaasCacheFunc struct {
	Hash   string
	MemMB  int64   // ceiling of the per-function MB
	ColdMs int64   // run time of a miss: the maximum duration, truncated
	WarmMs int64   // run time of a hit: the average duration, truncated
	Counts []int32 // per-minute invocation counts
}

// FaasCacheTrace is a trace in FaasCache's shape.
type FaasCacheTrace struct {
	Funcs   []FaasCacheFunc
	Minutes int
	// Skipped counts the functions left out for being invoked fewer
	// than twice, as FaasCache's trace generator does.
	Skipped int
	// Total is the number of invocations of Funcs.
	Total int64
}

// NewFaasCacheTrace converts a 2019-format trace to FaasCache's shape.
//
// Memory: with mem, each function gets ceil(mem.MB[app] / mem.Funcs[app])
// MB, as FaasCache's trace generator divides an app's memory among the
// functions durations.csv lists for it; LoadAppMemory2019 reads mem from the
// trace's folder. Without mem (nil), each function gets the ceiling of its
// own MemMB, which is FaasCache's figure only when every app has one
// function. A function whose memory rounds up to less than one MB is an
// error, since FaasCache's size-aware policies divide by it.
//
// Order: functions are grouped by app, apps in the order of their first
// function in t, and within an app in t's order. This is the row order of
// the table FaasCache's generator joins (pandas 1.5's inner join on
// HashApp groups the rows of each key), and arrivals at the same instant,
// such as every function's first arrival of a minute, are served in it.
func NewFaasCacheTrace(t *trace.Trace, mem *trace.AppMemory) (*FaasCacheTrace, error) {
	if t == nil || len(t.Functions) == 0 {
		return nil, fmt.Errorf("empty trace: %w", ErrConfig)
	}
	ft := &FaasCacheTrace{Minutes: t.Minutes}
	var order []int // indexes into t.Functions, in FaasCache's order
	group := map[string]int{}
	var apps [][]int
	for i := range t.Functions {
		f := &t.Functions[i]
		if f.Total() < 2 {
			ft.Skipped++
			continue
		}
		g, ok := group[f.App]
		if !ok {
			g = len(apps)
			group[f.App] = g
			apps = append(apps, nil)
		}
		apps[g] = append(apps[g], i)
	}
	for _, fs := range apps {
		order = append(order, fs...)
	}
	for _, i := range order {
		f := &t.Functions[i]
		raw := f.MemMB
		if mem != nil {
			m, ok1 := mem.MB[f.App]
			n, ok2 := mem.Funcs[f.App]
			if !ok1 || !ok2 || n < 1 {
				return nil, fmt.Errorf("function %s: app %s has no memory row or no durations rows to divide it by: %w", f.Hash, f.App, ErrConfig)
			}
			raw = m / float64(n)
		}
		mb := math.Ceil(raw)
		if math.IsNaN(mb) || mb < 1 || mb > 1<<40 {
			return nil, fmt.Errorf("function %s: memory %v MB: %w", f.Hash, raw, ErrConfig)
		}
		d := f.Dur
		if !(d.Max >= 0 && d.Avg >= 0 && d.Max < 1e15 && d.Avg < 1e15) {
			return nil, fmt.Errorf("function %s: durations avg %v max %v ms: %w", f.Hash, d.Avg, d.Max, ErrConfig)
		}
		ft.Funcs = append(ft.Funcs, FaasCacheFunc{
			Hash: f.Hash, MemMB: int64(mb), ColdMs: int64(d.Max), WarmMs: int64(d.Avg), Counts: f.Counts,
		})
		ft.Total += f.Total()
	}
	if len(ft.Funcs) == 0 {
		return nil, fmt.Errorf("no function invoked twice or more: %w", ErrConfig)
	}
	return ft, nil
}

// fcArrival is one invocation: time in milliseconds and function.
type fcArrival struct {
	at float64
	fn int32
}

// fcCursor walks one function's arrivals in the current minute.
type fcCursor struct {
	at    float64
	every float64
	start float64
	fn    int32
	i, n  int32
}

func (c *fcCursor) less(d *fcCursor) bool {
	return c.at < d.at || (c.at == d.at && c.fn < d.fn)
}

// fcSource yields a FaasCacheTrace's arrivals in FaasCache's order, one
// minute at a time (a minute's arrivals all fall inside it).
type fcSource struct {
	ft     *FaasCacheTrace
	minute int
	heap   []fcCursor
}

func (s *fcSource) next(a *fcArrival) bool {
	for len(s.heap) == 0 {
		if s.minute >= s.ft.Minutes {
			return false
		}
		s.expand()
	}
	h := s.heap
	top := &h[0]
	a.at, a.fn = top.at, top.fn
	if top.i++; top.i < top.n {
		// The same expression as FaasCache's start + i*every, rounded
		// after the product as Python does: the conversion keeps the
		// compiler from fusing it into one multiply-add, which some
		// architectures (arm64) would round once and so differently.
		top.at = top.start + float64(float64(top.i)*top.every)
	} else {
		h[0] = h[len(h)-1]
		s.heap = h[:len(h)-1]
	}
	s.down(0)
	return true
}

func (s *fcSource) expand() {
	m := s.minute
	s.minute++
	start := float64(m * 60000)
	for i := range s.ft.Funcs {
		c := s.ft.Funcs[i].Counts
		if m >= len(c) || c[m] <= 0 {
			continue
		}
		n := c[m]
		s.heap = append(s.heap, fcCursor{at: start, start: start, every: 60000 / float64(n), fn: int32(i), n: n})
	}
	for i := len(s.heap)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}

func (s *fcSource) down(i int) {
	h := s.heap
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			j = r
		}
		if !h[j].less(&h[i]) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// FaasCacheConfig is one point simulated by RunFaasCache.
type FaasCacheConfig struct {
	Policy string // one of FaasCachePolicies, case-insensitive
	// Memory is the pool size in bytes; FaasCache counts whole MB, so it
	// is rounded down to MiB.
	Memory int64
	// TTL is the ttl policy's keep-alive; 0 means FaasCacheTTL.
	TTL time.Duration
	// SmallMax, SampleEvery and Progress are as in Config.
	SmallMax    int64
	SampleEvery time.Duration
	Progress    *atomic.Int64
}

type fcPolicy int

const (
	fcLRU fcPolicy = iota
	fcGD
	fcFreq
	fcTTL
)

// fcSlot is a container as an element of the pool's heap array. What the
// heap and the scans read is kept inline, so they stay in one array.
type fcSlot struct {
	prio float64
	fin  float64 // end of its latest invocation, ms; busy while fin > now
	c    int32   // index into fcEngine.conts
	fn   int32
}

// fcCont is the rest of a container's state.
type fcCont struct {
	last float64 // start of its latest invocation, ms
	uses int64
}

// fcEngine holds FaasCache's scheduler state. heap is the pool as a
// Python list kept in heapq order; its layout decides ties.
type fcEngine struct {
	pol    fcPolicy
	funcs  []FaasCacheFunc
	cap    int64 // MB
	used   int64 // MB
	clock  float64
	heap   []fcSlot
	conts  []fcCont
	free   []int32 // unused indices of conts
	uses   []int64 // per function: uses of its containers in the pool
	save   []fcSlot
	purge  []int32 // scratch for the ttl purge
	cost   []float64
	ttl    float64 // ms
	evicts uint64
	expire uint64
	peak   int64
}

// siftDown moves the item at pos towards the root while it is smaller than
// its parent (heapq's _siftdown).
func (e *fcEngine) siftDown(start, pos int) {
	h := e.heap
	x := h[pos]
	for pos > start {
		p := (pos - 1) >> 1
		if !(x.prio < h[p].prio) {
			break
		}
		h[pos] = h[p]
		pos = p
	}
	h[pos] = x
}

// siftUp is heapq's bottom-up _siftup, which moves the smaller child (the
// right one on ties) up until a leaf, puts the item there and sifts it back
// towards pos while it is smaller than its parent. The subtree below pos
// is a heap whenever heapq calls it, so the children it moves up are
// non-decreasing and the item comes to rest below the last of them that is
// <= it. This does the same in one top-down pass that stops there: equal
// items move exactly as in Python.
func (e *fcEngine) siftUp(pos int) {
	h := e.heap
	n := len(h)
	x := h[pos]
	for {
		c := 2*pos + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h[r].prio <= h[c].prio {
			c = r
		}
		if h[c].prio > x.prio {
			break
		}
		h[pos] = h[c]
		pos = c
	}
	h[pos] = x
}

// heapify is heapq.heapify.
func (e *fcEngine) heapify() {
	h := e.heap
	n := len(h)
	for i := n/2 - 1; i >= 0; i-- {
		c := 2*i + 1
		if r := c + 1; r < n && h[r].prio <= h[c].prio {
			c = r
		}
		// The common case, where siftUp would leave everything in place.
		if h[i].prio < h[c].prio {
			continue
		}
		e.siftUp(i)
	}
}

func (e *fcEngine) push(s fcSlot) {
	e.heap = append(e.heap, s)
	e.siftDown(0, len(e.heap)-1)
}

func (e *fcEngine) pop() fcSlot {
	h := e.heap
	last := h[len(h)-1]
	e.heap = h[:len(h)-1]
	if len(e.heap) == 0 {
		return last
	}
	top := e.heap[0]
	e.heap[0] = last
	e.siftUp(0)
	return top
}

// drop forgets a container that is out of the heap.
func (e *fcEngine) drop(s fcSlot) {
	e.used -= e.funcs[s.fn].MemMB
	e.uses[s.fn] -= e.conts[s.c].uses
	e.free = append(e.free, s.c)
}

// priority is FaasCache's calc_priority for a container of fn last
// started at last, with the function's current pool uses.
func (e *fcEngine) priority(fn int32, last float64) float64 {
	switch e.pol {
	case fcGD:
		return e.clock + float64(e.uses[fn])*(e.cost[fn]/float64(e.funcs[fn].MemMB))
	case fcFreq:
		return e.clock + float64(e.uses[fn])*e.cost[fn]
	}
	return last
}

// find returns the container index of the first free container of fn in
// heap order, or -1, purging stale ones first under ttl.
func (e *fcEngine) find(fn int32, t float64) int32 {
	if e.pol != fcTTL {
		for i := range e.heap {
			if s := &e.heap[i]; s.fn == fn && s.fin <= t {
				return s.c
			}
		}
		return -1
	}
	e.purge = e.purge[:0]
	found, seen := int32(-1), false
	for i := range e.heap {
		s := &e.heap[i]
		if s.fn != fn || s.fin > t {
			continue
		}
		seen = true
		if e.conts[s.c].last+e.ttl < t {
			e.purge = append(e.purge, s.c)
		} else if found < 0 {
			found = s.c
		}
	}
	if !seen {
		return -1
	}
	// Each stale container is removed from the list (first occurrence)
	// and the list re-heapified, then it is heapified once more, even
	// when nothing was stale.
	for _, c := range e.purge {
		for i := range e.heap {
			if s := e.heap[i]; s.c == c {
				e.heap = append(e.heap[:i], e.heap[i+1:]...)
				e.drop(s)
				break
			}
		}
		e.expire++
		e.heapify()
	}
	e.heapify()
	return found
}

// evict frees room for a container of size MB as FaasCache's Eviction
// does.
func (e *fcEngine) evict(size int64, t float64) {
	busy := 0
	for i := range e.heap {
		if e.heap[i].fin > t {
			busy++
		}
	}
	if busy == len(e.heap) {
		return
	}
	e.save = e.save[:0]
	toFree := size
	var lastPrio float64
	evicted := false
	for toFree > 0 && len(e.heap) > 0 {
		s := e.pop()
		if s.fin > t {
			e.save = append(e.save, s)
			continue
		}
		toFree -= e.funcs[s.fn].MemMB
		lastPrio, evicted = s.prio, true
		e.drop(s)
		e.evicts++
	}
	for _, s := range e.save {
		e.push(s)
	}
	if evicted {
		e.clock = lastPrio
	}
}

// activate runs one invocation of fn at t (ms) and reports whether it was
// a hit, and whether it was served at all.
func (e *fcEngine) activate(fn int32, t float64) (hit, served bool) {
	e.heapify() // cleanup_finished
	c := e.find(fn, t)
	f := &e.funcs[fn]
	fin := t + float64(f.WarmMs)
	if c >= 0 {
		hit = true
	} else {
		if e.used+f.MemMB > e.cap {
			e.evict(f.MemMB, t)
		}
		if e.used+f.MemMB > e.cap {
			return false, false
		}
		e.used += f.MemMB
		e.peak = max(e.peak, e.used)
		if n := len(e.free); n > 0 {
			c = e.free[n-1]
			e.free = e.free[:n-1]
		} else {
			c = int32(len(e.conts))
			e.conts = append(e.conts, fcCont{})
		}
		e.conts[c] = fcCont{last: t}
		// Not busy yet: FaasCache marks it running after these steps,
		// and nothing in between looks.
		e.push(fcSlot{prio: e.priority(fn, t), fin: t, c: c, fn: fn})
		e.heapify()
		fin = t + float64(f.ColdMs)
	}
	k := &e.conts[c]
	k.uses++
	e.uses[fn]++
	k.last = t
	p := e.priority(fn, t)
	for i := range e.heap {
		if s := &e.heap[i]; s.fn == fn {
			s.prio = p
			if s.c == c {
				s.fin = fin
			}
		}
	}
	e.heapify()
	return hit, true
}

// RunFaasCache simulates one point with FaasCache's semantics (see the
// comment at the top of faascache.go). The result's Evictions count
// containers evicted for room and Expirations the ttl policy's purges.
func RunFaasCache(ctx context.Context, ft *FaasCacheTrace, cfg FaasCacheConfig) (Result, error) {
	start := time.Now()
	if ft == nil || len(ft.Funcs) == 0 {
		return Result{}, fmt.Errorf("empty FaasCache trace: %w", ErrConfig)
	}
	name := strings.ToLower(strings.TrimSpace(cfg.Policy))
	pol := -1
	known := FaasCachePolicies()
	for i, p := range known {
		if p == name {
			pol = i
		}
	}
	if pol < 0 {
		return Result{}, fmt.Errorf("FaasCache policy %q (known: %s): %w", cfg.Policy, strings.Join(known, ", "), ErrConfig)
	}
	if cfg.TTL < 0 {
		return Result{}, fmt.Errorf("ttl %v must not be negative: %w", cfg.TTL, ErrConfig)
	}
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = FaasCacheTTL
	}
	if cfg.Memory < MiB {
		return Result{}, fmt.Errorf("memory %d bytes, below 1 MiB: %w", cfg.Memory, ErrConfig)
	}
	n := len(ft.Funcs)
	e := &fcEngine{
		pol:   fcPolicy(pol),
		funcs: ft.Funcs,
		cap:   cfg.Memory / MiB,
		uses:  make([]int64, n),
		cost:  make([]float64, n),
		ttl:   float64(ttl) / float64(time.Millisecond),
	}
	smallMax := cfg.SmallMax
	if smallMax == 0 {
		smallMax = DefaultThreshold
	}
	small := make([]bool, n)
	for i, f := range ft.Funcs {
		if f.MemMB < 1 {
			return Result{}, fmt.Errorf("function %s: %d MB: %w", f.Hash, f.MemMB, ErrConfig)
		}
		e.cost[i] = float64(f.ColdMs - f.WarmMs)
		small[i] = f.MemMB*MiB <= smallMax
	}
	every := cfg.SampleEvery
	if every == 0 {
		every = time.Minute
	}
	res := Result{Policy: name, Memory: e.cap * MiB, Split: Unified().Name}
	nextSample := math.Inf(1)
	if every > 0 {
		nextSample = 0
	}
	everyMs := float64(every) / float64(time.Millisecond)
	sample := func(at float64) {
		u := e.used * MiB
		res.Samples = append(res.Samples, Sample{At: time.Duration(at * float64(time.Millisecond)), Used: u, Parts: []int64{u}})
		nextSample = at + everyMs
	}
	var cls [2]Class
	src := &fcSource{ft: ft, heap: make([]fcCursor, 0, n)}
	var a fcArrival
	var count, pending int64
	for src.next(&a) {
		// The pool only changes at arrivals, so a sample before t shows
		// the state after the previous one.
		for nextSample < a.at {
			sample(nextSample)
		}
		f := &ft.Funcs[a.fn]
		c := &cls[1]
		if small[a.fn] {
			c = &cls[0]
		}
		c.Invocations++
		hit, served := e.activate(a.fn, a.at)
		switch {
		case !served:
			c.Drops++
		case hit:
			c.Hits++
			c.WarmTime += time.Duration(f.WarmMs) * time.Millisecond
		default:
			c.Misses++
			c.WarmTime += time.Duration(f.WarmMs) * time.Millisecond
			c.ColdTime += time.Duration(f.ColdMs-f.WarmMs) * time.Millisecond
		}
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
	if every > 0 {
		end := float64(ft.Minutes) * 60000
		for nextSample < end {
			sample(nextSample)
		}
		sample(end)
	}
	if count != ft.Total {
		return Result{}, fmt.Errorf("simulated %d invocations, trace has %d: %w", count, ft.Total, ErrConfig)
	}
	res.Small, res.Large = cls[0], cls[1]
	res.All.add(cls[0])
	res.All.add(cls[1])
	res.Evictions, res.Expirations = e.evicts, e.expire
	res.PeakUsed = e.peak * MiB
	res.Wall = time.Since(start)
	return res, nil
}

// SweepFaasCache runs every config against ft, parallel at a time (0
// means one per CPU), and returns the results in cfgs order. The first
// error cancels the rest. If progress is non-nil, a line per finished
// point is written to it.
func SweepFaasCache(ctx context.Context, ft *FaasCacheTrace, cfgs []FaasCacheConfig, parallel int, progress io.Writer) ([]Result, error) {
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	parallel = max(1, min(parallel, len(cfgs)))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := make([]Result, len(cfgs))
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cfgs) || ctx.Err() != nil {
					return
				}
				r, err := RunFaasCache(ctx, ft, cfgs[i])
				mu.Lock()
				if err != nil {
					if first == nil {
						first = fmt.Errorf("policy %s, %d MiB: %w", cfgs[i].Policy, cfgs[i].Memory/MiB, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				res[i] = r
				if progress != nil {
					fmt.Fprintf(progress, "faascache %s %d MiB: done in %v\n", r.Policy, r.Memory/MiB, r.Wall.Round(time.Millisecond))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return res, nil
}
