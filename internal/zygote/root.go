package zygote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// RootConfig describes the root zygote's sandbox.
type RootConfig struct {
	// ID names its sandbox.
	ID string
	// Group is the root zygote's cgroup.
	Group *cgroup.Group
	// Runtime is the host dir of the runtime files (mounted at /hearth).
	Runtime string
	// Binds are further read-only mounts, such as installed packages. A
	// child sees the same paths, so they must match its sandbox's.
	Binds []sandbox.Bind
	// Python is the interpreter inside the base (default /usr/bin/python3).
	Python string
	// Log receives the zygote's stdout and stderr.
	Log io.Writer
	// UID and GID run the zygote (zero: the sandbox factory's).
	UID, GID int
	// HostNetwork keeps the zygote in the host's network namespace (see
	// Config.HostNetwork).
	HostNetwork bool
	// SmallCode keeps the zygotes' code where the loader mapped it (see
	// Config.SmallCode).
	SmallCode bool
}

// zygoteEnv keeps numeric libraries single-threaded: a zygote must not
// hold threads across fork, and every thread's stack is memory each
// child would otherwise share.
//
// LD_BIND_NOW has the dynamic linker bind every library call of the
// interpreter when the zygote starts, once, rather than at its first use
// in each process: a child's first call of a function its zygote never
// made (setresuid, setsid, ...) otherwise ran the linker's symbol lookup,
// faulting in its code and the libraries' symbol tables, and wrote the
// binding to a page copied for it. Children do not keep the variable
// (their environment is the function's), only the mode it set.
//
// It sets no PYTHONHASHSEED: each root zygote draws its own random hash
// secret (from getrandom) when it starts, as a fresh interpreter does. A
// forked process cannot draw another one (every dict and set it holds is
// keyed by the hashes it has), so the nodes forked from a root and the
// functions forked from any of them share it; see the README's "What
// forked functions share".
var zygoteEnv = []string{
	"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
	"LD_BIND_NOW=1",
	"PATH=/usr/local/bin:/usr/bin:/bin",
}

// StartRoot starts the root zygote: a bare interpreter with the runtime
// imported, in a zygote's sandbox (see sandbox.Config.Zygote), as cfg's
// unprivileged user.
func StartRoot(ctx context.Context, f *sandbox.Factory, cfg RootConfig) (*Process, error) {
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	ours, theirs, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	binds := append([]sandbox.Bind{{Source: cfg.Runtime, Target: runtime.MountPoint}}, cfg.Binds...)
	env := zygoteEnv
	if cfg.SmallCode {
		// Read by settle (zygote.py), in the root and every node it forks.
		env = append(slices.Clip(env), "HEARTH_HUGE_CODE=0")
	}
	sb, err := f.Create(ctx, sandbox.Config{
		ID:            cfg.ID,
		Binds:         binds,
		Group:         cfg.Group,
		Command:       []string{cfg.Python, "-S", "-B", runtime.MountPoint + "/zygote.py"},
		Env:           env,
		Dir:           "/",
		Files:         []*os.File{theirs},
		Stdout:        cfg.Log,
		Stderr:        cfg.Log,
		Zygote:        true,
		ZygoteHostNet: cfg.HostNetwork,
		UID:           cfg.UID,
		GID:           cfg.GID,
	})
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("starting root zygote: %w", err)
	}
	theirs.Close()
	// The root's first message carries its pidfd: no package has run in
	// it yet. It must be the child of the sandbox's init.
	ours.SetReadDeadline(deadline(ctx))
	me, err := rootChild(ours, sb.InitPid())
	if err != nil {
		ours.Close()
		return nil, errors.Join(fmt.Errorf("starting root zygote: %w", err), sb.Destroy(context.Background()))
	}
	p, err := attach(ctx, sb, cfg.Group, ours, me)
	if errors.Is(err, ErrUnavailable) {
		return nil, errors.Join(err, sb.Destroy(context.Background()))
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("starting root zygote: %w", err), sb.Destroy(context.Background()))
	}
	// A zygote that cannot make its children's namespaces forks nothing:
	// say why now, not at every start.
	if _, _, err := p.request(ctx, map[string]any{"op": "probe"}, nil); err != nil {
		return nil, errors.Join(fmt.Errorf("%w: %w", ErrUnavailable, err), p.Destroy(context.Background()))
	}
	return p, nil
}

// Destroy kills the zygote and, for the root, its sandbox; the error is
// the sandbox's teardown's.
func (p *Process) Destroy(ctx context.Context) error {
	p.Kill()
	p.Wait(ctx)
	if p.sb != nil {
		return p.sb.Destroy(ctx)
	}
	return nil
}

func deadline(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(60 * time.Second)
}

// rootChild reads the root zygote's pidfd message on ctl: a packet
// {"pid": n} with its pidfd. An {"error": ...} packet is returned as
// the error (with ErrUnavailable for a host limit).
func rootChild(ctl *os.File, init int) (Child, error) {
	c, err := net.FileConn(ctl)
	if err != nil {
		return Child{}, err
	}
	defer c.Close() // a dup: ctl stays open
	r, fds, err := readReply(c.(*net.UnixConn))
	if err != nil {
		return Child{}, err
	}
	if r.Error != "" {
		closeAll(fds)
		if rest, ok := strings.CutPrefix(r.Error, "unavailable: "); ok {
			return Child{}, fmt.Errorf("%w: %s", ErrUnavailable, rest)
		}
		return Child{}, errors.New(r.Error)
	}
	return childOf(fds, init)
}
