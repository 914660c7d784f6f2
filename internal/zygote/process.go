package zygote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Process is one zygote: a Python interpreter that has imported some
// modules and forks children on request. A Process serves one request at
// a time; replicas give concurrency.
type Process struct {
	pid   int
	sb    *sandbox.Sandbox // the root zygote's own sandbox; nil for children
	group *cgroup.Group
	ctl   *net.UnixConn
	dead  chan struct{}

	mu       sync.Mutex // serialises requests on ctl
	inflight atomic.Int32
	forking  atomic.Int32 // forks on a start's critical path, in flight
	forks    atomic.Int64
	killOnce sync.Once
}

// Target is the sandbox a child is forked into.
type Target struct {
	// Namespaces are the sandbox's pid, mnt, uts and ipc namespaces, and
	// its net namespace fifth if it has its own.
	Namespaces []*os.File
	// Listener is the runtime's listening socket in the sandbox's /tmp.
	Listener *os.File
	// Stdout and Stderr become the child's fd 1 and 2.
	Stdout, Stderr *os.File
	// Cgroup holds the sandbox cgroup's cgroup.procs files.
	Cgroup []*os.File
	// Root is the sandbox's root dir, as a path in its mount namespace.
	Root string
	// Mounts are bound read-only into the sandbox by the child before it
	// chroots: host path -> path in the sandbox. They let a generic,
	// pre-made sandbox take any function's code and packages.
	Mounts [][2]string
	// UID and GID the child runs as.
	UID, GID int
	// Env is the child's whole environment (the runtime's HEARTH_* and
	// the function's own).
	Env map[string]string
}

type reply struct {
	PID   int    `json:"pid"`
	Ready bool   `json:"ready"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// Pid returns the zygote's host pid.
func (p *Process) Pid() int { return p.pid }

// Dead is closed when the zygote process has exited.
func (p *Process) Dead() <-chan struct{} { return p.dead }

// Inflight is the number of requests waiting for or using this zygote.
func (p *Process) Inflight() int { return int(p.inflight.Load()) }

// Forking is the number of Fork requests (starts waiting on this zygote)
// in flight; background work such as making spares is not counted.
func (p *Process) Forking() int { return int(p.forking.Load()) }

// Forks is the number of children forked.
func (p *Process) Forks() int64 { return p.forks.Load() }

// Memory returns the memory charged to the zygote's cgroup: its own
// pages and the pages its children still share with it.
func (p *Process) Memory() int64 {
	m, err := p.group.MemoryUsage()
	if err != nil {
		return 0
	}
	return int64(m)
}

func (p *Process) alive() bool {
	select {
	case <-p.dead:
		return false
	default:
		return true
	}
}

// request sends one packet with fds and reads the reply.
func (p *Process) request(ctx context.Context, msg any, fds []*os.File) (reply, error) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.alive() {
		return reply{}, ErrDead
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return reply{}, err
	}
	raw := make([]int, len(fds))
	for i, f := range fds {
		raw[i] = int(f.Fd())
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(30 * time.Second)
	}
	p.ctl.SetDeadline(dl)
	if _, _, err := p.ctl.WriteMsgUnix(b, unix.UnixRights(raw...), nil); err != nil {
		return reply{}, p.broken(err)
	}
	return p.read()
}

func (p *Process) read() (reply, error) {
	buf := make([]byte, 4096)
	n, _, _, _, err := p.ctl.ReadMsgUnix(buf, nil)
	if err != nil {
		return reply{}, p.broken(err)
	}
	if n == 0 {
		return reply{}, p.broken(errors.New("zygote closed its control socket"))
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return r, fmt.Errorf("zygote %d: bad reply %q: %w", p.pid, buf[:n], err)
	}
	if r.Error != "" {
		return r, fmt.Errorf("zygote %d: %s", p.pid, r.Error)
	}
	return r, nil
}

// broken kills a zygote whose control channel failed: its state is
// unknown, so it must not fork again.
func (p *Process) broken(err error) error {
	p.Kill()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("zygote %d: no reply in time: %w", p.pid, ErrDead)
	}
	return fmt.Errorf("zygote %d: %v: %w", p.pid, err, ErrDead)
}

// Fork forks a child into t's sandbox and returns its host pid. The child
// loads the handler named in t.Env and serves t.Listener.
func (p *Process) Fork(ctx context.Context, t Target) (int, error) {
	if len(t.Namespaces) != 4 && len(t.Namespaces) != 5 {
		return 0, fmt.Errorf("fork: want 4 or 5 namespaces, got %d", len(t.Namespaces))
	}
	fds := append(append([]*os.File{}, t.Namespaces[:4]...), t.Listener, t.Stdout, t.Stderr)
	fds = append(fds, t.Cgroup...)
	if len(t.Namespaces) == 5 {
		fds = append(fds, t.Namespaces[4])
	}
	p.forking.Add(1)
	defer p.forking.Add(-1)
	r, err := p.request(ctx, map[string]any{
		"op": "fork", "root": t.Root, "mounts": t.Mounts, "net": len(t.Namespaces) == 5, "uid": t.UID, "gid": t.GID, "env": t.Env, "ncg": len(t.Cgroup),
	}, fds)
	if err != nil {
		return 0, err
	}
	p.forks.Add(1)
	return r.PID, nil
}

// Child forks a child zygote that joins group, appends path to sys.path
// and imports modules. It returns once the imports are done.
func (p *Process) Child(ctx context.Context, group *cgroup.Group, modules, path []string) (*Process, error) {
	ours, theirs, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	procs, err := group.ProcsFiles()
	if err != nil {
		ours.Close()
		theirs.Close()
		return nil, err
	}
	_, err = p.request(ctx, map[string]any{"op": "child", "modules": modules, "path": path, "ncg": len(procs)},
		append([]*os.File{theirs}, procs...))
	theirs.Close()
	for _, f := range procs {
		f.Close()
	}
	if err != nil {
		ours.Close()
		return nil, err
	}
	return attach(ctx, nil, group, ours)
}

// attach wraps a started zygote's control socket, waits for its ready
// message (which carries its host pid) and then watches the process.
func attach(ctx context.Context, sb *sandbox.Sandbox, group *cgroup.Group, ctl *os.File) (*Process, error) {
	c, err := net.FileConn(ctl)
	ctl.Close()
	if err != nil {
		return nil, err
	}
	p := &Process{sb: sb, group: group, ctl: c.(*net.UnixConn), dead: make(chan struct{})}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(60 * time.Second)
	}
	p.ctl.SetDeadline(dl)
	r, err := p.read()
	if err == nil && (!r.Ready || r.PID <= 0) {
		err = fmt.Errorf("zygote: unexpected first message %+v", r)
	}
	if err != nil {
		p.ctl.Close()
		killGroup(group)
		return nil, err
	}
	p.pid = r.PID
	p.ctl.SetDeadline(time.Time{})
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		p.ctl.Close()
		return nil, fmt.Errorf("zygote %d: pidfd: %w", p.pid, err)
	}
	go func() {
		// A pidfd polls readable when the process exits.
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				break
			}
		}
		unix.Close(pidfd)
		close(p.dead)
		p.ctl.Close()
	}()
	return p, nil
}

func killGroup(g *cgroup.Group) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g.Kill(ctx)
}

// Kill kills the zygote (not its function children, which live in their
// sandboxes).
func (p *Process) Kill() {
	p.killOnce.Do(func() {
		if p.pid > 0 {
			unix.Kill(p.pid, unix.SIGKILL)
		}
	})
}

// Wait waits until the zygote has exited or ctx ends.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.dead:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func seqpacketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "zygote-ctl"), os.NewFile(uintptr(fds[1]), "zygote-ctl-peer"), nil
}
