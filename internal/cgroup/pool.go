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
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/internal/reserve"
	"golang.org/x/sys/unix"
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
// the background (a reserve.Pool of groups). A group from Get goes back
// with Put (which cleans it) or is deleted by its owner; either is fine.
//
// A Pool is safe for concurrent use. Close deletes the ready groups and
// retries the quarantined ones; it does not touch groups that are out.
type Pool struct {
	m   *Manager
	cfg PoolConfig
	res *reserve.Pool[*Group]
	seq atomic.Int64 // numbers the groups' names

	mu          sync.Mutex
	quarantined []*Group // guarded by mu
	names       []string // guarded by mu; quarantined names, for Stats
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
	if cfg.MaxIdle == 0 {
		cfg.MaxIdle = 2 * cfg.Reserve
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
	p := &Pool{m: m, cfg: cfg}
	p.res = reserve.New(reserve.Config[*Group]{
		Reserve:      cfg.Reserve,
		MaxIdle:      cfg.MaxIdle,
		RefillDelay:  cfg.RefillDelay,
		CleanTimeout: 10 * time.Second,
		Make: func(context.Context) (*Group, error) {
			// On failure the refiller tries again on the next Get or Put;
			// Get falls back to Create meanwhile and reports the error.
			return m.Create(p.name(), Limits{})
		},
		Clean:   p.clean,
		Destroy: func(ctx context.Context, g *Group) error { return g.Delete(ctx) },
		Discard: p.quarantine,
		Closed:  fmt.Errorf("cgroup pool: %w", ErrPoolClosed),
	})
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
		g, ok, err := p.res.Take()
		if err != nil {
			return nil, err
		}
		if !ok {
			return p.m.Create(p.name(), lim)
		}
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
	if err := p.res.Put(ctx, g); err != nil {
		return fmt.Errorf("cgroup %s: %w: %w", g.name, err, ErrQuarantined)
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
	if g.m != p.m {
		g.Delete(context.Background())
		return
	}
	p.res.Release(g)
}

// clean makes g as good as new.
func (p *Pool) clean(ctx context.Context, g *Group) error {
	if g.deleted.Load() {
		return ErrDeleted // deleted by its owner after Release: nothing to keep
	}
	// A group its owner emptied (a sandbox's Destroy kills and waits) is
	// empty at the first look, or known to be without one (knownEmpty);
	// only one with processes left is killed here and looked at again
	// after the thaw. Nothing else can add one: only the worker moves
	// processes into groups.
	var left []int
	if !g.knownEmpty() {
		var err error
		if left, err = firstProcs(g.dirs); err != nil {
			return err
		}
	}
	if len(left) > 0 {
		if err := g.kill(ctx); err != nil {
			return fmt.Errorf("killing: %w", err)
		}
	}
	// The sandbox's processes cannot make child groups (no privileges),
	// but a group with children must never be handed out as empty.
	for _, d := range g.dirs {
		if !mayHaveChildren(d) {
			continue
		}
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
	if err := g.setFrozen(ctx, false, 0); err != nil {
		return fmt.Errorf("thawing: %w", err)
	}
	if len(left) > 0 {
		if pids, err := firstProcs(g.dirs); err != nil || len(pids) > 0 {
			return fmt.Errorf("processes left after kill: %v (%v)", pids, err)
		}
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

// mayHaveChildren reports whether the group directory d may hold child
// groups. cgroupfs (kernfs) gives a directory 2 links plus one per
// subdirectory, so a stat answers what listing its dozens of files
// would, on every clean; any other count (a file system that does not
// count, or an error) says list it.
func mayHaveChildren(d string) bool {
	var st unix.Stat_t
	ok, err := statHeld(d, &st)
	if !ok {
		err = unix.Stat(d, &st)
	}
	return err != nil || st.Nlink != 2
}

// quarantine keeps g aside for good: it could not be cleaned (or
// deleted). A group already deleted is only forgotten.
func (p *Pool) quarantine(g *Group, err error) {
	if errors.Is(err, ErrDeleted) {
		return
	}
	p.mu.Lock()
	p.quarantined = append(p.quarantined, g)
	p.names = append(p.names, g.name)
	p.mu.Unlock()
	if p.cfg.OnQuarantine != nil {
		p.cfg.OnQuarantine(g.name, err)
	}
}

// Fill blocks until the reserve is full or ctx ends.
func (p *Pool) Fill(ctx context.Context) error { return p.res.Fill(ctx) }

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	r := p.res.Stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{
		Ready: r.Ready, Hits: r.Hits, Misses: r.Misses, Created: r.Made, Reused: r.Reused, Removed: r.Removed,
		Quarantined: len(p.quarantined), QuarantinedNames: slices.Clone(p.names),
	}
}

// Close stops the refiller, deletes the ready groups and tries once more
// to delete the quarantined ones. Groups still out are their owners' (or
// the Manager's Close's) to delete.
func (p *Pool) Close(ctx context.Context) error {
	if p.res.Closed() {
		return nil
	}
	errs := []error{p.res.Close(ctx)}
	p.mu.Lock()
	gs := p.quarantined
	p.quarantined = nil
	p.mu.Unlock()
	for _, g := range gs {
		if err := g.Delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pool) name() string {
	return p.cfg.Prefix + "-" + strconv.FormatInt(p.seq.Add(1), 10)
}

// reclaimFloor is the page cache and anonymous memory below which a
// group's cleaning does not reclaim: what is left counts in the next
// sandbox's charges, which is less than the margin of a start charge.
const reclaimFloor = 1 << 20

// reclaimable returns the page cache and anonymous memory charged to the
// memory group dir, from its memory.stat.
func (m *Manager) reclaimable(dir string) (uint64, error) {
	b, err := readFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return 0, err
	}
	keys := []string{"anon", "file"}
	if m.mode == V1 {
		keys = []string{"rss", "cache"} // cache includes shmem
	}
	var n uint64
	for _, k := range keys {
		v, err := parseKey(b, k, dir)
		if err != nil {
			return 0, err
		}
		n += v
	}
	return n, nil
}

// resetCounters zeroes the counters the kernel lets us zero, gives the
// group's remaining charges back (page cache of a dead sandbox), and
// records the OOM-kill count (and v2's "oom" events) as the new
// baselines for OOMKills and ReachedLimit.
func (m *Manager) resetCounters(g *Group) error {
	memDir := g.dirs[m.mem]
	// Reclaim only what reclaim gives back: page cache and anonymous
	// memory. Otherwise a forked sandbox leaves kernel memory and per-CPU
	// charge caches (4-300 KiB here) that no reclaim frees, and
	// force_empty retries on them, rounds of reclaim and a drain of every
	// CPU's page lists, for nothing: 10 % of the worker's CPU per start.
	left, lerr := m.reclaimable(memDir)
	reclaim := lerr != nil || left >= reclaimFloor
	if m.mode == V1 {
		// force_empty fails with EBUSY if a task is left; there is none.
		// First, so the peak restarts from what is left afterwards.
		if reclaim {
			if err := writeFile(filepath.Join(memDir, "memory.force_empty"), "0"); err != nil {
				return err
			}
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
		if m.acct >= 0 {
			if err := writeFile(filepath.Join(g.dirs[m.acct], "cpuacct.usage"), "0"); err != nil {
				return err
			}
		}
	} else if m.enabled["memory"] {
		g.peakStale = true
		// memory.reclaim (Linux 5.19) pushes out what a dead sandbox left
		// charged; EAGAIN only means it could not reclaim all of it.
		if reclaim {
			if err := writeFile(filepath.Join(memDir, "memory.reclaim"), "1G"); err != nil &&
				!errors.Is(err, os.ErrNotExist) && !isAgain(err) {
				return err
			}
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
