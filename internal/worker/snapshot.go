package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/snapshot"
	snappy "github.com/hearth-run/hearth/internal/snapshot/python"
)

// SnapshotConfig configures function snapshots (see internal/snapshot).
type SnapshotConfig struct {
	// Remote, if set, is the store snapshots are shared through.
	Remote snapshot.Remote
	// Threshold is the measured init time above which a function is
	// snapshotted (default 100 ms); function.yaml's snapshot: always and
	// never override it.
	Threshold time.Duration
	// MaxBytes bounds the local snapshot cache on disk (default 4 GiB).
	MaxBytes int64
	// CRIURoot is the private CRIU root (default criu.DefaultRoot).
	CRIURoot string
}

// SnapshotInfo describes one snapshot the worker knows of.
type SnapshotInfo struct {
	Key      string    `json:"key"`
	Function string    `json:"function"`
	Revision string    `json:"revision"`
	Bytes    int64     `json:"bytes"`
	Blocks   int64     `json:"disk_bytes"`
	Created  time.Time `json:"created"`
	LastUse  time.Time `json:"last_use"`
	Local    bool      `json:"local"`
	Remote   bool      `json:"remote"`
}

// snapshots is the worker's snapshot state around the Service.
type snapshots struct {
	svc    *snapshot.Service
	baseID string
	remote bool

	mu    sync.Mutex
	fresh map[string]time.Duration // key: last fork or cold start time, guarded by mu
	worth map[string]bool          // key: whether its last measured init was worth a snapshot; guarded by mu
	busy  map[string]bool          // keys being snapshotted in the background; guarded by mu
	fail  map[string]time.Time     // key: when its last background creation failed; guarded by mu
	// starts counts each key's fork and cold starts, which a snapshot
	// would have saved; guarded by mu.
	starts map[string]int
	// turns lets one background creation run at a time, each deciding
	// once the last is done, with what it measured; the key whose starts
	// cost most so far goes first (rank).
	turns *dumpTurns
}

// rank is what key's fork and cold starts have cost so far: how many
// times its last start time.
func (s *snapshots) rank(key string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return float64(s.starts[key]) * float64(s.fresh[key])
}

// snapshotDelay is the longest a background snapshot creation waits for
// a moment with no invocation under way.
const snapshotDelay = 10 * time.Second

// retryAfter is how long a failed background creation is not retried:
// each attempt costs a whole cold start, and failures tend to repeat.
const retryAfter = 10 * time.Minute

// openSnapshots installs the after-restore module next to the runtime
// and opens the snapshot service, unless snapshots are off. Missing CRIU
// is not an error: the worker runs without snapshots.
func (w *Worker) openSnapshots(ctx context.Context) error {
	// Always installed: handlers may import it to register hooks
	// whether or not this worker restores them.
	lib := filepath.Join(w.runtime, "lib")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		return err
	}
	if err := snappy.Install(lib); err != nil {
		return err
	}
	if w.cfg.NoSnapshots {
		w.snapOff = "switched off (--no-snapshots)"
		return nil
	}
	baseID := image.ID(w.cfg.Base)
	c := w.cfg.Snapshot
	svc, err := snapshot.OpenService(ctx, snapshot.ServiceConfig{
		DataDir:    w.cfg.DataDir,
		Base:       w.cfg.Base,
		BaseID:     baseID,
		SandboxDir: w.factory.Dir,
		CRIURoot:   c.CRIURoot,
		MaxBytes:   c.MaxBytes,
		Remote:     c.Remote,
		Threshold:  c.Threshold,
	})
	if errors.Is(err, snapshot.ErrDisabled) {
		w.log.Warn("function snapshots disabled", "reason", err)
		w.snapOff = err.Error()
		return nil
	}
	if err != nil {
		return err
	}
	w.snap = &snapshots{svc: svc, baseID: baseID, remote: c.Remote != nil,
		fresh: map[string]time.Duration{}, worth: map[string]bool{}, busy: map[string]bool{}, fail: map[string]time.Time{},
		starts: map[string]int{}, turns: newDumpTurns()}
	w.metrics.Registry.MustRegister(svc.Collector())
	return nil
}

// snapshottable reports whether fn may have a snapshot: not when its
// spec says never. A snapshot of a sandbox with a network namespace of
// its own (isolated, offline) does not carry it: the restore joins a
// fresh one from the pool.
func snapshottable(fn registry.Function) bool {
	return fn.Spec.Snapshot != function.SnapshotNever
}

// started records a fork or cold start of fn that took took, and
// snapshots fn in the background when its init makes that worthwhile.
func (w *Worker) started(fn registry.Function, inst *instance, took time.Duration) {
	s := w.snap
	if s == nil || !snapshottable(fn) {
		return
	}
	key := snapshot.Key(fn.Name, fn.Revision)
	always := fn.Spec.Snapshot == function.SnapshotAlways
	worth := s.svc.Worth(inst.load, always) && s.dumpWorth(key, took, always)
	s.mu.Lock()
	s.fresh[key] = took
	s.worth[key] = worth
	s.starts[key]++
	// One background creation per key: the spare takes as long as a
	// cold start, and starts meanwhile would each ask for one.
	failed, ok := s.fail[key]
	create := worth && !s.busy[key] && (!ok || time.Since(failed) > retryAfter)
	if create {
		s.busy[key] = true
	}
	s.mu.Unlock()
	if !create {
		return
	}
	if w.hasSnapshot(key) {
		s.done(key)
		return
	}
	w.background(func() {
		defer s.done(key)
		// The source is a whole cold start and its dump a CRIU run: in a
		// burst, on a small host, they slow the burst's own starts and
		// calls (measured: 7 % more total response over a replay's first
		// two minutes), for a snapshot only a later start uses.
		if !s.turns.acquire(key, w.stop, s.rank) {
			return
		}
		defer s.turns.release(s.rank)
		w.busy.wait(snapshotDelay, w.stop)
		// Asked again now, with the function's latest start and what
		// the restores and dumps since have measured (a burst's starts
		// all ask before the first dump is done); and none made
		// meanwhile (hearth snapshot create).
		s.mu.Lock()
		worth, fresh := s.worth[key], s.fresh[key]
		if worth && !s.dumpWorth(key, fresh, always) {
			worth = false
			s.worth[key] = false
		}
		s.mu.Unlock()
		if !worth || w.hasSnapshot(key) {
			return
		}
		ctx, cancel := context.WithTimeout(w.life, 2*w.cfg.InitTimeout)
		defer cancel()
		if _, err := w.createSnapshot(ctx, fn); err != nil && !errors.Is(err, snapshot.ErrBusy) && !errors.Is(err, ErrClosed) && w.life.Err() == nil {
			w.log.Warn("creating snapshot; not retried for a while", "function", fn.Name, "retry_after", retryAfter, "err", err)
			s.mu.Lock()
			s.fail[key] = time.Now()
			s.mu.Unlock()
		}
	})
}

// dumpWorth reports whether a snapshot of key may be dumped, given its
// function's fresh start: not when a restore is expected to be slower,
// as it would never be restored, unless the function asks for
// snapshots (always).
func (s *snapshots) dumpWorth(key string, fresh time.Duration, always bool) bool {
	return always || s.svc.Prefer(key, fresh, false)
}

func (s *snapshots) done(key string) {
	s.mu.Lock()
	delete(s.busy, key)
	s.mu.Unlock()
}

// hasSnapshot reports whether the local cache holds key.
func (w *Worker) hasSnapshot(key string) bool {
	for _, i := range w.snap.svc.Cache().List() {
		if i.Key == key {
			return true
		}
	}
	return false
}

// CreateSnapshot snapshots function name's current revision now and
// returns the snapshot's description. It fails with ErrSnapshotsOff when
// snapshots are off, and for functions whose spec says never or that
// have their own network.
func (w *Worker) CreateSnapshot(ctx context.Context, name string) (SnapshotInfo, error) {
	if w.snap == nil {
		return SnapshotInfo{}, ErrSnapshotsOff
	}
	fn, err := w.fns.Get(name)
	if err != nil {
		if errors.Is(err, registry.ErrNotFound) {
			return SnapshotInfo{}, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return SnapshotInfo{}, err
	}
	if !snapshottable(fn) {
		return SnapshotInfo{}, fmt.Errorf("%s: snapshot %q, network %q: %w", name, fn.Spec.Snapshot, fn.Spec.Network, ErrNotSnapshottable)
	}
	d, err := w.createSnapshot(ctx, fn)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return SnapshotInfo{Key: d.Key, Function: d.Function, Revision: d.Revision, Bytes: d.Bytes,
		Created: d.Created, Local: true, Remote: w.snap.remote}, nil
}

// createSnapshot starts a spare sandbox of fn whose runtime is its pid 1,
// waits for the handler to load, and checkpoints it. The spare never
// serves a call; CRIU kills it after the dump.
func (w *Worker) createSnapshot(ctx context.Context, fn registry.Function) (*snapshot.Descriptor, error) {
	st, err := w.fnState(fn)
	if err != nil {
		return nil, err
	}
	pkgs, err := w.packages(fn)
	if err != nil {
		return nil, err
	}
	l, err := w.newLaunch(fn, st)
	if err != nil {
		return nil, err
	}
	// The lowest CPU weight, as a spare's: the source's start (a whole
	// cold start, imports and all) is no call's, and at the function's
	// weight it slowed the calls running beside it on a small host. The
	// weight is not dumped (CRIU leaves cgroups alone): a restored
	// sandbox gets its function's.
	l.limits.CPUWeight = 1
	// The source's start takes a turn as any start (Config.MaxStarts).
	done, err := w.startTurn(ctx, fn.Name)
	if err != nil {
		return nil, err
	}
	defer done()
	inst, sb, err := w.makeSandbox(ctx, l, runtime.Argv(w.cfg.Python), true)
	if err != nil {
		return nil, err
	}
	inst.mu.Lock()
	inst.snapshot = true
	inst.mu.Unlock()
	// Whatever becomes of the dump (done, failed, cut short by its
	// deadline or by Close), the spare goes: CRIU killed it or released
	// it mid-dump.
	defer w.destroy(inst)
	if err := w.connect(ctx, inst, l, inst.sb.Done(), nil); err != nil {
		return nil, err
	}
	// Idle, as Dump requires: the runtime goes back to accept.
	inst.conn.Close()
	// A restore gives the sandbox a tmpfs of this size (internal/snapshot
	// has no on-disk /tmp yet).
	tmpBytes := l.scratchBytes
	key := snapshot.Key(fn.Name, fn.Revision)
	t0 := time.Now()
	d, err := w.snap.svc.Create(ctx, snapshot.DumpSpec{
		Pid:          sb.InitPid(),
		Scratch:      sb.Scratch(),
		Socket:       socketName,
		ScratchBytes: tmpBytes,
		Key:          key,
		Function:     fn.Name,
		Revision:     fn.Revision,
		BaseImage:    w.snap.baseID,
		Packages:     pkgs,
	})
	if d == nil {
		return nil, fmt.Errorf("%s: snapshot: %w", fn.Name, err)
	}
	if err != nil {
		// Only the upload failed: the local snapshot is usable.
		w.log.Warn("uploading snapshot", "function", fn.Name, "key", key, "err", err)
	}
	w.log.Info("snapshot created", "function", fn.Name, "key", key, "bytes", d.Bytes, "took", time.Since(t0))
	return d, nil
}

// Snapshots lists the snapshots in the local cache, most recently used
// first; nil when snapshots are off.
func (w *Worker) Snapshots() []SnapshotInfo {
	if w.snap == nil {
		return nil
	}
	l := w.snap.svc.Cache().List()
	out := make([]SnapshotInfo, 0, len(l))
	for _, i := range l {
		out = append(out, SnapshotInfo{Key: i.Key, Function: i.Function, Revision: i.Revision,
			Bytes: i.Bytes, Blocks: i.Blocks, Created: i.Created, LastUse: i.LastUse,
			Local: true, Remote: w.snap.remote})
	}
	return out
}

// RemoveSnapshot deletes snapshot key from the local cache (a copy in
// the remote store stays). A snapshot being restored goes when that
// restore is done.
func (w *Worker) RemoveSnapshot(key string) error {
	if w.snap == nil {
		return ErrSnapshotsOff
	}
	if err := snapshot.ValidKey(key); err != nil {
		return fmt.Errorf("snapshot %q: %w", key, ErrBadSnapshotKey)
	}
	if err := w.snap.svc.Cache().Remove(key); err != nil {
		if errors.Is(err, snapshot.ErrNotFound) {
			return fmt.Errorf("snapshot %s: %w", key, ErrNoSnapshot)
		}
		return err
	}
	return nil
}

// retireSnapshots removes the local snapshots of function name that are
// not of revision keep (all of them if keep is empty).
func (w *Worker) retireSnapshots(name, keep string) {
	if w.snap == nil {
		return
	}
	for _, i := range w.snap.svc.Cache().List() {
		if i.Function == name && (keep == "" || i.Revision != keep) {
			if err := w.snap.svc.Cache().Remove(i.Key); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
				w.log.Warn("removing snapshot", "key", i.Key, "err", err)
			}
		}
	}
}
