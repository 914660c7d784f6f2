package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/zygote"
)

// spareIdle is how long a zygote node keeps its spares after its last
// start.
const spareIdle = time.Minute

// spareQuiet is how long the refill waits after the last start that took
// a spare: making one costs a few ms of CPU (a sandbox, a fork, the
// child's set-up), which would otherwise compete with the start that just
// took one, on a machine with few cores.
const spareQuiet = 3 * time.Millisecond

// spareMemory bounds a spare's cgroup until it gets a function: it holds
// about 1 MB then.
const spareMemory = 64 << 20

// spares keeps, for each zygote node used (or planted, or promoted) in
// the last minute, children forked ahead of need into pre-made sandboxes
// (zygote.Spare). A fork start takes one and only hands it the function,
// so the fork and the joining of the sandbox are off the critical path;
// the reserve is refilled in the background. A node keeps min spares, or
// as many as its biggest burst of starts in the last minute (the starts
// beyond the spares the refill made meanwhile), up to max in all.
// Reserves are per node and network kind: a spare for isolated functions
// waits in its own network namespace from the pool, and those of the
// functions among them that have used the network have their own
// (netWired).
type spares struct {
	w        *Worker
	min, max int

	mu    sync.Mutex
	nodes map[string]*spareNode // by spareKey
	// host is the back-off of failures that are no node's: no pre-made
	// sandbox, cgroup or join descriptors (errSpareHost). Only its
	// failures and retryAt are used; while it lasts no spare is made.
	host  spareNode
	taken time.Time       // last take
	wakes []chan struct{} // one per filler
	done  chan struct{}
}

// spareMakers is how many spares are made at once: making one mostly
// waits (for hearth-init, for the zygote), so two refill a reserve of a
// hundred in about half the time on two cores.
const spareMakers = 2

// spareNode is the reserve of one zygote node for one network kind, and
// its recent demand.
type spareNode struct {
	node, net string   // zygote node key; netKind, netWired or a home kind
	home      *homeKey // net parsed, for a home kind (homes.go)
	ready     []*spare
	making    int // being made
	lastUse   time.Time
	inflight  int       // starts from this node under way
	deficit   int       // starts, net of the spares made, since the reserve was last back at its want
	peak      int       // biggest burst since peakAt
	peakAt    time.Time // when peak was last reached
	failures  int       // makes failed in a row
	retryAt   time.Time // no make before, after a failure
}

// newSpareNode makes the reserve of zygote node node for kind net.
func newSpareNode(node, net string) *spareNode {
	n := &spareNode{node: node, net: net}
	if k, ok := homeKeyOf(node, net); ok {
		n.home = &k
	}
	return n
}

// Back-off of a node whose spares fail to be made (its zygote is
// stuck, crashing, or out of memory): the first retry after
// spareRetryMin, each further failure doubling it up to spareRetryMax.
// It is per node, so the other nodes' reserves are refilled meanwhile,
// instead of every refill going to the failing node, furthest below
// its want.
const (
	spareRetryMin = time.Second
	spareRetryMax = 30 * time.Second
)

// errSpareHost marks a spare's make that failed before its zygote was
// asked: the host's part (a pre-made sandbox, a cgroup), which every node
// would fail alike. It backs off all makes, not the node it was for.
var errSpareHost = errors.New("spare sandbox")

// failed records a failed make and returns the node's back-off. Makes
// that fail together (both fillers were on the node when its zygote
// broke) count once; failures long after the last back-off ended start
// over.
func (n *spareNode) failed(now time.Time) time.Duration {
	if now.Before(n.retryAt) {
		return n.retryAt.Sub(now)
	}
	if n.failures > 0 && now.Sub(n.retryAt) > spareRetryMax {
		n.failures = 0
	}
	n.failures++
	d := spareRetryMax
	if n.failures <= 5 { // 1 s << 5 is past the maximum
		d = min(spareRetryMin<<(n.failures-1), spareRetryMax)
	}
	n.retryAt = now.Add(d)
	return d
}

// want is how many spares the node should hold: lo, or its biggest
// recent burst, but never more than hi.
func (n *spareNode) want(lo, hi int, now time.Time) int {
	if now.Sub(n.peakAt) > spareIdle {
		// A shortfall a minute old is forgotten with its peak: the next
		// start counts from nothing, not from it.
		n.peak, n.deficit = n.inflight, 0
	}
	return min(max(lo, n.peak), hi)
}

func spareKey(node, net string) string { return node + "\x00" + net }

// netWired is the spare kind, beside the network kinds (netKind), of
// isolated functions that have used the network (fnState.netUsed) while
// the network comes at the first socket: their spares are made with
// their veth pair in place and without the network filter, which a
// process can never shed. A spare of the plain isolated kind given to
// such a function would keep the filter, and every later socket of its
// would be a round trip to the worker, within lazyRate.
const netWired = "isolated+wired"

// usedNet records that a sandbox of st's function, forked from zygote
// node node, made its first socket: the function's next sandboxes get
// their network at start, and spares of that kind are made for the node
// now, so that the next start finds one.
func (w *Worker) usedNet(st *fnState, node string) {
	if st.netUsed.Swap(true) || w.spares == nil {
		return
	}
	w.spares.prime(node, netWired)
}

// spareKind is the spare kind l's start takes: l's network kind, or
// netWired.
func (w *Worker) spareKind(l *launch) string {
	if l.net == function.NetworkIsolated && !w.cfg.EagerNetwork && l.st.netUsed.Load() {
		return netWired
	}
	return l.net
}

// spare is one waiting child with its sandbox.
type spare struct {
	sb       *sandbox.Sandbox
	group    *cgroup.Group
	net      *netns.NS // isolated network, given back on destroy; nil otherwise
	lazy     *lazyNet  // or made at the first socket
	child    *zygote.Spare
	out, err *os.File // read ends of its stdout and stderr
	node     string   // the zygote node it was forked from
	// home is the user and network namespaces it made or entered, for
	// its function's instance to keep when it ends (homes.go); nil if
	// it has none to leave.
	home *zygote.Home
	// code is the hold on its function's code, which a spare prepared
	// in a home has mounted (prepareHome); nil otherwise.
	code *fnKey
}

func (w *Worker) startSpares(min, max int) {
	s := &spares{w: w, min: min, max: max, nodes: map[string]*spareNode{}, done: make(chan struct{})}
	for range spareMakers {
		s.wakes = append(s.wakes, make(chan struct{}, 1))
	}
	w.spares = s
	var wg sync.WaitGroup
	for _, wake := range s.wakes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.fill(wake)
		}()
	}
	go func() {
		wg.Wait()
		close(s.done)
	}()
}

// take records a start from zygote node node of a function of network
// kind net, and returns a spare for it, or nil; either way it asks for a
// refill. The caller calls finish when the start is over.
func (s *spares) take(node, net string) *spare {
	return s.takeFrom(node, net, false)
}

// takeReady is take for a reserve that has a spare ready, if it has:
// else it records nothing and returns nil (the caller takes from
// another reserve, which then records the start).
func (s *spares) takeReady(node, net string) *spare {
	return s.takeFrom(node, net, true)
}

func (s *spares) takeFrom(node, net string, readyOnly bool) *spare {
	now := time.Now()
	key := spareKey(node, net)
	s.mu.Lock()
	n := s.nodes[key]
	if readyOnly && (n == nil || len(n.ready) == 0) {
		s.mu.Unlock()
		return nil
	}
	if n == nil {
		n = newSpareNode(node, net)
		s.nodes[key] = n
	}
	n.lastUse, s.taken = now, now
	n.inflight++
	// A burst is the starts that came before the refill caught up, net of
	// the spares it made meanwhile (add): the refill waits for a quiet
	// moment, so a burst's starts all count, even those over before the
	// last arrives, while starts one at a time, each refilled before the
	// next, count one each. Counted gross, a steady stream that the refill
	// kept up with but for a spare or two was one endless burst: 400
	// starts 10 ms apart left the node max spares (128 by default, about
	// 180 MB), made after the stream, for nothing.
	n.deficit = min(n.deficit+1, s.max)
	if b := max(n.deficit, n.inflight); b >= n.peak {
		n.peak, n.peakAt = b, now
	}
	var sp *spare
	if len(n.ready) > 0 {
		sp = n.ready[0]
		n.ready = n.ready[1:]
	}
	s.mu.Unlock()
	s.wake()
	return sp
}

// prime gives zygote node node a reserve for functions of network kind
// net before its first start, as if it had just been used: a node that
// was planted or promoted is about to be, and its first start then takes
// a spare too. Unused, the reserve goes after spareIdle.
func (s *spares) prime(node, net string) {
	s.mu.Lock()
	key := spareKey(node, net)
	if s.nodes[key] == nil {
		n := newSpareNode(node, net)
		n.lastUse = time.Now()
		s.nodes[key] = n
	}
	s.mu.Unlock()
	s.wake()
}

// wake asks every filler to look at the reserves.
func (s *spares) wake() {
	for _, wake := range s.wakes {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// finish ends a start recorded by take.
func (s *spares) finish(node, net string) {
	s.mu.Lock()
	if n := s.nodes[spareKey(node, net)]; n != nil {
		n.inflight--
	}
	s.mu.Unlock()
}

// count returns the number of ready spares of zygote node key.
func (s *spares) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := 0
	for _, n := range s.nodes {
		if n.node == key {
			c += len(n.ready)
		}
	}
	return c
}

// fill keeps each recently used node's reserve at its want and drops the
// spares of nodes idle for spareIdle or gone from the tree.
func (s *spares) fill(wake <-chan struct{}) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		s.trim(time.Now())
		for {
			if !s.quiet() {
				return
			}
			key, ok := s.short()
			if !ok || s.w.isClosed() {
				break
			}
			sp, err := s.make(key.node, key.net)
			if key.home != nil && err != nil && !errors.Is(err, errNoHome) && !errors.Is(err, errSpareHost) {
				// Success is counted when the spare starts its function
				// (spareStarter): a prepared spare's arrival ends after
				// its make.
				s.w.homeSpareDone(err)
			}
			if retry, host := s.made(key, err, time.Now()); host {
				s.w.log.Warn("spares not made", "err", err, "retry_in", retry)
				continue
			} else if errors.Is(err, errNoHome) {
				// Another filler took the home, or its function changed:
				// look again at the next wake, not in a loop.
				break
			} else if err != nil {
				s.w.log.Warn("spare zygote child", "node", key.node, "network", key.net, "err", err, "retry_in", retry)
				continue
			}
			if !s.add(key.node, key.net, sp) {
				s.w.discard(sp)
			} else if sp.home != nil && sp.home.UID >= 0 {
				s.w.metrics.homes.WithLabelValues("spare").Inc()
			}
		}
		// A node in back-off is looked at again when it ends, not at
		// the next tick or start.
		var retry <-chan time.Time
		var t *time.Timer
		if d, ok := s.nextRetry(time.Now()); ok {
			t = time.NewTimer(d)
			retry = t.C
		}
		select {
		case <-wake:
		case <-tick.C:
		case <-retry:
		case <-s.w.stop:
			return
		}
		if t != nil {
			t.Stop()
		}
	}
}

// made ends a make for node and net counted by short, which failed with
// err (nil: it did not), and returns the back-off the failure started or
// extended: the host's for a failure in the host's part (errSpareHost,
// reported by host), else the node's. n is the reserve short returned,
// even if trim or dropKinds has let it go since (and prime made another
// under its key, which this make never counted in).
func (s *spares) made(n *spareNode, err error, now time.Time) (retry time.Duration, host bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.making--
	home := n.home != nil
	switch {
	case errors.Is(err, errNoHome):
		return 0, false
	case errors.Is(err, errSpareHost):
		return s.host.failed(now), true
	case err != nil && !home:
		return n.failed(now), false
	}
	// A failed make into a home backs off nothing: it took its home,
	// which the next make cannot have (short makes only into homes
	// kept), and homes go off after homesFailMax such failures in a row.
	return 0, false
}

// nextRetry is the time until the earliest back-off of a failing node
// below its want ends (0 if one has), if any node is failing.
func (s *spares) nextRetry(now time.Time) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.host.retryAt) {
		return s.host.retryAt.Sub(now), true
	}
	var d time.Duration
	ok := false
	for _, n := range s.nodes {
		if n.failures == 0 || n.want(s.min, s.max, now)-len(n.ready)-n.making <= 0 {
			continue
		}
		// A back-off over since short looked is due now.
		if w := max(n.retryAt.Sub(now), 0); !ok || w < d {
			d, ok = w, true
		}
	}
	return d, ok
}

// add puts a made spare in its node's reserve; false if the node is gone.
// A reserve back at its want ends the burst that drained it; a spare made
// short of it offsets one of the burst's takes.
func (s *spares) add(node, net string, sp *spare) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[spareKey(node, net)]
	if n == nil {
		return false
	}
	n.ready = append(n.ready, sp)
	n.failures, n.retryAt = 0, time.Time{}
	s.host.failures, s.host.retryAt = 0, time.Time{}
	if len(n.ready) >= n.want(s.min, s.max, time.Now()) {
		n.deficit = 0
	} else {
		n.deficit = max(n.deficit-1, 0)
	}
	return true
}

// quiet waits until no invocation is under way (for at most a second)
// and no spare was taken for spareQuiet, and reports false if the worker
// is stopping.
func (s *spares) quiet() bool {
	s.w.busy.wait(time.Second, s.w.stop)
	for {
		s.mu.Lock()
		wait := spareQuiet - time.Since(s.taken)
		s.mu.Unlock()
		if wait <= 0 {
			return true
		}
		select {
		case <-time.After(wait):
		case <-s.w.stop:
			return false
		}
	}
}

// short picks the node furthest below its want (the root's key is ""),
// of those not in back-off, if the reserve is below max, and counts a
// spare as being made for it.
func (s *spares) short() (*spareNode, bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.host.retryAt) {
		return nil, false
	}
	total, homed, gap := 0, 0, 0
	var best, home *spareNode
	for _, n := range s.nodes {
		total += len(n.ready) + n.making
		if n.home != nil {
			homed += len(n.ready) + n.making
		}
	}
	for _, n := range s.nodes {
		// In back-off, or failing and already being tried by the other
		// filler: a stuck zygote holds up one filler, not both.
		if now.Before(n.retryAt) || n.failures > 0 && n.making > 0 {
			continue
		}
		g := n.want(s.min, s.max, now) - len(n.ready) - n.making
		if n.home != nil {
			// Made only into a home kept for it, one at a time (a make
			// under way counts against the homes until it takes its
			// own), and in homes' share of max only.
			if s.w.homes == nil || homed >= s.max/2 {
				continue
			}
			g = min(g, s.w.homes.count(*n.home)-n.making)
			if g > 0 && home == nil && s.floorLocked(n.node) {
				home = n
			}
		}
		if g > gap {
			best, gap = n, g
		}
	}
	if gap <= 0 || total >= s.max {
		return nil, false
	}
	if home != nil && best == s.nodes[spareKey(home.node, function.NetworkIsolated)] {
		// A home kept is its function's sandbox just ended: the next
		// start is likely that function's again (calls back to back),
		// and a spare in its home starts it sooner and for less than
		// a plain one. So a home comes before its node's plain reserve
		// for isolated functions, which its function would otherwise
		// take, once that reserve has one for the node's other
		// functions (floorLocked); never before another node's or
		// another kind's reserve.
		best = home
	}
	best.making++
	return best, true
}

// floorLocked reports whether zygote node node's plain reserve for
// isolated functions (the kind a home's function otherwise takes) has a
// spare ready or being made, or is not kept at all. Called with s.mu.
func (s *spares) floorLocked(node string) bool {
	n := s.nodes[spareKey(node, function.NetworkIsolated)]
	return n == nil || len(n.ready)+n.making > 0
}

func (s *spares) trim(now time.Time) {
	if s.w.homes != nil {
		n := s.w.homes.drop(func(k homeKey) bool { return !s.w.zyg.Has(k.node) }, now.Add(-spareIdle))
		s.w.metrics.homes.WithLabelValues("dropped").Add(float64(n))
	}
	var drop []*spare
	s.mu.Lock()
	for key, n := range s.nodes {
		idle := now.Sub(n.lastUse) > spareIdle && n.inflight == 0
		if idle || !s.w.zyg.Has(n.node) {
			drop = append(drop, n.ready...)
			n.ready = nil
			if idle {
				delete(s.nodes, key)
			}
		}
		// A burst that is over no longer needs its spares kept.
		if extra := len(n.ready) - n.want(s.min, s.max, now); extra > 0 {
			drop = append(drop, n.ready[len(n.ready)-extra:]...)
			n.ready = n.ready[:len(n.ready)-extra]
		}
	}
	s.mu.Unlock()
	for _, sp := range drop {
		s.w.discard(sp)
	}
}

// make forks one spare of zygote node key, for functions of network
// kind net, into a new pre-made sandbox.
func (s *spares) make(key, net string) (_ *spare, err error) {
	w := s.w
	ctx, cancel := context.WithTimeout(s.w.life, 30*time.Second)
	defer cancel()
	hk, home := homeKeyOf(key, net)
	var h *zygote.Home
	if home {
		// First: without one, nothing else is made.
		if w.homes == nil {
			return nil, errNoHome
		}
		if h = w.homes.take(hk); h == nil {
			return nil, errNoHome
		}
		net = function.NetworkIsolated
	}
	sb, err := w.premade(ctx, "spare")
	if err != nil {
		w.closeHome(h)
		return nil, fmt.Errorf("%w: %w", errSpareHost, err)
	}
	sp := &spare{sb: sb, node: key, home: h}
	defer func() {
		if err != nil {
			w.discard(sp)
		}
	}()
	// The lowest CPU weight until it gets a function: the child's
	// set-up then yields to running functions and starts.
	if sp.group, err = w.newGroup(ctx, sb.ID(), cgroup.Limits{MemoryBytes: spareMemory, Pids: w.cfg.PidsLimit, CPUWeight: 1}); err != nil {
		return nil, fmt.Errorf("%w: %w", errSpareHost, err)
	}
	sb.SetGroup(sp.group)
	j, err := openJoin(sb)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errSpareHost, err)
	}
	defer j.close()
	sp.out, sp.err = j.outR, j.errR
	sp.child, err = w.zyg.SpareFrom(ctx, key, zygote.SpareTarget{
		Scratch: j.Scratch, Listener: j.Listener, Stdout: j.outW, Stderr: j.errW, Group: j.Group,
		Net: net != "", Hostname: "hearth-" + shortID(sb.ID()),
		WatchNet: net == function.NetworkIsolated && !w.cfg.EagerNetwork,
		Home:     sp.home,
		Prepare:  home,
	})
	if err != nil {
		return sp, err
	}
	pidfd, err := sp.child.PidFD()
	if err != nil {
		return sp, err
	}
	if err := sb.Adopt(pidfd, sp.child.Pid()); err != nil {
		return sp, err
	}
	if l, werr := sp.child.Watch(); l != nil {
		sp.lazy, err = w.watchNet(sp.child.Pid(), pidfd, l, nil) // its function's, once it has one
		if err == nil && sp.home == nil && w.homes != nil {
			// Its ids are mapped when it gets its function.
			if sp.home, err = zygote.OpenHome(sp.child.Pid(), pidfd); err != nil {
				err = fmt.Errorf("keeping its namespaces: %w", err)
			}
		}
	} else if home {
		err = fmt.Errorf("a spare in a home could not watch its sockets: %w", werr)
	} else if net == function.NetworkIsolated || net == netWired {
		if werr != nil && !w.cfg.EagerNetwork && !w.watchWarned.Swap(true) {
			w.log.Warn("spares get their network at start: a zygote child could not watch its sockets (said once)", "err", werr)
		}
		sp.net, err = w.attachNet(ctx, sp.child.Pid(), pidfd)
	}
	if err == nil && home {
		err = w.prepareHome(sp, hk)
	}
	return sp, err
}

// discard destroys a spare that was never used.
func (w *Worker) discard(sp *spare) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sp.child != nil {
		sp.child.Close()
	}
	if err := sp.sb.Destroy(ctx); err != nil {
		w.log.Warn("destroying spare", "sandbox", sp.sb.ID(), "err", err)
	}
	if sp.group != nil {
		if err := w.dropGroup(ctx, sp.group); err != nil {
			w.log.Warn("deleting a spare's cgroup", "sandbox", sp.sb.ID(), "err", err)
		}
	}
	w.dropNet(ctx, sp.net)
	w.dropLazy(ctx, sp.lazy)
	w.closeHome(sp.home)
	if sp.code != nil {
		w.dropCode(*sp.code)
	}
	for _, f := range []*os.File{sp.out, sp.err} {
		if f != nil {
			f.Close()
		}
	}
}

// dropKinds discards the spares of the reserves that match (by zygote
// node and kind) and forgets the reserves.
func (s *spares) dropKinds(match func(node, kind string) bool) {
	var drop []*spare
	s.mu.Lock()
	for key, n := range s.nodes {
		if match(n.node, n.net) {
			drop = append(drop, n.ready...)
			n.ready = nil
			if n.inflight == 0 {
				delete(s.nodes, key)
			}
		}
	}
	s.mu.Unlock()
	for _, sp := range drop {
		s.w.discard(sp)
	}
}

// close drops every spare once fill has stopped.
func (s *spares) close() {
	<-s.done
	s.mu.Lock()
	var all []*spare
	for _, n := range s.nodes {
		all = append(all, n.ready...)
		n.ready = nil
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sp := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.w.discard(sp)
		}()
	}
	wg.Wait()
}
