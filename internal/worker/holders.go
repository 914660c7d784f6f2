package worker

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/reserve"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// holders keeps generic sandboxes made ahead of need: namespaces, a
// /tmp of Config.ScratchBytes with the runtime socket, no code and no
// cgroup. A zygote
// child binds the function's code and packages into one before it
// chroots, so a fork start skips the ~1-2 ms of creating a sandbox (and
// its tail on a busy machine). Only host-network functions whose /tmp
// is the pre-made one use them. A sandbox taken is never given back.
type holders struct {
	w   *Worker
	res *reserve.Pool[*sandbox.Sandbox]
}

func (w *Worker) startHolders(size int) {
	w.holders = &holders{w: w, res: reserve.New(reserve.Config[*sandbox.Sandbox]{
		Reserve:     size,
		RefillDelay: -1,          // off the critical path already: a zygote child waits for none
		Retry:       time.Second, // after a failed make
		Make: func(context.Context) (*sandbox.Sandbox, error) {
			if w.isClosed() {
				return nil, ErrClosed
			}
			ctx, cancel := context.WithTimeout(w.life, 30*time.Second)
			defer cancel()
			sb, err := w.premade(ctx, "pre", nil)
			if err != nil {
				w.log.Warn("pre-made sandbox", "err", err)
			}
			return sb, err
		},
		Destroy: func(ctx context.Context, sb *sandbox.Sandbox) error { return sb.Destroy(ctx) },
		Closed:  ErrClosed,
	})}
}

// take returns a pre-made sandbox, or nil if none is ready. One whose
// init has died (killed from outside) is destroyed instead.
func (h *holders) take() *sandbox.Sandbox {
	for {
		sb, ok, _ := h.res.Take()
		if !ok {
			return nil
		}
		select {
		case <-sb.Done():
			h.w.log.Warn("pre-made sandbox died", "sandbox", sb.ID())
			h.w.background(func() {
				if err := sb.Destroy(context.Background()); err != nil {
					h.w.log.Warn("destroying a dead pre-made sandbox", "sandbox", sb.ID(), "err", err)
				}
			})
			continue
		default:
		}
		return sb
	}
}

// close stops the refill and destroys the reserve.
func (h *holders) close(ctx context.Context) {
	if err := h.res.Close(ctx); err != nil {
		h.w.log.Warn("destroying pre-made sandboxes", "err", err)
	}
}

// premade creates an empty sandbox for a zygote child to join: its
// namespaces (and netFile's network namespace, if not nil), a scratch /tmp
// with the runtime's socket and the runtime files; no code and no cgroup.
func (w *Worker) premade(ctx context.Context, prefix string, netFile *os.File) (*sandbox.Sandbox, error) {
	return w.factory.Create(ctx, sandbox.Config{
		ID:           fmt.Sprintf("%s-%d", prefix, w.seq.Add(1)),
		Binds:        []sandbox.Bind{{Source: w.runtime, Target: runtime.MountPoint}},
		ScratchBytes: w.cfg.ScratchBytes,
		ScratchDisk:  w.disks != nil,
		Socket:       socketName,
		NetNS:        netFile,
	})
}

// adopt turns a pre-made sandbox into fn's instance: it gets fn's cgroup,
// and the mounts the zygote child must make for fn's code and packages.
func (w *Worker) adopt(ctx context.Context, sb *sandbox.Sandbox, fn registry.Function) (*instance, [][2]string, error) {
	mounts := [][2]string{{fn.CodeDir, runtime.CodeDir}}
	if len(packages.Cached(fn.Packages)) > 0 {
		if w.cfg.Packages == nil {
			sb.Destroy(ctx)
			return nil, nil, fmt.Errorf("%s: needs installed packages but the install cache is off: %w", fn.Name, ErrStart)
		}
		ms, err := w.cfg.Packages.Mounts(fn.Packages)
		if err != nil {
			sb.Destroy(ctx)
			return nil, nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
		}
		for _, m := range ms {
			mounts = append(mounts, [2]string{m.HostDir, m.SandboxDir})
		}
	}
	grp, err := w.newGroup(ctx, sb.ID(), w.limits(fn))
	if err != nil {
		sb.Destroy(ctx)
		return nil, nil, fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart)
	}
	sb.SetGroup(grp)
	inst := &instance{id: sb.ID(), fn: fn.Name, rev: fn.Revision, sb: sb, group: grp, declared: int64(fn.Spec.MemoryMB) << 20}
	w.track(inst)
	return inst, mounts, nil
}

// takeHolder returns a pre-made sandbox for fn, or nil.
func (w *Worker) takeHolder(fn registry.Function) *sandbox.Sandbox {
	if w.holders == nil || netKind(fn) != "" || !w.premadeFits(fn) {
		return nil
	}
	return w.holders.take()
}
