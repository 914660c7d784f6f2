package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// coldStarter starts a function cold: a new sandbox with a fresh
// interpreter. It serves every start, and is the chain's last path.
type coldStarter struct{ w *Worker }

func (coldStarter) name() string { return "cold" }
func (coldStarter) path() string { return PathCold }

// start creates a sandbox with a fresh interpreter and waits for the
// handler to load.
func (c coldStarter) start(ctx context.Context, l *launch) (*instance, error) {
	w := c.w
	t0 := time.Now()
	inst, _, err := w.makeSandbox(ctx, l, runtime.Argv(w.cfg.Python), false)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	if err := w.connect(ctx, inst, l, inst.sb.Done(), nil); err != nil {
		return nil, err
	}
	w.log.Debug("cold start", "function", l.fn.Name, "sandbox", inst.id,
		"sandbox_create", t1.Sub(t0), "to_ready", time.Since(t1))
	return inst, nil
}

// makeSandbox creates l's cgroup and a sandbox that runs argv, with
// l's mounts, identity, environment and network. exec makes the runtime
// the sandbox's pid 1, as a sandbox to be checkpointed needs
// (createSnapshot). It returns the instance and its sandbox.
func (w *Worker) makeSandbox(ctx context.Context, l *launch, argv []string, exec bool) (*instance, *sandbox.Sandbox, error) {
	fn := l.fn
	id := w.sandboxID(fn)
	var cu cleanup
	defer cu.Clean()
	t0 := time.Now()
	grp, err := w.newGroup(ctx, id, l.limits)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	cu.Add(func() { w.putGroup(grp, id) })
	netFile, ns, err := w.network(ctx, fn)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	cu.Add(func() { w.dropNet(context.Background(), ns) })
	outW, errW, out, err := outputPipes(l.st)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	t1 := time.Now()
	sb, err := w.factory.Create(ctx, sandbox.Config{
		UID:          l.uid,
		GID:          l.gid,
		NetNS:        netFile,
		ID:           id,
		Binds:        l.binds,
		ScratchBytes: l.scratchBytes,
		ScratchDisk:  l.scratchDisk,
		Group:        grp,
		Command:      argv,
		Env:          l.env,
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
		return nil, nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	cu.Release()
	inst := l.instance(id, sb, grp)
	inst.net, inst.out = ns, out
	w.track(inst)
	w.log.Debug("sandbox", "function", fn.Name, "sandbox", id, "cgroup", t1.Sub(t0), "create", time.Since(t1))
	return inst, sb, nil
}
