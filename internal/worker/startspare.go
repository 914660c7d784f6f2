package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/zygote"
)

// spareStarter starts a function in a spare (see spares): a zygote
// child forked ahead of need into a pre-made sandbox, already in its
// namespaces and cgroup, that only waits for the function's code,
// identity and environment. It skips when zygotes or spares are off,
// when the function's /tmp is not the pre-made one, or when the node's
// reserve is empty.
type spareStarter struct{ w *Worker }

func (spareStarter) name() string { return "spare" }
func (spareStarter) path() string { return PathFork }

// start takes a spare of l's zygote node, hands it l's function and
// waits for the handler to load. The start is counted in the node's
// recent demand until the fork paths are done with it (launch.doneSpare).
func (s spareStarter) start(ctx context.Context, l *launch) (*instance, error) {
	w := s.w
	if w.zyg == nil || w.spares == nil || !l.premade {
		return nil, errSkip
	}
	node, err := w.route(l)
	if err != nil {
		return nil, errSkip // the fork on demand reports it
	}
	t0 := time.Now()
	kind := w.spareKind(l)
	st := l.start()
	var sp *spare
	fromHome := false
	if hk, ok := w.homeKind(l, node, kind); ok {
		// A spare in a home the function's last sandbox left, if one is
		// ready and usable; else one of the node's others, as if there
		// had been none (an unusable one is discarded with its home).
		if sp = w.spares.takeReady(node, hk); sp != nil {
			if w.usableSpare(l, node, sp, st, true) {
				kind, fromHome = hk, true
			} else {
				w.spares.finish(node, hk)
				sp = nil
			}
		}
	}
	if sp == nil {
		sp = w.spares.take(node, kind)
	}
	l.spareDone = func() { w.spares.finish(node, kind) }
	if sp == nil || !fromHome && !w.usableSpare(l, node, sp, st, false) {
		return nil, errSkip
	}
	inst, err := w.spareStart(ctx, l, sp, st)
	if err != nil {
		// The handler's own doing, or the spare's arrival failing after
		// the take: only the latter would be the home's, and they cannot
		// be told apart here, so neither counts (homeSpareDone).
		return nil, err
	}
	if fromHome {
		w.homeSpareDone(nil)
	}
	l.st.noteForkStart(t0)
	w.metrics.spareStarts.Inc()
	w.log.Debug("spare start", "function", l.fn.Name, "zygote", node, "to_ready", time.Since(t0))
	return inst, nil
}

// usableSpare reports whether sp, just taken for l (st is l.start()),
// can start it; if not, it says why, discards sp in the background and,
// for a spare from a home, counts the home's failure.
func (w *Worker) usableSpare(l *launch, node string, sp *spare, st zygote.Start, fromHome bool) bool {
	if err := sp.child.Failed(); err != nil {
		// Its arrival failed (a prepared spare's), or it died waiting.
		w.log.Warn("a spare failed before its start; discarded", "function", l.fn.Name, "zygote", node, "err", err)
		if fromHome {
			w.homeSpareDone(err)
		}
		w.background(func() { w.discard(sp) })
		return false
	}
	if !sp.child.Takes(st) {
		// Prepared for what the function was when it was made (its
		// packages' mounts since changed, say).
		w.log.Warn("a spare in a home was prepared for another start of its function; discarded", "function", l.fn.Name)
		w.background(func() { w.discard(sp) })
		return false
	}
	return true
}

// homeKind is the spare kind of the homes that l's function's sandboxes
// leave on zygote node node, if they leave any: isolated functions whose
// network comes at their first socket (kind).
func (w *Worker) homeKind(l *launch, node, kind string) (string, bool) {
	if w.homes == nil || kind != function.NetworkIsolated || w.cfg.EagerNetwork {
		return "", false
	}
	return l.homeKey(node).kind(), true
}

// spareStart gives sp to l's function (st is l.start()): its limits on
// the spare's cgroup, its code and packages mounted, its identity and
// environment; then waits for the handler to load.
func (w *Worker) spareStart(ctx context.Context, l *launch, sp *spare, st zygote.Start) (*instance, error) {
	pid := sp.child.Pid()
	from, _ := schedstatOf(pid)
	if err := sp.group.SetLimits(l.limits); err != nil {
		w.discard(sp)
		return nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
	}
	inst := l.instance(sp.sb.ID(), sp.sb, sp.group)
	inst.net, inst.lazy = sp.net, sp.lazy
	if f, err := sp.child.PidFD(); err == nil {
		inst.proc = procOf(f)
		f.Close()
	}
	if ln := inst.lazy; ln != nil {
		st := l.st
		node := l.node
		ln.onAttach(func() { w.usedNet(st, node) })
		if st.netUsed.Load() {
			// Used the network since its kind was chosen (spareKind):
			// it will want it, made while the function loads.
			w.background(func() { w.attach(ln) })
		}
	}
	w.track(inst)
	inst.out = []*outPipe{copyLines(l.st.stdout, sp.out), copyLines(l.st.stderr, sp.err)}
	handover := time.Now()
	err := sp.child.Go(st)
	if err == nil {
		if h := sp.home; h != nil {
			if h.UID >= 0 {
				w.metrics.homes.WithLabelValues("taken").Inc()
			}
			// Mapped now, if it was not: the instance leaves it, as a
			// home for this function alone, when it ends (homes.go).
			h.UID, h.GID = l.uid, l.gid
			w.setHome(inst, &homeOf{h: h, key: l.homeKey(sp.node)})
			sp.home = nil
		}
		err = w.connect(ctx, inst, l, nil, l.first)
	} else {
		w.destroy(inst)
	}
	if err != nil {
		var le *LoadError
		if !errors.As(err, &le) {
			if why := sp.child.Err(10 * time.Millisecond); why != nil {
				err = fmt.Errorf("%w (%v)", err, why)
			}
		}
	}
	sp.child.Close()
	w.closeHome(sp.home) // not the instance's: Go failed
	if sp.code != nil {
		// The instance holds it now (track), if it started.
		w.dropCode(*sp.code)
		sp.code = nil
	}
	if err != nil {
		return nil, err
	}
	w.metrics.noteStart("spare", pid, from, inst.loadCPU, handover)
	return inst, nil
}
