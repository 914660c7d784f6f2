package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/seccomp"
)

// A forked sandbox's isolated network, made when it is first needed.
//
// A zygote child makes its own network namespace, and the worker gives
// it a veth pair to the pool's bridges, an address and a route
// (attachNet). That is 3-4 ms of CPU per start in all, the worker's
// netlink work and the kernel's teardown of the pair: the largest share
// of a fork start's CPU. Most functions never open a socket beyond their
// runtime's unix one.
//
// So a child of an isolated function that has not used the network yet
// is cloned with WatchNet: before anything else it installs the network
// filter (seccomp.NetFilter) on itself and hands over its listener. It
// and everything it starts then stop in socket(2) of AF_INET, AF_INET6
// or AF_NETLINK until the worker answers. A goroutine per sandbox
// (serveLazy) answers: at the first, it attaches the network, then lets
// the call go on. The socket finds eth0, its address and route in
// place, as if they had been there from the start; a function that never
// opens one never pays for them.
//
// The answer decides nothing the caller could change afterwards
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE, for a call the filters below allow
// anyway), and the namespace attached is the sandbox's own, known from
// the listener it came on: a sandbox can at most get its own network
// earlier.
//
// The filter stays for the sandbox's life, so every later such socket
// is a round trip to the worker too: about 10-30 us of the worker's CPU,
// which no cgroup is charged. serveLazy answers at most lazyRate of them
// a second per sandbox, and lazyRateTotal for all; beyond that the
// callers wait, so a sandbox that floods slows itself and the filters
// cost the worker a bounded share. And once a function has used the
// network, its next sandboxes get it at start, with no filter
// (fnState.netUsed): forked on demand, or from spares of their own kind,
// made with their network (netWired).

// lazyNet is a sandbox's network namespace, waiting for its first
// socket, and its filter's listener.
type lazyNet struct {
	l *seccomp.Listener

	mu      sync.Mutex // held while attaching
	f       *os.File   // the namespace, until attached or dropped
	ns      *netns.NS  // once attached
	done    bool       // attached or dropped
	dropped bool
	used    func()    // called once attached (the function's netUsed)
	failed  time.Time // the last failed attempt
	warned  bool      // a failure was logged
	tried   bool      // an attach began: the namespace may hold some of it

	// after counts the sockets let through once attached: each was a
	// round trip that a sandbox without the filter does not make.
	after atomic.Int64
}

// A warm sandbox under the filter pays lazyTax more for each socket than
// one without (34-40 us against 7-10 on a 2-vCPU PVM guest, `hearth
// bench network`; ten times that past the worker's burst). Once what its
// function's sockets have cost so reaches what a start of the function
// costs (its measured start time), and lazyRetire sockets at least (the
// burst), it is not kept warm after its call: its function has used the
// network, so the sandbox that replaces it has its network from the
// start, without the filter. The tax is paid about once, rather than for
// every socket of a warm sandbox's life, and a function slow to start
// keeps its sandbox longer.
const (
	lazyTax    = 30 * time.Microsecond
	lazyRetire = 200
)

// retire reports whether ln's sandbox should not be kept warm, given
// what a start of its function costs.
func (ln *lazyNet) retire(start time.Duration) bool {
	if ln == nil {
		return false
	}
	n := ln.after.Load()
	return n >= lazyRetire && time.Duration(n)*lazyTax >= start
}

// markUsed marks ln's function as having used the network (ln.used), if
// its sandbox has it: a spare attached before its function took it did
// not mark it then.
func (ln *lazyNet) markUsed() {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.used != nil && ln.ns != nil {
		ln.used()
	}
}

// Round trips answered per second: per sandbox, and by all sandboxes
// together. Each sandbox's goroutine waits for one answer at a time, so
// under the worker-wide bound the sandboxes that flood share it evenly
// with the others. At 10-30 us of the worker's CPU each, the worker-wide
// bound caps what all the filters cost at a quarter of a CPU or so.
const (
	lazyRate      = 2000
	lazyRateTotal = 10000
	// lazyRetry spaces attempts to plumb a sandbox whose plumbing
	// failed; the sockets between fail at once.
	lazyRetry = time.Second
)

// lazyAll bounds the answers of all sandboxes together.
var lazyAll = rate.NewLimiter(lazyRateTotal, lazyRateTotal/10)

// watchNet takes the listener of the network filter that zygote child
// pid (pidfd) installed, and serves it until the child's processes are
// gone or dropLazy; used, if set, is called once its network is made
// (see onAttach). The child may run its function already: a fork's
// child is told to go on before this.
func (w *Worker) watchNet(pid int, pidfd, listener *os.File, used func()) (*lazyNet, error) {
	l, err := seccomp.NewListener(listener)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	f, err := childNetNS(pid, pidfd)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("network: %w", err)
	}
	ln := &lazyNet{l: l, f: f, used: used}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		ln.close()
		return nil, fmt.Errorf("network: %w", ErrClosed)
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go w.serveLazy(ln)
	return ln, nil
}

// onAttach sets what ln calls once its network is attached from now on,
// and counts its sockets from now on: not an attach or sockets before
// (a spare's zygote code's, before its function had it).
func (ln *lazyNet) onAttach(f func()) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	ln.used = f
	ln.after.Store(0)
}

func (ln *lazyNet) close() {
	ln.l.Close()
	if ln.f != nil {
		ln.f.Close()
		ln.f = nil
	}
}

// dropLazy stops serving ln and gives back its network, if attached,
// once the sandbox's processes are gone (a process still under the
// filter would get ENOSYS from its next socket). It waits for an attach
// under way, and reports whether the namespace is as it was made: no
// attach ever began, so no internet or netlink socket was ever made in
// it (the filter holds each until attached).
func (w *Worker) dropLazy(ctx context.Context, ln *lazyNet) (pristine bool) {
	if ln == nil {
		return false
	}
	ln.mu.Lock()
	pristine = !ln.done && !ln.tried && ln.ns == nil
	ln.done, ln.dropped = true, true
	ns := ln.ns
	ln.ns = nil
	if ln.f != nil {
		ln.f.Close()
		ln.f = nil
	}
	ln.mu.Unlock()
	// Not under ln.mu: closing waits for a receive under way.
	ln.l.Close()
	w.dropNet(ctx, ns)
	return pristine
}

// attach gives ln's namespace its network, unless it has it. It reports
// whether the namespace has it.
func (w *Worker) attach(ln *lazyNet) bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.done {
		return ln.ns != nil
	}
	if time.Since(ln.failed) < lazyRetry {
		return false
	}
	ln.tried = true
	t0 := time.Now()
	p, err := w.netPool(w.life)
	var ns *netns.NS
	if err == nil {
		ctx, cancel := context.WithTimeout(w.life, 10*time.Second)
		ns, err = p.Attach(ctx, ln.f)
		cancel()
	}
	if err != nil {
		// A socket after lazyRetry tries again.
		ln.failed = time.Now()
		w.metrics.lazyNet.WithLabelValues("failed").Inc()
		if !ln.warned {
			ln.warned = true
			w.log.Warn("attaching a sandbox's network at its socket", "err", err)
		}
		return false
	}
	ln.done, ln.ns = true, ns
	ln.f.Close()
	ln.f = nil
	if ln.used != nil {
		ln.used()
	}
	w.metrics.lazyNet.WithLabelValues("attached").Inc()
	w.metrics.lazyNetSeconds.Observe(time.Since(t0).Seconds())
	return true
}

// serveLazy answers ln's listener until the sandbox's processes are gone,
// dropLazy closes it, or the worker closes.
func (w *Worker) serveLazy(ln *lazyNet) {
	defer w.wg.Done()
	stop := context.AfterFunc(w.life, func() { ln.l.Close() })
	defer stop()
	// Beyond the rates, the callers wait: a sandbox that floods slows
	// itself.
	own := rate.NewLimiter(lazyRate, lazyRate/10)
	for {
		note, err := ln.l.Next()
		if err != nil {
			if !errors.Is(err, seccomp.ErrGone) && !errors.Is(err, os.ErrClosed) {
				// Unanswered, its calls would wait for good: closed,
				// they fail (ENOSYS).
				w.log.Warn("network filter listener", "err", err)
				ln.l.Close()
			}
			return
		}
		if own.Wait(w.life) != nil || lazyAll.Wait(w.life) != nil {
			return // the worker is closing
		}
		if w.attach(ln) {
			err = ln.l.Continue(note.ID)
			ln.after.Add(1)
		} else {
			// As without a route.
			err = ln.l.Fail(note.ID, unix.ENETUNREACH)
		}
		if err != nil && !errors.Is(err, os.ErrClosed) {
			w.log.Warn("answering the network filter", "err", err)
			ln.l.Close()
			return
		}
	}
}
