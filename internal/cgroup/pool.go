package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/reserve"
)

// PoolConfig configures a Pool. The zero value keeps eight groups ready.
type PoolConfig struct {
	// Reserve is how many clean groups the background refiller keeps
	// ready (default 8).
	Reserve int
	// MaxIdle caps the ready groups: Put keeps a returned group while
	// fewer are ready and deletes it otherwise (default 2*Reserve;
	// smaller values count as Reserve). Reusing is cheaper than creating,
	// so returned groups may stand above the reserve for a while.
	MaxIdle int
	// Prefix starts the names of the pool's groups (default "pool"). Names
	// are Prefix-N; they must not collide with other groups of the
	// manager.
	Prefix string
	// RefillDelay is how long the refiller waits after the last Get before
	// it cleans or creates groups, unless fewer than a quarter of the
	// reserve is ready (default 5 ms; negative: no wait): during a burst
	// the CPU is the burst's.
	RefillDelay time.Duration
	// OnQuarantine, if set, is called (from the goroutine that called Put)
	// for each group that could not be cleaned.
	OnQuarantine func(name string, err error)
}

// PoolStats counts a pool's work since it was made.
type PoolStats struct {
	Ready       int   `json:"ready"`       // clean groups waiting
	Hits        int64 `json:"hits"`        // Gets served from the reserve
	Misses      int64 `json:"misses"`      // Gets that created a group on demand
	Created     int64 `json:"created"`     // groups created in the background
	Reused      int64 `json:"reused"`      // Puts that returned a group to the reserve
	Removed     int64 `json:"removed"`     // Puts that deleted a group (reserve full)
	Quarantined int   `json:"quarantined"` // groups that could not be cleaned
	// QuarantinedNames lists the quarantined groups, oldest first.
	QuarantinedNames []string `json:"quarantined_names,omitempty"`
}

// Pool hands out pre-created, clean groups of one Manager so that a cold
// start does not pay for mkdir in four hierarchies. It refills itself in
// the background. A group from Get goes back with Put (which cleans it) or
// is deleted by its owner; either is fine.
//
// A Pool is safe for concurrent use. Close deletes the ready groups and
// retries the quarantined ones; it does not touch groups that are out.
type Pool struct {
	m   *Manager
	cfg PoolConfig

	kick chan struct{} // wakes the refiller
	stop chan struct{}
	done chan struct{}

	mu          sync.Mutex
	ready       []*Group  // guarded by mu; clean, unlimited groups
	dirty       []*Group  // guarded by mu; released, waiting to be cleaned
	lastGet     time.Time // guarded by mu
	quarantined []*Group  // guarded by mu
	names       []string  // guarded by mu; quarantined names, for Stats
	seq         int       // guarded by mu
	st          PoolStats
	closed      bool
}

// NewPool starts a pool of m's groups; the reserve fills in the background
// (Fill waits for it). The caller must Close the pool before the manager.
func (m *Manager) NewPool(cfg PoolConfig) (*Pool, error) {
	if cfg.Reserve < 0 {
		return nil, fmt.Errorf("cgroup pool: reserve %d: %w", cfg.Reserve, ErrBadLimits)
	}
	if cfg.Reserve == 0 {
		cfg.Reserve = 8
	}
	if cfg.MaxIdle < cfg.Reserve {
		if cfg.MaxIdle == 0 {
			cfg.MaxIdle = 2 * cfg.Reserve
		} else {
			cfg.MaxIdle = cfg.Reserve
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "pool"
	}
	if cfg.RefillDelay == 0 {
		cfg.RefillDelay = 5 * time.Millisecond
	}
	if !validName(cfg.Prefix + "-0") {
		return nil, fmt.Errorf("cgroup pool prefix %q: %w", cfg.Prefix, ErrBadName)
	}
	p := &Pool{m: m, cfg: cfg, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.refill()
	p.wake()
	return p, nil
}

// Get returns a group with limits lim: a ready one when there is one, else
// a new one created on the spot (counted as a miss). The caller owns it
// and must Put or Delete it.
func (p *Pool) Get(ctx context.Context, lim Limits) (*Group, error) {
	if err := lim.validate(); err != nil {
		return nil, fmt.Errorf("cgroup pool: %w", err)
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, fmt.Errorf("cgroup pool: %w", ErrPoolClosed)
		}
		p.lastGet = time.Now()
		n := len(p.ready)
		if n == 0 {
			p.st.Misses++
			name := p.nameLocked()
			p.mu.Unlock()
			p.wake()
			return p.m.Create(name, lim)
		}
		g := p.ready[n-1]
		p.ready = p.ready[:n-1]
		p.st.Hits++
		p.mu.Unlock()
		p.wake()
		if err := p.m.setLimits(g, lim); err != nil {
			// Broken between Put and now (removed by hand?): drop it and
			// try the next one.
			p.quarantine(g, fmt.Errorf("setting limits: %w", err))
			if errors.Is(err, ErrNoController) {
				return nil, fmt.Errorf("cgroup %s: %w", g.name, err)
			}
			continue
		}
		g.limit = lim.MemoryBytes
		return g, nil
	}
}

// Put cleans g and keeps it for reuse, or deletes it when MaxIdle groups
// are ready. Cleaning kills whatever still runs in g, removes child groups,
// thaws it, and resets its limits and counters. A group that cannot be
// cleaned is quarantined: it is never handed out again, reported through
// Stats and OnQuarantine, and Put returns an error wrapping
// ErrQuarantined. Put blocks while it kills; call it off the critical path.
func (p *Pool) Put(ctx context.Context, g *Group) error {
	if g == nil || g.m != p.m {
		return fmt.Errorf("cgroup pool: group from another manager: %w", ErrBadName)
	}
	if g.deleted.Load() {
		return fmt.Errorf("cgroup %s: %w", g.name, ErrDeleted)
	}
	if err := p.clean(ctx, g); err != nil {
		p.quarantine(g, err)
		return fmt.Errorf("cgroup %s: %v: %w", g.name, err, ErrQuarantined)
	}
	p.mu.Lock()
	if !p.closed && len(p.ready) < p.cfg.MaxIdle {
		p.ready = append(p.ready, g)
		p.st.Reused++
		p.mu.Unlock()
		return nil
	}
	p.st.Removed++
	p.mu.Unlock()
	if err := g.Delete(ctx); err != nil {
		p.quarantine(g, err)
		return fmt.Errorf("cgroup %s: %v: %w", g.name, err, ErrQuarantined)
	}
	return nil
}

// Release hands g back without waiting: the refiller cleans it (as Put
// does) once Gets have quietened down. Use it on the path that tears a
// sandbox down.
func (p *Pool) Release(g *Group) {
	if g == nil {
		return
	}
	p.mu.Lock()
	if p.closed || g.m != p.m {
		p.mu.Unlock()
		g.Delete(context.Background())
		return
	}
	p.dirty = append(p.dirty, g)
	p.mu.Unlock()
	p.wake()
}

// clean makes g as good as new.
func (p *Pool) clean(ctx context.Context, g *Group) error {
	if err := g.kill(ctx); err != nil {
		return fmt.Errorf("killing: %w", err)
	}
	// The sandbox's processes cannot make child groups (no privileges),
	// but a group with children must never be handed out as empty.
	for _, d := range g.dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				if err := removeTree(ctx, filepath.Join(d, e.Name())); err != nil {
					return fmt.Errorf("removing child group: %w", err)
				}
			}
		}
	}
	if err := g.setFrozen(ctx, false); err != nil {
		return fmt.Errorf("thawing: %w", err)
	}
	if pids, err := procsUnion(g.dirs); err != nil || len(pids) > 0 {
		return fmt.Errorf("processes left after kill: %v (%v)", pids, err)
	}
	if err := p.m.setLimits(g, Limits{}); err != nil {
		return fmt.Errorf("resetting limits: %w", err)
	}
	g.limit = 0
	if err := p.m.resetCounters(g); err != nil {
		return fmt.Errorf("resetting counters: %w", err)
	}
	return nil
}

func (p *Pool) quarantine(g *Group, err error) {
	p.mu.Lock()
	p.quarantined = append(p.quarantined, g)
	p.names = append(p.names, g.name)
	p.mu.Unlock()
	if p.cfg.OnQuarantine != nil {
		p.cfg.OnQuarantine(g.name, err)
	}
}

// Fill blocks until the reserve is full or ctx ends.
func (p *Pool) Fill(ctx context.Context) error {
	for {
		p.mu.Lock()
		n, closed := len(p.ready), p.closed
		p.mu.Unlock()
		if closed {
			return fmt.Errorf("cgroup pool: %w", ErrPoolClosed)
		}
		if n >= p.cfg.Reserve {
			return nil
		}
		p.wake()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.Ready = len(p.ready)
	s.Quarantined = len(p.quarantined)
	s.QuarantinedNames = slices.Clone(p.names)
	return s
}

// Close stops the refiller, deletes the ready groups and tries once more
// to delete the quarantined ones. Groups still out are their owners' (or
// the Manager's Close's) to delete.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	<-p.done
	p.mu.Lock()
	gs := append(append(p.ready, p.dirty...), p.quarantined...)
	p.ready, p.dirty, p.quarantined = nil, nil, nil
	p.mu.Unlock()
	var errs []error
	for _, g := range gs {
		if err := g.Delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) nameLocked() string {
	p.seq++
	return p.cfg.Prefix + "-" + strconv.Itoa(p.seq)
}

// refill cleans released groups and creates new ones until the reserve
// is full, whenever woken; it holds back while Gets keep coming unless
// the reserve runs low.
func (p *Pool) refill() {
	defer close(p.done)
	reserve.Loop(p.kick, p.stop, p.cfg.RefillDelay, p.due, p.makeOne)
}

func (p *Pool) due() reserve.Due {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := reserve.Level(p.closed, len(p.ready), p.cfg.Reserve, p.lastGet)
	if len(p.dirty) > 0 {
		d.Clean = p.cleanOne
	}
	return d
}

// cleanOne cleans the oldest released group back into the reserve.
func (p *Pool) cleanOne() {
	p.mu.Lock()
	if len(p.dirty) == 0 {
		p.mu.Unlock()
		return
	}
	dirty := p.dirty[0]
	p.dirty = p.dirty[1:]
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	p.Put(ctx, dirty) // quarantine is reported through OnQuarantine
	cancel()
}

// makeOne creates a group for the reserve.
func (p *Pool) makeOne() (more, closed bool) {
	p.mu.Lock()
	name := p.nameLocked()
	p.mu.Unlock()
	g, err := p.m.Create(name, Limits{})
	if err != nil {
		// Try again on the next wake-up (the next Get or Put); Get falls
		// back to Create meanwhile and reports the error.
		return false, false
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		g.Delete(context.Background())
		return false, true
	}
	p.st.Created++
	if len(p.ready) >= p.cfg.MaxIdle {
		// Puts refilled the reserve while this group was being made.
		p.mu.Unlock()
		g.Delete(context.Background())
		return false, false
	}
	p.ready = append(p.ready, g)
	p.mu.Unlock()
	return true, false
}

// SetLimits changes the limits of a live group, zero values as the
// defaults. Lowering the memory limit below the group's usage fails.
func (g *Group) SetLimits(lim Limits) error {
	if err := lim.validate(); err != nil {
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	if err := g.m.setLimits(g, lim); err != nil {
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	g.limit = lim.MemoryBytes
	return nil
}

// SetCPUWeight changes only the group's CPU weight (1-10000; 100 is the
// default share).
func (g *Group) SetCPUWeight(w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("cgroup %s: cpu weight %d: %w", g.name, w, ErrBadLimits)
	}
	m := g.m
	var err error
	if m.mode == V1 {
		err = writeFile(filepath.Join(g.dirs[m.cpu], "cpu.shares"), strconv.FormatUint(max(w*1024/100, 2), 10))
	} else if m.enabled["cpu"] {
		err = writeFile(filepath.Join(g.dirs[0], "cpu.weight"), strconv.FormatUint(w, 10))
	} else {
		err = fmt.Errorf("cpu weight: %w", ErrNoController)
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	return nil
}

// setLimits writes lim to an existing group, zero values as the defaults.
func (m *Manager) setLimits(g *Group, lim Limits) error {
	if m.mode == V1 {
		return m.limitsV1(g, lim, false)
	}
	return m.limitsV2(g, lim)
}

// limitsV2 writes a v2 group's limit files. A controller that is not
// enabled is skipped when its default is wanted and reported otherwise.
func (m *Manager) limitsV2(g *Group, lim Limits) error {
	dir := g.dirs[0]
	type w struct {
		ctl, file, val string
		set            bool
	}
	mem, swap, pids, wt := "max", "max", "max", "100"
	period := strconv.FormatInt(int64(CPUPeriod/time.Microsecond), 10)
	quota := "max " + period
	if lim.CPUs > 0 {
		quota = strconv.FormatInt(lim.cpuQuota(), 10) + " " + period
	}
	if lim.MemoryBytes > 0 {
		mem, swap = strconv.FormatInt(lim.MemoryBytes, 10), "0"
	}
	if lim.Pids > 0 {
		pids = strconv.FormatInt(lim.Pids, 10)
	}
	if lim.CPUWeight > 0 {
		wt = strconv.FormatUint(lim.CPUWeight, 10)
	}
	ws := []w{
		{"memory", "memory.max", mem, lim.MemoryBytes > 0},
		{"memory", "memory.swap.max", swap, lim.MemoryBytes > 0},
		{"pids", "pids.max", pids, lim.Pids > 0},
		{"cpu", "cpu.weight", wt, lim.CPUWeight > 0},
		{"cpu", "cpu.max", quota, lim.CPUs > 0},
	}
	for _, x := range ws {
		if !m.enabled[x.ctl] {
			if x.set {
				return fmt.Errorf("%s: %w", x.file, ErrNoController)
			}
			continue
		}
		if x.file == "memory.swap.max" && !m.swap {
			continue
		}
		if err := writeFile(filepath.Join(dir, x.file), x.val); err != nil {
			return err
		}
	}
	return nil
}

// resetCounters zeroes the counters the kernel lets us zero, gives the
// group's remaining charges back (page cache of a dead sandbox), and
// records the OOM-kill count (and v2's "oom" events) as the new
// baselines for OOMKills and ReachedLimit.
func (m *Manager) resetCounters(g *Group) error {
	memDir := g.dirs[m.mem]
	if m.mode == V1 {
		// force_empty fails with EBUSY if a task is left; there is none.
		// First, so the peak restarts from what is left afterwards.
		if err := writeFile(filepath.Join(memDir, "memory.force_empty"), "0"); err != nil {
			return err
		}
		files := []string{"memory.max_usage_in_bytes", "memory.failcnt"}
		if m.swap {
			files = append(files, "memory.memsw.max_usage_in_bytes", "memory.memsw.failcnt")
		}
		for _, f := range files {
			if err := writeFile(filepath.Join(memDir, f), "0"); err != nil {
				return err
			}
		}
		// cpuacct is often co-mounted with cpu; reset its usage if so.
		if err := writeFile(filepath.Join(g.dirs[m.cpu], "cpuacct.usage"), "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	} else if m.enabled["memory"] {
		// memory.reclaim (Linux 5.19) pushes out what a dead sandbox left
		// charged; EAGAIN only means it could not reclaim all of it.
		if err := writeFile(filepath.Join(memDir, "memory.reclaim"), "1G"); err != nil &&
			!errors.Is(err, os.ErrNotExist) && !isAgain(err) {
			return err
		}
	}
	n, err := g.rawOOMKills()
	if err != nil && !errors.Is(err, ErrNoController) {
		return err
	}
	g.oomBase = n
	if m.mode == V2 {
		n, err := readKey(filepath.Join(g.dirs[0], "memory.events"), "oom")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		g.oomEvBase = n
	}
	return nil
}
