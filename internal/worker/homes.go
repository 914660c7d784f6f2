package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/zygote"
)

// Homes: the user and network namespaces a forked sandbox leaves.
//
// Every zygote child of an isolated function makes a network namespace
// of its own, with loopback alone until its first internet socket
// (lazynet.go). The kernel's making and tearing down of that namespace
// (its loopback device, its sysctl tables, its protocols' state) is
// about 1 ms of CPU per fork start, the largest share of a start's CPU
// left to the kernel. Most such namespaces end as they began: loopback
// alone, no internet or netlink socket ever made in them.
//
// So when such a sandbox ends, once all its processes are gone, the
// worker keeps its user and network namespaces (a zygote.Home) for the
// same function's next sandbox, and has the sandbox's zygote node fork
// a spare into them when its refill next runs (a spare of the home's own
// kind, homeKey.kind), which only that function takes. The spare makes only its mount, uts
// and ipc namespaces; the uid and gid are mapped already.
//
// What a home may carry from one sandbox to the next is the network
// namespace's state beyond its processes (a unix socket an in-flight
// descriptor keeps alive, say) and the user namespace's: nothing a
// function can reach that it did not make itself, as a warm sandbox
// keeps more. A home goes only to the function that left it, by name,
// deployment and uid, from the zygote node whose child made or entered
// it: never to another function, not even one with the same name and
// uid after a delete. A
// namespace that got its network (attached, or tried) is never kept.
//
// Homes are kept only for functions started again within spareIdle of
// their last fork start, that fork start itself within spareIdle: one
// called once would leave a spare that waits a minute for nothing. A
// sandbox evicted to free memory leaves none, and home spares take at
// most half of max_spares, so that the reserves of all functions stay.

// homeKey is what a home is kept under: the zygote node whose child made
// or entered it, and its function: name, deployment (the registry's
// deploy time of its revision: a new revision, or the function deleted
// and deployed again under its name and uid, is another) and ids.
type homeKey struct {
	node, fn string
	gen      uint64
	uid, gid int
}

// kind is the spare kind of the spares that enter k's homes.
func (k homeKey) kind() string {
	return homePrefix + strconv.FormatUint(k.gen, 10) + ":" + strconv.Itoa(k.uid) + ":" + strconv.Itoa(k.gid) + ":" + k.fn
}

const homePrefix = "home:"

// homeKeyOf parses a spare kind of homes of zygote node node.
func homeKeyOf(node, kind string) (homeKey, bool) {
	rest, ok := strings.CutPrefix(kind, homePrefix)
	if !ok {
		return homeKey{}, false
	}
	f := strings.SplitN(rest, ":", 4)
	if len(f) != 4 {
		return homeKey{}, false
	}
	gen, err0 := strconv.ParseUint(f[0], 10, 64)
	uid, err1 := strconv.Atoi(f[1])
	gid, err2 := strconv.Atoi(f[2])
	if err0 != nil || err1 != nil || err2 != nil {
		return homeKey{}, false
	}
	return homeKey{node: node, fn: f[3], gen: gen, uid: uid, gid: gid}, true
}

// Bounds on the homes kept: each holds a network namespace (tens of KB
// of kernel memory) until a spare enters it or it is a minute old.
const (
	homesMax    = 64
	homesPerKey = 8
)

// errNoHome: a spare of a home kind was to be made, and no home of its
// kind was left (another filler took it), or its function is no longer
// the home's deployment (prepareHome).
var errNoHome = errors.New("no home left")

// homes keeps the homes of ended sandboxes, by homeKey.
type homes struct {
	mu     sync.Mutex
	by     map[homeKey][]keptHome
	n      int
	closed bool
	// fails counts spares that failed to be made into a home, or to
	// arrive in it, in a row (none started from a home between, none
	// more than homesFailWindow apart); at homesFailMax no home is kept
	// until offUntil, a pause that doubles each time (offFor): a host
	// that refuses a child's setns into them would fail every such spare.
	fails    int
	lastFail time.Time
	offUntil time.Time
	offFor   time.Duration
}

// homesFailMax is how many spares in a row may fail to be made into a
// home before the worker stops keeping homes for a while: homesOffMin,
// doubling each time up to homesOffMax.
const (
	homesFailMax    = 5
	homesFailWindow = 10 * time.Minute
	homesOffMin     = time.Minute
	homesOffMax     = 30 * time.Minute
)

// made records whether a spare was made into a home (err nil) at now,
// and returns how long homes are off if this failure turned them off.
// Failures that are no home's (the node's zygote dead or busy
// respawning, the make's own deadline) do not count.
func (hs *homes) made(err error, now time.Time) time.Duration {
	if err != nil && (errors.Is(err, zygote.ErrNoZygote) || errors.Is(err, zygote.ErrDead) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return 0
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if err == nil {
		hs.fails = 0
		return 0
	}
	if now.Sub(hs.lastFail) > homesFailWindow {
		hs.fails = 0 // not in a row: homes started meanwhile, unseen
	}
	hs.lastFail = now
	if hs.fails++; hs.fails < homesFailMax {
		return 0
	}
	hs.fails = 0
	hs.offFor = min(max(2*hs.offFor, homesOffMin), homesOffMax)
	hs.offUntil = now.Add(hs.offFor)
	return hs.offFor
}

type keptHome struct {
	h  *zygote.Home
	at time.Time
}

func newHomes() *homes { return &homes{by: map[homeKey][]keptHome{}} }

// put keeps h under k, and reports whether it did; if not, it closed h.
func (hs *homes) put(k homeKey, h *zygote.Home, now time.Time) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.closed || now.Before(hs.offUntil) || hs.n >= homesMax || len(hs.by[k]) >= homesPerKey {
		h.Close()
		return false
	}
	hs.by[k] = append(hs.by[k], keptHome{h, now})
	hs.n++
	return true
}

// take returns the newest home kept under k, or nil.
func (hs *homes) take(k homeKey) *zygote.Home {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	l := hs.by[k]
	if len(l) == 0 {
		return nil
	}
	h := l[len(l)-1].h
	if len(l) == 1 {
		delete(hs.by, k)
	} else {
		hs.by[k] = l[:len(l)-1]
	}
	hs.n--
	return h
}

// count returns how many homes are kept under k.
func (hs *homes) count(k homeKey) int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return len(hs.by[k])
}

// drop closes the homes that match, and those kept before old (zero:
// none by age), and returns how many it closed.
func (hs *homes) drop(match func(homeKey) bool, old time.Time) int {
	hs.mu.Lock()
	var out []*zygote.Home
	for k, l := range hs.by {
		keep := l[:0]
		for _, e := range l {
			if (match != nil && match(k)) || e.at.Before(old) {
				out = append(out, e.h)
			} else {
				keep = append(keep, e)
			}
		}
		if len(keep) == 0 {
			delete(hs.by, k)
		} else {
			hs.by[k] = keep
		}
	}
	hs.n -= len(out)
	hs.mu.Unlock()
	for _, h := range out {
		h.Close()
	}
	return len(out)
}

// close closes every home kept, and every one put from now on, and
// returns how many it closed.
func (hs *homes) close() int {
	hs.mu.Lock()
	hs.closed = true
	hs.mu.Unlock()
	return hs.drop(func(homeKey) bool { return true }, time.Time{})
}

// deployment stamps fn's deployment for homeKey.
func deployment(fn registry.Function) uint64 { return uint64(fn.DeployedAt.UnixNano()) }

// homeKey is what the homes of l's function's sandboxes forked from
// zygote node node are kept under.
func (l *launch) homeKey(node string) homeKey {
	return homeKey{node: node, fn: l.fn.Name, gen: deployment(l.fn), uid: l.uid, gid: l.gid}
}

// homeOf is an instance's home and where it is kept once the instance
// ends.
type homeOf struct {
	h   *zygote.Home
	key homeKey
}

// noteForkStart records a fork start of st's function, and whether its
// previous one was recent enough for its sandboxes to leave homes.
func (st *fnState) noteForkStart(now time.Time) {
	prev := st.forkAt.Swap(now.UnixNano())
	st.forkAgain.Store(prev != 0 && now.Sub(time.Unix(0, prev)) < spareIdle)
}

// startsAgain reports whether st's function's sandboxes should leave
// homes at now: its last two fork starts were within spareIdle of each
// other, and the last within spareIdle of now.
func (st *fnState) startsAgain(now time.Time) bool {
	return st.forkAgain.Load() && now.Sub(time.Unix(0, st.forkAt.Load())) < spareIdle
}

// setHome gives inst the home its zygote child made or entered, unless
// inst is being destroyed already: then it closes the home.
func (w *Worker) setHome(inst *instance, ho *homeOf) {
	w.mu.Lock()
	_, live := w.live[inst]
	if live {
		inst.home = ho
	}
	w.mu.Unlock()
	if !live {
		ho.h.Close()
	}
}

// dropHome closes the home of inst, if it has one, so that it leaves
// none: a sandbox evicted to free memory leaves no spare to take its
// place.
func (w *Worker) dropHome(inst *instance) {
	w.mu.Lock()
	ho := inst.home
	inst.home = nil
	w.mu.Unlock()
	if ho != nil {
		ho.h.Close()
	}
}

// keepHome keeps ho, the home of a sandbox whose processes are all gone
// and whose network namespace stayed untouched (pristine), for its
// function's next sandbox, and has a spare made into it; else it closes
// the home.
func (w *Worker) keepHome(ho *homeOf, pristine bool) {
	if ho == nil {
		return
	}
	why := ""
	switch {
	case w.homes == nil || w.spares == nil:
		why = "off"
	case !pristine:
		why = "network used"
	case ho.h.UID < 0:
		why = "no function"
	}
	if why == "" {
		// Still the deployment the sandbox ran: one deployed since (or
		// deleted, and maybe deployed again) has dropped its homes, and
		// gets none of the earlier one's.
		if fn, err := w.fns.Get(ho.key.fn); err != nil || deployment(fn) != ho.key.gen {
			why = "function gone"
		}
	}
	if why == "" {
		w.mu.Lock()
		st := w.state[ho.key.fn]
		switch {
		case w.closed || st == nil:
			why = "function gone"
		case !st.startsAgain(time.Now()):
			why = "not started again"
		case !w.homes.put(ho.key, ho.h, time.Now()):
			why = "full"
		}
		w.mu.Unlock()
	}
	if why == "" {
		// A deploy between the check above and the put has dropped the
		// function's homes already (Retire runs after the registry has
		// the new revision): drop this one too.
		if fn, err := w.fns.Get(ho.key.fn); err != nil || deployment(fn) != ho.key.gen {
			w.homes.drop(func(k homeKey) bool { return k == ho.key }, time.Time{})
			w.metrics.homes.WithLabelValues("closed").Inc()
			return
		}
	}
	if why != "" {
		ho.h.Close()
		if why != "off" {
			w.metrics.homes.WithLabelValues("closed").Inc()
		}
		return
	}
	w.metrics.homes.WithLabelValues("kept").Inc()
	w.spares.prime(ho.key.node, ho.key.kind())
}

// closeHome closes h, a spare's home it will not leave to an instance,
// counting it as dropped if it was kept (its ids mapped).
func (w *Worker) closeHome(h *zygote.Home) {
	if h == nil {
		return
	}
	if h.UID >= 0 {
		w.metrics.homes.WithLabelValues("dropped").Inc()
	}
	h.Close()
}

// dropHomes closes the homes of function fn, and discards its home
// spares: after a delete, a function deployed later under its name and
// slot is another (the deployment in homeKey guards the sandboxes still
// ending); after a deploy, the new revision may fork from another node
// or want another network.
func (w *Worker) dropHomes(fn string) {
	if w.homes == nil {
		return
	}
	n := w.homes.drop(func(k homeKey) bool { return k.fn == fn }, time.Time{})
	w.metrics.homes.WithLabelValues("dropped").Add(float64(n))
	if w.spares != nil {
		w.spares.dropKinds(func(node, kind string) bool {
			k, ok := homeKeyOf(node, kind)
			return ok && k.fn == fn
		})
	}
}

func (k homeKey) String() string { return fmt.Sprintf("%s (uid %d) on node %q", k.fn, k.uid, k.node) }

// prepareHome has sp, a spare in a home of k, arrive ahead of need (see
// zygote.Spare.Prepare): it mounts the code, becomes the function's ids
// and installs its filters now, off the next start's clock, and runs
// none of the function's code until that start. It gets the start the
// function's launch gives (spareStart's Go refuses any other), while
// the function is still k's deployment; else errNoHome, as for any
// failure of the function's own (which must not turn homes off). The
// spare holds the code, which it has mounted, until it is discarded or
// its instance holds it.
func (w *Worker) prepareHome(sp *spare, k homeKey) error {
	fn, release, err := w.fns.Lease(k.fn)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoHome, err)
	}
	if deployment(fn) != k.gen {
		release()
		return fmt.Errorf("%w: %s was deployed again", errNoHome, k.fn)
	}
	code := w.holdCode(fn, release)
	sp.code = &code
	l, err := w.newLaunch(fn, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoHome, err)
	}
	if l.uid != k.uid || l.gid != k.gid {
		return fmt.Errorf("%w: %s has other ids now", errNoHome, k.fn)
	}
	return sp.child.Prepare(l.start())
}

// homeSpareDone records how a spare made into a home ended: it started
// its function (err nil), or failed to be made or to arrive (see
// homes.made, which turns homes off after homesFailMax in a row). A
// start that failed after the spare arrived is the function's doing (a
// handler that exits at import, say), and counts neither way.
func (w *Worker) homeSpareDone(err error) {
	if w.homes == nil {
		return
	}
	if off := w.homes.made(err, time.Now()); off > 0 {
		w.log.Warn("sandboxes' namespaces are not kept for their function's next for a while: spares could not be made into them", "err", err, "off_for", off)
	}
}
