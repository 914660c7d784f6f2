package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// box is what an instance uses of its sandbox. The worker's sandboxes
// are all *sandbox.Sandbox (created, a shell a zygote child joined, or
// restored from a snapshot); the start paths hold that type, and the
// warm cache's tests put a plain process in a cgroup behind box.
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

var _ box = (*sandbox.Sandbox)(nil)

// errBusy: the sandbox was taken before the background freeze ran.
var errBusy = errors.New("sandbox in use")

// errDead: a paused sandbox's runtime died while it waited in the cache
// (killed from outside, or by the OOM killer); a call sent to it would
// fail, so the caller starts another.
var errDead = errors.New("paused sandbox died")

// instance is one sandbox running one revision of a function.
type instance struct {
	id       string
	fn, rev  string
	sb       box
	group    *cgroup.Group
	net      *netns.NS // isolated network, given back on destroy; nil otherwise
	lazy     *lazyNet  // isolated network made at the first socket (lazynet.go); nil otherwise
	home     *homeOf   // its zygote child's user and network namespaces, kept when it ends if untouched (homes.go)
	conn     *runtime.Conn
	proc     *proc      // the runtime process, when a zygote forked it; nil otherwise
	out      []*outPipe // its stdout and stderr (see drainOutput)
	declared int64
	// peakSlot is the sandbox's slot among its function's last peaks
	// (fnInfo.note); guarded by the warm cache's mutex.
	peakSlot uint64
	load     time.Duration // handler load time the runtime reported
	loadCPU  time.Duration // and its CPU time
	weight   uint64        // CPU weight set for a call (Worker.setWeight: short-first, or first-come under its lock); 0: the limits' own
	// firstRan is when the call sent ahead of a start (connect's first)
	// began to run: when its ready frame was read. Zero once InvokeID
	// has taken it, and for other starts.
	firstRan time.Time
	// snapshot marks the spare a snapshot is dumped from: it never
	// serves a call and is never in the warm pool.
	snapshot bool
	code     bool // holds its revision's code (Worker.retainCode)

	mu     sync.Mutex // guards the fields below and serialises freeze/thaw
	idle   bool
	frozen bool
	// pids are the processes in the sandbox's cgroup when it was paused
	// (none can start while it is), for thaw's check; nil if unknown.
	pids []int
}

func (i *instance) markIdle() {
	i.mu.Lock()
	i.idle = true
	i.mu.Unlock()
}

// claim marks a sandbox the cache hands out as in use, before it is
// thawed: a background freeze then leaves it alone, and a retirement
// does not destroy it under its call.
func (i *instance) claim() {
	i.mu.Lock()
	i.idle = false
	i.mu.Unlock()
}

// inUse reports whether the sandbox is serving a call (or about to).
func (i *instance) inUse() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return !i.idle
}

// freeze pauses an idle sandbox and returns its measured memory.
func (i *instance) freeze(ctx context.Context) (int64, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.idle {
		return 0, errBusy
	}
	if err := i.pauseLocked(ctx); err != nil {
		return 0, err
	}
	m, err := i.group.MemoryUsage()
	if err != nil {
		return 0, err
	}
	return int64(m), nil
}

// pauseLocked freezes the sandbox and notes its processes.
func (i *instance) pauseLocked(ctx context.Context) error {
	if err := i.sb.Pause(ctx); err != nil {
		return err
	}
	i.frozen = true
	i.pids = nil
	if pids, err := i.group.Pids(); err == nil {
		i.pids = append([]int{}, pids...)
	}
	return nil
}

// thaw makes a sandbox taken from the cache runnable. If it was paused
// and its runtime died meanwhile, it is thawed all the same (so that the
// processes with a kill pending exit) and thaw returns an error matching
// errDead.
func (i *instance) thaw(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.idle = false
	if !i.frozen {
		return nil
	}
	dead := i.deadLocked()
	i.frozen = false
	if err := i.sb.Unpause(ctx); err != nil {
		return err
	}
	return dead
}

// deadLocked reports, with errDead, a frozen sandbox whose runtime is
// gone: its init exited, its cgroup had no process left when it was
// paused, or one of the processes it had then is gone, a zombie or has a
// kill pending. Checked before the thaw: in a cgroup v1 freezer a killed
// process stays frozen, with SIGKILL pending, until thawed, and would
// then die under the call. (A cgroup v2 freezer lets a killed process
// exit at once; for the microseconds that takes, /proc shows no sign of
// the kill, which is then no different from a kill during the call.)
// The processes noted at the pause spare a read of the cgroup on the
// call's path (one /proc read each, usually one). A check that cannot
// read the processes reports nothing; the call finds out.
func (i *instance) deadLocked() error {
	select {
	case <-i.sb.Done():
		return fmt.Errorf("%w: its init exited", errDead)
	default:
	}
	pids := i.pids
	if pids == nil {
		var err error
		if pids, err = i.group.Pids(); err != nil {
			return nil
		}
	}
	if len(pids) == 0 {
		return fmt.Errorf("%w: no process left", errDead)
	}
	for _, pid := range pids {
		if why := procDead(pid); why != "" {
			return fmt.Errorf("%w: process %d %s", errDead, pid, why)
		}
	}
	return nil
}

// sigkill is SIGKILL's bit in /proc/<pid>/status signal masks.
const sigkill = 1 << (9 - 1)

// procDead says why frozen process pid is as good as dead ("" if it is
// not): gone, a zombie, or with SIGKILL pending.
func procDead(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "gone"
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			if strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X") {
				return "exited"
			}
		case "SigPnd", "ShdPnd":
			if m, err := strconv.ParseUint(v, 16, 64); err == nil && m&sigkill != 0 {
				return "killed"
			}
		}
	}
	return ""
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
