package zygote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/ident"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Config configures a Manager. Zero values mean the defaults. Its yaml
// tags are the keys of hearth.yaml's zygote section; fields tagged "-"
// are not settings of the file.
type Config struct {
	// Runtime is the host dir of the runtime files.
	Runtime string `yaml:"-"`
	// Python is the interpreter inside the base (default /usr/bin/python3).
	Python string `yaml:"-"`
	// Binds are read-only mounts every zygote sees (installed packages).
	Binds []sandbox.Bind `yaml:"-"`
	// Modules maps a package set to the modules a node imports for it.
	Modules func(pkgs []string) ([]string, error) `yaml:"-"`
	// Paths maps a package set to the sys.path entries its imports need
	// (installed packages; none for the base image's). Nil means none.
	Paths func(pkgs []string) []string `yaml:"-"`
	// UID and GID run the zygotes (default ident.Default.Zygote()): an
	// identity of their own, which no function shares.
	UID, GID int `yaml:"-"`
	// HostNetwork keeps zygotes in the host's network namespace, which
	// the children of functions allowed the host's network share. Else
	// zygotes (and the packages they import) have no network at all.
	HostNetwork bool `yaml:"-"`
	// MemoryBudget bounds the memory of all zygotes (default 1 GiB).
	MemoryBudget int64 `yaml:"-"`
	// Window is how many recent invocations provisioning looks at
	// (default 100).
	Window int `yaml:"window"`
	// Promote is how many of them must use a package set for it to get
	// its own node (default 3).
	Promote int `yaml:"promote"`
	// IdleTimeout evicts nodes unused this long (default 10 min).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxZygotes bounds the number of zygote processes (default 32).
	MaxZygotes int `yaml:"max"`
	// MinZygotes keeps at least this many zygote processes: idle nodes
	// are not evicted below it (the memory budget still applies).
	MinZygotes int `yaml:"min"`
	// SmallCode keeps the zygotes' code where the loader mapped it, on
	// 4 KiB pages of its files, rather than moving what they run most
	// onto huge pages of their own (zygote.py's huge_code): for profilers
	// and uprobes, which find code by its file. Forked children then take
	// more page faults.
	SmallCode bool `yaml:"small_code"`
	// MaxReplicas bounds replicas of one node (default 4).
	MaxReplicas int `yaml:"max_replicas"`
	// PlantDeployed bounds the nodes planted ahead of calls for the
	// package sets of deployed functions (see Manager.Deployed) that
	// exist at once (default half of MaxZygotes; negative: none).
	PlantDeployed int `yaml:"plant_deployed"`
	// Log receives the zygotes' own output.
	Log io.Writer `yaml:"-"`
	// Logger receives the manager's logs (default slog.Default()).
	Logger *slog.Logger `yaml:"-"`
	// NodeReady, if set, is called (from its own goroutine) when a node
	// other than the root gets its first zygote: planted or promoted, it
	// is about to be used.
	NodeReady func(key string) `yaml:"-"`
}

func (c *Config) setDefaults() {
	if c.Python == "" {
		c.Python = "/usr/bin/python3"
	}
	if c.UID == 0 {
		c.UID, c.GID = ident.Default.Zygote(), ident.Default.Zygote()
	}
	if c.MemoryBudget <= 0 {
		c.MemoryBudget = 1 << 30
	}
	if c.Window <= 0 {
		c.Window = 100
	}
	if c.Promote <= 0 {
		c.Promote = 3
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.MaxZygotes <= 0 {
		c.MaxZygotes = 32
	}
	if c.MaxReplicas <= 0 {
		c.MaxReplicas = 4
	}
	if c.PlantDeployed == 0 {
		c.PlantDeployed = max(c.MaxZygotes/2, 1)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Manager owns the zygote tree: it forks function children from the best
// node, learns which package sets deserve nodes, adds replicas to busy
// nodes, rebuilds dead zygotes and evicts idle ones. It is safe for
// concurrent use.
type Manager struct {
	cfg     Config
	factory *sandbox.Factory
	cg      *cgroup.Manager
	log     *slog.Logger
	seq     atomic.Int64

	mu    sync.Mutex // guards everything below and every Node's live state
	root  *Node
	nodes map[string]*Node
	win   *window
	// deployed maps each deployed function's name to its package set's
	// key (see Deployed).
	deployed map[string]string
	procs    int
	closed   bool
	nextID   int
	rootSeq  int

	bg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc

	deadRoots atomic.Int32 // dead roots whose sandboxes are kept (retire)
}

// NewManager starts the root zygote.
func NewManager(ctx context.Context, cfg Config, f *sandbox.Factory, cg *cgroup.Manager) (*Manager, error) {
	cfg.setDefaults()
	m := &Manager{cfg: cfg, factory: f, cg: cg, log: cfg.Logger, nodes: map[string]*Node{}, win: newWindow(cfg.Window),
		deployed: map[string]string{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.root = &Node{ID: 0, static: true}
	m.nodes[""] = m.root
	m.nextID = 1
	p, err := m.startRoot(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.addReplicaLocked(m.root, p)
	m.mu.Unlock()
	m.bg.Add(1)
	go m.janitor()
	return m, nil
}

func (m *Manager) startRoot(ctx context.Context) (*Process, error) {
	m.mu.Lock()
	m.rootSeq++
	id := fmt.Sprintf("zygote-root-%d", m.rootSeq)
	m.mu.Unlock()
	g, err := m.cg.Create(id, m.limits())
	if err != nil {
		return nil, fmt.Errorf("zygote cgroup: %w", err)
	}
	p, err := StartRoot(ctx, m.factory, RootConfig{ID: id, Group: g, Runtime: m.cfg.Runtime,
		Binds: m.cfg.Binds, Python: m.cfg.Python, Log: m.cfg.Log, UID: m.cfg.UID, GID: m.cfg.GID, HostNetwork: m.cfg.HostNetwork,
		SmallCode: m.cfg.SmallCode})
	if err != nil {
		if derr := g.Delete(context.Background()); derr != nil {
			m.log.Warn("deleting zygote cgroup", "err", derr)
		}
		return nil, err
	}
	return p, nil
}

// limits are each zygote's cgroup limits: packages run in it at import
// (and may do anything their user can), so it gets a sandbox's bounds:
// no more memory than all zygotes may have, a few processes (zygotePids),
// one CPU.
func (m *Manager) limits() cgroup.Limits {
	return cgroup.Limits{MemoryBytes: m.cfg.MemoryBudget, Pids: zygotePids, CPUWeight: zygoteWeight, CPUs: 1}
}

// zygoteWeight is a ready zygote's CPU weight, a sandbox's: the starts
// forked from it wait on it. A zygote being made (a new node, or a
// replica of a busy one, each importing the node's packages) has a
// tenth of it, buildWeight: no start waits on it (Route picks among
// ready ones), and at a burst, when nodes get replicas, their imports at
// full weight took the CPU from the burst's own starts and calls. Not
// the lowest, as a spare's: starts do wait for it indirectly (forks
// queued on a busy node's one replica, or importing in the child what a
// promoted node would hold), and an import of several CPU-seconds must
// still finish within spawn's two minutes on a busy host.
const (
	zygoteWeight = 100
	buildWeight  = 10
)

// zygotePids bounds the processes of one zygote's cgroup: the zygote and
// the children it clones, which the worker moves out at once. With the
// open files limit (initproc.MaxFiles) it bounds the inotify instances a
// node's packages can take of its user's, which the functions it forks
// share (see the worker's roomForInotify).
const zygotePids = 8

// addReplicaLocked adds p to n and watches it: a dead zygote is removed
// and, if it was the node's last, rebuilt.
func (m *Manager) addReplicaLocked(n *Node, p *Process) {
	n.replicas = append(n.replicas, p)
	m.procs++
	m.bg.Add(1)
	born := time.Now()
	go func() {
		defer m.bg.Done()
		select {
		case <-p.Dead():
		case <-m.ctx.Done():
			return
		}
		m.mu.Lock()
		removed := m.removeReplicaLocked(n, p)
		rebuild := removed && !m.closed && len(n.replicas) == 0 && n.pending == 0 && m.nodes[n.Key()] == n
		if rebuild && time.Since(born) < stableFor {
			// Died young (a package that kills its zygote soon after
			// import): a failed build, retried later, not at once.
			m.failLocked(n)
			rebuild = false
		}
		if rebuild {
			n.pending++
		}
		var orphans []*Process
		var regrow []*Node
		if removed && p.sb != nil {
			orphans, regrow = m.orphansLocked(p)
		}
		m.mu.Unlock()
		if removed {
			m.log.Warn("zygote died", "node", n.Key(), "pid", p.Pid())
			m.retire(p)
		}
		for _, o := range orphans {
			m.release(o)
		}
		for _, o := range regrow {
			m.goBackground(func() { m.grow(o) })
		}
		if rebuild {
			m.grow(n)
		}
	}()
}

// orphansLocked takes out of the tree the zygotes forked (at any depth)
// from root, which died, and returns them and the nodes they leave
// without a replica, marked pending for a rebuild from the new root.
// Left alone they would go on forking into the dead root's sandbox and
// keep it from ever being torn down (see retire).
func (m *Manager) orphansLocked(root *Process) (orphans []*Process, regrow []*Node) {
	walk(m.root, func(n *Node) {
		lost := false
		for _, r := range slices.Clone(n.replicas) {
			if r.root == root && r != root && m.removeReplicaLocked(n, r) {
				orphans = append(orphans, r)
				lost = true
			}
		}
		if lost && len(n.replicas) == 0 && n.pending == 0 && !m.closed && m.nodes[n.Key()] == n {
			n.pending++
			regrow = append(regrow, n)
		}
	})
	return orphans, regrow
}

func (m *Manager) removeReplicaLocked(n *Node, p *Process) bool {
	for i, r := range n.replicas {
		if r == p {
			n.replicas = append(n.replicas[:i], n.replicas[i+1:]...)
			m.procs--
			return true
		}
	}
	return false
}

// release kills a zygote and frees its cgroup and sandbox.
func (m *Manager) release(p *Process) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Not during a join: a kill of the group would end the child it
	// holds still, and free its pid before the move.
	p.joinMu.Lock()
	defer p.joinMu.Unlock()
	if err := p.Destroy(ctx); err != nil {
		m.log.Warn("destroying zygote sandbox", "err", err)
	}
	if err := p.group.Delete(ctx); err != nil {
		m.log.Warn("deleting zygote cgroup", "err", err)
	}
}

// retire frees what a dead zygote held. The spares, functions and child
// zygotes it forked live on, in the pid namespace of the root's sandbox
// (see sandbox.Config.Zygote), whose init outlives the root zygote for
// them: a dead root's sandbox is torn down once they are all gone, or at
// Close, which kills what is left.
func (m *Manager) retire(p *Process) {
	if p.sb == nil {
		m.release(p)
		return
	}
	m.deadRoots.Add(1)
	m.bg.Add(1) // within the caller's, which is still counted
	go func() {
		defer m.bg.Done()
		select {
		case <-p.sb.Done():
		case <-m.ctx.Done():
		}
		m.release(p)
		m.deadRoots.Add(-1)
	}()
}

// DeadRoots returns how many dead root zygotes' sandboxes are kept for
// what was forked from them (see retire).
func (m *Manager) DeadRoots() int { return int(m.deadRoots.Load()) }

// grow adds one replica to n (n.pending was incremented by the caller).
func (m *Manager) grow(n *Node) {
	p, err := m.spawn(n)
	m.mu.Lock()
	n.pending--
	if err == nil && (m.closed || m.nodes[n.Key()] != n) {
		m.mu.Unlock()
		m.release(p)
		return
	}
	first := false
	var retry time.Time
	if err == nil {
		m.addReplicaLocked(n, p)
		n.builtAt, n.err = time.Now(), nil
		first = len(n.replicas) == 1 && n.Parent != nil
		// Children left waiting for this node (their builds fork from
		// it) try again now.
		for _, c := range n.Children {
			if c.failures > 0 && len(c.replicas) == 0 {
				c.retryAt = n.builtAt
			}
		}
	} else {
		n.err = err
	}
	dropped := false
	// n is still in the tree with no zygote, and nothing builds one.
	bare := !m.closed && m.nodes[n.Key()] == n && len(n.replicas) == 0 && n.pending == 0
	if errors.Is(err, errUnresolved) && n.builtAt.IsZero() && bare {
		// Never built, and no build would be: gone, as if never
		// added, its children back under its parent, so that it holds
		// no place among the planted nodes nor keeps its children from
		// rebuilding.
		m.removeNodeLocked(n) // it has no zygote to release
		dropped = true
	} else if err != nil && m.ctx.Err() == nil && bare {
		// The node has no zygote and nothing builds one: left so, it
		// would keep its package set from being promoted again and, with
		// children, their rebuilds from forking. Try again later.
		m.failLocked(n)
		retry = n.retryAt
	}
	m.mu.Unlock()
	if first && m.cfg.NodeReady != nil {
		m.cfg.NodeReady(n.Key())
	}
	if err != nil && m.ctx.Err() == nil {
		switch {
		case dropped:
			m.log.Warn("zygote node dropped", "node", n.Key(), "err", err)
		case retry.IsZero():
			m.log.Warn("zygote not started", "node", n.Key(), "err", err)
		default:
			m.log.Warn("zygote not started", "node", n.Key(), "err", err, "retry_in", time.Until(retry).Round(time.Millisecond))
		}
	}
}

// Retries of a node whose builds fail start retryMin after the first
// failure and back off to retryMax: a package that always fails at
// import, or kills its zygote soon after, costs a spawn per retryMax. A
// zygote that lived stableFor ends the run of failures.
const (
	retryMin  = time.Second
	retryMax  = 2 * time.Minute
	stableFor = 30 * time.Second
)

// failLocked records a failed build of n, which has no zygote, and when
// the janitor tries again.
func (m *Manager) failLocked(n *Node) {
	now := time.Now()
	if !n.builtAt.IsZero() && now.Sub(n.builtAt) >= stableFor {
		n.failures = 0 // its last zygote lived: a new run of failures
	}
	n.failures++
	n.retryAt = now.Add(retryDelay(n.failures))
}

func retryDelay(failures int) time.Duration {
	d := retryMin
	for i := 1; i < failures && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// retryLocked starts a build of each node left without a zygote by failed
// builds whose retry time has come.
func (m *Manager) retryLocked(now time.Time) {
	if m.closed {
		return
	}
	walk(m.root, func(n *Node) {
		if n.failures == 0 || len(n.replicas) > 0 || n.pending > 0 || now.Before(n.retryAt) {
			return
		}
		if m.procs+m.pendingLocked() >= m.cfg.MaxZygotes {
			return
		}
		n.pending++
		m.goBackground(func() { m.grow(n) })
	})
}

// errUnresolved: a node's packages have no modules to import (a package
// no longer installed, or not in the base image).
var errUnresolved = errors.New("cannot resolve the modules to import")

// spawn starts one zygote process for n: the root from scratch, any
// other node by forking its parent's zygote.
func (m *Manager) spawn(n *Node) (*Process, error) {
	ctx, cancel := context.WithTimeout(m.ctx, 2*time.Minute)
	defer cancel()
	m.mu.Lock()
	root := n.Parent == nil // a promotion may re-parent n meanwhile
	m.mu.Unlock()
	if root {
		return m.startRoot(ctx)
	}
	// A parent created in the same breath may still be starting. What
	// n imports is what it holds beyond the parent it forks from, taken
	// with it, at each build: a node put in between since has imported
	// some of it.
	var parent *Process
	var extra []string
	for {
		m.mu.Lock()
		parent = n.Parent.pick()
		starting := n.Parent.pending > 0
		if parent != nil {
			extra = n.extraLocked()
		}
		m.mu.Unlock()
		if parent != nil {
			break
		}
		if !starting {
			return nil, fmt.Errorf("node %s: parent has no zygote: %w", n.Key(), ErrNoZygote)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	// Resolved off the lock: it reads the packages' metadata.
	mods, err := m.cfg.Modules(extra)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w: %w", n.Key(), errUnresolved, err)
	}
	var path []string
	if m.cfg.Paths != nil {
		path = m.cfg.Paths(extra)
	}
	m.mu.Lock()
	n.Modules, n.Path = mods, path
	m.mu.Unlock()
	lim := m.limits()
	lim.CPUWeight = buildWeight
	g, err := m.cg.Create(fmt.Sprintf("zygote-%d-%d", n.ID, m.seq.Add(1)), lim)
	if err != nil {
		return nil, err
	}
	p, err := parent.Child(ctx, g, mods, path)
	if err != nil {
		if derr := g.Delete(context.Background()); derr != nil {
			m.log.Warn("deleting zygote cgroup", "err", derr)
		}
		return nil, err
	}
	// Ready: forks wait on it now.
	if err := g.SetCPUWeight(zygoteWeight); err != nil {
		m.release(p)
		return nil, fmt.Errorf("node %s: %w", n.Key(), err)
	}
	return p, nil
}

// Route records a start of a function with package set pkgs, for
// provisioning, and returns the key of the node to fork it from: the
// deepest one holding only packages in pkgs. A busy node gets another
// replica in the background.
func (m *Manager) Route(pkgs []string) (string, error) {
	s := normalize(pkgs)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrNoZygote
	}
	m.learnLocked(s)
	n := lookup(m.root, s, func(n *Node) bool { return n.pick() != nil })
	if n == nil {
		return "", ErrNoZygote
	}
	p := n.pick()
	n.hits++
	n.lastUse = time.Now()
	// A node busy forking for other starts gets another replica, off the
	// critical path. Making spares does not count: a start served by a
	// spare never waits on the zygote.
	if p.Forking() > 0 && len(n.replicas)+n.pending < m.cfg.MaxReplicas && m.procs+m.pendingLocked() < m.cfg.MaxZygotes {
		n.pending++
		m.goBackground(func() { m.grow(n) })
	}
	return n.Key(), nil
}

// process returns the least-loaded replica of node key.
func (m *Manager) process(key string) (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrNoZygote
	}
	n := m.nodes[key]
	if n == nil {
		return nil, fmt.Errorf("zygote node %q: %w", key, ErrNoZygote)
	}
	p := n.pick()
	if p == nil {
		return nil, fmt.Errorf("zygote node %q has no live zygote: %w", key, ErrNoZygote)
	}
	return p, nil
}

// ForkFrom clones a function child from node key (from Route) that
// builds its sandbox from t.
func (m *Manager) ForkFrom(ctx context.Context, key string, t Target) (Child, error) {
	p, err := m.process(key)
	if err != nil {
		return Child{}, err
	}
	c, err := p.Fork(ctx, t)
	if err != nil {
		return Child{}, fmt.Errorf("fork from zygote %s: %w", key, err)
	}
	return c, nil
}

// SpareFrom forks a spare child from node key into t's sandbox.
func (m *Manager) SpareFrom(ctx context.Context, key string, t SpareTarget) (*Spare, error) {
	p, err := m.process(key)
	if err != nil {
		return nil, err
	}
	s, err := p.Spare(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("spare from zygote %s: %w", key, err)
	}
	return s, nil
}

// Has reports whether node key exists.
func (m *Manager) Has(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.nodes[key]
	return ok && !m.closed
}

func (m *Manager) pendingLocked() int {
	n := 0
	walk(m.root, func(x *Node) { n += x.pending })
	return n
}

func (m *Manager) goBackground(f func()) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		f()
	}()
}

// learnLocked records an invocation's package set and promotes sets that
// became frequent to nodes, created in the background.
func (m *Manager) learnLocked(s []string) {
	for _, key := range m.win.add(s) {
		if m.win.count(key) < m.cfg.Promote {
			continue
		}
		if _, ok := m.nodes[key]; ok {
			continue
		}
		if !strings.Contains(key, ",") && !m.aloneUsefulLocked(key) {
			continue
		}
		if m.procs+m.pendingLocked() >= m.cfg.MaxZygotes && !m.dropUnusedLocked() {
			return
		}
		m.addNodeLocked(splitKey(key), false)
	}
}

// dropUnusedLocked evicts one leaf planted for deployed functions that no
// call has used, the least recently planted first, to make room for a
// node calls asked for; false if there is none.
func (m *Manager) dropUnusedLocked() bool {
	leaves := m.leavesLocked()
	i := slices.IndexFunc(leaves, unused)
	if i < 0 {
		return false
	}
	for _, p := range m.removeNodeLocked(leaves[i]) {
		m.goBackground(func() { m.release(p) })
	}
	return true
}

// aloneUsefulLocked reports whether a node holding only package p would
// be used: by invocations whose whole package set is too rare for a node
// of its own, or as the common parent of two or more sets that have (or
// will have) one, which then share p's pages. A package that only comes
// with one frequent set would get a zygote no start forks from.
func (m *Manager) aloneUsefulLocked(p string) bool {
	rest, sets := m.win.count(p), 0
	for key, c := range m.win.counts {
		if c < m.cfg.Promote || !strings.Contains(key, ",") || !hasPackage(key, p) {
			continue
		}
		rest -= c
		sets++
	}
	return rest >= m.cfg.Promote || sets >= 2
}

// hasPackage reports whether node key holds package p, without
// splitting the key (this runs on the invocation path).
func hasPackage(key, p string) bool {
	for k := range strings.SplitSeq(key, ",") {
		if k == p {
			return true
		}
	}
	return false
}

// addNodeLocked creates node pkgs under the deepest existing node holding
// a subset of it and starts its first zygote in the background, which
// resolves the modules it imports (spawn): that reads the packages'
// metadata from disk, which is not done under the lock that every fork
// takes.
func (m *Manager) addNodeLocked(pkgs []string, static bool) *Node {
	parent := lookup(m.root, pkgs, func(*Node) bool { return true })
	n := &Node{ID: m.nextID, Packages: pkgs, Parent: parent, static: static, lastUse: time.Now()}
	m.nextID++
	// Existing nodes that hold more than n and sat under n's parent now
	// belong under n, so lookups keep descending through supersets.
	var keep []*Node
	for _, c := range parent.Children {
		if subset(pkgs, c.Packages) {
			c.Parent = n
			n.Children = append(n.Children, c)
		} else {
			keep = append(keep, c)
		}
	}
	parent.Children = append(keep, n)
	m.nodes[n.Key()] = n
	n.pending++
	m.goBackground(func() { m.grow(n) })
	return n
}

// janitor evicts idle nodes, keeps zygote memory within budget and
// retries the builds of nodes left without a zygote.
func (m *Manager) janitor() {
	defer m.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		m.evict(now)
		m.mu.Lock()
		m.retryLocked(now)
		m.mu.Unlock()
	}
}

// evict removes leaf nodes idle past the timeout, then least recently
// used leaves while zygote memory is over budget. A node with a request
// in flight is never evicted.
func (m *Manager) evict(now time.Time) {
	m.mu.Lock()
	var victims []*Process
	for {
		leaves := m.leavesLocked()
		var v *Node
		for _, n := range leaves {
			if m.cfg.MinZygotes > 0 && m.procs <= m.cfg.MinZygotes {
				break
			}
			if !n.static && now.Sub(n.lastUse) > m.cfg.IdleTimeout {
				v = n
				break
			}
		}
		if v == nil && len(leaves) > 0 && m.memoryLocked() > m.cfg.MemoryBudget {
			// A node planted for deployed functions that no call has
			// used goes before any that served calls.
			v = leaves[0]
			if i := slices.IndexFunc(leaves, unused); i >= 0 {
				v = leaves[i]
			}
		}
		if v == nil {
			break
		}
		victims = append(victims, m.removeNodeLocked(v)...)
	}
	m.mu.Unlock()
	for _, p := range victims {
		m.release(p)
	}
}

// leavesLocked returns the nodes that may be evicted now, least recently
// used first: leaves other than the root, with no build under way and no
// request in flight.
func (m *Manager) leavesLocked() []*Node {
	var leaves []*Node
	walk(m.root, func(n *Node) {
		if n.Parent != nil && len(n.Children) == 0 && n.pending == 0 && !busy(n) {
			leaves = append(leaves, n)
		}
	})
	sort.Slice(leaves, func(i, j int) bool { return leaves[i].lastUse.Before(leaves[j].lastUse) })
	return leaves
}

// unused reports whether n was planted for deployed functions and no
// call has used it yet.
func unused(n *Node) bool { return n.deployed && n.hits == 0 }

func busy(n *Node) bool {
	for _, r := range n.replicas {
		if r.Inflight() > 0 {
			return true
		}
	}
	return false
}

func (m *Manager) memoryLocked() int64 {
	total, _ := m.memoryStatsLocked()
	return total
}

// memoryStatsLocked returns the memory of all zygotes and what a zygote
// being built is expected to hold: the mean of those other than the
// root's, or the root's without one. Each zygote's cgroup is read once.
func (m *Manager) memoryStatsLocked() (total, mean int64) {
	var rest, n int64
	walk(m.root, func(x *Node) {
		for _, r := range x.replicas {
			b := r.Memory()
			total += b
			if x != m.root {
				rest += b
				n++
			} else if mean == 0 {
				mean = b
			}
		}
	})
	if n > 0 {
		mean = rest / n
	}
	return total, mean
}

func (m *Manager) removeNodeLocked(n *Node) []*Process {
	p := n.Parent
	for i, c := range p.Children {
		if c == n {
			p.Children = append(p.Children[:i], p.Children[i+1:]...)
			break
		}
	}
	for _, c := range n.Children {
		c.Parent = p
		p.Children = append(p.Children, c)
	}
	delete(m.nodes, n.Key())
	victims := n.replicas
	m.procs -= len(victims)
	n.replicas = nil
	return victims
}

// Plant creates nodes from a planned tree (see Plan), each with one
// zygote, and waits until they are up or ctx ends.
func (m *Manager) Plant(ctx context.Context, sets [][]string) error {
	m.mu.Lock()
	var added []*Node
	// Parents first: fewer packages first.
	sort.SliceStable(sets, func(i, j int) bool { return len(sets[i]) < len(sets[j]) })
	for _, s := range sets {
		s = normalize(s)
		if _, ok := m.nodes[joinKey(s)]; ok || len(s) == 0 {
			continue
		}
		added = append(added, m.addNodeLocked(s, true))
	}
	m.mu.Unlock()
	for _, n := range added {
		for {
			m.mu.Lock()
			ok := len(n.replicas) > 0
			failed := !ok && n.pending == 0
			m.mu.Unlock()
			if ok {
				break
			}
			if failed {
				m.mu.Lock()
				err := n.err
				m.mu.Unlock()
				if err == nil {
					err = errors.New("its zygote died")
				}
				return fmt.Errorf("zygote node %s failed to start: %w", n.Key(), err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

func joinKey(s []string) string { return (&Node{Packages: s}).Key() }

// Deployed records the package sets of deployed functions: fns maps a
// function's name to its set, or to nil when the function is gone. Each
// given set that no node holds gets one, planted now rather than after
// Promote calls in the window: without it a function's first starts fork
// from a node without its packages and import them in the child, which
// costs them a second or more. A package that two or more deployed sets
// hold, and no node holds alone, gets a node first, as their common
// parent: they then share its pages and import only the rest.
//
// Planted nodes are not static: idle past IdleTimeout, or over the memory
// budget, they are evicted like learned ones (first, while no call has
// used them), and a set is planted again only when a function with it is
// deployed again (or the worker restarts). At most cfg.PlantDeployed of
// them exist at once, none past MaxZygotes or the memory budget (nodes
// still building counted at the mean zygote's size), and the sets of more
// functions go first.
func (m *Manager) Deployed(fns map[string][]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	want := map[string]bool{}
	for name, pkgs := range fns {
		if pkgs == nil {
			delete(m.deployed, name)
			continue
		}
		k := joinKey(normalize(pkgs))
		m.deployed[name] = k
		if k != "" {
			want[k] = true
		}
	}
	if m.cfg.PlantDeployed < 0 || len(want) == 0 {
		return
	}
	users := map[string]int{} // deployed set -> its functions
	for _, k := range m.deployed {
		if k != "" {
			users[k]++
		}
	}
	shared := map[string]int{} // package -> deployed sets of several holding it
	for k := range users {
		if strings.Contains(k, ",") {
			for _, p := range splitKey(k) {
				shared[p]++
			}
		}
	}
	order := make([]string, 0, len(want))
	for k := range want {
		order = append(order, k)
	}
	sort.Slice(order, func(i, j int) bool {
		if a, b := users[order[i]], users[order[j]]; a != b {
			return a > b
		}
		return order[i] < order[j]
	})
	planted := 0
	walk(m.root, func(n *Node) {
		if n.deployed {
			planted++
		}
	})
	// Choose the sets of more functions first, each with the shared
	// parent it lacks, while there is room; then create parents first.
	used, mean := m.memoryStatsLocked()
	pending := m.pendingLocked()
	var chosen []string
	pick := func(k string) bool {
		if _, ok := m.nodes[k]; ok || slices.Contains(chosen, k) {
			return true
		}
		more := pending + len(chosen) + 1
		if planted+len(chosen) >= m.cfg.PlantDeployed || m.procs+more > m.cfg.MaxZygotes ||
			used+int64(more)*mean > m.cfg.MemoryBudget {
			return false
		}
		chosen = append(chosen, k)
		return true
	}
	for _, k := range order {
		room := true
		for _, p := range splitKey(k) {
			if room && strings.Contains(k, ",") && shared[p] >= 2 {
				room = pick(p)
			}
		}
		if !room || !pick(k) {
			m.log.Info("zygote nodes not planted for deployed functions: no room", "first", k,
				"planted", planted, "plant_deployed", m.cfg.PlantDeployed, "zygotes", m.procs+m.pendingLocked())
			break
		}
	}
	sort.SliceStable(chosen, func(i, j int) bool { return strings.Count(chosen[i], ",") < strings.Count(chosen[j], ",") })
	for _, k := range chosen {
		m.addNodeLocked(splitKey(k), false).deployed = true
		planted++
	}
}

// NodeInfo describes one node for /v1/zygotes.
type NodeInfo = types.ZygoteNode

// Nodes describes the live tree, root first.
func (m *Manager) Nodes() []NodeInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []NodeInfo
	walk(m.root, func(n *Node) {
		info := NodeInfo{ID: n.ID, Parent: -1, Packages: append([]string{}, n.Packages...),
			Modules: append([]string{}, n.Modules...), Replicas: len(n.replicas), Hits: n.hits, Static: n.static,
			Deployed: n.deployed}
		if n.Parent != nil {
			info.Parent = n.Parent.ID
		}
		for _, r := range n.replicas {
			info.Pids = append(info.Pids, r.Pid())
			info.Forks += r.Forks()
			info.Memory += r.Memory()
			// Each replica moved its own: the first's, and any's error.
			moved, why := r.HugeCode()
			if len(info.Pids) == 1 {
				info.HugeCode = moved
			}
			if info.HugeCodeError == "" {
				info.HugeCodeError = why
			}
		}
		if !n.lastUse.IsZero() {
			info.LastUse = n.lastUse.UTC().Format(time.RFC3339Nano)
		}
		if n.failures > 0 && len(n.replicas) == 0 && n.pending == 0 {
			info.Failures = n.failures
			info.RetryAt = n.retryAt.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, info)
	})
	return out
}

// Close kills every zygote and frees their sandboxes and cgroups, and
// the sandboxes of dead roots (see retire) with what still runs in them.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	var victims []*Process
	walk(m.root, func(n *Node) {
		victims = append(victims, n.replicas...)
		n.replicas = nil
	})
	m.procs = 0
	m.mu.Unlock()
	m.cancel()
	// Child zygotes inherited the root's output pipe: all must be dead
	// before the root's sandbox waits for that pipe's end.
	for _, p := range victims {
		p.Kill()
	}
	for _, p := range victims {
		m.release(p)
	}
	done := make(chan struct{})
	go func() {
		m.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	// Replicas started while closing were released by grow.
	return nil
}
