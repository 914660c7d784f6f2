package worker

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/ident"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/zygote"
)

// launch is what any start of a function's sandbox needs, computed once
// per start (newLaunch) from the function and the worker's settings:
// the start paths (see starter) take from it what they use, so that a
// restored, spare, forked and cold-started sandbox of a function get the
// same mounts, limits, identity and environment. A launch belongs to
// one start and is not safe for concurrent use.
type launch struct {
	fn registry.Function
	st *fnState
	// binds are the read-only mounts of a sandbox that runs its own
	// interpreter (cold start, snapshot restore), in order: the
	// function's code, the runtime, its installed packages.
	binds []sandbox.Bind
	// mounts are what a zygote child mounts, in order: the code and the
	// installed packages (it has the runtime from its zygote).
	mounts []sandbox.Bind
	// limits are the function's cgroup limits.
	limits cgroup.Limits
	// env is the runtime's whole environment.
	env []string
	// uid and gid are the host identity the function runs as.
	uid, gid int
	// declared is the function's memory_mb, in bytes: what the warm
	// pool charges a sandbox before it is measured.
	declared int64
	// net is the function's network kind (netKind).
	net string
	// scratchBytes and scratchDisk are the function's /tmp (scratch).
	scratchBytes int64
	scratchDisk  bool
	// premade reports whether pre-made sandboxes (holders, spares),
	// whose /tmp is made before the function is known, have its /tmp.
	premade bool
	// first is the call waiting for this start, which the fork paths
	// send ahead of the handler's ready frame (runtime.Conn.Pipeline);
	// nil for a start no call waits for, or whose event is too big. A
	// cold start or a restore does not: their loads take tens of ms or
	// more, against which the round trip saved is noise.
	first *runtime.Request
	// arrived is when the call waiting for this start reached the
	// worker; zero for a start no call waits for. Under
	// Config.FirstCome the start runs at the call's rank (connect).
	arrived time.Time

	// The zygote node the fork paths start from, asked once (route).
	routed   bool
	node     string
	routeErr error
	// spareDone ends the start the spare reserve counted (spares.take);
	// nil when it counted none or has been told.
	spareDone func()
}

// newLaunch computes what a start of fn needs. Its errors are those
// every start path would meet (no installed packages, no identity), and
// wrap ErrStart.
func (w *Worker) newLaunch(fn registry.Function, st *fnState) (*launch, error) {
	code := sandbox.Bind{Source: fn.CodeDir, Target: runtime.CodeDir}
	pkgs, err := w.packageBinds(fn)
	if err != nil {
		return nil, err
	}
	uid, gid, err := w.ids(fn)
	if err != nil {
		return nil, err
	}
	l := &launch{
		fn:       fn,
		st:       st,
		binds:    append([]sandbox.Bind{code, {Source: w.runtime, Target: runtime.MountPoint}}, pkgs...),
		mounts:   append([]sandbox.Bind{code}, pkgs...),
		limits:   w.limits(fn),
		env:      w.runtimeEnv(fn),
		uid:      uid,
		gid:      gid,
		declared: int64(fn.Spec.MemoryMB) << 20,
		net:      netKind(fn),
	}
	l.scratchBytes, l.scratchDisk = w.scratch(fn)
	l.premade = l.scratchBytes == w.cfg.ScratchBytes && l.scratchDisk == (w.disks != nil)
	return l, nil
}

// envMap is env as a map, as zygote children take it.
func (l *launch) envMap() map[string]string {
	env := map[string]string{}
	for _, kv := range l.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// start is what a zygote's spare needs to become l's function's sandbox.
func (l *launch) start() zygote.Start {
	return zygote.Start{Mounts: l.mounts, UID: l.uid, GID: l.gid, Env: l.envMap()}
}

// doneSpare tells the spare reserve that the start it counted is over.
func (l *launch) doneSpare() {
	if l.spareDone != nil {
		l.spareDone()
		l.spareDone = nil
	}
}

// route returns the zygote node l's fork paths start from, asking the
// zygote manager once per start.
func (w *Worker) route(l *launch) (string, error) {
	if !l.routed {
		l.routed = true
		pkgs, err := w.packages(l.fn)
		if err == nil {
			l.node, err = w.zyg.Route(pkgs)
		}
		l.routeErr = err
	}
	return l.node, l.routeErr
}

// packageBinds are the read-only mounts of fn's installed packages.
func (w *Worker) packageBinds(fn registry.Function) ([]sandbox.Bind, error) {
	if len(packages.Cached(fn.Packages)) == 0 {
		return nil, nil
	}
	if w.cfg.Packages == nil {
		return nil, fmt.Errorf("%s: needs installed packages but the install cache is off: %w", fn.Name, ErrStart)
	}
	binds, err := w.cfg.Packages.Mounts(fn.Packages)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	return binds, nil
}

// limits are the cgroup limits of fn's sandboxes, however they start:
// a new or pooled group, a pre-made holder's, a spare's when it is handed
// to fn. The CPU quota bounds a busy function even where nothing else
// competes for the CPU, so that its neighbours keep their latency.
func (w *Worker) limits(fn registry.Function) cgroup.Limits {
	return cgroup.Limits{
		MemoryBytes: int64(fn.Spec.MemoryMB) << 20,
		Pids:        w.cfg.PidsLimit,
		CPUWeight:   sandboxWeight,
		CPUs:        fn.Spec.CPUsFor(w.cfg.CPUsPerGB),
	}
}

// scratch is fn's /tmp: its size (tmp_mb), and whether it is on disk,
// as it is unless fn asks for memory or the host has no loop devices.
func (w *Worker) scratch(fn registry.Function) (bytes int64, disk bool) {
	mb := cmp.Or(fn.Spec.TmpMB, function.DefaultTmpMB)
	return int64(mb) << 20, w.disks != nil && fn.Spec.TmpStorage != function.TmpMemory
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
		return 0, 0, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
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
	p, err := w.packageSet(fn)
	if err != nil {
		return nil, err
	}
	w.pkgCache[fnKey{fn.Name, fn.Revision}] = p
	return p, nil
}

// packageSet resolves fn's package set, uncached: packages keeps the
// sets of revisions that start here, which forget frees, and a set read
// for planting (deployed) need not outlive the call.
func (w *Worker) packageSet(fn registry.Function) ([]string, error) {
	if len(fn.Packages) > 0 {
		// Resolved at deploy by the install cache: base and installed.
		p := make([]string, 0, len(fn.Packages))
		for _, pkg := range fn.Packages {
			p = append(p, pkg.String())
		}
		return p, nil
	}
	return w.resolver.PackageSet(fn.Spec.Requirements)
}

// instance is the instance of sandbox sb (id, in cgroup g) started for
// l; the caller fills in what its path adds (network, process) and
// tracks it, after which w.destroy undoes all it holds.
func (l *launch) instance(id string, sb box, g *cgroup.Group) *instance {
	return &instance{id: id, fn: l.fn.Name, rev: l.fn.Revision, sb: sb, group: g, declared: l.declared}
}

// sandboxID names a new sandbox of fn.
func (w *Worker) sandboxID(fn registry.Function) string {
	return fmt.Sprintf("sb-%d-%s", w.seq.Add(1), shortRev(fn.Revision))
}

// netKind is fn's network kind: "" for the host's (NetworkHost, or
// NetworkNone in an old record), else function.NetworkIsolated (also for
// an unset network: the default) or function.NetworkOffline.
func netKind(fn registry.Function) string {
	switch {
	case fn.Spec.HostNetwork():
		return ""
	case fn.Spec.Network == "":
		return function.NetworkIsolated
	}
	return fn.Spec.Network
}
