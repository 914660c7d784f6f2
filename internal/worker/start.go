package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/ident"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/zygote"
)

// Start paths, as reported in X-Hearth-Start-Path and the metrics.
const (
	PathWarm = "warm"
	PathFork = "fork"
	PathCold = "cold"
	// PathSnapshot is a start restored from a function snapshot.
	PathSnapshot = "snapshot"
)

// start gives fn a new sandbox with its handler loaded: restored from
// its snapshot when that is measured to be faster, else forked from the
// best zygote when there is one, else with a fresh interpreter. A failed
// restore or fork falls back to the next path; the caller never sees it.
func (w *Worker) start(ctx context.Context, fn registry.Function, st *fnState) (*instance, string, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.InitTimeout)
	defer cancel()
	if inst := w.tryRestore(ctx, fn, st); inst != nil {
		return inst, PathSnapshot, nil
	}
	t0 := time.Now()
	inst, path, err := w.startFresh(ctx, fn, st)
	if err == nil {
		w.started(fn, inst, time.Since(t0))
	}
	return inst, path, err
}

// startFresh starts fn by a zygote fork, falling back to a cold start.
func (w *Worker) startFresh(ctx context.Context, fn registry.Function, st *fnState) (*instance, string, error) {
	if w.zyg != nil {
		inst, err := w.forkStart(ctx, fn, st)
		if err == nil {
			return inst, PathFork, nil
		}
		var le *LoadError
		if errors.As(err, &le) || errors.Is(err, ErrOOM) || ctx.Err() != nil {
			return nil, PathFork, err // the handler's fault: a fresh start fails the same way
		}
		w.metrics.forkFallbacks.Inc()
		w.log.Info("fork failed; starting fresh", "function", fn.Name, "err", err)
	}
	inst, err := w.coldStart(ctx, fn, st)
	return inst, PathCold, err
}

// limits are the cgroup limits of fn's sandboxes, however they start:
// a new or pooled group, a pre-made holder's, a spare's when it is handed
// to fn. The CPU quota bounds a busy function even where nothing else
// competes for the CPU, so that its neighbours keep their latency.
func (w *Worker) limits(fn registry.Function) cgroup.Limits {
	return cgroup.Limits{
		MemoryBytes: int64(fn.Spec.MemoryMB) << 20,
		Pids:        w.cfg.PidsLimit,
		CPUWeight:   100,
		CPUs:        fn.Spec.CPUsFor(w.cfg.CPUsPerGB),
	}
}

// newSandbox creates fn's cgroup and sandbox. With argv it runs a fresh
// runtime; without, it is an empty holder a zygote child will join.
func (w *Worker) newSandbox(ctx context.Context, fn registry.Function, st *fnState, argv, env []string) (*instance, error) {
	return w.makeSandbox(ctx, fn, st, argv, env, false)
}

// makeSandbox is newSandbox; exec makes the runtime the sandbox's pid 1,
// as a sandbox to be checkpointed needs.
func (w *Worker) makeSandbox(ctx context.Context, fn registry.Function, st *fnState, argv, env []string, exec bool) (*instance, error) {
	id := fmt.Sprintf("sb-%d-%s", w.seq.Add(1), shortRev(fn.Revision))
	t0 := time.Now()
	grp, err := w.newGroup(ctx, id, w.limits(fn))
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	binds := []sandbox.Bind{
		{Source: fn.CodeDir, Target: runtime.CodeDir},
		{Source: w.runtime, Target: runtime.MountPoint},
	}
	if len(packages.Cached(fn.Packages)) > 0 {
		if w.cfg.Packages == nil {
			w.dropGroup(context.Background(), grp)
			return nil, fmt.Errorf("%s: needs installed packages but the install cache is off: %w", fn.Name, ErrStart)
		}
		ms, err := w.cfg.Packages.Mounts(fn.Packages)
		if err != nil {
			w.dropGroup(context.Background(), grp)
			return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
		}
		for _, m := range ms {
			binds = append(binds, sandbox.Bind{Source: m.HostDir, Target: m.SandboxDir})
		}
	}
	netFile, ns, err := w.network(ctx, fn)
	if err != nil {
		w.dropGroup(context.Background(), grp)
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	outW, errW, err := outputPipes(st)
	if err != nil {
		w.dropGroup(context.Background(), grp)
		w.dropNet(context.Background(), ns)
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	uid, gid, err := w.ids(fn)
	if err != nil {
		w.dropGroup(context.Background(), grp)
		w.dropNet(context.Background(), ns)
		outW.Close()
		errW.Close()
		return nil, err
	}
	t1 := time.Now()
	tmpBytes, tmpDisk := w.scratch(fn)
	sb, err := w.factory.Create(ctx, sandbox.Config{
		UID:          uid,
		GID:          gid,
		NetNS:        netFile,
		ID:           id,
		Binds:        binds,
		ScratchBytes: tmpBytes,
		ScratchDisk:  tmpDisk,
		Group:        grp,
		Command:      argv,
		Env:          env,
		Dir:          runtime.CodeDir,
		Socket:       socketName,
		Stdout:       outW,
		Stderr:       errW,
		Exec:         exec,
	})
	// The sandbox holds its copies; the parsers end when it is gone.
	outW.Close()
	errW.Close()
	if err != nil {
		w.dropGroup(context.Background(), grp)
		w.dropNet(context.Background(), ns)
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	inst := &instance{id: id, fn: fn.Name, rev: fn.Revision, sb: sb, group: grp, net: ns, declared: int64(fn.Spec.MemoryMB) << 20}
	w.track(inst)
	w.log.Debug("sandbox", "function", fn.Name, "sandbox", id, "cgroup", t1.Sub(t0), "create", time.Since(t1))
	return inst, nil
}

// scratch is fn's /tmp: its size (tmp_mb), and whether it is on disk,
// as it is unless fn asks for memory or the host has no loop devices.
func (w *Worker) scratch(fn registry.Function) (bytes int64, disk bool) {
	mb := cmp.Or(fn.Spec.TmpMB, function.DefaultTmpMB)
	return int64(mb) << 20, w.disks != nil && fn.Spec.TmpStorage != function.TmpMemory
}

// premadeFits reports whether pre-made sandboxes (holders, spares), whose
// /tmp is made before the function is known, have fn's /tmp.
func (w *Worker) premadeFits(fn registry.Function) bool {
	bytes, disk := w.scratch(fn)
	return bytes == w.cfg.ScratchBytes && disk == (w.disks != nil)
}

// envMap is runtimeEnv as a map, as zygote children take it.
func (w *Worker) envMap(fn registry.Function) map[string]string {
	env := map[string]string{}
	for _, kv := range w.runtimeEnv(fn) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// runtimeEnv is the runtime's environment for fn.
func (w *Worker) runtimeEnv(fn registry.Function) []string {
	env := runtime.Env(runtime.Options{
		Handler:  fn.Spec.Handler,
		Function: fn.Name,
		Revision: fn.Revision,
		MemoryMB: fn.Spec.MemoryMB,
		Timeout:  time.Duration(fn.Spec.TimeoutS) * time.Second,
		Path:     packages.SysPath(fn.Packages),
	})
	env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8")
	for k, v := range fn.Spec.Env {
		env = append(env, k+"="+v)
	}
	return env
}

// coldStart creates a sandbox with a fresh interpreter and waits for the
// handler to load.
func (w *Worker) coldStart(ctx context.Context, fn registry.Function, st *fnState) (*instance, error) {
	t0 := time.Now()
	inst, err := w.newSandbox(ctx, fn, st, runtime.Argv(w.cfg.Python), w.runtimeEnv(fn))
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	if err := w.connect(ctx, inst, fn, inst.sb.Done()); err != nil {
		return nil, err
	}
	w.log.Debug("cold start", "function", fn.Name, "sandbox", inst.id,
		"sandbox_create", t1.Sub(t0), "to_ready", time.Since(t1))
	return inst, nil
}

// forkStart creates an empty sandbox and has a zygote fork a child into
// it that loads the handler.
func (w *Worker) forkStart(ctx context.Context, fn registry.Function, st *fnState) (*instance, error) {
	pkgs, err := w.packages(fn)
	if err != nil {
		return nil, err
	}
	node, err := w.zyg.Route(pkgs)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	sp, counted := w.takeSpare(fn, node)
	if counted {
		defer w.spares.finish(node, netKind(fn))
	}
	if sp != nil {
		inst, err := w.spareStart(ctx, fn, st, sp)
		var le *LoadError
		if err == nil {
			w.metrics.spareStarts.Inc()
			w.log.Debug("spare start", "function", fn.Name, "zygote", node, "to_ready", time.Since(t0))
			return inst, nil
		}
		if errors.As(err, &le) || ctx.Err() != nil {
			return nil, err
		}
		w.metrics.forkFallbacks.Inc()
		w.log.Info("spare failed; forking", "function", fn.Name, "err", err)
	}
	mounts, err := w.fnMounts(fn)
	if err != nil {
		return nil, err
	}
	var inst *instance
	if sb := w.takeHolder(fn); sb != nil {
		inst, err = w.adopt(ctx, sb, fn)
	} else {
		inst, err = w.newShell(ctx, fn)
	}
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*instance, error) {
		w.destroy(inst)
		return nil, err
	}
	t1 := time.Now()
	fsb := inst.sb.(*sandbox.Sandbox)
	j, err := openJoin(fsb, inst.group)
	if err != nil {
		return fail(err)
	}
	// The child holds the write ends; the readers end when it exits.
	go copyLines(st.stdout, j.outR)
	go copyLines(st.stderr, j.errR)
	kind := netKind(fn)
	uid, gid, err := w.ids(fn)
	if err != nil {
		return fail(err)
	}
	child, err := w.zyg.ForkFrom(ctx, node, zygote.Target{
		Scratch:  j.scratch,
		Listener: j.lis,
		Stdout:   j.outW,
		Stderr:   j.errW,
		Group:    inst.group,
		Net:      kind != "",
		Hostname: "hearth-" + shortID(inst.id),
		Mounts:   mounts,
		UID:      uid,
		GID:      gid,
		Env:      w.envMap(fn),
	})
	j.close()
	if err != nil {
		return fail(err)
	}
	inst.proc = openProc(child.Pid)
	if err := fsb.Adopt(child.PidFD, child.Pid); err != nil {
		return fail(err)
	}
	if kind == function.NetworkIsolated {
		if inst.net, err = w.attachNet(ctx, child.Pid); err != nil {
			return fail(fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart))
		}
	}
	t2 := time.Now()
	if err := w.connect(ctx, inst, fn, nil); err != nil {
		return nil, err
	}
	w.log.Debug("fork start", "function", fn.Name, "sandbox", inst.id, "zygote", node,
		"sandbox_create", t1.Sub(t0), "fork", t2.Sub(t1), "to_ready", time.Since(t2))
	return inst, nil
}

// newShell makes fn's cgroup and a shell (see premade) of fn's /tmp
// for a zygote child, when no pre-made one fits.
func (w *Worker) newShell(ctx context.Context, fn registry.Function) (*instance, error) {
	id := fmt.Sprintf("sb-%d-%s", w.seq.Add(1), shortRev(fn.Revision))
	grp, err := w.newGroup(ctx, id, w.limits(fn))
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	bytes, disk := w.scratch(fn)
	sb, err := w.factory.Shell(ctx, sandbox.Config{ID: id, ScratchBytes: bytes, ScratchDisk: disk, Socket: socketName, Group: grp})
	if err != nil {
		w.dropGroup(context.Background(), grp)
		return nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	inst := &instance{id: id, fn: fn.Name, rev: fn.Revision, sb: sb, group: grp, declared: int64(fn.Spec.MemoryMB) << 20}
	w.track(inst)
	return inst, nil
}

// attachNet gives the network namespace a zygote child made (process
// pid) an isolated network from the pool's bridges.
func (w *Worker) attachNet(ctx context.Context, pid int) (*netns.NS, error) {
	p, err := w.netPool(ctx)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	defer f.Close()
	return p.Attach(ctx, f)
}

// shortID is the tail of a sandbox id that names its host.
func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-12:]
	}
	return id
}

// join holds what a zygote child needs to build its sandbox around a
// shell: the shell's scratch (a detached mount), its runtime listener
// and the write ends of pipes for its stdout and stderr, whose read ends
// (outR, errR) the caller keeps.
type join struct {
	scratch    *os.File
	lis        *os.File
	outR, outW *os.File
	errR, errW *os.File
}

func openJoin(sb *sandbox.Sandbox, g *cgroup.Group) (_ *join, err error) {
	j := &join{}
	defer func() {
		if err != nil {
			j.close()
			closeAll([]*os.File{j.outR, j.errR})
		}
	}()
	if j.scratch, err = sb.ScratchMount(); err != nil {
		return nil, err
	}
	if j.lis = sb.TakeListener(); j.lis == nil {
		return nil, fmt.Errorf("sandbox %s: no listener to hand over", sb.ID())
	}
	if j.outR, j.outW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if j.errR, j.errW, err = os.Pipe(); err != nil {
		return nil, err
	}
	return j, nil
}

// close closes everything but the read ends, once the child has its own
// copies.
func (j *join) close() {
	closeAll([]*os.File{j.scratch, j.lis, j.outW, j.errW})
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

// ids are the host uid and gid fn's sandboxes run as: its own, from its
// registry slot, so that no two functions share the kernel's per-user
// resources (keyrings, inotify instances, process counts), unless the
// worker runs all as Config.UID.
func (w *Worker) ids(fn registry.Function) (uid, gid int, err error) {
	if w.cfg.UID != 0 {
		return w.cfg.UID, cmp.Or(w.cfg.GID, w.cfg.UID), nil
	}
	if fn.Slot <= 0 {
		return 0, 0, fmt.Errorf("%s: no identity (deployed before identities; deploy it again): %w", fn.Name, ErrStart)
	}
	r := w.cfg.IDs
	if r.Size == 0 {
		r = ident.Default
	}
	id, err := r.Function(fn.Slot - 1)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	return id, id, nil
}

// packages returns fn's package set, cached per revision until forget.
func (w *Worker) packages(fn registry.Function) ([]string, error) {
	w.pkgMu.Lock()
	defer w.pkgMu.Unlock()
	if p, ok := w.pkgCache[fnKey{fn.Name, fn.Revision}]; ok {
		return p, nil
	}
	var p []string
	if len(fn.Packages) > 0 {
		// Resolved at deploy by the install cache: base and installed.
		for _, pkg := range fn.Packages {
			p = append(p, pkg.String())
		}
	} else {
		var err error
		if p, err = w.resolver.PackageSet(fn.Spec.Requirements); err != nil {
			return nil, err
		}
	}
	w.pkgCache[fnKey{fn.Name, fn.Revision}] = p
	return p, nil
}

// connect dials the runtime's socket and waits for the handler to load.
// died, if not nil, closes when the sandbox's main process is gone.
func (w *Worker) connect(ctx context.Context, inst *instance, fn registry.Function, died <-chan struct{}) error {
	c, err := inst.sb.Dial(socketName)
	if err != nil {
		// The error names the socket's host path: the log has it, the
		// caller does not.
		w.log.Warn("connecting to runtime", "function", fn.Name, "sandbox", inst.id, "err", err)
		w.destroy(inst)
		return fmt.Errorf("%s: cannot connect to the runtime: %w", fn.Name, ErrStart)
	}
	inst.conn = runtime.NewConn(c)
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
		inst.load = ready.Load
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
