package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
)

// Start paths, as reported in X-Hearth-Start-Path and the metrics.
const (
	PathWarm = "warm"
	PathFork = "fork"
	PathCold = "cold"
	// PathSnapshot is a start restored from a function snapshot.
	PathSnapshot = "snapshot"
)

// starter is one way to start a function's sandbox: a start path after
// the warm cache. Worker.start tries them in order (see runChain), each
// in a file of its own, top to bottom: startsnapshot.go, startspare.go,
// startfork.go, startcold.go.
type starter interface {
	// name names the path in logs.
	name() string
	// path is the start path reported for a start it makes.
	path() string
	// start starts a sandbox for l with its handler loaded, or fails
	// with errSkip when this path cannot serve the start (no snapshot, no
	// spare, no zygotes). A failed start leaves nothing behind.
	start(ctx context.Context, l *launch) (*instance, error)
}

// starters is the chain of start paths, fastest first: restored from the
// function's snapshot when that is measured to be faster, else a spare
// zygote child, else forked from the best zygote now, else a fresh
// interpreter.
func (w *Worker) starters() []starter {
	return []starter{snapshotStarter{w}, spareStarter{w}, forkStarter{w}, coldStarter{w}}
}

// start gives fn a new sandbox with its handler loaded, by the first
// start path of the chain that can; a failed restore or fork falls back
// to the next path, and the caller never sees it.
//
// first, if not nil, is the call waiting for the start (see launch.first),
// and arrived when a call waiting for it came (see launch.arrived).
func (w *Worker) start(ctx context.Context, fn registry.Function, st *fnState, first *runtime.Request, arrived time.Time) (*instance, string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.InitTimeout)
	defer cancel()
	l, err := w.newLaunch(fn, st)
	if err != nil {
		// Every path would fail so; a cold start is the last to try.
		return nil, PathCold, err
	}
	l.first, l.arrived = first, arrived
	defer l.doneSpare()
	return w.runChain(ctx, l, w.starters())
}

// runChain tries the start paths of chain in order until one starts l's
// sandbox, and returns it with its path. The fallback rules live here
// alone:
//   - a path that cannot serve the start (errSkip) hands it on, and no
//     fallback is counted;
//   - a failure that ends the start (see final) is the start's: a later
//     path would fail the same way;
//   - any other failure is logged and counted
//     (hearth_fork_fallbacks_total), and the next path tries.
//
// The last path's failure is the start's: nothing falls back from it,
// so it is not counted. A fresh start (any path but a restore) is
// recorded for the snapshot decision (Worker.started), timed from the
// first fresh path tried.
func (w *Worker) runChain(ctx context.Context, l *launch, chain []starter) (*instance, string, error) {
	var t0 time.Time
	var last error
	path := PathCold
	for i, s := range chain {
		fresh := s.path() != PathSnapshot
		if fresh && t0.IsZero() {
			t0 = time.Now()
		}
		inst, err := s.start(ctx, l)
		if err == nil {
			if fresh {
				w.started(l.fn, inst, time.Since(t0))
			}
			return inst, s.path(), nil
		}
		if errors.Is(err, errSkip) {
			continue
		}
		path, last = s.path(), err
		if final(ctx, err) || i == len(chain)-1 {
			return nil, path, err
		}
		w.metrics.forkFallbacks.Inc()
		w.log.Info("start failed; trying the next path", "function", l.fn.Name, "path", s.name(), "err", err)
	}
	if last == nil {
		last = fmt.Errorf("%s: no start path: %w", l.fn.Name, ErrStart)
	}
	return nil, path, last
}

// final reports whether a failed start ends the start: the handler's
// fault (it failed to load, or ran out of memory loading), which another
// path meets the same way, or the start's deadline. A spare that runs out
// of memory loading the handler ends the start too: a fork on demand
// would load the same handler in the same limit.
func final(ctx context.Context, err error) bool {
	var le *LoadError
	return errors.As(err, &le) || errors.Is(err, ErrOOM) || ctx.Err() != nil
}

// connect dials the runtime's socket of l's sandbox inst and waits for
// the handler to load. died, if not nil, closes when the sandbox's main
// process is gone.
//
// With first, the call waiting for the start is sent ahead of the ready
// frame (runtime.Conn.Pipeline): the runtime runs it as soon as the
// handler has loaded, without a round trip to the worker in between.
//
// Under Config.FirstCome, the sandbox of a start a call waits for takes
// the call's rank from here on, never below a sandbox's weight while it
// loads (firstCome.load): the load is CPU spent for that call, and the
// call may have arrived before the calls that run meanwhile (it waited
// for memory, or for a turn to start).
func (w *Worker) connect(ctx context.Context, inst *instance, l *launch, died <-chan struct{}, first *runtime.Request) error {
	fn := l.fn
	if w.come != nil && !l.arrived.IsZero() {
		w.come.load(inst, l.arrived) // destroy forgets it
	}
	c, err := inst.sb.Dial(socketName)
	if err != nil {
		// The error names the socket's host path: the log has it, the
		// caller does not.
		w.log.Warn("connecting to runtime", "function", fn.Name, "sandbox", inst.id, "err", err)
		w.destroy(inst)
		return fmt.Errorf("%s: cannot connect to the runtime: %w", fn.Name, ErrStart)
	}
	inst.conn = runtime.NewConn(c)
	if first != nil {
		// A failed send breaks the Conn: WaitReady reports it.
		_ = inst.conn.Pipeline(ctx, *first)
	}
	// A dead sandbox must not leave WaitReady hanging.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	var once sync.Once
	quit := make(chan struct{})
	defer once.Do(func() { close(quit) })
	if died != nil {
		go func() {
			select {
			case <-died:
				c.SetDeadline(time.Now())
			case <-quit:
			}
		}()
	}
	ready, err := inst.conn.WaitReady(ctx)
	stop()
	if err == nil {
		if first != nil {
			inst.firstRan = time.Now()
		}
		inst.load, inst.loadCPU = ready.Load, ready.LoadCPU
		c.SetDeadline(time.Time{})
		return nil
	}
	var herr *runtime.HandlerError
	if errors.As(err, &herr) {
		// The handler failed to load: report it like a handler error.
		w.destroy(inst)
		return &LoadError{Function: fn.Name, Err: herr}
	}
	var why string
	oom := false
	switch {
	case ctx.Err() != nil:
		why = "it was not ready before the start's deadline"
		n, _ := inst.group.OOMKills()
		oom = n > 0
	case errors.Is(err, runtime.ErrProtocol):
		why = "it broke the runtime protocol"
	default:
		exit := inst.exit()
		why, oom = "its process "+exit.String(), oomKilled(inst.group, exit)
	}
	if oom {
		w.destroy(inst)
		return fmt.Errorf("%s: out of memory while loading the handler (limit %d MB): %w", fn.Name, fn.Spec.MemoryMB, ErrOOM)
	}
	// err names the socket's host path: the log has it, the caller does not.
	w.log.Warn("runtime did not start", "function", fn.Name, "sandbox", inst.id, "why", why, "err", err)
	w.destroy(inst)
	return fmt.Errorf("%s: runtime did not start: %s (see the function's logs): %w", fn.Name, why, ErrStart)
}

// modules maps zygote package sets to modules: base-image packages
// through the base's metadata, installed ones through the cache.
func (w *Worker) modules(pkgs []string) ([]string, error) {
	var out []string
	for _, s := range pkgs {
		p, err := packages.ParsePackage(s)
		if err != nil {
			return nil, err
		}
		var mods []string
		if w.cfg.Packages != nil {
			mods, err = w.cfg.Packages.Modules(p)
		}
		if w.cfg.Packages == nil || err != nil {
			// Not installed by the cache: the base image has it.
			if mods, err = w.resolver.Modules([]string{s}); err != nil {
				return nil, err
			}
		}
		out = append(out, mods...)
	}
	return out, nil
}

// pkgPaths returns the sys.path entries of the installed packages of a
// zygote package set; base-image packages need none.
func (w *Worker) pkgPaths(pkgs []string) []string {
	if w.cfg.Packages == nil {
		return nil
	}
	var set []packages.Package
	for _, s := range pkgs {
		p, err := packages.ParsePackage(s)
		if err != nil {
			continue
		}
		if _, err := w.cfg.Packages.Modules(p); err == nil {
			set = append(set, p)
		}
	}
	return packages.SysPath(set)
}
