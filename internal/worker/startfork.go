package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/zygote"
)

// forkStarter starts a function by a zygote fork on demand: a shell (a
// pre-made one, or one made now) of the function's /tmp, whose cgroup
// gets the function's limits, and a child of the best zygote node that
// builds its sandbox around it and loads the handler.
type forkStarter struct{ w *Worker }

func (forkStarter) name() string { return "fork" }
func (forkStarter) path() string { return PathFork }

// start forks l's function into a shell. Without zygotes it skips.
func (f forkStarter) start(ctx context.Context, l *launch) (*instance, error) {
	w := f.w
	if w.zyg == nil {
		return nil, errSkip
	}
	// The start the spare reserve counted (spareStarter) ends with this
	// fork: its burst counts the starts under way.
	defer l.doneSpare()
	node, err := w.route(l)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	var inst *instance
	sb := w.takeHolder(l)
	if sb != nil {
		inst, err = w.adopt(ctx, sb, l)
	} else {
		inst, sb, err = w.newShell(ctx, l)
	}
	if err != nil {
		return nil, err
	}
	var cu cleanup
	defer cu.Clean()
	cu.Add(func() { w.destroy(inst) })
	t1 := time.Now()
	j, err := openJoin(sb)
	if err != nil {
		return nil, err
	}
	// The child holds the write ends; the readers end when it exits.
	inst.out = []*outPipe{copyLines(l.st.stdout, j.outR), copyLines(l.st.stderr, j.errR)}
	watch := l.net == function.NetworkIsolated && !w.cfg.EagerNetwork && !l.st.netUsed.Load()
	child, err := w.zyg.ForkFrom(ctx, node, zygote.Target{
		WatchNet: watch,
		Scratch:  j.Scratch,
		Listener: j.Listener,
		Stdout:   j.outW,
		Stderr:   j.errW,
		Group:    j.Group,
		Net:      l.net != "",
		Hostname: "hearth-" + shortID(inst.id),
		Mounts:   l.mounts,
		UID:      l.uid,
		GID:      l.gid,
		Env:      l.envMap(),
	})
	j.close()
	if err != nil {
		return nil, err
	}
	w.metrics.forkQueued.Observe(child.Queued.Seconds())
	inst.proc = procOf(child.PidFD)
	if err := sb.Adopt(child.PidFD, child.Pid); err != nil {
		if child.Watch != nil {
			child.Watch.Close()
		}
		return nil, err
	}
	if child.Watch != nil {
		// Served before the child, told to go on, can make a socket;
		// if it does sooner, its call waits for this.
		st := l.st
		used := func() { w.usedNet(st, node) }
		if inst.lazy, err = w.watchNet(child.Pid, child.PidFD, child.Watch, used); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
		}
		if w.homes != nil && l.premade {
			// Mapped already (Fork maps them): left as a home for this
			// function alone when it ends (homes.go), for a spare (which
			// only a function with the pre-made /tmp takes).
			if h, herr := zygote.OpenHome(child.Pid, child.PidFD); herr == nil {
				h.UID, h.GID = l.uid, l.gid
				w.setHome(inst, &homeOf{h: h, key: l.homeKey(node)})
			}
		}
	} else if watch && !w.watchWarned.Swap(true) {
		w.log.Warn("forked sandboxes get their network at start: a zygote child could not watch its sockets (said once)", "function", l.fn.Name, "err", child.WatchErr)
	}
	if l.net == function.NetworkIsolated && inst.lazy == nil {
		if inst.net, err = w.attachNet(ctx, child.Pid, child.PidFD); err != nil {
			return nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
		}
	}
	cu.Release() // connect destroys it if it fails
	t2 := time.Now()
	if err := w.connect(ctx, inst, l, nil, l.first); err != nil {
		return nil, err
	}
	w.metrics.noteStart("fork", child.Pid, schedStat{}, inst.loadCPU, t1)
	l.st.noteForkStart(t0)
	w.log.Debug("fork start", "function", l.fn.Name, "sandbox", inst.id, "zygote", node,
		"sandbox_create", t1.Sub(t0), "fork", t2.Sub(t1), "fork_queued", child.Queued, "to_ready", time.Since(t2))
	return inst, nil
}

// newShell makes l's cgroup and a shell (see premade) of l's /tmp for a
// zygote child, when no pre-made one fits.
func (w *Worker) newShell(ctx context.Context, l *launch) (*instance, *sandbox.Sandbox, error) {
	id := w.sandboxID(l.fn)
	grp, err := w.newGroup(ctx, id, l.limits)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
	}
	sb, err := w.factory.Shell(ctx, sandbox.Config{ID: id, ScratchBytes: l.scratchBytes, ScratchDisk: l.scratchDisk, Socket: socketName, Group: grp})
	if err != nil {
		w.putGroup(grp, id)
		return nil, nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
	}
	inst := l.instance(id, sb, grp)
	w.track(inst)
	return inst, sb, nil
}

// adopt turns a pre-made shell into l's instance: it gets l's cgroup.
func (w *Worker) adopt(ctx context.Context, sb *sandbox.Sandbox, l *launch) (*instance, error) {
	grp, err := w.newGroup(ctx, sb.ID(), l.limits)
	if err != nil {
		// Its own deadline: ctx may be what ended the start.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if derr := sb.Destroy(dctx); derr != nil {
			w.log.Warn("destroying a pre-made sandbox", "sandbox", sb.ID(), "err", derr)
		}
		return nil, fmt.Errorf("%s: %w: %w", l.fn.Name, err, ErrStart)
	}
	sb.SetGroup(grp)
	inst := l.instance(sb.ID(), sb, grp)
	w.track(inst)
	return inst, nil
}
