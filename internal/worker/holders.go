package worker

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// holders keeps generic sandboxes made ahead of need: namespaces, a
// /tmp of Config.ScratchBytes with the runtime socket, no code and no
// cgroup. A zygote
// child binds the function's code and packages into one before it
// chroots, so a fork start skips the ~1-2 ms of creating a sandbox (and
// its tail on a busy machine). Each waits in an isolated network
// namespace from the pool: only functions of the default network,
// isolated, whose /tmp is the pre-made one use them.
type holders struct {
	w    *Worker
	size int
	ch   chan holder
	wake chan struct{}
	done chan struct{}
}

func (w *Worker) startHolders(size int) {
	h := &holders{w: w, size: size, ch: make(chan holder, size),
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.holders = h
	go h.fill()
}

// holder is a pre-made sandbox and its network namespace.
type holder struct {
	sb *sandbox.Sandbox
	ns *netns.NS
}

// destroy destroys the sandbox and gives its namespace back.
func (h holder) destroy(ctx context.Context, w *Worker) {
	h.sb.Destroy(ctx)
	w.dropNet(ctx, h.ns)
}

// take returns a pre-made sandbox, or a zero holder if none is ready. One
// whose init has died (killed from outside) is destroyed instead.
func (h *holders) take() holder {
	for {
		select {
		case hd := <-h.ch:
			select {
			case h.wake <- struct{}{}:
			default:
			}
			select {
			case <-hd.sb.Done():
				h.w.log.Warn("pre-made sandbox died", "sandbox", hd.sb.ID())
				h.w.background(func() { hd.destroy(context.Background(), h.w) })
				continue
			default:
			}
			return hd
		default:
			return holder{}
		}
	}
}

// fill keeps the reserve full, off the critical path.
func (h *holders) fill() {
	defer close(h.done)
	for {
		for len(h.ch) < h.size {
			if h.w.isClosed() {
				return
			}
			ctx, cancel := context.WithTimeout(h.w.life, 30*time.Second)
			netFile, ns, err := h.w.networkFor(ctx, function.NetworkIsolated)
			var sb *sandbox.Sandbox
			if err == nil {
				if sb, err = h.w.premade(ctx, "pre", netFile); err != nil {
					h.w.dropNet(ctx, ns)
				}
			}
			cancel()
			if err != nil {
				h.w.log.Warn("pre-made sandbox", "err", err)
				select {
				case <-time.After(time.Second):
				case <-h.w.stop:
					return
				}
				continue
			}
			h.ch <- holder{sb, ns}
		}
		select {
		case <-h.wake:
		case <-h.w.stop:
			return
		}
	}
}

// close destroys the reserve once fill has stopped.
func (h *holders) close(ctx context.Context) {
	<-h.done
	for {
		select {
		case hd := <-h.ch:
			hd.destroy(ctx, h.w)
		default:
			return
		}
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
func (w *Worker) adopt(ctx context.Context, hd holder, fn registry.Function) (*instance, [][2]string, error) {
	sb := hd.sb
	fail := func(err error) (*instance, [][2]string, error) {
		hd.destroy(ctx, w)
		return nil, nil, err
	}
	mounts := [][2]string{{fn.CodeDir, runtime.CodeDir}}
	if len(packages.Cached(fn.Packages)) > 0 {
		if w.cfg.Packages == nil {
			return fail(fmt.Errorf("%s: needs installed packages but the install cache is off: %w", fn.Name, ErrStart))
		}
		ms, err := w.cfg.Packages.Mounts(fn.Packages)
		if err != nil {
			return fail(fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart))
		}
		for _, m := range ms {
			mounts = append(mounts, [2]string{m.HostDir, m.SandboxDir})
		}
	}
	grp, err := w.newGroup(ctx, sb.ID(), w.limits(fn))
	if err != nil {
		return fail(fmt.Errorf("%s: %v: %w", fn.Name, err, ErrStart))
	}
	sb.SetGroup(grp)
	inst := &instance{id: sb.ID(), fn: fn.Name, rev: fn.Revision, sb: sb, group: grp, net: hd.ns, declared: int64(fn.Spec.MemoryMB) << 20}
	w.track(inst)
	return inst, mounts, nil
}

// takeHolder returns a pre-made sandbox for fn, or a zero holder.
func (w *Worker) takeHolder(fn registry.Function) holder {
	if w.holders == nil || netKind(fn) != function.NetworkIsolated || !w.premadeFits(fn) {
		return holder{}
	}
	return w.holders.take()
}
