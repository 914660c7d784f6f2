package worker

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/runtime"
)

// box is what the worker uses of a sandbox: *sandbox.Sandbox and
// restored snapshots (restoredBox) both have it.
type box interface {
	ID() string
	Group() *cgroup.Group
	InitPid() int
	Done() <-chan struct{}
	ExitStatus() int
	Pause(ctx context.Context) error
	Unpause(ctx context.Context) error
	Destroy(ctx context.Context) error
	// Dial connects to the socket name in the sandbox's /tmp.
	Dial(name string) (net.Conn, error)
}

// errBusy: the sandbox was taken before the background freeze ran.
var errBusy = errors.New("sandbox in use")

// instance is one sandbox running one revision of a function.
type instance struct {
	id       string
	fn, rev  string
	sb       box // *sandbox.Sandbox, or a restored snapshot
	group    *cgroup.Group
	net      *netns.NS // isolated network, given back on destroy; nil otherwise
	conn     *runtime.Conn
	proc     *proc // the runtime process, when a zygote forked it; nil otherwise
	declared int64
	load     time.Duration // handler load time the runtime reported
	// snapshot marks the spare a snapshot is dumped from: it never
	// serves a call and is never in the warm pool.
	snapshot bool

	mu     sync.Mutex // guards the fields below and serialises freeze/thaw
	idle   bool
	frozen bool
}

func (i *instance) markIdle() {
	i.mu.Lock()
	i.idle = true
	i.mu.Unlock()
}

// freeze pauses an idle sandbox and returns its measured memory.
func (i *instance) freeze(ctx context.Context) (int64, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.idle {
		return 0, errBusy
	}
	if err := i.sb.Pause(ctx); err != nil {
		return 0, err
	}
	i.frozen = true
	m, err := i.group.MemoryUsage()
	if err != nil {
		return 0, err
	}
	return int64(m), nil
}

// thaw makes a sandbox taken from the cache runnable.
func (i *instance) thaw(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.idle = false
	if !i.frozen {
		return nil
	}
	i.frozen = false
	return i.sb.Unpause(ctx)
}

func (i *instance) stateName() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	switch {
	case i.snapshot:
		return "snapshotting"
	case i.frozen:
		return "paused"
	case i.idle:
		return "idle"
	default:
		return "busy"
	}
}

// exit waits (up to exitWait) for the sandbox's runtime process to end
// and says how it ended. A forked runtime is watched through its pidfd;
// any other is the sandbox's main process, whose status its init reports.
func (i *instance) exit() exitInfo {
	ctx, cancel := context.WithTimeout(context.Background(), exitWait)
	defer cancel()
	if i.proc != nil {
		return i.proc.exit(ctx)
	}
	select {
	case <-i.sb.Done():
		return exitFromCode(i.sb.ExitStatus())
	case <-ctx.Done():
		return exitInfo{}
	}
}
