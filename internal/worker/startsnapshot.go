package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/snapshot"
)

// snapshotStarter restores a function from its snapshot, when one may
// exist and the measured restore beats the measured fresh start. Its
// failures are the snapshot's, not the function's: they are logged here
// and the start goes on to the next path (errSkip).
type snapshotStarter struct{ w *Worker }

func (snapshotStarter) name() string { return "snapshot" }
func (snapshotStarter) path() string { return PathSnapshot }

// start restores l's function, or skips.
func (s snapshotStarter) start(ctx context.Context, l *launch) (*instance, error) {
	w := s.w
	snap, fn := w.snap, l.fn
	if snap == nil || !snapshottable(fn) {
		return nil, errSkip
	}
	key := snapshot.Key(fn.Name, fn.Revision)
	snap.mu.Lock()
	worth, known := snap.worth[key]
	fresh, measured := snap.fresh[key]
	snap.mu.Unlock()
	if known && !worth {
		return nil, errSkip // its init is too short, or its fresh start quicker than a restore is expected to be
	}
	if measured && !snap.svc.Prefer(key, fresh, fn.Spec.Snapshot == function.SnapshotAlways) {
		return nil, errSkip
	}
	inst, err := w.restoreStart(ctx, l, key)
	if err == nil {
		return inst, nil
	}
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		w.log.Debug("no snapshot", "function", fn.Name, "key", key)
	case ctx.Err() != nil:
		w.log.Info("snapshot restore cut short", "function", fn.Name, "err", err)
	default:
		w.log.Warn("snapshot restore failed; starting fresh", "function", fn.Name, "key", key, "err", err)
		// A snapshot that does not restore is of no use: drop it, so the
		// next start does not try again and a new one can replace it.
		// (A corrupt one is already gone.)
		if rerr := snap.svc.Cache().Remove(key); rerr != nil && !errors.Is(rerr, snapshot.ErrNotFound) {
			w.log.Warn("removing snapshot", "key", key, "err", rerr)
		}
	}
	return nil, fmt.Errorf("%w: %w", errSkip, err)
}

// restoreStart restores snapshot key of l's function into a new cgroup
// and waits for its runtime to answer.
func (w *Worker) restoreStart(ctx context.Context, l *launch, key string) (*instance, error) {
	fn := l.fn
	t0 := time.Now()
	id := w.sandboxID(fn)
	var cu cleanup
	defer cu.Clean()
	grp, err := w.newGroup(ctx, id, l.limits)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	cu.Add(func() { w.putGroup(grp, id) })
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cu.Add(func() { outR.Close() })
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, err
	}
	cu.Add(func() { errR.Close() })
	netFile, ns, err := w.network(ctx, fn)
	if err != nil {
		outW.Close()
		errW.Close()
		return nil, fmt.Errorf("%s: %w: %w", fn.Name, err, ErrStart)
	}
	cu.Add(func() { w.dropNet(context.Background(), ns) })
	r, err := w.snap.svc.Restore(ctx, key, snapshot.RestoreSpec{
		ID: id, Group: grp, Binds: l.binds, Stdout: outW, Stderr: errW, NetNS: netFile,
	})
	outW.Close()
	errW.Close()
	if err != nil {
		return nil, err
	}
	cu.Release()
	// The restored process holds the write ends; the readers end when it
	// exits.
	out := []*outPipe{copyLines(l.st.stdout, outR), copyLines(l.st.stderr, errR)}
	// CRIU ran in the group: the function's peak starts from here.
	if err := grp.ResetPeak(); err != nil {
		w.log.Warn("restored sandbox", "sandbox", id, "err", err)
	}
	inst := l.instance(id, r.Sandbox, grp)
	inst.net, inst.out = ns, out
	w.track(inst)
	t1 := time.Now()
	if err := w.connect(ctx, inst, l, r.Done(), nil); err != nil {
		return nil, err // connect destroyed it
	}
	// Less the download: the next restore finds it local.
	w.snap.svc.Restored(key, time.Since(t0)-r.Download)
	w.log.Debug("snapshot start", "function", fn.Name, "sandbox", id, "restore", t1.Sub(t0),
		"criu", r.RestoreTime, "to_ready", time.Since(t1))
	return inst, nil
}
