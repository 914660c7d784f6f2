package cgroup

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cgroups "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/pidfd"
)

// Mode is the cgroup version sandboxes are placed in.
type Mode string

// The two modes. A hybrid host (v1 controllers plus an empty cgroup2 mount)
// counts as V1.
const (
	V1 Mode = "v1"
	V2 Mode = "v2"
)

// DefaultRoot is where cgroup file systems are mounted on Linux.
const DefaultRoot = "/sys/fs/cgroup"

// v1Controllers are the only v1 hierarchies Hearth creates groups in. The
// first one holds the memory files. cpuacct is optional: where it is
// mounted apart from cpu, a group of its own per sandbox is the only
// count of the CPU its processes used, exited ones included.
var v1Controllers = [...]cgroup1.Name{cgroup1.Memory, cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Pids, cgroup1.Freezer}

// v2Controllers are enabled for the parent's children when available.
var v2Controllers = [...]string{"cpu", "memory", "pids"}

// Limits are the resource limits of a group. The zero value means no limits.
type Limits struct {
	// MemoryBytes caps memory; swap is not allowed on top of it where the
	// kernel accounts swap (v1 memory.memsw.limit_in_bytes, v2
	// memory.swap.max). Zero means no limit.
	MemoryBytes int64
	// Pids caps the number of tasks (processes and threads). Zero means no
	// limit.
	Pids int64
	// CPUWeight is the relative CPU weight, 1..10000 with 100 the default.
	// v1 maps it to cpu.shares = weight*1024/100. Zero keeps the default.
	CPUWeight uint64
	// CPUs caps the CPU time the group gets, in CPUs (0.5 is half of one
	// CPU's time, 2 two CPUs'): a quota of CPUs*CPUPeriod per CPUPeriod
	// (v1 cpu.cfs_quota_us, v2 cpu.max). A weight only divides what is
	// contended; a quota bounds a busy group even on an idle host. Zero
	// means no quota; at least MinCPUs otherwise.
	CPUs float64
}

// CPU quota bounds: the period every quota is over, and the smallest
// quota the kernel takes (1 ms per period).
const (
	CPUPeriod = 100 * time.Millisecond
	MinCPUs   = 0.01
)

func (l Limits) validate() error {
	if l.MemoryBytes < 0 || l.Pids < 0 || l.CPUWeight > 10000 || l.CPUs < 0 || l.CPUs > 0 && l.CPUs < MinCPUs {
		return fmt.Errorf("%w: %+v", ErrBadLimits, l)
	}
	return nil
}

// cpuQuota is l's quota per CPUPeriod in microseconds, or -1 for none.
func (l Limits) cpuQuota() int64 {
	if l.CPUs <= 0 {
		return -1
	}
	return int64(math.Round(l.CPUs * float64(CPUPeriod/time.Microsecond)))
}

// Option configures a Manager.
type Option func(*options)

// WithFreezerPin keeps an empty freezer group frozen below the parent
// for the manager's life (v1; see pinFreezer). One per host suffices:
// the worker's sandbox manager takes it.
func WithFreezerPin() Option { return func(o *options) { o.pin = true } }

type options struct {
	pin       bool
	mode      Mode
	root      string
	noUnified bool
}

// withoutUnified keeps a v1 manager off a hybrid host's cgroup2 mount
// (see Manager.uni): its kills freeze and signal, as on a host without
// one. For tests of that path.
func withoutUnified() Option { return func(o *options) { o.noUnified = true } }

// WithMode forces the cgroup version instead of detecting it.
func WithMode(m Mode) Option { return func(o *options) { o.mode = m } }

// WithRoot sets the cgroup mount root (default DefaultRoot). For V1 it is
// the directory holding one mount per controller; for V2 it is the cgroup2
// mount itself (for example /sys/fs/cgroup/unified on a hybrid host).
func WithRoot(dir string) Option { return func(o *options) { o.root = dir } }

// Manager owns a parent group and the sandbox groups created below it.
// It is safe for concurrent use.
type Manager struct {
	mode   Mode
	root   string
	parent string
	// hiers are the distinct hierarchy mount points used (one on v2);
	// mem, cpu, acct, pids and frz index the ones holding each controller
	// (acct is -1 on a v1 host without cpuacct).
	hiers                     []string
	mem, cpu, acct, pids, frz int
	v1                        cgroup1.Hierarchy // v1 only
	v2                        *cgroup2.Manager  // v1: nil; v2: the parent group
	swap                      bool              // kernel accounts swap
	enabled                   map[string]bool   // v2: controllers enabled for children
	pin                       string            // v1: the frozen group pinFreezer made, or ""; guarded by mu
	// uni indexes, on a v1 host, the hybrid cgroup2 mount (always
	// hiers[0]; -1 if not used). It holds no controllers; a group there
	// is where its processes are killed, all at once with cgroup.kill
	// (Linux 5.14), and listed first. Add and ProcsFiles put a process
	// there before any v1 hierarchy, so a process in the group's v1
	// groups is in it too (its children inherit it).
	uni int

	mu     sync.Mutex
	groups map[string]*Group // guarded by mu
}

// NewManager detects the cgroup mode and creates the parent group, a clean
// relative path such as "hearth", in every hierarchy it uses. The caller
// must call Close when done.
func NewManager(parent string, opts ...Option) (*Manager, error) {
	o := options{root: DefaultRoot}
	for _, opt := range opts {
		opt(&o)
	}
	if !validParent(parent) {
		return nil, fmt.Errorf("cgroup parent %q: %w", parent, ErrBadName)
	}
	m := &Manager{parent: parent, groups: make(map[string]*Group), uni: -1}
	var err error
	m.mode, m.root, err = detect(o)
	if err != nil {
		return nil, err
	}
	switch m.mode {
	case V1:
		err = m.initV1(!o.noUnified)
	case V2:
		err = m.initV2()
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup parent %s (%s): %w", parent, m.mode, err)
	}
	if o.pin && m.mode == V1 {
		m.pinFreezer()
	}
	return m, nil
}

// detect picks the mode and the mount root for it.
func detect(o options) (Mode, string, error) {
	switch o.mode {
	case V1, V2:
		return o.mode, o.root, nil
	case "":
	default:
		return "", "", fmt.Errorf("%w %q", ErrBadMode, o.mode)
	}
	if o.root == DefaultRoot {
		switch cgroups.Mode() {
		case cgroups.Unified:
			return V2, o.root, nil
		case cgroups.Legacy:
			return V1, o.root, nil
		case cgroups.Hybrid:
			// Hybrid hosts usually keep every controller on v1; if not,
			// the cgroup2 side is where limits work.
			if isFS(filepath.Join(o.root, "memory"), unix.CGROUP_SUPER_MAGIC) {
				return V1, o.root, nil
			}
			return V2, filepath.Join(o.root, "unified"), nil
		}
		return "", "", ErrNoCgroups
	}
	// cgroups.Mode only looks at DefaultRoot; do the same checks here.
	switch {
	case isFS(o.root, unix.CGROUP2_SUPER_MAGIC):
		return V2, o.root, nil
	case isFS(filepath.Join(o.root, "memory"), unix.CGROUP_SUPER_MAGIC):
		return V1, o.root, nil
	case isFS(filepath.Join(o.root, "unified"), unix.CGROUP2_SUPER_MAGIC):
		return V2, filepath.Join(o.root, "unified"), nil
	}
	return "", "", fmt.Errorf("%s: %w", o.root, ErrNoCgroups)
}

// Mode reports the cgroup version in use.
func (m *Manager) Mode() Mode { return m.mode }

// Parent returns the parent group's path relative to each hierarchy root.
func (m *Manager) Parent() string { return m.parent }

// Dirs returns the parent group's directory in every hierarchy used.
func (m *Manager) Dirs() []string { return m.dirs("") }

func (m *Manager) dirs(name string) []string {
	d := make([]string, len(m.hiers))
	for i, h := range m.hiers {
		d[i] = filepath.Join(h, m.parent, name)
	}
	return d
}

// Create makes a child group of the parent with the given limits. It fails
// with ErrExists if a group of that name exists (Sweep removes leftovers).
// The caller must Delete the group, or Close the manager.
func (m *Manager) Create(name string, lim Limits) (_ *Group, err error) {
	if !validName(name) {
		return nil, fmt.Errorf("cgroup %q: %w", name, ErrBadName)
	}
	if err := lim.validate(); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	g := &Group{m: m, name: name, dirs: m.dirs(name), limit: lim.MemoryBytes}
	// An explicit mkdir first: the library uses MkdirAll, which would
	// silently adopt a stale group and its processes.
	if err := os.Mkdir(g.dirs[0], 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("cgroup %s: %w", name, ErrExists)
		}
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			for _, d := range g.dirs {
				unix.Rmdir(d)
			}
		}
	}()
	switch m.mode {
	case V1:
		err = m.createV1(g, lim)
	case V2:
		err = m.createV2(g, lim)
	}
	if errors.Is(err, os.ErrExist) {
		// In a v1 hierarchy only: dirs[0] was made above.
		return nil, fmt.Errorf("cgroup %s: %w: %w", name, ErrExists, err)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", name, err)
	}
	// createV1 wrote what differs from a new group's defaults; the
	// library's v2 create is left unknown (the first set writes all).
	g.lim, g.limKnown = lim, m.mode == V1
	g.held = holdDirs(g.dirs)
	m.mu.Lock()
	m.groups[name] = g
	m.mu.Unlock()
	return g, nil
}

// Sweep kills and removes every child group of the parent that this
// manager did not create, such as those left by a crashed worker. It
// returns how many it removed.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	names := map[string]bool{}
	for _, d := range m.Dirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return 0, fmt.Errorf("sweeping %s: %w", d, err)
		}
		for _, e := range ents {
			if e.IsDir() {
				names[e.Name()] = true
			}
		}
	}
	m.mu.Lock()
	for n := range m.groups {
		delete(names, n)
	}
	if m.pin != "" {
		delete(names, pinName)
	}
	m.mu.Unlock()
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	// Thawed first, all of them: the worker that froze them is gone, and
	// a process frozen in one group can be listed in another's (a child
	// a zygote's frozen group held while the worker moved it, caught
	// half-way: in its sandbox's twin or first hierarchies, still in the
	// zygote's freezer). Killed there, it would never die.
	gs := make([]*Group, len(sorted))
	for i, n := range sorted {
		gs[i] = &Group{m: m, name: n, dirs: m.dirs(n)}
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		gs[i].setFrozen(tctx, false, 0) // a group gone meanwhile, or never frozen
		cancel()
	}
	count := 0
	for _, g := range gs {
		if err := g.remove(ctx); err != nil {
			return count, fmt.Errorf("sweeping: %w", err)
		}
		count++
	}
	return count, nil
}

// Close deletes every group the manager created, then the parent group if
// nothing else lives in it.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	gs := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		gs = append(gs, g)
	}
	m.mu.Unlock()
	var errs []error
	for _, g := range gs {
		if err := g.Delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	m.mu.Lock()
	pin := m.pin
	m.pin = ""
	m.mu.Unlock()
	if pin != "" {
		// Empty, so it goes frozen or not.
		if err := unix.Rmdir(pin); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing %s: %w", pin, err))
		}
	}
	for _, d := range m.Dirs() {
		err := unix.Rmdir(d)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, fmt.Errorf("removing parent %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Usage returns the memory charged to the parent group, which includes
// every sandbox below it.
func (m *Manager) Usage() (uint64, error) {
	return memUsage(m.mode, filepath.Join(m.hiers[m.mem], m.parent))
}

func memUsage(mode Mode, dir string) (uint64, error) {
	file := "memory.usage_in_bytes"
	if mode == V2 {
		file = "memory.current"
	}
	v, err := readUint(filepath.Join(dir, file))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("memory usage of %s: %w", dir, ErrNoController)
	}
	if err != nil {
		return 0, fmt.Errorf("memory usage: %w", err)
	}
	return v, nil
}

func (m *Manager) forget(g *Group) {
	m.mu.Lock()
	if m.groups[g.name] == g {
		delete(m.groups, g.name)
	}
	m.mu.Unlock()
}

// Group is one sandbox's cgroup: one directory per hierarchy on v1, a
// single directory on v2.
type Group struct {
	m     *Manager
	name  string
	dirs  []string
	held  []*dirFD // descriptors of dirs (holdDirs), nil where none
	limit int64
	c2    *cgroup2.Manager // v2 only
	// oomBase is the OOM-kill count when a pool last cleaned the group;
	// the kernel counter cannot be reset. oomEvBase is the same for v2's
	// "oom" events.
	oomBase, oomEvBase uint64
	// peakStale marks a v2 group a pool cleaned for reuse (PeakMemory).
	peakStale bool
	// lim is the group's limits as the last write left its files, if
	// limKnown (see setLimits); limMu guards both and orders the writes.
	limMu    sync.Mutex
	lim      Limits
	limKnown bool

	deleted atomic.Bool

	// joins counts the moves into the group through Add, each counted
	// once done (or failed); a kill that left the group empty stores in
	// emptyAt 1 + joins as it was before it looked (0: none yet, so a
	// zero Group is never known empty). shared marks a group whose paths
	// or cgroup.procs files were handed out (Dirs, ProcsFiles): a
	// process can then enter it without Add. Only a group never shared,
	// killed empty with no Add since, is known to be empty (knownEmpty).
	joins, emptyAt atomic.Int64
	shared         atomic.Bool
}

// knownEmpty reports whether g is surely empty without reading its
// cgroup.procs files: never shared, killed empty, nothing added since.
func (g *Group) knownEmpty() bool {
	return !g.shared.Load() && g.emptyAt.Load() == g.joins.Load()+1
}

// Name returns the group's name below the parent.
func (g *Group) Name() string { return g.name }

// Dirs returns the group's directory in every hierarchy.
func (g *Group) Dirs() []string {
	g.shared.Store(true)
	return g.dirs
}

// MemoryLimit returns the memory limit the group was created with (0 for
// none).
func (g *Group) MemoryLimit() int64 { return g.limit }

// Add moves process pid into the group (on v1: first into the hybrid
// cgroup2 mount's group, if used, then every v1 hierarchy, the freezer's
// last).
func (g *Group) Add(pid int) error {
	if g.deleted.Load() {
		return fmt.Errorf("cgroup %s: %w", g.name, ErrDeleted)
	}
	if pid <= 0 {
		return fmt.Errorf("cgroup %s: adding pid %d: %w", g.name, pid, ErrBadPid)
	}
	// Counted after the move, failed or not: a kill that read the count
	// before it and found no process then records an older count.
	defer g.joins.Add(1)
	var err error
	if g.c2 != nil {
		err = g.c2.AddProc(uint64(pid))
	} else {
		// In g.dirs order, so the cgroup2 group (hiers[0]) first: see
		// Manager.uni. The freezer's last: a process moved from a
		// frozen group (see zygote's join) thaws there, and must stay
		// frozen until it is in every other hierarchy.
		dirs := slices.Concat(g.dirs[:g.m.frz], g.dirs[g.m.frz+1:], g.dirs[g.m.frz:g.m.frz+1])
		err = addV1(dirs, pid)
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: adding pid %d: %w", g.name, pid, err)
	}
	return nil
}

// ProcsFiles opens cgroup.procs of every hierarchy of the group for
// writing. A child process that inherits them joins the group by writing
// "0" to each in order (the hybrid cgroup2 mount's first, see
// Manager.uni), without knowing any paths (zygote forks). The caller
// owns and closes the files.
func (g *Group) ProcsFiles() ([]*os.File, error) {
	if g.deleted.Load() {
		return nil, fmt.Errorf("cgroup %s: %w", g.name, ErrDeleted)
	}
	g.shared.Store(true)
	fs := make([]*os.File, 0, len(g.dirs))
	for _, d := range g.dirs {
		f, err := os.OpenFile(filepath.Join(d, "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			for _, f := range fs {
				f.Close()
			}
			return nil, fmt.Errorf("cgroup %s: %w", g.name, err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// Pids lists the processes in the group, sorted.
func (g *Group) Pids() ([]int, error) {
	p, err := procsUnion(g.dirs)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	return p, nil
}

// FrozenPids lists the processes in the group's freezer hierarchy (the
// only one on v2): the ones Freeze holds still.
func (g *Group) FrozenPids() ([]int, error) {
	p, err := readProcs(g.dirs[g.m.frz])
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	return p, nil
}

// Freeze stops every process in the group and waits until all are frozen.
func (g *Group) Freeze(ctx context.Context) error {
	if err := g.setFrozen(ctx, true, spinFor); err != nil {
		return fmt.Errorf("cgroup %s: freezing: %w", g.name, err)
	}
	return nil
}

// FreezeIdle is Freeze waiting sleeping, not spinning first: for callers
// off a start's critical path, whose wait costs no CPU.
func (g *Group) FreezeIdle(ctx context.Context) error {
	if err := g.setFrozen(ctx, true, 0); err != nil {
		return fmt.Errorf("cgroup %s: freezing: %w", g.name, err)
	}
	return nil
}

// Thaw resumes the group's processes and waits until none is frozen.
func (g *Group) Thaw(ctx context.Context) error {
	if err := g.setFrozen(ctx, false, spinFor); err != nil {
		return fmt.Errorf("cgroup %s: thawing: %w", g.name, err)
	}
	return nil
}

// setFrozen writes the freezer state and polls until the kernel reports
// it, spinning for the first spin (see poll). Written directly: the
// library polls with a fixed 1 ms sleep (ten times a typical freeze) and
// on v2 checks cgroup.freeze, which shows the requested state, not
// cgroup.events, which shows the reached one.
func (g *Group) setFrozen(ctx context.Context, frozen bool, spin time.Duration) error {
	dir := g.dirs[g.m.frz]
	if g.m.mode == V2 {
		val, want := "0", "frozen 0"
		if frozen {
			val, want = "1", "frozen 1"
		}
		if err := writeFile(filepath.Join(dir, "cgroup.freeze"), val); err != nil {
			return err
		}
		events := filepath.Join(dir, "cgroup.events")
		return poll(ctx, spin, func() (bool, error) {
			b, err := readFile(events)
			return hasLine(string(b), want), err
		})
	}
	val := "THAWED"
	if frozen {
		val = "FROZEN"
	}
	state := filepath.Join(dir, "freezer.state")
	if err := writeFile(state, val); err != nil {
		return err
	}
	n := 0
	return poll(ctx, spin, func() (bool, error) {
		b, err := readFile(state)
		if err != nil || (len(b) > 0 && string(b[:len(b)-1]) == val) {
			return err == nil, err
		}
		// Now and then rewrite the state: that retries tasks that could
		// not be frozen on the last pass, as runc and containerd do.
		if n++; n%64 == 0 {
			return false, writeFile(state, val)
		}
		return false, nil
	})
}

// Kill kills every process in the group, frozen or not, and waits until
// the group is empty. The group is left thawed and can be reused.
func (g *Group) Kill(ctx context.Context) error {
	if err := g.kill(ctx); err != nil {
		return fmt.Errorf("cgroup %s: killing: %w", g.name, err)
	}
	return nil
}

func (g *Group) kill(ctx context.Context) error {
	joins := g.joins.Load()
	err := g.killAll(ctx)
	if err == nil {
		g.emptyAt.Store(joins + 1)
	}
	return err
}

func (g *Group) killAll(ctx context.Context) error {
	pids, err := firstProcs(g.dirs)
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return nil
	}
	if g.m.mode == V2 || g.m.uni >= 0 {
		done, err := g.killAtOnce(ctx)
		if done || err != nil {
			return err
		}
	}
	// Freeze first so nothing forks between listing and killing; SIGKILL
	// is delivered to frozen tasks once they are thawed.
	frozenKills.Add(1)
	for {
		// Not spinning: a kill is teardown, off any start's path, and a
		// v1 freezer's state is worked out anew (every task of the group
		// looked at) on each read. Bounded: a task in a killable sleep
		// (a FUSE request, a lock taken killably) never freezes, yet
		// SIGKILL ends it, so after freezeBound the rest are killed
		// anyway, as runc does; a fork that slips past the list is
		// caught by the next round.
		fctx, cancel := context.WithTimeout(ctx, freezeBound)
		ferr := g.setFrozen(fctx, true, 0)
		bounded := fctx.Err() != nil // the bound or ctx ended it, not cgroupfs
		cancel()
		var kerr error
		if ferr == nil || bounded {
			kerr = g.killListed()
		}
		// Thawed whatever happened, even once ctx has ended: a group must
		// not stay frozen (a v1 thaw takes effect at once).
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		terr := g.setFrozen(tctx, false, 0)
		cancel()
		if !bounded {
			kerr = errors.Join(ferr, kerr)
		}
		if err := errors.Join(kerr, terr, ctx.Err()); err != nil {
			return err
		}
		// A task can be in some v1 hierarchies but not the freezer's; go
		// round again if anything is left after a short wait.
		wctx, cancel := context.WithTimeout(ctx, waitRound)
		err := waitEmpty(wctx, g.dirs)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
}

// killListed sends SIGKILL to every process listed in the group's
// hierarchies. A listed process can exit, be reaped by its parent outside
// the group, and its pid go to another process before the signal: one
// the freezer has not frozen (the group not frozen yet, a task outside
// the freezer's group, an OOM victim, which the freezer skips). So a
// pidfd of each is opened, the lists are read again, and those still
// listed are signalled through their pidfds (a pid names one live
// process at a time).
func (g *Group) killListed() error {
	all, err := procsUnion(g.dirs)
	if err != nil {
		return err
	}
	fds := make(map[int]int)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var errs []error
	self := os.Getpid()
	for _, p := range all {
		if p == self {
			continue // a thread of ours (the criu runner's, around a fork)
		}
		fd, err := unix.PidfdOpen(p, 0)
		if err != nil {
			if !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("pidfd of pid %d: %w", p, err))
			}
			continue
		}
		fds[p] = fd
	}
	if len(fds) == 0 {
		return errors.Join(errs...)
	}
	now, err := procsUnion(g.dirs)
	if err != nil {
		return err
	}
	for _, p := range now {
		fd, ok := fds[p]
		if !ok {
			continue // new since the first list: the next round's
		}
		if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("killing pid %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// killAtOnce kills the group with cgroup.kill (Linux 5.14): on v2 its
// own, on a hybrid v1 host its twin's (see Manager.uni). No freeze, and
// so no wait for a task that cannot freeze. It reports whether the group
// is empty after; not (and no error) without cgroup.kill (an older
// kernel; a group an older worker left, with no twin) or, on v1, with a
// process in the v1 groups alone, for the freeze to kill: the criu
// runner's thread for the moment of criu's fork is the only one.
func (g *Group) killAtOnce(ctx context.Context) (bool, error) {
	dir := g.dirs[0] // v2's own, or the twin: uni is 0
	for round := 0; ; round++ {
		err := writeFile(filepath.Join(dir, "cgroup.kill"), "1")
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if round == 0 && g.m.mode == V1 {
			// v1-frozen tasks die once thawed (they run no code of
			// theirs first). Usually thawed already (a sandbox's
			// teardown thaws it first): a read, not a write and a read.
			if b, err := readFile(filepath.Join(g.dirs[g.m.frz], "freezer.state")); err != nil || string(b) != "THAWED\n" {
				if err := g.setFrozen(ctx, false, 0); err != nil {
					return false, err
				}
			}
		}
		// Killed ones can take long to unmap a large memory; a round
		// that ends with some still listed kills again, for a fork that
		// raced the kill (kernels before 6.14 let one through).
		wctx, cancel := context.WithTimeout(ctx, waitRound)
		err = waitEmpty(wctx, []string{dir})
		timedOut := wctx.Err() != nil && ctx.Err() == nil // the round ended, not ctx
		cancel()
		if err == nil {
			break
		}
		if !timedOut {
			return false, err
		}
	}
	if g.m.mode == V2 {
		// v2 kills frozen tasks too; a pooled group must be thawed.
		return true, g.setFrozen(ctx, false, 0)
	}
	pids, err := firstProcs(g.dirs[1:]) // the v1 ones: uni is 0
	return err == nil && len(pids) == 0, err
}

// frozenKills counts the kills that froze their group (the tests' way to
// tell which way a kill went).
var frozenKills atomic.Int64

// waitRound bounds one kill round before the group is frozen and killed
// again.
const waitRound = 200 * time.Millisecond

// freezeBound bounds a v1 kill's freeze: long enough for one of the
// freezer's retries (setFrozen rewrites the state after about 150 ms).
const freezeBound = 250 * time.Millisecond

// waitEmpty waits until none of dirs (a group's) lists a process. It
// sleeps on the listed processes' pidfds until they exit rather than
// reading the lists in a loop: a killed sandbox takes milliseconds to
// unmap its memory, and a loop would take CPU from the starts running
// meanwhile.
func waitEmpty(ctx context.Context, dirs []string) error {
	delay := 50 * time.Microsecond
	for {
		pids, err := firstProcs(dirs)
		if err != nil || len(pids) == 0 {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !waitExit(ctx, pids) {
			// Listed, yet exited or without a pidfd: the kernel has
			// still to unlist them. Back off as poll does.
			time.Sleep(delay)
			delay = min(2*delay, 2*time.Millisecond)
		}
	}
}

// waitExit waits until every process of pids that can be watched by
// pidfd has exited, ctx ends, or relist has passed (a pid listed may have
// been reused by a process outside the group before its pidfd was
// opened: the caller lists again). It reports whether it had to wait:
// false when all had exited already, or none had a pidfd.
func waitExit(ctx context.Context, pids []int) bool {
	var open []int
	defer func() {
		for _, fd := range open {
			unix.Close(fd)
		}
	}()
	for _, p := range pids {
		fd, err := unix.PidfdOpen(p, 0)
		if err != nil {
			continue // gone already (or no pidfds: the caller sleeps)
		}
		open = append(open, fd)
	}
	wctx, cancel := context.WithTimeout(ctx, relist)
	defer cancel()
	waited := false
	for _, fd := range open {
		// In the runtime's poller: a blocking poll(2) would hold a
		// thread for the milliseconds a killed sandbox takes to unmap.
		if !waited && pidfd.Exited(fd) {
			continue
		}
		waited = true
		if pidfd.Wait(wctx, fd) != nil {
			break
		}
	}
	return waited
}

// relist bounds one waitExit.
const relist = 100 * time.Millisecond

// Delete kills the group's processes and removes it from every hierarchy.
// Deleting twice is harmless.
func (g *Group) Delete(ctx context.Context) error {
	if g.deleted.Load() {
		return nil
	}
	if err := g.remove(ctx); err != nil {
		return fmt.Errorf("cgroup %s: deleting: %w", g.name, err)
	}
	g.deleted.Store(true)
	g.m.forget(g)
	return nil
}

// remove kills and rmdirs. Written directly: the library's Delete walks
// and lstats every file of every hierarchy first and retries with sleeps
// of up to 80 ms that ignore ctx. The common case here is an empty group,
// so rmdir is tried first and only a busy group is killed.
func (g *Group) remove(ctx context.Context) error {
	// Before the rmdir: a directory made again under the same path must
	// not be reached through this one's descriptor.
	releaseDirs(g.dirs, g.held)
	busy := false
	for _, d := range g.dirs {
		err := unix.Rmdir(d)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY):
			busy = true
		default:
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	if !busy {
		return nil
	}
	if err := g.kill(ctx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, d := range g.dirs {
		if err := removeTree(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// MemoryUsage returns the memory currently charged to the group.
func (g *Group) MemoryUsage() (uint64, error) {
	v, err := memUsage(g.m.mode, g.dirs[g.m.mem])
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	return v, nil
}

// CPUUsage returns the CPU time the group's processes have used, exited
// ones included: v2's cpu.stat usage_usec (there with or without the cpu
// controller), or v1's cpuacct.usage. On a v1 host without cpuacct it
// returns ErrNoController.
func (g *Group) CPUUsage() (time.Duration, error) {
	if g.m.acct < 0 {
		return 0, fmt.Errorf("cgroup %s: cpu usage: %w", g.name, ErrNoController)
	}
	dir := g.dirs[g.m.acct]
	if g.m.mode == V1 {
		v, err := readUint(filepath.Join(dir, "cpuacct.usage"))
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("cgroup %s: cpu usage: %w", g.name, ErrNoController)
		}
		if err != nil {
			return 0, fmt.Errorf("cgroup %s: cpu usage: %w", g.name, err)
		}
		return time.Duration(v), nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: cpu usage: %w", g.name, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cgroup %s: cpu usage: %w", g.name, err)
			}
			return time.Duration(n) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("cgroup %s: cpu usage: no usage_usec in cpu.stat: %w", g.name, ErrNoController)
}

// PeakMemory returns the most memory the group was charged since a Pool
// last cleaned it or ResetPeak (v1 memory.max_usage_in_bytes), or since
// it was made (v2 memory.peak, Linux 5.19). A v2 group that a Pool
// cleaned for reuse has ErrPeakUnknown: memory.peak cannot be reset for
// every reader, so it would report its earlier sandboxes' peak.
func (g *Group) PeakMemory() (uint64, error) {
	file := "memory.max_usage_in_bytes"
	if g.m.mode == V2 {
		if g.peakStale {
			return 0, fmt.Errorf("cgroup %s: %w", g.name, ErrPeakUnknown)
		}
		file = "memory.peak"
	}
	v, err := readUint(filepath.Join(g.dirs[g.m.mem], file))
	if errors.Is(err, os.ErrNotExist) {
		err = ErrNoController
	}
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: peak memory: %w", g.name, err)
	}
	return v, nil
}

// ResetPeak restarts the peak PeakMemory reports from what the group is
// charged now, on v1; for example after a restore, whose CRIU ran in the
// group. On v2 it does nothing: memory.peak keeps the higher value.
func (g *Group) ResetPeak() error {
	if g.m.mode == V2 {
		return nil
	}
	files := []string{"memory.max_usage_in_bytes"}
	if g.m.swap {
		files = append(files, "memory.memsw.max_usage_in_bytes")
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(g.dirs[g.m.mem], f), "0"); err != nil {
			return fmt.Errorf("cgroup %s: resetting peak memory: %w", g.name, err)
		}
	}
	return nil
}

// OOMKills returns how many processes the kernel OOM killer killed in the
// group (since a Pool last cleaned it). Read directly: the library's v1
// stats lack the oom_kill field.
func (g *Group) OOMKills() (uint64, error) {
	v, err := g.rawOOMKills()
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: oom kills: %w", g.name, err)
	}
	if v < g.oomBase {
		return 0, nil
	}
	return v - g.oomBase, nil
}

func (g *Group) rawOOMKills() (uint64, error) {
	path := filepath.Join(g.dirs[g.m.mem], "memory.oom_control")
	if g.m.mode == V2 {
		path = filepath.Join(g.dirs[0], "memory.events")
	}
	v, err := readKey(path, "oom_kill")
	if errors.Is(err, os.ErrNotExist) {
		err = ErrNoController
	}
	return v, err
}

// limitSlack is how far below its limit a group's peak use may stay when
// a charge fails: the failing charge (up to a 2 MiB huge page) did not fit.
const limitSlack = 4 << 20

// ReachedLimit reports whether the group's memory use reached its limit
// since a Pool last cleaned it: on v1 its peak (memory.max_usage_in_bytes,
// memory.memsw.max_usage_in_bytes with swap accounting) came within a
// failed charge of the limit, on v2 it counts "oom" events. Unlike the
// OOM-kill count, which the kernel raises for the victim's group only
// when it picks one, this says the group itself ran out; a process of
// the group that died of SIGKILL after it most likely met the OOM
// killer. (v1's failcnt cannot tell: where the swap limit equals the
// memory limit, charges fail on memsw, whose failcnt the kernel no longer
// tracks.) False for a group without a memory limit.
func (g *Group) ReachedLimit() (bool, error) {
	if g.limit <= 0 {
		return false, nil
	}
	dir := g.dirs[g.m.mem]
	if g.m.mode == V2 {
		v, err := readKey(filepath.Join(g.dirs[0], "memory.events"), "oom")
		if errors.Is(err, os.ErrNotExist) {
			err = ErrNoController
		}
		if err != nil {
			return false, fmt.Errorf("cgroup %s: oom events: %w", g.name, err)
		}
		return v > g.oomEvBase, nil
	}
	files := []string{"memory.max_usage_in_bytes"}
	if g.m.swap {
		files = append(files, "memory.memsw.max_usage_in_bytes")
	}
	for _, f := range files {
		peak, err := readUint(filepath.Join(dir, f))
		if errors.Is(err, os.ErrNotExist) {
			err = ErrNoController
		}
		if err != nil {
			return false, fmt.Errorf("cgroup %s: peak memory: %w", g.name, err)
		}
		if int64(peak) >= g.limit-limitSlack {
			return true, nil
		}
	}
	return false, nil
}

func hasLine(s, line string) bool {
	for l := range strings.Lines(s) {
		if strings.TrimSuffix(l, "\n") == line {
			return true
		}
	}
	return false
}
