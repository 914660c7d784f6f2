package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/hearth-run/hearth/internal/reserve"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// holders keeps shells made ahead of need (see premade): a /tmp of
// Config.ScratchBytes with the runtime socket, no code and no cgroup. A
// zygote child builds its sandbox around one, so a fork start skips
// making its file system. Only functions whose /tmp is the pre-made one
// use them. A shell taken is never given back.
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
			sb, err := w.premade(ctx, "pre")
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

// premade makes a shell for a zygote child (see sandbox.Factory.Shell):
// a scratch /tmp with the runtime's socket; no process, no code and no
// cgroup yet.
func (w *Worker) premade(ctx context.Context, prefix string) (*sandbox.Sandbox, error) {
	return w.factory.Shell(ctx, sandbox.Config{
		ID:           fmt.Sprintf("%s-%d", prefix, w.seq.Add(1)),
		ScratchBytes: w.cfg.ScratchBytes,
		ScratchDisk:  w.disks != nil,
		Socket:       socketName,
	})
}

// takeHolder returns a pre-made sandbox for l, or nil.
func (w *Worker) takeHolder(l *launch) *sandbox.Sandbox {
	if w.holders == nil || !l.premade {
		return nil
	}
	return w.holders.take()
}
