package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

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
// So each root zygote installs the network filter (seccomp.NetFilter)
// before anything else and hands its listener to the worker: every
// process of its tree stops in socket(2) of AF_INET, AF_INET6 or
// AF_NETLINK until the worker answers. A start only registers its
// child's namespace (watchNet), before the child runs any of the
// function's code. At the first such socket in the namespace, the
// worker attaches the network, then lets the call go on: the socket
// finds eth0, its address and route in place, as if they had been there
// from the start. A function that never opens one never pays for them.
//
// The answer decides nothing the caller could change afterwards (it is
// SECCOMP_USER_NOTIF_FLAG_CONTINUE for a call the filters below allow
// anyway); what is looked up is the namespace the caller is in, which
// it cannot leave (the tenant filter refuses setns and unshare).
// Sockets in zygotes, in namespaces of network: offline and in those
// already attached are let go at once.

// nsKey names a network namespace: its nsfs inode.
type nsKey struct{ dev, ino uint64 }

func nsKeyOf(f *os.File) (nsKey, error) {
	fi, err := f.Stat()
	if err != nil {
		return nsKey{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nsKey{}, errors.New("no stat")
	}
	return nsKey{uint64(st.Dev), st.Ino}, nil
}

// lazyNet is a registered namespace, attached at its first socket.
type lazyNet struct {
	key nsKey

	mu      sync.Mutex // held while attaching
	f       *os.File   // the namespace, until attached or dropped
	ns      *netns.NS  // once attached
	done    bool       // attached, failed or dropped: never attached again
	dropped bool
}

// netWatch holds the registered namespaces.
type netWatch struct {
	mu      sync.Mutex
	pending map[nsKey]*lazyNet
	served  int    // listeners being served
	why     string // why the last root zygote has none
}

// lazyNetwork says whether a start of network: isolated whose child is
// watched gets its network at its first socket.
func (w *Worker) lazyNetwork(watched bool) bool {
	return watched && !w.cfg.EagerNetwork
}

// watchNet registers the network namespace of process pid (a zygote
// child that has not yet run the function's code).
func (w *Worker) watchNet(pid int) (*lazyNet, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	key, err := nsKeyOf(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("network: %w", err)
	}
	ln := &lazyNet{key: key, f: f}
	w.nw.mu.Lock()
	w.nw.pending[key] = ln
	w.nw.mu.Unlock()
	return ln, nil
}

// dropLazy unregisters ln and gives back its network, if attached. It
// waits for an attach under way.
func (w *Worker) dropLazy(ctx context.Context, ln *lazyNet) {
	if ln == nil {
		return
	}
	ln.mu.Lock()
	ln.done, ln.dropped = true, true
	ns := ln.ns
	ln.ns = nil
	if ln.f != nil {
		ln.f.Close()
		ln.f = nil
	}
	ln.mu.Unlock()
	w.forgetLazy(ln)
	w.dropNet(ctx, ns)
}

func (w *Worker) forgetLazy(ln *lazyNet) {
	w.nw.mu.Lock()
	if w.nw.pending[ln.key] == ln {
		delete(w.nw.pending, ln.key)
	}
	w.nw.mu.Unlock()
}

// attach gives ln's namespace its network, once.
func (w *Worker) attach(ln *lazyNet) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.done {
		return
	}
	ln.done = true
	defer w.forgetLazy(ln)
	t0 := time.Now()
	p, err := w.netPool(w.life)
	var ns *netns.NS
	if err == nil {
		ctx, cancel := context.WithTimeout(w.life, 30*time.Second)
		ns, err = p.Attach(ctx, ln.f)
		cancel()
	}
	ln.f.Close()
	ln.f = nil
	if err != nil {
		// The call goes on without: its connect finds no route.
		w.metrics.lazyNet.WithLabelValues("failed").Inc()
		w.log.Warn("attaching a sandbox's network at its first socket", "err", err)
		return
	}
	ln.ns = ns
	w.metrics.lazyNet.WithLabelValues("attached").Inc()
	w.metrics.lazyNetSeconds.Observe(time.Since(t0).Seconds())
}

// serveNetWatch answers the network filter's listener l of a root
// zygote's tree until the tree is gone or the worker closes.
func (w *Worker) serveNetWatch(l *seccomp.Listener) {
	defer w.wg.Done()
	defer func() {
		w.nw.mu.Lock()
		w.nw.served--
		w.nw.mu.Unlock()
	}()
	stop := context.AfterFunc(w.life, func() { l.Close() })
	defer stop()
	defer l.Close()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		n, err := l.Next()
		if err != nil {
			if !errors.Is(err, seccomp.ErrGone) && !errors.Is(err, os.ErrClosed) {
				w.log.Warn("network filter listener", "err", err)
			}
			return
		}
		ln := w.lazyOf(l, n)
		if ln == nil {
			if err := l.Continue(n.ID); err != nil {
				w.log.Debug("answering the network filter", "err", err)
			}
			continue
		}
		// Attaching takes a millisecond or more: the next caller, in
		// another sandbox, does not wait for it.
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			w.attach(ln)
			if err := l.Continue(n.ID); err != nil {
				w.log.Debug("answering the network filter", "err", err)
			}
		}()
	}
}

// lazyOf returns the registered namespace that notification n's caller
// is in, if it is waiting for its network.
func (w *Worker) lazyOf(l *seccomp.Listener, n seccomp.Notif) *lazyNet {
	w.nw.mu.Lock()
	empty := len(w.nw.pending) == 0
	w.nw.mu.Unlock()
	if empty {
		return nil
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", n.Pid))
	if err != nil {
		return nil
	}
	key, err := nsKeyOf(f)
	f.Close()
	// Checked after the lookup: only then is the pid known to have
	// been the caller's.
	if err != nil || !l.Valid(n.ID) {
		return nil
	}
	w.nw.mu.Lock()
	defer w.nw.mu.Unlock()
	return w.nw.pending[key]
}

// onNetWatch takes a new root zygote's listener (zygote.Config.NetWatch).
func (w *Worker) onNetWatch(f *os.File, err error) {
	if err != nil {
		w.log.Warn("network at first socket is off: forked sandboxes get their network at start", "why", err)
		w.nw.mu.Lock()
		w.nw.why = err.Error()
		w.nw.mu.Unlock()
		return
	}
	l, err := seccomp.NewListener(f)
	if err != nil {
		// The root's tree would wait in socket(2) for good: it must not
		// be used.
		w.log.Error("network filter listener", "err", err)
		return
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		l.Close()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	w.nw.mu.Lock()
	w.nw.served++
	w.nw.why = ""
	w.nw.mu.Unlock()
	go w.serveNetWatch(l)
}
