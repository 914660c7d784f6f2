package pool

import (
	"fmt"
	"math"
	"time"
)

// Fn identifies a function registered with AddFunc. IDs are dense small
// integers so per-function state is a slice index, not a map lookup.
type Fn uint32

// ID identifies a container. It encodes a slot and a generation, so a stale
// ID of a removed container is reported as ErrNotFound, never confused with
// a newer one. The zero ID is never used.
type ID uint64

// Partition is one size class of the pool.
type Partition struct {
	// MaxSize is the largest declared function size (bytes) routed here;
	// larger functions go to the next partition. The last partition takes
	// every size and its MaxSize is ignored.
	MaxSize int64
	// Capacity is the partition's memory budget in bytes.
	Capacity int64
}

// Config configures an Engine.
type Config struct {
	// Partitions lists the size classes in increasing MaxSize order; one
	// partition is a unified pool. At least one is required.
	Partitions []Partition
	// Borrow lets a partition that would otherwise drop a new container use
	// spare (unused) capacity of another partition; the lender takes it
	// back by evicting the borrower once it is idle, when the lender needs
	// room. KiSS pools are static, so it is off by default.
	Borrow bool
	// Oversize places a function larger than its partition's capacity in
	// the partition with the most capacity instead, and lets one larger
	// than that too borrow the rest from the partition with the most
	// memory not held by busy containers, evicting idle containers of
	// both as needed. Without it such a function is always dropped, as
	// in KiSS, whose static pools the simulator reproduces.
	Oversize bool
	// NewPolicy returns a fresh policy; it is called once per partition so
	// each partition has its own clock and state. Required.
	NewPolicy func() Policy
	// Observe, if not nil, is told of every change to a container, in
	// order, from inside the Engine's method that made it; it must not
	// call the Engine.
	Observe func(Event)
}

// Stats describes one partition.
type Stats struct {
	MaxSize  int64 // routing bound, as configured
	Capacity int64 // bytes
	// Used is the memory charged against Capacity: the partition's own
	// containers plus what it lent to others. It exceeds Capacity only after
	// Resize grew busy containers beyond it.
	Used       int64
	Idle       int64 // bytes of idle containers charged here
	Borrowed   int64 // bytes this partition's containers took from others
	Lent       int64 // bytes other partitions took from this one
	Containers int   // live containers in this partition
	IdleCount  int   // of which idle

	Hits        uint64 // Acquire found a warm container
	Misses      uint64 // cold starts: Admit succeeded
	Drops       uint64 // Admit failed with ErrDrop
	Evictions   uint64 // idle containers evicted to make room
	Expirations uint64 // idle containers whose keep-alive ran out
	Prewarms    uint64 // containers started by Warm
	Removed     uint64 // containers removed by the caller
}

// Engine is the warm-pool state machine. See the package documentation.
type Engine struct {
	parts    []part
	layout   []Partition // as configured
	fns      []fnState
	freeFns  []Fn // ids of removed functions, for AddFunc to reuse
	cs       []ctr
	free     []int32
	borrow   bool
	oversize bool
	seq      uint64

	idlePos []int32 // shared by every partition's idle heap
	expPos  []int32
	exp     heap // idle containers with a keep-alive, by expiry time
	pwPos   []int32
	pw      heap // functions with a pending prewarm, by start time

	out   []ID // returned by Admit, Resize, Expire
	outFn []Fn // returned by Prewarm

	observe func(Event)   // Config.Observe
	clock   time.Duration // the last now given, for Events
}

type part struct {
	Partition
	pol      Policy
	clock    float64
	own      int64 // bytes of containers here charged to this partition
	lent     int64
	borrowed int64
	idleOwn  int64
	n, nIdle int
	idle     heap
	st       Stats
}

type fnState struct {
	size     int64 // routes the function to its partition
	start    int64 // charge of a new container; 0: size (SetStartCharge)
	cold     time.Duration
	part     int32
	over     bool // larger than its partition's capacity: borrows (Oversize)
	n, busy  int32
	busySize int64 // bytes of its busy containers
	idle     int32 // head of the idle list (most recently released), -1 if none
	freq     int64
	lastEnd  time.Duration
	seen     bool
	pwDue    bool
	pwKeep   time.Duration
	declared bool // registered and not removed
}

type ctr struct {
	gen        uint32
	live, busy bool
	fn         Fn
	part       int32
	lender     int32
	size       int64
	borrowed   int64
	expire     time.Duration
	prev, next int32 // idle list of the function
}

// New returns an engine for cfg.
func New(cfg Config) (*Engine, error) {
	if len(cfg.Partitions) == 0 {
		return nil, fmt.Errorf("no partitions: %w", ErrConfig)
	}
	if cfg.NewPolicy == nil {
		return nil, fmt.Errorf("no policy: %w", ErrConfig)
	}
	e := &Engine{borrow: cfg.Borrow, oversize: cfg.Oversize, observe: cfg.Observe}
	e.exp.pos = &e.expPos
	e.pw.pos = &e.pwPos
	for i, p := range cfg.Partitions {
		if p.Capacity < 0 {
			return nil, fmt.Errorf("partition %d: negative capacity %d: %w", i, p.Capacity, ErrConfig)
		}
		if i > 0 && i < len(cfg.Partitions)-1 && p.MaxSize <= cfg.Partitions[i-1].MaxSize {
			return nil, fmt.Errorf("partition %d: max size %d not above previous %d: %w", i, p.MaxSize, cfg.Partitions[i-1].MaxSize, ErrConfig)
		}
		if i < len(cfg.Partitions)-1 && p.MaxSize <= 0 {
			return nil, fmt.Errorf("partition %d: max size %d must be positive: %w", i, p.MaxSize, ErrConfig)
		}
		pol := cfg.NewPolicy()
		if pol == nil {
			return nil, fmt.Errorf("partition %d: NewPolicy returned nil: %w", i, ErrConfig)
		}
		e.parts = append(e.parts, part{Partition: p, pol: pol})
	}
	e.layout = append([]Partition(nil), cfg.Partitions...)
	for i := range e.parts {
		e.parts[i].idle.pos = &e.idlePos
	}
	return e, nil
}

// Split divides total bytes into partitions: fractions[i] of the memory for
// functions up to thresholds[i] bytes, the last fraction for the rest. So
// Split(8<<30, []float64{0.8, 0.2}, []int64{225 << 20}) is the KiSS default
// and Split(total, []float64{1}, nil) a unified pool. Rounding leftovers go
// to the last partition so capacities sum to total.
func Split(total int64, fractions []float64, thresholds []int64) ([]Partition, error) {
	if total < 0 {
		return nil, fmt.Errorf("negative total %d: %w", total, ErrConfig)
	}
	if len(fractions) == 0 || len(thresholds) != len(fractions)-1 {
		return nil, fmt.Errorf("%d fractions need %d thresholds, got %d: %w", len(fractions), max(len(fractions)-1, 0), len(thresholds), ErrConfig)
	}
	sum := 0.0
	for _, f := range fractions {
		if !(f > 0 && f <= 1) {
			return nil, fmt.Errorf("fraction %v not in (0,1]: %w", f, ErrConfig)
		}
		sum += f
	}
	if math.Abs(sum-1) > 1e-6 {
		return nil, fmt.Errorf("fractions sum to %v, not 1: %w", sum, ErrConfig)
	}
	ps := make([]Partition, len(fractions))
	rest := total
	for i, f := range fractions {
		if i < len(thresholds) {
			if thresholds[i] <= 0 || (i > 0 && thresholds[i] <= thresholds[i-1]) {
				return nil, fmt.Errorf("thresholds must be positive and increasing, got %v: %w", thresholds, ErrConfig)
			}
			ps[i].MaxSize = thresholds[i]
			ps[i].Capacity = int64(float64(total) * f)
			rest -= ps[i].Capacity
		} else {
			ps[i].MaxSize = math.MaxInt64
			ps[i].Capacity = rest
		}
	}
	return ps, nil
}

// AddFunc registers a function whose containers use size bytes and take
// cold longer to start than to run warm. It returns the function's id.
func (e *Engine) AddFunc(size int64, cold time.Duration) (Fn, error) {
	if size <= 0 || cold < 0 {
		return 0, fmt.Errorf("function size %d, cold cost %v: %w", size, cold, ErrConfig)
	}
	f := fnState{size: size, cold: cold, idle: -1, declared: true}
	e.place(&f)
	if n := len(e.freeFns); n > 0 {
		fn := e.freeFns[n-1]
		e.freeFns = e.freeFns[:n-1]
		e.fns[fn] = f
		return fn, nil
	}
	if len(e.fns) >= math.MaxInt32 {
		return 0, fmt.Errorf("too many functions: %w", ErrConfig)
	}
	fn := Fn(len(e.fns))
	e.fns = append(e.fns, f)
	e.pwPos = append(e.pwPos, 0)
	return fn, nil
}

// RemoveFunc forgets fn, which must have no containers (else ErrState),
// so that a long-lived engine holds state only for the functions it
// still serves: AddFunc reuses the id, and each partition's policy that
// is a Forgetter drops what it kept about fn.
func (e *Engine) RemoveFunc(fn Fn) error {
	f, err := e.fn(fn)
	if err != nil {
		return err
	}
	if f.n > 0 {
		return fmt.Errorf("function %d has %d containers: %w", fn, f.n, ErrState)
	}
	if e.pw.has(int32(fn)) {
		e.pw.remove(int32(fn))
	}
	for i := range e.parts {
		if fg, ok := e.parts[i].pol.(Forgetter); ok {
			fg.Forget(fn)
		}
	}
	e.fns[fn] = fnState{idle: -1}
	e.freeFns = append(e.freeFns, fn)
	return nil
}

// Funcs returns how many functions are registered (added, not removed).
func (e *Engine) Funcs() int { return len(e.fns) - len(e.freeFns) }

// SetFunc updates a function's declared size and cold cost (for example
// with a measured cold-start time). New containers use them; existing
// containers keep their partition and size (see Resize).
func (e *Engine) SetFunc(fn Fn, size int64, cold time.Duration) error {
	f, err := e.fn(fn)
	if err != nil {
		return err
	}
	if size <= 0 || cold < 0 {
		return fmt.Errorf("function size %d, cold cost %v: %w", size, cold, ErrConfig)
	}
	f.size, f.cold = size, cold
	e.place(f)
	return nil
}

// SetStartCharge sets what a new container of fn is charged when it is
// admitted or pre-warmed, until Resize measures it: for example the peak
// its containers were measured to use. A charge above the size counts as
// the size. The function keeps its partition, which its size decides. 0
// charges the size again.
func (e *Engine) SetStartCharge(fn Fn, bytes int64) error {
	f, err := e.fn(fn)
	if err != nil {
		return err
	}
	if bytes < 0 {
		return fmt.Errorf("start charge %d: %w", bytes, ErrConfig)
	}
	f.start = bytes
	return nil
}

// charge is what a new container of f is charged.
func (f *fnState) charge() int64 {
	if f.start > 0 {
		return min(f.start, f.size)
	}
	return f.size
}

// place routes f to its partition by its size.
func (e *Engine) place(f *fnState) {
	pi := route(e.layout, f.size, e.oversize)
	f.part, f.over = int32(pi), e.oversize && f.size > e.layout[pi].Capacity
}

func (e *Engine) fn(fn Fn) (*fnState, error) {
	if int(fn) >= len(e.fns) || !e.fns[fn].declared {
		return nil, fmt.Errorf("function %d: %w", fn, ErrNotFound)
	}
	return &e.fns[fn], nil
}

// Route returns the partition a function of the given size goes to.
func (e *Engine) Route(size int64) int { return route(e.layout, size, e.oversize) }

// route is the partition of the given size in parts: the first whose
// MaxSize it does not exceed; with oversize, one it does not fit goes to
// the partition with the most capacity (the last of equals) instead.
func route(parts []Partition, size int64, oversize bool) int {
	pi := len(parts) - 1
	for i := 0; i < len(parts)-1; i++ {
		if size <= parts[i].MaxSize {
			pi = i
			break
		}
	}
	if !oversize || size <= parts[pi].Capacity {
		return pi
	}
	for i, p := range parts {
		if p.Capacity >= parts[pi].Capacity {
			pi = i
		}
	}
	return pi
}

// Fits reports whether a container of size bytes could ever be admitted
// under cfg, with no other container in the pool: within its
// partition's capacity, or, with Borrow or Oversize, within that plus
// the largest capacity of another partition. With one or two partitions
// and Oversize, that is the whole memory.
func (cfg Config) Fits(size int64) bool {
	if len(cfg.Partitions) == 0 {
		return false
	}
	pi := route(cfg.Partitions, size, cfg.Oversize)
	room := cfg.Partitions[pi].Capacity
	if size <= room {
		return true
	}
	if !cfg.Borrow && !cfg.Oversize {
		return false
	}
	var other int64
	for i, p := range cfg.Partitions {
		if i != pi {
			other = max(other, p.Capacity)
		}
	}
	return size <= room+other
}

// Fits reports whether a container of size bytes could ever be admitted
// (see Config.Fits).
func (e *Engine) Fits(size int64) bool {
	return Config{Partitions: e.layout, Borrow: e.borrow, Oversize: e.oversize}.Fits(size)
}

// Partition returns the partition fn's new containers go to.
func (e *Engine) Partition(fn Fn) (int, error) {
	f, err := e.fn(fn)
	if err != nil {
		return 0, err
	}
	return int(f.part), nil
}

// Usage describes a function's containers.
type Usage struct {
	Containers int   // live containers, busy and idle
	Busy       int   // of which busy
	BusySize   int64 // bytes charged for the busy ones
}

// Usage returns what fn's containers hold.
func (e *Engine) Usage(fn Fn) (Usage, error) {
	f, err := e.fn(fn)
	if err != nil {
		return Usage{}, err
	}
	return Usage{Containers: int(f.n), Busy: int(f.busy), BusySize: f.busySize}, nil
}

// Size returns the bytes charged for container id.
func (e *Engine) Size(id ID) (int64, error) {
	_, c, err := e.lookup(id)
	if err != nil {
		return 0, err
	}
	return c.size, nil
}

// Partitions returns the number of partitions.
func (e *Engine) Partitions() int { return len(e.parts) }

// Stats returns the statistics of partition i.
func (e *Engine) Stats(i int) Stats {
	p := &e.parts[i]
	s := p.st
	s.MaxSize, s.Capacity = p.MaxSize, p.Capacity
	s.Used, s.Idle, s.Borrowed, s.Lent = p.own+p.lent, p.idleOwn, p.borrowed, p.lent
	s.Containers, s.IdleCount = p.n, p.nIdle
	return s
}

// Used returns the bytes of all live containers.
func (e *Engine) Used() int64 {
	var u int64
	for i := range e.parts {
		u += e.parts[i].own + e.parts[i].borrowed
	}
	return u
}

// Acquire records an invocation of fn at now and returns a warm idle
// container for it (now busy) if there is one. On a miss the caller cold
// starts with Admit. Acquire must be called exactly once per invocation: it
// feeds the policy's history and the hit counter.
func (e *Engine) Acquire(fn Fn, now time.Duration) (ID, bool) {
	if int(fn) >= len(e.fns) || !e.fns[fn].declared {
		return 0, false
	}
	f := &e.fns[fn]
	idle := time.Duration(-1)
	if f.seen {
		idle = 0
		if f.busy == 0 {
			idle = max(now-f.lastEnd, 0)
		}
	}
	f.seen = true
	f.freq++
	if e.pw.has(int32(fn)) {
		// The function came before its predicted time: drop the prewarm;
		// the next release schedules a fresh one.
		e.pw.remove(int32(fn))
	}
	f.pwDue = false
	p := &e.parts[f.part]
	p.pol.Arrive(fn, now, idle)
	slot := f.idle
	if slot < 0 {
		return 0, false
	}
	c := &e.cs[slot]
	cp := &e.parts[c.part]
	e.unidle(slot, c, cp)
	c.busy = true
	f.busy++
	f.busySize += c.size
	cp.st.Hits++
	if e.observe != nil {
		e.clock = now
		e.emit(OpHit, slot, e.Used())
	}
	return e.id(slot), true
}

// Admit cold starts a container for fn at now after a missed Acquire. It
// returns the new container (busy) and the idle containers evicted to make
// room, which the caller must kill. If the container does not fit even after
// evicting every idle container of its partition, Admit evicts nothing and
// returns ErrDrop itself, unwrapped: drops are frequent in simulations of
// small pools and must not allocate.
func (e *Engine) Admit(fn Fn, now time.Duration) (ID, []ID, error) {
	f, err := e.fn(fn)
	if err != nil {
		return 0, nil, err
	}
	e.out = e.out[:0]
	e.clock = now
	pi := f.part
	p := &e.parts[pi]
	lender, ok := e.makeRoom(pi, f.charge(), e.borrow || f.over, false)
	if !ok && f.over {
		lender, ok = e.stretch(pi, f.charge())
	}
	if !ok {
		p.st.Drops++
		return 0, e.out, ErrDrop
	}
	slot := e.create(fn, f, pi, lender)
	c := &e.cs[slot]
	c.busy = true
	f.busy++
	f.busySize += c.size
	p.st.Misses++
	if e.observe != nil {
		e.emit(OpAdmit, slot, e.Used())
	}
	return e.id(slot), e.out, nil
}

// Warm starts an idle container for fn ahead of a predicted arrival (see
// Prewarm). A speculative container never evicts warm ones: if it does not
// fit in free memory, Warm returns ErrDrop (not counted as a drop).
func (e *Engine) Warm(fn Fn, now time.Duration) (ID, error) {
	f, err := e.fn(fn)
	if err != nil {
		return 0, err
	}
	pi := f.part
	p := &e.parts[pi]
	if p.Capacity-p.own-p.lent < f.charge() {
		f.pwDue = false
		return 0, ErrDrop
	}
	keep := p.pol.KeepAlive(fn, now)
	if f.pwDue {
		keep = f.pwKeep
		f.pwDue = false
	}
	slot := e.create(fn, f, pi, -1)
	e.idleAt(slot, &e.cs[slot], now, keep)
	p.st.Prewarms++
	if e.observe != nil {
		e.clock = now
		e.emit(OpWarm, slot, e.Used())
	}
	return e.id(slot), nil
}

// Release marks a busy container idle at now (its invocation finished).
func (e *Engine) Release(id ID, now time.Duration) error {
	slot, c, err := e.lookup(id)
	if err != nil {
		return err
	}
	if !c.busy {
		return fmt.Errorf("releasing idle container %#x: %w", id, ErrState)
	}
	c.busy = false
	f := &e.fns[c.fn]
	f.busy--
	f.busySize -= c.size
	if now > f.lastEnd {
		f.lastEnd = now
	}
	p := &e.parts[c.part]
	e.idleAt(slot, c, now, p.pol.KeepAlive(c.fn, now))
	if e.observe != nil {
		e.clock = now
		e.emit(OpRelease, slot, e.Used())
	}
	if at, keep, ok := p.pol.Prewarm(c.fn, now); ok {
		fi := int32(c.fn)
		if e.pw.has(fi) {
			e.pw.remove(fi)
		}
		f.pwKeep = keep
		e.seq++
		e.pw.push(fi, float64(at), e.seq)
	}
	return nil
}

// Remove forgets a container that died or was retired by the caller. It may
// be busy or idle.
func (e *Engine) Remove(id ID) error {
	slot, c, err := e.lookup(id)
	if err != nil {
		return err
	}
	if c.busy {
		e.fns[c.fn].busy--
		e.fns[c.fn].busySize -= c.size
	}
	e.parts[c.part].st.Removed++
	e.dropAs(OpRemove, slot)
	return nil
}

// Resize sets a container's accounted size to its measured usage at now.
// Growth may evict idle containers of its partition (returned, to be
// killed) and, with Borrow, take spare memory of another partition.
// Memory in use cannot be refused, so if that is not enough the
// partition stays over capacity until containers go away; Stats shows it.
func (e *Engine) Resize(id ID, size int64, now time.Duration) ([]ID, error) {
	slot, c, err := e.lookup(id)
	if err != nil {
		return nil, err
	}
	e.clock = now
	if size <= 0 {
		return nil, fmt.Errorf("resizing container %#x to %d bytes: %w", id, size, ErrConfig)
	}
	e.out = e.out[:0]
	p := &e.parts[c.part]
	delta := size - c.size
	if c.busy {
		e.fns[c.fn].busySize += delta
	}
	if delta <= 0 {
		shrink := -delta
		if r := min(shrink, c.borrowed); r > 0 {
			c.borrowed -= r
			p.borrowed -= r
			e.parts[c.lender].lent -= r
			shrink -= r
		}
		p.own -= shrink
		if !c.busy {
			p.idleOwn -= shrink
		}
		c.size = size
		if e.observe != nil {
			e.emit(OpResize, slot, e.Used())
		}
		return e.out, nil
	}
	// Take the container out of the idle heap while making room so it does
	// not evict itself.
	wasIdle := !c.busy && p.idle.has(slot)
	var key hent
	if wasIdle {
		for _, h := range p.idle.a {
			if h.slot == slot {
				key = h
				break
			}
		}
		p.idle.remove(slot)
		p.idleOwn -= c.size - c.borrowed
	}
	lender, _ := e.makeRoom(c.part, delta, e.borrow || e.fns[c.fn].over, true)
	c.size = size
	if lender >= 0 && c.borrowed > 0 && lender != c.lender {
		// A container borrows from one lender; the partition stays over
		// capacity instead until containers go away.
		lender = -1
	}
	if lender >= 0 {
		free := max(p.Capacity-p.own-p.lent, 0)
		d := delta - free
		c.lender, c.borrowed = lender, c.borrowed+d
		p.borrowed += d
		e.parts[lender].lent += d
		p.own += delta - d
	} else {
		p.own += delta
	}
	if wasIdle {
		p.idle.push(slot, key.key, key.seq)
		p.idleOwn += c.size - c.borrowed
	}
	if e.observe != nil {
		e.emit(OpResize, slot, e.Used())
	}
	return e.out, nil
}

// Expire removes the idle containers whose keep-alive ended at or before
// now and returns them; the caller kills them. Expiry is eager: memory is
// freed when the keep-alive ends, not lazily when space is next needed, so
// the pool's accounting and the TTL semantics match what a user is promised
// (an idle sandbox costs nothing after its TTL) and the simulator does not
// count dead-weight containers as warm capacity.
func (e *Engine) Expire(now time.Duration) []ID {
	e.out = e.out[:0]
	e.clock = now
	for e.exp.len() > 0 {
		h := e.exp.min()
		if time.Duration(h.key) > now {
			break
		}
		c := &e.cs[h.slot]
		e.parts[c.part].st.Expirations++
		e.out = append(e.out, e.id(h.slot))
		e.dropAs(OpExpire, h.slot)
	}
	return e.out
}

// NextExpiry returns when the next idle container expires.
func (e *Engine) NextExpiry() (time.Duration, bool) {
	if e.exp.len() == 0 {
		return 0, false
	}
	return time.Duration(e.exp.min().key), true
}

// Prewarm returns the functions whose predicted arrival is due at now and
// that have no idle container; the caller starts one for each with Warm.
func (e *Engine) Prewarm(now time.Duration) []Fn {
	e.outFn = e.outFn[:0]
	for e.pw.len() > 0 {
		h := e.pw.min()
		if time.Duration(h.key) > now {
			break
		}
		e.pw.remove(h.slot)
		f := &e.fns[h.slot]
		if f.idle >= 0 {
			continue
		}
		f.pwDue = true
		e.outFn = append(e.outFn, Fn(h.slot))
	}
	return e.outFn
}

// NextPrewarm returns when the next predicted prewarm is due.
func (e *Engine) NextPrewarm() (time.Duration, bool) {
	if e.pw.len() == 0 {
		return 0, false
	}
	return time.Duration(e.pw.min().key), true
}

// makeRoom frees need bytes in partition pi. In order it uses free memory,
// then (with borrow) spare memory of another partition, then loans of pi's
// memory held by idle containers of other partitions (reclaimed by evicting
// them), then pi's own idle containers, lowest priority first. It returns
// the lender for the part that pi cannot hold itself (-1 if none) and
// whether need fits. When need cannot fit it evicts nothing, unless force
// (memory already in use) asks to evict as much as it can anyway.
func (e *Engine) makeRoom(pi int32, need int64, borrow, force bool) (int32, bool) {
	p := &e.parts[pi]
	free := p.Capacity - p.own - p.lent
	if free >= need {
		return -1, true
	}
	var reclaim int64
	if p.lent > 0 {
		reclaim = e.idleBorrowers(pi)
	}
	lender, spare := int32(-1), int64(0)
	if borrow {
		// Unused memory elsewhere first: borrowing it evicts nothing, and
		// its owner takes it back when it needs it.
		lender, spare = e.bestLender(pi, false)
		if free+spare >= need {
			return lender, true
		}
		if free+reclaim+spare >= need {
			e.reclaim(pi, need)
			if p.Capacity-p.own-p.lent >= need {
				return -1, true
			}
			return lender, true
		}
		// Evicting our idle containers also returns what they borrowed.
		lender, spare = e.bestLender(pi, true)
	}
	if free+reclaim+p.idleOwn+spare < need {
		if force {
			e.reclaim(pi, math.MaxInt64)
			e.evictAll(p)
		}
		return -1, false
	}
	// Loans go back first: borrowers are guests, and the partition's own
	// idle containers are its warm set.
	if reclaim > 0 {
		e.reclaim(pi, need)
	}
	for p.Capacity-p.own-p.lent < need && p.idle.len() > 0 {
		e.evictMin(p)
	}
	if p.Capacity-p.own-p.lent >= need {
		return -1, true
	}
	return lender, lender >= 0
}

// stretch makes room for a container of an Oversize function that
// makeRoom could not place: more than partition pi can hold even with the
// spare memory of another. It counts the memory of pi and of each other
// partition not held by busy containers; if pi's and the best other's
// together are enough, it evicts the idle containers (and idle borrowers)
// of pi, then as many of the other's as the rest needs, lowest priority
// first, and returns the other as the lender. Otherwise it evicts nothing.
func (e *Engine) stretch(pi int32, need int64) (int32, bool) {
	lender, room := int32(-1), int64(0)
	for qi := range e.parts {
		if int32(qi) == pi {
			continue
		}
		if r := e.room(int32(qi)); lender < 0 || r > room {
			lender, room = int32(qi), r
		}
	}
	if lender < 0 || e.room(pi)+room < need {
		return -1, false
	}
	p, q := &e.parts[pi], &e.parts[lender]
	e.reclaim(pi, need)
	for p.Capacity-p.own-p.lent < need && p.idle.len() > 0 {
		e.evictMin(p)
	}
	short := need - max(p.Capacity-p.own-p.lent, 0)
	if short <= 0 {
		return -1, true
	}
	e.reclaim(lender, short)
	for q.Capacity-q.own-q.lent < short && q.idle.len() > 0 {
		e.evictMin(q)
	}
	return lender, q.Capacity-q.own-q.lent >= short
}

// room returns the memory of partition pi that busy containers do not
// hold: free, idle own and lent to idle containers of others.
func (e *Engine) room(pi int32) int64 {
	p := &e.parts[pi]
	var idleLent int64
	if p.lent > 0 {
		idleLent = e.idleBorrowers(pi)
	}
	return p.Capacity - (p.own - p.idleOwn) - (p.lent - idleLent)
}

// bestLender returns the partition other than pi with the most spare
// memory, and that amount; with idle, counting what evicting pi's idle
// containers would return to it.
func (e *Engine) bestLender(pi int32, idle bool) (int32, int64) {
	best, bestFree := int32(-1), int64(0)
	for qi := range e.parts {
		if int32(qi) == pi {
			continue
		}
		q := &e.parts[qi]
		qf := q.Capacity - q.own - q.lent
		if idle {
			qf += e.idleLoans(pi, int32(qi))
		}
		if qf > bestFree {
			best, bestFree = int32(qi), qf
		}
	}
	return best, bestFree
}

// evictMin evicts the lowest-priority idle container of p and advances p's
// clock as the policy says.
func (e *Engine) evictMin(p *part) {
	h := p.idle.min()
	p.clock = p.pol.Evicted(h.key, p.clock)
	p.st.Evictions++
	e.out = append(e.out, e.id(h.slot))
	e.dropAs(OpEvict, h.slot)
}

func (e *Engine) evictAll(p *part) {
	for p.idle.len() > 0 {
		e.evictMin(p)
	}
}

// idleBorrowers sums the loans partition pi made to idle containers of
// other partitions. Only used with borrowing, so a scan is fine.
func (e *Engine) idleBorrowers(pi int32) int64 {
	var s int64
	for qi := range e.parts {
		if int32(qi) == pi {
			continue
		}
		for _, h := range e.parts[qi].idle.a {
			if c := &e.cs[h.slot]; c.borrowed > 0 && c.lender == pi {
				s += c.borrowed
			}
		}
	}
	return s
}

// reclaim evicts idle containers of other partitions that borrowed from pi,
// lowest priority first within each partition, until pi has need bytes
// free or no such container is left.
func (e *Engine) reclaim(pi int32, need int64) {
	p := &e.parts[pi]
	for p.Capacity-p.own-p.lent < need {
		var (
			victim hent
			vq     *part
		)
		for qi := range e.parts {
			q := &e.parts[qi]
			if int32(qi) == pi {
				continue
			}
			for _, h := range q.idle.a {
				if c := &e.cs[h.slot]; c.borrowed > 0 && c.lender == pi &&
					(vq == nil || h.key < victim.key || (h.key == victim.key && h.seq < victim.seq)) {
					victim, vq = h, q
				}
			}
		}
		if vq == nil {
			return
		}
		vq.clock = vq.pol.Evicted(victim.key, vq.clock)
		vq.st.Evictions++
		e.out = append(e.out, e.id(victim.slot))
		e.dropAs(OpEvict, victim.slot)
	}
}

// idleLoans sums what idle containers of partition pi borrowed from qi.
func (e *Engine) idleLoans(pi, qi int32) int64 {
	if e.parts[pi].borrowed == 0 {
		return 0
	}
	var s int64
	for _, h := range e.parts[pi].idle.a {
		c := &e.cs[h.slot]
		if c.borrowed > 0 && c.lender == qi {
			s += c.borrowed
		}
	}
	return s
}

// create allocates a container of fn in partition pi, charging the part
// that does not fit in pi's free memory to lender (if >= 0).
func (e *Engine) create(fn Fn, f *fnState, pi, lender int32) int32 {
	var slot int32
	if n := len(e.free); n > 0 {
		slot = e.free[n-1]
		e.free = e.free[:n-1]
	} else {
		slot = int32(len(e.cs))
		e.cs = append(e.cs, ctr{})
		e.idlePos = append(e.idlePos, 0)
		e.expPos = append(e.expPos, 0)
	}
	c := &e.cs[slot]
	size := f.charge()
	*c = ctr{gen: c.gen + 1, live: true, fn: fn, part: pi, lender: -1, size: size, prev: -1, next: -1}
	if c.gen == 0 {
		c.gen = 1
	}
	p := &e.parts[pi]
	charge := size
	if lender >= 0 {
		free := max(p.Capacity-p.own-p.lent, 0)
		c.lender, c.borrowed = lender, size-free
		p.borrowed += c.borrowed
		e.parts[lender].lent += c.borrowed
		charge = free
	}
	p.own += charge
	p.n++
	f.n++
	return slot
}

// idleAt makes container slot idle at now with the given keep-alive.
func (e *Engine) idleAt(slot int32, c *ctr, now, keep time.Duration) {
	p := &e.parts[c.part]
	f := &e.fns[c.fn]
	e.seq++
	prio := p.pol.Priority(Entry{Fn: c.fn, Size: c.size, ColdCost: f.cold, Freq: f.freq, Now: now}, p.clock)
	p.idle.push(slot, prio, e.seq)
	p.idleOwn += c.size - c.borrowed
	p.nIdle++
	c.prev, c.next = -1, f.idle
	if f.idle >= 0 {
		e.cs[f.idle].prev = slot
	}
	f.idle = slot
	if keep >= 0 {
		c.expire = now + keep
		e.exp.push(slot, float64(c.expire), e.seq)
	}
}

// unidle takes an idle container out of the idle structures.
func (e *Engine) unidle(slot int32, c *ctr, p *part) {
	p.idle.remove(slot)
	if e.exp.has(slot) {
		e.exp.remove(slot)
	}
	p.idleOwn -= c.size - c.borrowed
	p.nIdle--
	f := &e.fns[c.fn]
	if c.prev >= 0 {
		e.cs[c.prev].next = c.next
	} else {
		f.idle = c.next
	}
	if c.next >= 0 {
		e.cs[c.next].prev = c.prev
	}
	c.prev, c.next = -1, -1
}

// dropAs drops a container and tells the observer why.
func (e *Engine) dropAs(op Op, slot int32) {
	if e.observe == nil {
		e.drop(slot)
		return
	}
	c := &e.cs[slot]
	used := e.Used() - c.size
	e.emit(op, slot, used)
	e.drop(slot)
}

// drop removes a container from every structure and frees its slot.
func (e *Engine) drop(slot int32) {
	c := &e.cs[slot]
	p := &e.parts[c.part]
	if !c.busy {
		e.unidle(slot, c, p)
	}
	p.own -= c.size - c.borrowed
	if c.borrowed > 0 {
		p.borrowed -= c.borrowed
		e.parts[c.lender].lent -= c.borrowed
	}
	p.n--
	f := &e.fns[c.fn]
	f.n--
	if f.n == 0 {
		f.freq = 0
	}
	c.live, c.busy = false, false
	e.free = append(e.free, slot)
}

func (e *Engine) id(slot int32) ID { return ID(uint64(e.cs[slot].gen)<<32 | uint64(uint32(slot))) }

func (e *Engine) lookup(id ID) (int32, *ctr, error) {
	slot := int64(uint32(id))
	if slot >= int64(len(e.cs)) {
		return 0, nil, fmt.Errorf("container %#x: %w", id, ErrNotFound)
	}
	c := &e.cs[slot]
	if !c.live || c.gen != uint32(id>>32) {
		return 0, nil, fmt.Errorf("container %#x: %w", id, ErrNotFound)
	}
	return int32(slot), c, nil
}

// Check verifies the engine's internal invariants: byte and count
// accounting recomputed from the containers, idle lists and heaps, and that
// no partition's charged memory exceeds its capacity (unless overcommit is
// true, as Resize may cause). It is O(containers) and meant for tests.
func (e *Engine) Check(overcommit bool) error {
	type acc struct {
		own, borrowed, lent, idleOwn int64
		n, nIdle                     int
	}
	a := make([]acc, len(e.parts))
	fnN := make([]int32, len(e.fns))
	fnBusy := make([]int32, len(e.fns))
	fnBusySize := make([]int64, len(e.fns))
	for s := range e.cs {
		c := &e.cs[s]
		if !c.live {
			continue
		}
		x := &a[c.part]
		x.own += c.size - c.borrowed
		x.n++
		if c.borrowed > 0 {
			x.borrowed += c.borrowed
			a[c.lender].lent += c.borrowed
		}
		fnN[c.fn]++
		if c.busy {
			fnBusy[c.fn]++
			fnBusySize[c.fn] += c.size
			if e.parts[c.part].idle.has(int32(s)) || e.exp.has(int32(s)) {
				return fmt.Errorf("busy container slot %d is in an idle heap", s)
			}
		} else {
			x.idleOwn += c.size - c.borrowed
			x.nIdle++
			if !e.parts[c.part].idle.has(int32(s)) {
				return fmt.Errorf("idle container slot %d missing from its partition's heap", s)
			}
		}
	}
	for i := range e.parts {
		p, x := &e.parts[i], a[i]
		if p.own != x.own || p.borrowed != x.borrowed || p.lent != x.lent || p.idleOwn != x.idleOwn || p.n != x.n || p.nIdle != x.nIdle || p.idle.len() != x.nIdle {
			return fmt.Errorf("partition %d accounting: have own=%d borrowed=%d lent=%d idle=%d n=%d nIdle=%d heap=%d, recomputed %+v",
				i, p.own, p.borrowed, p.lent, p.idleOwn, p.n, p.nIdle, p.idle.len(), x)
		}
		if !overcommit && p.own+p.lent > p.Capacity {
			return fmt.Errorf("partition %d uses %d bytes of %d", i, p.own+p.lent, p.Capacity)
		}
	}
	for i := range e.fns {
		f := &e.fns[i]
		if f.n != fnN[i] || f.busy != fnBusy[i] || f.busySize != fnBusySize[i] {
			return fmt.Errorf("function %d: n=%d busy=%d (%d bytes), recomputed n=%d busy=%d (%d bytes)",
				i, f.n, f.busy, f.busySize, fnN[i], fnBusy[i], fnBusySize[i])
		}
		k := 0
		for s := f.idle; s >= 0; s = e.cs[s].next {
			c := &e.cs[s]
			if !c.live || c.busy || c.fn != Fn(i) {
				return fmt.Errorf("function %d idle list holds slot %d (live=%v busy=%v fn=%d)", i, s, c.live, c.busy, c.fn)
			}
			if k++; k > len(e.cs) {
				return fmt.Errorf("function %d idle list loops", i)
			}
		}
	}
	return nil
}
