package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/pool/policy"
	"github.com/hearth-run/hearth/internal/registry"
)

// Drop behaviours of PoolConfig.OnDrop.
const (
	// DropReject answers a request that finds no room at once with ErrDrop.
	DropReject = "reject"
	// DropQueue lets such a request wait, boundedly, for memory to come
	// free; requests of functions below their share of the pool go first.
	DropQueue = "queue"
)

// PoolConfig configures the warm pool: the internal/pool engine that keeps
// sandboxes, busy and paused, under the worker's memory budget. The zero
// value is one unified LRU pool whose requests wait for memory when it is
// full. Its yaml tags are the keys of hearth.yaml, which the CLI reads
// straight into it; fields tagged "-" are not settings of the file.
type PoolConfig struct {
	// Policy names the keep-alive policy: lru (default), gd, freq, ttl or
	// hist (see internal/pool/policy).
	Policy string `yaml:"policy"`
	// Fractions splits Config.WarmBudget into size-partitioned pools
	// (KiSS), smallest sizes first, summing to 1. Nil or one fraction is a
	// unified pool.
	Fractions []float64 `yaml:"-"`
	// Thresholds[i] is the largest declared memory limit (bytes) routed to
	// pool i; one fewer than Fractions. With two pools and none given the
	// threshold is DefaultThreshold.
	Thresholds []int64 `yaml:"-"`
	// Borrow lets a full pool use spare memory of another (KiSS pools are
	// static, so off by default).
	Borrow bool `yaml:"borrow"`
	// TTL is the ttl policy's keep-alive (default 10 minutes).
	TTL time.Duration `yaml:"ttl"`
	// Hist tunes the hist policy; zero fields are the paper's defaults.
	Hist policy.HistOptions `yaml:"hist"`
	// OnDrop is DropQueue (default) or DropReject.
	OnDrop string `yaml:"on_drop"`
	// DropQueue bounds requests waiting for memory with DropQueue (default 64).
	DropQueue int `yaml:"drop_queue"`
	// DropWait bounds how long one request waits for memory (default
	// Config.QueueTimeout, 10 s).
	DropWait time.Duration `yaml:"drop_wait"`
	// PassLimit, if positive, bounds how long a request waiting for
	// memory lets younger ones of its pool that fit take the room first
	// (0, the default: no bound, first fit). Past it, for PassHold, the
	// younger ones do not take room but wait, fitting or not, until it
	// leaves the queue; they may still take a paused sandbox of their
	// own function. A request of a function over its fair share
	// (yieldLocked), or charged more than its pool holds, holds no one
	// back.
	//
	// Without a bound, memory freed piecemeal goes to whichever waiting
	// requests are charged little enough to fit, for as long as such
	// requests keep coming, and a function charged more can wait for
	// drop_wait and be refused. With one, room that fits no one yet sits
	// unused while the passed request waits for its own: in a replay's
	// minute-boundary burst (48 functions, 1280 MB, 3 repetitions) a
	// limit of 100 ms (its hold not yet bounded by PassHold) gave 18.7,
	// 19.1 and 25.5 s of memory waits in all against 20.0, 19.7 and
	// 14.8 s with none, and no fewer losses of the PARSEC functions'
	// means. So it is off unless set.
	PassLimit time.Duration `yaml:"pass_limit"`
	// Charge is what a new sandbox is charged until it is paused and
	// measured: ChargePeak (default) or ChargeDeclared.
	Charge string `yaml:"pool_charge"`
	// Events, if set, is a file the pool's events are written to as CSV
	// (eventLog), until the worker stops: for comparing a live pool with
	// the simulator's (hearth bench replay --pool-events).
	Events string `yaml:"pool_events"`
}

// Charges of a new sandbox (PoolConfig.Charge).
const (
	// ChargeDeclared charges a new sandbox its function's memory limit
	// until it is paused, as OpenLambda's memory pool does: what it could
	// take, so the budget is never overrun, but most of it is never used.
	ChargeDeclared = "declared"
	// ChargePeak charges it what the function's recent sandboxes took at
	// their peak, with a margin (startCharge), and the limit until one is
	// measured. A call that takes more than its function's sandboxes did
	// before is charged its growth while it runs, sampled every
	// growthEvery (Worker.watchGrowth).
	ChargePeak = "peak"
)

// CheckCharge reports whether charge is a valid PoolConfig.Charge; ""
// is the default.
func CheckCharge(charge string) error {
	switch charge {
	case "", ChargePeak, ChargeDeclared:
		return nil
	}
	return fmt.Errorf("charge %q: want %s or %s: %w", charge, ChargePeak, ChargeDeclared, pool.ErrConfig)
}

// peakWindow is how many of a function's last sandboxes' peaks its start
// charge covers, each sandbox once however many calls it served: enough
// for a path that starts bigger (a cold start beside forks) to count
// while it recurs, few enough to forget it when the function has moved
// to cheaper paths.
const peakWindow = 8

// startCharge is what a new sandbox of a function is charged, given the
// highest peak of its last sandboxes and its limit: the peak with a
// quarter, at least 8 MiB, of margin for calls that take more than
// these did.
func startCharge(peak, declared int64) int64 {
	return min(declared, peak+max(peak/4, 8<<20))
}

// DefaultThreshold is the KiSS small/large boundary (pool.DefaultThreshold).
const DefaultThreshold = pool.DefaultThreshold

func (c *PoolConfig) setDefaults() {
	if c.Policy == "" {
		c.Policy = "lru"
	}
	if len(c.Fractions) == 0 {
		c.Fractions = []float64{1}
	}
	if len(c.Fractions) == 2 && len(c.Thresholds) == 0 {
		c.Thresholds = []int64{DefaultThreshold}
	}
	if c.OnDrop == "" {
		c.OnDrop = DropQueue
	}
	if c.Charge == "" {
		c.Charge = ChargePeak
	}
	if c.DropQueue <= 0 {
		c.DropQueue = 64
	}
	if c.DropWait <= 0 {
		c.DropWait = 10 * time.Second
	}
}

// PassHold is how long a request passed for PoolConfig.PassLimit holds
// the younger ones back. A burst's busy sandboxes end within it; one
// still short of room then waits for memory that does not come free
// soon (long calls, another pool's memory it must borrow), and holding
// the pool for it would keep every other start out: it goes back to
// letting the others pass.
const PassHold = time.Second

// passHold is PassHold, shortened by tests.
var passHold = PassHold

// holdPoll is how often a held request looks again: what holds it can
// end without a signal (its hold runs out, or its function goes over
// its share when others queue).
var holdPoll = 25 * time.Millisecond

// PoolStatus describes one pool (partition) of the warm pool.
type PoolStatus = types.PoolStatus

// StartCharge is what the warm pool charges a new sandbox of a function.
type StartCharge = types.StartCharge

type fnKey struct{ name, rev string }

type fnInfo struct {
	fnKey
	// kin names the functions that need the same packages (kinOf); ""
	// if unknown. A function with no measured sandbox of its own is
	// charged like its kin (chargeLikeKinLocked), one sandbox at a time:
	// trial is the reservation admitted so (0: none), and distrust is set
	// once one went without being measured (its start or call failed),
	// after which its limit is charged until one is.
	kin      string
	trial    pool.ID
	distrust bool
	declared int64
	cold     time.Duration // smoothed measured start time
	// peaks are the peak memory of its last peakWindow sandboxes after
	// their calls, slot i that of sandbox owner[i] (numbered from 1 by
	// seq), and start what a new one is charged (0: declared).
	peaks [peakWindow]int64
	owner [peakWindow]uint64
	seq   uint64
	start int64
	// grewSum sums, over grewN calls whose growth was charged, how far
	// into each call the last charge came.
	grewSum time.Duration
	grewN   int
}

// note records the peak of a sandbox after a call: in the slot the
// sandbox holds (*slot, 0 for none yet), or in the oldest one. It returns
// the highest peak of the window.
func (fi *fnInfo) note(slot *uint64, peak int64) int64 {
	i := int(*slot % peakWindow)
	if *slot == 0 || fi.owner[i] != *slot {
		fi.seq++
		*slot, i = fi.seq, int(fi.seq%peakWindow)
		fi.owner[i] = fi.seq
	}
	fi.peaks[i] = peak
	return fi.ownPeak()
}

// charge is what a new sandbox of the function is charged.
func (fi *fnInfo) charge() int64 { return cmp.Or(fi.start, fi.declared) }

// warmCache is the handler cache: a mutex-wrapped pool.Engine that accounts
// every sandbox (busy ones from admission, paused ones until evicted or
// expired) and decides which paused sandbox to evict. It maps engine IDs to
// instances and function revisions to engine functions. A timer goroutine,
// started with the first idle sandbox, expires keep-alives eagerly and
// starts pre-warms (hist policy).
type warmCache struct {
	w     *Worker
	cfg   PoolConfig
	parts []pool.Partition
	names []string // pool names by partition
	epoch time.Time

	mu      sync.Mutex // guards the fields below
	e       *pool.Engine
	fns     map[fnKey]pool.Fn
	info    []fnInfo          // by pool.Fn
	retired map[fnKey]pool.Fn // retired revisions that still have sandboxes
	insts   map[pool.ID]*instance
	trials  map[pool.ID]pool.Fn // fnInfo.trial, by reservation
	ids     map[*instance]pool.ID
	drops   []uint64        // requests refused, by partition
	freed   chan struct{}   // closed and replaced when memory may have come free
	waiting int             // requests queued for memory (tickets)
	waiters map[pool.Fn]int // of which, by function
	// queue holds every queued request's ticket, from its first wait
	// until it leaves, with its function and the signal round (gen) in
	// which its last try failed: memory that comes free goes to the
	// oldest that can take it (olderFitsLocked), as in the simulator.
	queue  map[uint64]*ticket
	ticket uint64 // the last ticket given
	gen    uint64 // signalLocked's rounds
	closed bool
	log    *eventLog // PoolConfig.Events; nil if off

	loop sync.Once
	wake chan struct{} // cap 1: the timer loop re-reads its deadline
	done chan struct{}
	wg   sync.WaitGroup
}

func newWarmCache(w *Worker) (*warmCache, error) {
	cfg := w.cfg.Pool
	if cfg.DropWait <= 0 {
		cfg.DropWait = w.cfg.QueueTimeout
	}
	cfg.setDefaults()
	if cfg.OnDrop != DropReject && cfg.OnDrop != DropQueue {
		return nil, fmt.Errorf("pool: on_drop %q: want %s or %s: %w", cfg.OnDrop, DropReject, DropQueue, pool.ErrConfig)
	}
	if err := CheckCharge(cfg.Charge); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	newPol, err := policy.New(cfg.Policy, policy.Options{TTL: cfg.TTL, Hist: cfg.Hist})
	if err != nil {
		return nil, fmt.Errorf("pool policy: %w", err)
	}
	parts, err := pool.Split(w.cfg.WarmBudget, cfg.Fractions, cfg.Thresholds)
	if err != nil {
		return nil, fmt.Errorf("pool partitions: %w", err)
	}
	var log *eventLog
	if cfg.Events != "" {
		if log, err = openEventLog(cfg.Events); err != nil {
			return nil, err
		}
	}
	c := &warmCache{
		w:       w,
		cfg:     cfg,
		parts:   parts,
		names:   poolNames(len(parts)),
		epoch:   time.Now(),
		log:     log,
		fns:     make(map[fnKey]pool.Fn),
		retired: make(map[fnKey]pool.Fn),
		insts:   make(map[pool.ID]*instance),
		trials:  make(map[pool.ID]pool.Fn),
		ids:     make(map[*instance]pool.ID),
		drops:   make([]uint64, len(parts)),
		freed:   make(chan struct{}),
		waiters: make(map[pool.Fn]int),
		queue:   make(map[uint64]*ticket),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	pc := pool.Config{Partitions: parts, Borrow: cfg.Borrow, Oversize: true, NewPolicy: newPol}
	if log != nil {
		pc.Observe = func(ev pool.Event) {
			if c.log != nil {
				// The engine stamps a removal with the last time it
				// was given; the log wants when it happened.
				ev.At = c.now()
				c.log.write(ev, c.info[ev.Fn].fnKey)
			}
		}
	}
	if c.e, err = pool.New(pc); err != nil {
		if log != nil {
			log.close()
		}
		return nil, fmt.Errorf("pool: %w", err)
	}
	w.metrics.Registry.MustRegister(newPoolCollector(c))
	return c, nil
}

func poolNames(n int) []string {
	switch n {
	case 1:
		return []string{"unified"}
	case 2:
		return []string{"small", "large"}
	}
	ns := make([]string, n)
	for i := range ns {
		ns[i] = fmt.Sprintf("p%d", i)
	}
	return ns
}

// now is the engine's clock: monotonic time since the cache was made.
func (c *warmCache) now() time.Duration { return time.Since(c.epoch) }

// fnLocked returns the engine function of fn's revision, registering it
// at its declared memory limit. kin, if not nil, names its kin (kinOf):
// called only for a function it registers or does not know the kin of,
// off a warm call's path.
func (c *warmCache) fnLocked(name, rev string, declared int64, kin func() string) (pool.Fn, error) {
	k := fnKey{name, rev}
	if f, ok := c.fns[k]; ok {
		if fi := &c.info[f]; fi.kin == "" && kin != nil {
			// First seen by a pre-warm, which does not know it.
			fi.kin = kin()
			c.chargeLikeKinLocked(f, c.kinPeakLocked(fi.kin))
		}
		return f, nil
	}
	f, err := c.e.AddFunc(declared, 0)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	c.fns[k] = f
	fi := fnInfo{fnKey: k, declared: declared}
	if kin != nil {
		fi.kin = kin()
	}
	if int(f) < len(c.info) {
		c.info[f] = fi // the id of a retired revision
	} else {
		c.info = append(c.info, fi)
	}
	if fi.kin != "" {
		c.chargeLikeKinLocked(f, c.kinPeakLocked(fi.kin))
	}
	return f, nil
}

// kinOf names fn's kin: the functions that import the same packages
// (as resolved at deploy, else as required), whose sandboxes so start
// about as big. Its handler's own memory is unknown until measured: the
// growth watch charges a call that takes more.
func kinOf(fn registry.Function) string {
	var pkgs []string
	if len(fn.Packages) > 0 {
		for _, p := range fn.Packages {
			pkgs = append(pkgs, p.String())
		}
	} else {
		pkgs = slices.Clone(fn.Spec.Requirements)
	}
	slices.Sort(pkgs)
	return "packages:" + strings.Join(pkgs, "\n")
}

// ownPeak is the highest peak of the function's own last sandboxes.
func (fi *fnInfo) ownPeak() int64 { return slices.Max(fi.peaks[:]) }

// kinLocked returns kin's functions and the highest peak among their
// last sandboxes (0: none measured).
func (c *warmCache) kinLocked(kin string) (members []pool.Fn, peak int64) {
	for _, f := range c.fns {
		if fi := &c.info[f]; fi.kin == kin {
			peak = max(peak, fi.ownPeak())
			members = append(members, f)
		}
	}
	return members, peak
}

// kinPeakLocked is the highest peak among kin's functions' sandboxes.
func (c *warmCache) kinPeakLocked(kin string) int64 {
	_, peak := c.kinLocked(kin)
	return peak
}

// refreshKinLocked charges kin's unmeasured functions like kin's highest
// peak, after it changed.
func (c *warmCache) refreshKinLocked(kin string) {
	if kin == "" || c.cfg.Charge != ChargePeak {
		return
	}
	members, peak := c.kinLocked(kin)
	for _, f := range members {
		c.chargeLikeKinLocked(f, peak)
	}
}

// chargeLikeKinLocked charges a new sandbox of f, a function with no
// measured sandbox of its own (ChargePeak), like its kin's, whose
// highest peak is peak: a deploy of many functions then does not wait,
// each charged its full limit, for room that their first calls do not
// take. With no measured kin, one sandbox of f already admitted so and
// not measured, or one that went unmeasured, it is charged its limit.
// That bounds what a function that takes more than its kin, at its start
// where no growth is watched, can take beyond its charge to one sandbox.
func (c *warmCache) chargeLikeKinLocked(f pool.Fn, peak int64) {
	fi := &c.info[f]
	if c.cfg.Charge != ChargePeak || fi.kin == "" || fi.ownPeak() > 0 {
		return
	}
	start := fi.declared
	if peak > 0 && fi.trial == 0 && !fi.distrust {
		start = startCharge(peak, fi.declared)
	}
	c.setStartLocked(f, start)
}

// setStartLocked sets what a new sandbox of f is charged.
func (c *warmCache) setStartLocked(f pool.Fn, start int64) {
	fi := &c.info[f]
	if start == fi.charge() {
		return
	}
	if err := c.e.SetStartCharge(f, start); err != nil {
		c.w.log.Warn("warm pool accounting: setting a start charge", "function", fi.name, "err", err)
		return
	}
	fi.start = start
}

// admittedLocked notes reservation id, just admitted for f: if f was
// charged like its kin, it is its trial, and f's next sandboxes are
// charged its limit until this one is measured.
func (c *warmCache) admittedLocked(f pool.Fn, id pool.ID) {
	fi := &c.info[f]
	if fi.kin == "" || fi.trial != 0 || fi.ownPeak() > 0 || fi.charge() >= fi.declared {
		return
	}
	fi.trial = id
	c.trials[id] = f
	c.setStartLocked(f, fi.declared)
}

// unmeasuredLocked notes that sandbox (or reservation) id went without a
// measured peak: if it was its function's trial, the function is charged
// its limit until one of its sandboxes is measured.
func (c *warmCache) unmeasuredLocked(id pool.ID) {
	f, ok := c.trials[id]
	if !ok {
		return
	}
	delete(c.trials, id)
	if fi := &c.info[f]; fi.trial == id {
		fi.trial, fi.distrust = 0, true
	}
}

// retire forgets revision rev of function name (its engine function and
// start-time measure) once it has no sandboxes: now, or when the last
// one goes (sweepLocked).
func (c *warmCache) retire(name, rev string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := fnKey{name, rev}
	if f, ok := c.fns[k]; ok {
		c.retired[k] = f
		c.sweepLocked()
	}
}

// sweepLocked removes the retired revisions whose sandboxes are gone.
func (c *warmCache) sweepLocked() {
	for k, f := range c.retired {
		if err := c.e.RemoveFunc(f); err != nil {
			continue // sandboxes left (pool.ErrState)
		}
		delete(c.retired, k)
		delete(c.fns, k)
		kin := c.info[f].kin
		delete(c.trials, c.info[f].trial)
		c.info[f] = fnInfo{}
		c.refreshKinLocked(kin)
		if c.waiters[f] > 0 {
			c.signalLocked() // its queued requests take their new revision's id
		}
	}
}

// funcs returns how many function revisions the cache holds, for tests.
func (c *warmCache) funcs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fns)
}

// A ticket is a queued request's place in the queue for memory.
type ticket struct {
	f pool.Fn
	// since is when the request first queued (PoolConfig.PassLimit).
	since time.Time
	// failed is 1 + the signal round (gen) in which the request last
	// tried for room and did not get it (or yielded it); 0 if never.
	// Until the next signal, others need not let it go first.
	failed uint64
}

// signalLocked wakes requests waiting for memory.
func (c *warmCache) signalLocked() {
	close(c.freed)
	c.freed = make(chan struct{})
	c.gen++
}

// deferPoll bounds how long a request lets older ones go first while
// none of them leaves the queue: olderFitsLocked guesses from the
// partition's totals, and a wrong guess must not hold it for long.
var deferPoll = 10 * time.Millisecond

// enqueueLocked gives a request of f, queued since since, ticket t, or a
// new one (t 0): it waits for memory, in the queue's order, until
// leftQueueLocked.
func (c *warmCache) enqueueLocked(t uint64, f pool.Fn, since time.Time) uint64 {
	if t == 0 {
		c.ticket++
		t = c.ticket
	}
	c.queue[t] = &ticket{f: f, since: since}
	c.waiting++
	c.waiters[f]++
	return t
}

// retagLocked moves ticket t to f, its request's function now (a
// revision retired while it waited gets a new id).
func (c *warmCache) retagLocked(t uint64, f pool.Fn) {
	q := c.queue[t]
	if q == nil || q.f == f {
		return
	}
	if c.waiters[q.f]--; c.waiters[q.f] <= 0 {
		delete(c.waiters, q.f)
	}
	c.waiters[f]++
	q.f = f
}

// heldLocked reports whether a request queued before ticket t (any
// queued request, for a new arrival: t 0) in f's partition holds t back
// (PoolConfig.PassLimit, PassHold): t must not take room, fitting or not.
// One that yields its share (yieldLocked), or whose charge is more than
// its pool holds (it borrows from another), holds no one back.
func (c *warmCache) heldLocked(t uint64, f pool.Fn) bool {
	if c.cfg.PassLimit <= 0 || len(c.queue) == 0 {
		return false
	}
	pi, _ := c.e.Partition(f)
	capacity := c.e.Stats(pi).Capacity
	var sh *shares
	for k, q := range c.queue {
		if t != 0 && k >= t {
			continue
		}
		if w := time.Since(q.since); w < c.cfg.PassLimit || w >= c.cfg.PassLimit+passHold {
			continue
		}
		if p, err := c.e.Partition(q.f); err != nil || p != pi || c.info[q.f].charge() > capacity {
			continue
		}
		if sh == nil {
			v := c.sharesLocked(pi)
			sh = &v
		}
		if !c.yieldsLocked(q.f, *sh) {
			return true
		}
	}
	return false
}

// olderFitsLocked reports whether a request queued before ticket t (any
// queued request, for a new arrival: t 0) would get a sandbox of its
// function into f's partition now, by evicting paused ones: it goes
// first. One that tried and failed since the last signal, or that yields
// its share (yieldLocked), is passed over. older counts the requests
// queued before t in the partition.
func (c *warmCache) olderFitsLocked(t uint64, f pool.Fn) (fits bool, older int) {
	if len(c.queue) == 0 {
		return false, 0
	}
	pi, _ := c.e.Partition(f)
	ps := c.e.Stats(pi)
	room := ps.Capacity - ps.Used + ps.Idle
	var sh *shares
	for k, q := range c.queue {
		if t != 0 && k >= t {
			continue
		}
		if p, err := c.e.Partition(q.f); err != nil || p != pi {
			continue // another pool's, or a removed revision's until it wakes
		}
		older++
		if fits || q.failed == c.gen+1 || c.info[q.f].charge() > room {
			continue
		}
		if sh == nil {
			v := c.sharesLocked(pi)
			sh = &v
		}
		fits = !c.yieldsLocked(q.f, *sh)
	}
	return fits, older
}

// take returns a thawed warm sandbox of fn, or nil and a reservation: room
// admitted in fn's pool for a sandbox the caller starts and then passes to
// bind (or abort on failure). Evicted paused sandboxes are destroyed off
// the request path. When the pool is full of busy sandboxes take returns
// ErrDrop, at once or (DropQueue) after a bounded wait. While requests
// wait, a function that holds its share of the pool lets those of
// functions below theirs have the memory that comes free (yieldLocked).
func (c *warmCache) take(ctx context.Context, fn registry.Function) (*instance, pool.ID, error) {
	declared := int64(fn.Spec.MemoryMB) << 20
	kin := func() string { return kinOf(fn) }
	arrive := true
	var my uint64       // its ticket while it waits for memory (queued)
	var since time.Time // when it first queued
	// deferSince is when the request began to let older ones go first;
	// older, how many were queued before it then.
	var deferSince time.Time
	older := -1
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		if c.closed {
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, ErrClosed
		}
		f, err := c.fnLocked(fn.Name, fn.Revision, declared, kin)
		if err != nil {
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, err
		}
		if my != 0 {
			c.retagLocked(my, f)
		}
		yield := c.yieldLocked(f)
		if arrive && !yield {
			// A queued request retries as a new arrival: the engine has no
			// other way to hand it a sandbox released meanwhile.
			if id, ok := c.e.Acquire(f, c.now()); ok {
				inst := c.insts[id]
				if inst == nil {
					// Idle containers are always bound; never hand out a
					// hole if that breaks.
					if err := c.e.Remove(id); err != nil {
						c.w.log.Warn("warm pool accounting: removing an unbound sandbox", "function", fn.Name, "err", err)
					}
					c.mu.Unlock()
					continue
				}
				inst.claim()
				c.leftQueueLocked(my)
				c.mu.Unlock()
				if err := inst.thaw(ctx); err != nil {
					// Never send the call to it: start another. Its memory
					// is given back before the next admission; the
					// teardown is off the request path.
					c.w.log.Warn("cached sandbox unusable; starting another", "function", fn.Name, "sandbox", inst.id, "err", err)
					c.w.metrics.deadSandboxes.Inc()
					c.forget(inst)
					c.w.background(func() { c.w.destroy(inst) })
					if my != 0 {
						c.mu.Lock()
						c.enqueueLocked(my, f, since) // it keeps its place
						c.mu.Unlock()
					}
					arrive = false
					continue
				}
				return inst, 0, nil
			}
		}
		// Memory goes to the oldest waiting request that can take it: this
		// one lets an older one go first, if it could wait for its turn,
		// until one of them leaves the queue or deferPoll passes.
		deferred := false
		if !yield && c.cfg.OnDrop == DropQueue && (my != 0 || c.waiting < c.cfg.DropQueue) {
			fits, n := c.olderFitsLocked(my, f)
			if n != older {
				deferSince, older = time.Time{}, n
			}
			if fits && (deferSince.IsZero() || time.Since(deferSince) < deferPoll) {
				deferred = true
				if deferSince.IsZero() {
					deferSince = time.Now()
				}
			}
		}
		// A request passed for too long holds back the younger ones,
		// which then wait behind it, fitting or not (unless the queue
		// is full: a new arrival that fits then takes the room).
		held := !yield && !deferred && c.cfg.OnDrop == DropQueue && (my != 0 || c.waiting < c.cfg.DropQueue) && c.heldLocked(my, f)
		if !yield && !deferred && !held {
			id, victims, err := c.e.Admit(f, c.now())
			if err == nil {
				c.admittedLocked(f, id)
				vs := c.detachLocked(victims)
				c.leftQueueLocked(my)
				c.mu.Unlock()
				c.w.destroyAsync(vs)
				return nil, id, nil
			}
			if !errors.Is(err, pool.ErrDrop) {
				c.leftQueueLocked(my)
				c.mu.Unlock()
				return nil, 0, fmt.Errorf("%s: admitting sandbox: %w", fn.Name, err)
			}
		}
		pi, _ := c.e.Partition(f)
		ps := c.e.Stats(pi)
		charge := c.info[f].charge()
		if !c.e.Fits(declared) {
			// Deploy refuses such a function; this one came from a
			// worker with a larger budget.
			c.drops[pi]++
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, fmt.Errorf("%s: %w", fn.Name, memoryErr(fn.Spec.MemoryMB, c.w.cfg.WarmBudget, c.parts))
		}
		if err := ctx.Err(); err != nil {
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, err
		}
		if c.cfg.OnDrop != DropQueue || my == 0 && c.waiting >= c.cfg.DropQueue {
			c.drops[pi]++
			c.mu.Unlock()
			return nil, 0, c.dropErr(fn, charge, pi, ps)
		}
		if timer == nil {
			timer = time.NewTimer(c.cfg.DropWait)
		}
		if my == 0 {
			since = time.Now()
			my = c.enqueueLocked(0, f, since)
		}
		if !deferred && !held {
			c.queue[my].failed = c.gen + 1 // tried (or yielded) in this round
		}
		var poll *time.Timer
		var polled <-chan time.Time
		switch {
		case deferred:
			poll = time.NewTimer(max(deferPoll-time.Since(deferSince), 0))
			polled = poll.C
		case held:
			poll = time.NewTimer(holdPoll)
			polled = poll.C
		}
		freed := c.freed
		c.mu.Unlock()
		var expired bool
		select {
		case <-freed:
		case <-polled:
		case <-timer.C:
			expired = true
		case <-ctx.Done():
		}
		if poll != nil {
			poll.Stop()
		}
		c.mu.Lock()
		if err := ctx.Err(); err != nil {
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, err
		}
		if expired {
			c.drops[pi]++
			c.leftQueueLocked(my)
			c.mu.Unlock()
			return nil, 0, fmt.Errorf("%s: waited %s: %w", fn.Name, c.cfg.DropWait, c.dropErr(fn, charge, pi, ps))
		}
		c.mu.Unlock()
		arrive = true
	}
}

// leftQueueLocked takes ticket t (0: none) out of the queue and wakes
// the requests still waiting: those that let it go first look again.
func (c *warmCache) leftQueueLocked(t uint64) {
	q := c.queue[t]
	if q == nil {
		return
	}
	delete(c.queue, t)
	c.waiting--
	if c.waiters[q.f]--; c.waiters[q.f] <= 0 {
		delete(c.waiters, q.f)
	}
	if c.waiting > 0 {
		c.signalLocked()
	}
}

// yieldLocked reports whether a request of f must let the requests of
// other functions waiting for memory in f's pool have what comes free
// first. Each function with busy sandboxes or waiting requests in a pool
// has an equal share of its capacity; f yields when another sandbox
// would take its busy ones past that share while a waiting function's
// would not (or it has none busy: every function may run one). f then
// queues too, and its paused sandboxes are evicted for the others. So a
// function with a high concurrency can fill the pool while no other
// needs room, but cannot keep the others out.
func (c *warmCache) yieldLocked(f pool.Fn) bool {
	if len(c.waiters) == 0 || len(c.waiters) == 1 && c.waiters[f] > 0 {
		return false
	}
	if uf, _ := c.e.Usage(f); uf.Busy == 0 {
		return false
	}
	pi, _ := c.e.Partition(f)
	return c.yieldsLocked(f, c.sharesLocked(pi))
}

// shares is one partition's fair-share view (see yieldLocked): each
// function with busy sandboxes or waiting requests there has an equal
// share of its capacity, and below lists the waiting functions below
// theirs.
type shares struct {
	share int64
	below map[pool.Fn]bool
}

// sharesLocked computes partition pi's shares. Ids of removed functions
// (a queued request's, until it wakes) count for none.
func (c *warmCache) sharesLocked(pi int) shares {
	n := 0
	for g := range c.info {
		g := pool.Fn(g)
		if p, err := c.e.Partition(g); err != nil || p != pi {
			continue
		}
		if u, _ := c.e.Usage(g); u.Busy > 0 || c.waiters[g] > 0 {
			n++
		}
	}
	sh := shares{share: c.e.Stats(pi).Capacity / int64(max(n, 1)), below: map[pool.Fn]bool{}}
	for g := range c.waiters {
		if p, err := c.e.Partition(g); err != nil || p != pi {
			continue
		}
		if u, _ := c.e.Usage(g); u.Busy == 0 || u.BusySize+c.info[g].charge() <= sh.share {
			sh.below[g] = true
		}
	}
	return sh
}

// yieldsLocked is yieldLocked for f in the partition whose shares are sh.
func (c *warmCache) yieldsLocked(f pool.Fn, sh shares) bool {
	if len(c.waiters) == 0 || len(c.waiters) == 1 && c.waiters[f] > 0 {
		return false
	}
	uf, _ := c.e.Usage(f)
	if uf.Busy == 0 || uf.BusySize+c.info[f].charge() <= sh.share {
		return false
	}
	n := len(sh.below)
	if sh.below[f] {
		n--
	}
	return n > 0
}

func (c *warmCache) dropErr(fn registry.Function, charge int64, pi int, ps pool.Stats) error {
	return fmt.Errorf("%s: no room for a sandbox charged %d MB (memory_mb %d) in the %s pool (%d of %d MB in use, %d MB paused): %w",
		fn.Name, charge>>20, fn.Spec.MemoryMB, c.names[pi], ps.Used>>20, ps.Capacity>>20, ps.Idle>>20, ErrDrop)
}

// detachLocked maps evicted or expired engine IDs to their instances and
// forgets them.
func (c *warmCache) detachLocked(ids []pool.ID) []*instance {
	if len(ids) == 0 {
		return nil
	}
	out := make([]*instance, 0, len(ids))
	for _, id := range ids {
		if inst, ok := c.insts[id]; ok {
			delete(c.insts, id)
			delete(c.ids, inst)
			out = append(out, inst)
		}
	}
	if len(c.retired) > 0 {
		c.sweepLocked()
	}
	return out
}

// bind attaches a started sandbox to its reservation and records the
// measured start time as the function's cold-start cost.
func (c *warmCache) bind(id pool.ID, inst *instance, start time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.insts[id] = inst
	c.ids[inst] = id
	c.measureLocked(inst, start)
}

// startCost returns what a start of inst's function costs: its smoothed
// measured start time (0 if none).
func (c *warmCache) startCost(inst *instance) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.fns[fnKey{inst.fn, inst.rev}]
	if !ok {
		return 0
	}
	return c.info[f].cold
}

// measureLocked folds a measured start time into inst's function's cold
// cost (an EWMA, so one slow start does not dominate).
func (c *warmCache) measureLocked(inst *instance, start time.Duration) {
	f, ok := c.fns[fnKey{inst.fn, inst.rev}]
	if !ok {
		return
	}
	fi := &c.info[f]
	if fi.cold == 0 {
		fi.cold = start
	} else {
		fi.cold = (3*fi.cold + start) / 4
	}
	if err := c.e.SetFunc(f, fi.declared, fi.cold); err != nil {
		c.w.log.Warn("warm pool accounting: recording a start's cost", "function", inst.fn, "err", err)
	}
}

// learn folds the peak memory of inst's sandbox after a call into its
// function's start charge (ChargePeak). Under ChargeDeclared the peaks
// are only noted, for the status (StartCharge.Peak): the simulator's
// comparison with a live run charges a warm call its function's peak, as
// the growth watch does.
func (c *warmCache) learn(inst *instance) {
	peak, err := inst.group.PeakMemory()
	if err != nil || peak == 0 {
		return
	}
	c.notePeak(inst, int64(peak))
}

// notePeak is learn with the peak read.
func (c *warmCache) notePeak(inst *instance, peak int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.fns[fnKey{inst.fn, inst.rev}]
	if !ok {
		return
	}
	fi := &c.info[f]
	before := fi.ownPeak()
	start := startCharge(fi.note(&inst.peakSlot, peak), fi.declared)
	delete(c.trials, fi.trial)
	fi.trial, fi.distrust = 0, false // measured
	if c.cfg.Charge != ChargePeak {
		return
	}
	c.setStartLocked(f, start)
	if fi.ownPeak() != before {
		c.refreshKinLocked(fi.kin)
	}
}

// charges describes the start charge of every function the pool knows.
func (c *warmCache) charges() []types.StartCharge {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]types.StartCharge, 0, len(c.fns))
	for _, f := range c.fns {
		fi := &c.info[f]
		sc := types.StartCharge{Function: fi.name, Revision: fi.rev, Declared: fi.declared,
			Peak: fi.ownPeak(), Start: fi.charge()}
		if sc.Peak > 0 {
			sc.Grown = growthCharge(sc.Peak, max(fi.declared, sc.Peak))
		}
		if fi.grewN > 0 {
			sc.GrowthMs = float64(fi.grewSum/time.Duration(fi.grewN)) / float64(time.Millisecond)
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b types.StartCharge) int {
		return cmp.Or(cmp.Compare(a.Function, b.Function), cmp.Compare(a.Revision, b.Revision))
	})
	return out
}

// abort gives back the reservation of a sandbox that failed to start.
func (c *warmCache) abort(id pool.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unmeasuredLocked(id)
	switch err := c.e.Remove(id); {
	case err == nil:
		c.signalLocked()
	case !errors.Is(err, pool.ErrNotFound): // a retirement may have removed it
		c.w.log.Warn("warm pool accounting: giving back a reservation", "err", err)
	}
	if len(c.retired) > 0 {
		c.sweepLocked()
	}
}

// put makes a sandbox idle after its call and, if size is positive,
// charges it that: its memory as the call left it, which the pause
// measures again. Both before any waiting request looks: charged its
// start charge or its call's growth, a sandbox that will pause at a
// fraction of it would be the first evicted for a request in a burst,
// to free memory it does not hold. It returns the sandboxes to destroy:
// inst itself if the pool does not know it (retired meanwhile), or
// those evicted if it is charged more than before. grew, if positive,
// is how far into the call its growth was last charged, for the status
// (StartCharge.GrowthMs).
func (c *warmCache) put(inst *instance, size int64, grew time.Duration) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[inst]
	if !ok || c.closed {
		return []*instance{inst}
	}
	if grew > 0 {
		if f, ok := c.fns[fnKey{inst.fn, inst.rev}]; ok {
			c.info[f].grewSum += grew
			c.info[f].grewN++
		}
	}
	if err := c.e.Release(id, c.now()); err != nil {
		c.w.log.Warn("releasing sandbox", "sandbox", inst.id, "err", err)
		return nil
	}
	var victims []*instance
	if size > 0 {
		ids, err := c.e.Resize(id, size, c.now())
		if err != nil {
			c.w.log.Warn("resizing sandbox", "sandbox", inst.id, "err", err)
		}
		victims = c.detachLocked(ids)
	}
	c.signalLocked()
	c.kick()
	return victims
}

// warm adds a pre-warmed, idle sandbox. It reports false if the pool has no
// free memory for it (a pre-warm never evicts); the caller destroys it.
func (c *warmCache) warm(inst *instance, start time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	f, err := c.fnLocked(inst.fn, inst.rev, inst.declared, nil) // its kin comes with its first call
	if err != nil {
		return false
	}
	c.measureLocked(inst, start)
	id, err := c.e.Warm(f, c.now())
	if err != nil {
		return false
	}
	c.insts[id] = inst
	c.ids[inst] = id
	c.signalLocked()
	c.kick()
	return true
}

// resize charges a sandbox at its measured memory and returns the paused
// sandboxes evicted to make room for growth.
func (c *warmCache) resize(inst *instance, size int64) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[inst]
	if !ok || size <= 0 {
		return nil
	}
	if inst.inUse() {
		// Thawed for a call since it was measured: what it held then
		// must not undo what its growth in the call was charged.
		if cur, err := c.e.Size(id); err != nil || size <= cur {
			return nil
		}
	}
	victims, err := c.e.Resize(id, size, c.now())
	if err != nil {
		c.w.log.Warn("resizing sandbox", "sandbox", inst.id, "err", err)
		return nil
	}
	c.signalLocked()
	return c.detachLocked(victims)
}

// grow charges a sandbox in a call for memory it took beyond its charge,
// once that is more than growthSlack of it: its usage plus growthSlack
// of that, so that steady growth is not charged sample by sample, and
// never more than its limit (or what it is charged already, if more). It
// returns the paused sandboxes evicted to make room and the sandbox's
// charge now (0 if the pool no longer has it). Without it a thawed
// sandbox, charged what it held when it was paused, could grow to its
// limit unseen by the budget until its next pause. grown reports
// whether the charge rose.
func (c *warmCache) grow(inst *instance, usage int64) (victims []*instance, charge int64, grown bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[inst]
	if !ok || c.closed {
		return nil, 0, false
	}
	size, err := c.e.Size(id)
	if err != nil {
		return nil, 0, false
	}
	limit := max(inst.declared, size)
	if inst.declared <= 0 {
		limit = math.MaxInt64
	}
	if usage <= size+growthSlack(size) || size >= limit {
		return nil, size, false
	}
	charge = growthCharge(usage, limit)
	ids, err := c.e.Resize(id, charge, c.now())
	if err != nil {
		c.w.log.Warn("charging a sandbox's growth", "sandbox", inst.id, "err", err)
		return nil, size, false
	}
	return c.detachLocked(ids), charge, true
}

// growthSlack is how far a sandbox of size bytes may grow in a call
// before it is charged for it: an eighth, at least 4 MiB. A warm call
// nearly always takes a little more than its sandbox held when paused
// (a socket buffer, an arena, some page cache); charging that would
// evict paused sandboxes for a few pages.
func growthSlack(size int64) int64 { return max(size/8, 4<<20) }

// growthCharge is what a sandbox in a call that uses usage bytes is
// charged once it has grown past its slack: the usage and a slack for
// more, at most limit.
func growthCharge(usage, limit int64) int64 { return min(usage+growthSlack(usage), limit) }

// remove forgets an idle sandbox; it reports false if the sandbox is busy
// or unknown.
func (c *warmCache) remove(inst *instance) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.ids[inst]
	if !ok || inst.inUse() {
		return false
	}
	c.removeLocked(inst, id)
	return true
}

// forget drops a sandbox that is being destroyed, busy or idle.
func (c *warmCache) forget(inst *instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.ids[inst]; ok {
		c.removeLocked(inst, id)
	}
}

func (c *warmCache) removeLocked(inst *instance, id pool.ID) {
	c.unmeasuredLocked(id)
	delete(c.ids, inst)
	delete(c.insts, id)
	if err := c.e.Remove(id); err != nil {
		c.w.log.Warn("removing sandbox from pool", "sandbox", inst.id, "err", err)
	}
	c.signalLocked()
	if len(c.retired) > 0 {
		c.sweepLocked()
	}
}

// drop removes every idle sandbox of fn not at revision keep (all if keep
// is empty) and returns them to destroy. One in use (taken from the pool,
// even if not yet thawed) finishes its call first; release retires it.
func (c *warmCache) drop(fn, keep string) []*instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*instance
	for inst, id := range c.ids {
		if inst.fn != fn || (keep != "" && inst.rev == keep) || inst.inUse() {
			continue
		}
		c.removeLocked(inst, id)
		out = append(out, inst)
	}
	return out
}

// used returns the bytes charged for paused sandboxes.
func (c *warmCache) used() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for i := range c.e.Partitions() {
		n += c.e.Stats(i).Idle
	}
	return n
}

// stats describes every pool.
func (c *warmCache) stats() []PoolStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PoolStatus, c.e.Partitions())
	for i := range out {
		s := c.e.Stats(i)
		ms := s.MaxSize
		if i == len(out)-1 {
			ms = 0
		}
		out[i] = PoolStatus{
			Name: c.names[i], MaxSize: ms, Capacity: s.Capacity, Used: s.Used, Idle: s.Idle,
			Borrowed: s.Borrowed, Lent: s.Lent, Sandboxes: s.Containers, IdleSandboxes: s.IdleCount,
			Hits: s.Hits, Misses: s.Misses, Drops: c.drops[i], Evictions: s.Evictions,
			Expirations: s.Expirations, Prewarms: s.Prewarms,
		}
	}
	return out
}

// close stops the timer loop; later releases destroy their sandboxes.
func (c *warmCache) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.signalLocked()
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	c.mu.Lock()
	if c.log != nil {
		if err := c.log.close(); err != nil {
			c.w.log.Warn("warm pool", "err", err)
		}
		c.log = nil
	}
	c.mu.Unlock()
}
