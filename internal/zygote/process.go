package zygote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/pidfd"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Process is one zygote: a Python interpreter that has imported some
// modules and forks children on request. A Process serves one request at
// a time; replicas give concurrency.
type Process struct {
	pid   int
	pidMu sync.Mutex
	pidfd *os.File         // guarded by pidMu; the watcher closes it once the process is gone
	sb    *sandbox.Sandbox // the root zygote's own sandbox; nil for children
	root  *Process         // the root zygote this one descends from (itself for a root)
	group *cgroup.Group
	ctl   *net.UnixConn
	dead  chan struct{}

	mu       sync.Mutex   // serialises requests on ctl
	queued   atomic.Int32 // requests (not background ones) waiting for mu
	inflight atomic.Int32
	forking  atomic.Int32 // forks on a start's critical path, in flight
	forks    atomic.Int64
	killOnce sync.Once
	joinMu   sync.Mutex // one join's freeze of group at a time

	// hugeCode and hugeCodeErr are its ready message's HugeCode and
	// HugeCodeError.
	hugeCode    int64
	hugeCodeErr string
}

// Target is what a function child builds its sandbox from. The child
// makes its own namespaces (user, pid, mount, uts, ipc; network with
// Net) and owns them; the worker keeps what must stay outside.
type Target struct {
	// Scratch is the sandbox's /tmp, a detached mount (see
	// sandbox.Sandbox.ScratchMount).
	Scratch *os.File
	// Listener is the runtime's listening socket in Scratch.
	Listener *os.File
	// Stdout and Stderr become the child's fd 1 and 2.
	Stdout, Stderr *os.File
	// Group is the sandbox's cgroup. The worker moves the child into it:
	// a zygote gets no cgroup.procs descriptor, with which it could move
	// any process of its user (other zygotes) into a sandbox's group.
	Group *cgroup.Group
	// Net gives the child an empty network namespace of its own (with
	// loopback up) instead of the zygote's, which has no network at all.
	Net bool
	// Hostname names the sandbox's host.
	Hostname string
	// Mounts are bound read-only into the sandbox, in order: Source on
	// the host at Target in the sandbox. They let a child take any
	// function's code and packages. None may be Writable.
	Mounts []sandbox.Bind
	// UID and GID are the host ids the child runs as; Fork maps them (and
	// only them) into the child's user namespace.
	UID, GID int
	// Env is the child's whole environment (the runtime's HEARTH_* and
	// the function's own).
	Env map[string]string
	// WatchNet has the child install the network filter on itself
	// before anything else and hand over its listener (Child.Watch).
	WatchNet bool
}

// A Child is a process a zygote cloned: its host pid and a pidfd, which
// the caller owns.
type Child struct {
	Pid   int
	PidFD *os.File
	// Queued is how long the fork request waited for its zygote, behind
	// the requests ahead of it (other forks, a spare's clone under way).
	Queued time.Duration
	// Watch is the listener of the network filter the child installed
	// on itself (Target.WatchNet), which the caller owns: the child and
	// all it starts wait in socket(2) of an internet or netlink family
	// until it is answered (see seccomp.NetFilter). Nil if it was not
	// asked for, or with WatchErr saying why the child could not.
	Watch    *os.File
	WatchErr error
}

type reply struct {
	PID   int    `json:"pid"`
	Ready bool   `json:"ready"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	// NetWatchError is why a child asked to watch its sockets could not.
	NetWatchError string `json:"net_watch_error"`
	// HugeCode is, in a ready message, how many bytes of code the zygote
	// moved onto huge pages of its own; HugeCodeError why it moved no
	// more, if something failed.
	HugeCode      int64  `json:"huge_code"`
	HugeCodeError string `json:"huge_code_error"`
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

// HugeCode returns how many bytes of code the zygote moved onto huge
// pages of its own when it settled (its parent's are not counted), and
// why it moved no more, if something failed (the kernel gave no huge
// pages, say).
func (p *Process) HugeCode() (int64, string) { return p.hugeCode, p.hugeCodeErr }

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

// request sends one packet with fds and reads the reply, and the
// descriptors that came with it, which the caller owns.
func (p *Process) request(ctx context.Context, msg any, fds []*os.File) (reply, []*os.File, error) {
	r, got, _, err := p.timedRequest(ctx, msg, fds)
	return r, got, err
}

// timedRequest is request, which also returns how long it waited for
// the zygote.
func (p *Process) timedRequest(ctx context.Context, msg any, fds []*os.File) (reply, []*os.File, time.Duration, error) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	t0 := time.Now()
	p.queued.Add(1)
	p.mu.Lock()
	p.queued.Add(-1)
	queued := time.Since(t0)
	defer p.mu.Unlock()
	r, got, err := p.requestLocked(ctx, msg, fds)
	return r, got, queued, err
}

// backgroundRequest is request for work no start waits for (a spare):
// it lets requests waiting for the zygote (a start's fork) go first, for
// up to yieldFor. A spare's clone takes milliseconds, more on a busy host, and
// a start queued behind a run of refills would wait for all of them; the
// bound keeps a steady run of forks from starving the refills.
func (p *Process) backgroundRequest(ctx context.Context, msg any, fds []*os.File) (reply, []*os.File, error) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	deadline := time.Now().Add(yieldFor)
	for {
		p.mu.Lock()
		if p.queued.Load() == 0 || time.Now().After(deadline) || !p.alive() {
			break
		}
		p.mu.Unlock()
		t := time.NewTimer(yieldPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return reply{}, nil, ctx.Err()
		case <-p.dead:
			t.Stop()
		case <-t.C:
		}
	}
	defer p.mu.Unlock()
	return p.requestLocked(ctx, msg, fds)
}

// yieldFor bounds how long a background request lets starts go first,
// and yieldPoll is how often it looks whether they have. Variables for
// tests.
var (
	yieldFor  = 50 * time.Millisecond
	yieldPoll = 500 * time.Microsecond
)

func (p *Process) requestLocked(ctx context.Context, msg any, fds []*os.File) (reply, []*os.File, error) {
	if !p.alive() {
		return reply{}, nil, ErrDead
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return reply{}, nil, err
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
		return reply{}, nil, p.broken(err)
	}
	return p.read()
}

func (p *Process) read() (reply, []*os.File, error) {
	r, fds, err := readReply(p.ctl)
	if err != nil {
		if errors.Is(err, errBadReply) {
			return r, nil, fmt.Errorf("zygote %d: %w", p.pid, err)
		}
		return r, nil, p.broken(err)
	}
	if r.Error != "" {
		closeAll(fds)
		return r, nil, fmt.Errorf("zygote %d: %s", p.pid, r.Error)
	}
	return r, fds, nil
}

var (
	errBadReply = errors.New("bad reply")
	errHungUp   = errors.New("closed its control socket")
)

// readReply reads one reply packet and the descriptors sent with it.
func readReply(c *net.UnixConn) (reply, []*os.File, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if errors.Is(err, io.EOF) {
		return reply{}, nil, errHungUp
	}
	if err != nil {
		return reply{}, nil, err
	}
	var fds []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, m := range msgs {
				raw, err := unix.ParseUnixRights(&m)
				if err != nil {
					continue
				}
				for _, fd := range raw {
					unix.CloseOnExec(fd)
					fds = append(fds, os.NewFile(uintptr(fd), "zygote-reply"))
				}
			}
		}
	}
	if n == 0 {
		closeAll(fds)
		return reply{}, nil, errHungUp
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		closeAll(fds)
		return r, nil, fmt.Errorf("%w %q: %v", errBadReply, buf[:n], err)
	}
	return r, fds, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// pidOf returns the host pid (the pid in the caller's pid namespace) of
// the process pidfd refers to.
func pidOf(pidfd *os.File) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd.Fd()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || pid <= 0 {
				return 0, fmt.Errorf("pidfd: process gone (Pid: %s)", strings.TrimSpace(v))
			}
			return pid, nil
		}
	}
	return 0, errors.New("pidfd: no Pid in fdinfo")
}

// childOf takes the pidfd a reply of p carried: it must be of a child
// of p's (whatever p's packages did, a process it forked is of its own
// trust domain; another zygote, or a process of another, is not).
func (p *Process) childOf(fds []*os.File) (Child, error) {
	return childOf(fds, p.pid)
}

// watchOf takes what a fork reply says of the child's network filter:
// its listener, fds[1] (a zygote's packages could send anything there:
// seccomp.NewListener checks it), or why there is none. A spare sends its
// own (Spare.watchFrom); asked false closes any stray one.
func watchOf(r reply, fds []*os.File, asked bool) ([]*os.File, *os.File, error) {
	var l *os.File
	if len(fds) == 2 {
		l, fds = fds[1], fds[:1]
	}
	if !asked {
		if l != nil {
			l.Close()
		}
		return fds, nil, nil
	}
	if l != nil {
		return fds, l, nil
	}
	if r.NetWatchError != "" {
		return fds, nil, errors.New(r.NetWatchError)
	}
	return fds, nil, errors.New("the zygote sent no listener")
}

// childOf takes the pidfd in fds, which must be of a child of parent.
func childOf(fds []*os.File, parent int) (Child, error) {
	if len(fds) != 1 {
		closeAll(fds)
		return Child{}, fmt.Errorf("want the child's pidfd, got %d descriptors", len(fds))
	}
	c := Child{PidFD: fds[0]}
	fd := int(c.PidFD.Fd())
	if threadPidfd(fd) {
		// It would poll readable when that thread exits, not the
		// process: a zygote could end a live sandbox's watch early.
		c.PidFD.Close()
		return Child{}, errors.New("the zygote sent a thread's pidfd, not its child's")
	}
	pid, ppid, ok := pidInfo(fd)
	var err error
	switch {
	case ok && ppid != parent:
		err = fmt.Errorf("child %d: its parent is %d, not %d", pid, ppid, parent)
	case ok:
		c.Pid = pid
		err = c.alive()
	default:
		if c.Pid, err = pidOf(c.PidFD); err == nil {
			err = c.parentIs(parent)
		}
	}
	if err != nil {
		c.PidFD.Close()
		return Child{}, err
	}
	return c, nil
}

func (c Child) closeWatch() {
	if c.Watch != nil {
		c.Watch.Close()
	}
}

// threadPidfd reports whether fd is a pidfd of one thread
// (PIDFD_THREAD, which is O_EXCL among its file flags), or its flags
// cannot be read.
func threadPidfd(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err != nil || fl&unix.O_EXCL != 0
}

// pidInfo reads the pid and parent pid of the process pidfd fd refers
// to with PIDFD_GET_INFO (Linux 6.13), from the pidfd itself: no pid
// read there can have been reused. ok is false where fd is not a pidfd
// of pidfs (Linux 6.9), whose ioctls alone are asked, or the kernel
// does not answer: pidOf and parentIs then read /proc.
func pidInfo(fd int) (pid, ppid int, ok bool) {
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) != nil || fs.Type != unix.PID_FS_MAGIC {
		return 0, 0, false
	}
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	if unix.IoctlPidfdInfo(fd, &info) != nil || info.Mask&unix.PIDFD_INFO_PID == 0 || info.Tgid == 0 {
		return 0, 0, false
	}
	return int(info.Tgid), int(info.Ppid), true
}

// parentIs checks that c's parent is the process parent.
func (c Child) parentIs(parent int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return fmt.Errorf("child %d: %w", c.Pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			if pp, _ := strconv.Atoi(strings.TrimSpace(v)); pp != parent {
				return fmt.Errorf("child %d: its parent is %d, not %d", c.Pid, pp, parent)
			}
			return c.alive()
		}
	}
	return fmt.Errorf("child %d: no PPid", c.Pid)
}

// alive checks that c's process has not exited (so its pid is still its
// own), through its pidfd.
func (c Child) alive() error {
	if err := unix.PidfdSendSignal(int(c.PidFD.Fd()), 0, nil, 0); err != nil {
		return fmt.Errorf("child %d: %w", c.Pid, err)
	}
	return nil
}

// join moves c, a child of zygote z, into g. The move is by pid, and z
// could reap c at any time (it ignores SIGCHLD: c's pid is freed the
// moment c exits), and c's pid then go to the next process or thread
// made, anyone's, which the move would take instead. So z's group, which
// holds z and c, is frozen for the move: neither runs, a v1 freezer holds
// even a killed task, and c's pid stays c's. Once the group is frozen, c
// must be listed in it (a child of z elsewhere, one already in a
// sandbox's group or made there with CLONE_PARENT, is not held still, and
// is not z's to hand over) and alive through its pidfd; then it is
// moved, the freezer hierarchy last (it thaws there), and checked again.
//
// What the freeze does not hold: on v2 a killed task leaves a frozen
// group, and on both an OOM victim is thawed, and a task already exiting
// when the freeze starts is skipped. The check after the move sees such
// a loss; it cannot undo a move that took another process in the
// microseconds between, which would need the pid counter to have come
// round to the pid then.
//
// urgent says a start waits for the move: the freeze is then awaited
// spinning for a moment, else sleeping.
func (c Child) join(g *cgroup.Group, z *Process, urgent bool) error {
	if z.group == nil {
		return errors.New("the zygote has no cgroup to hold its child in while it is moved")
	}
	z.joinMu.Lock()
	defer z.joinMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), joinFreeze)
	defer cancel()
	freeze := z.group.FreezeIdle
	if urgent {
		freeze = z.group.Freeze
	}
	err := freeze(ctx)
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), joinFreeze)
		defer cancel()
		z.group.Thaw(tctx)
	}()
	if err != nil {
		return fmt.Errorf("holding zygote %d still for its child's move: %w", z.pid, err)
	}
	held, err := z.group.FrozenPids()
	if err != nil {
		return err
	}
	if !slices.Contains(held, c.Pid) {
		return fmt.Errorf("child %d is not in zygote %d's group", c.Pid, z.pid)
	}
	if err := c.alive(); err != nil {
		return err
	}
	if err := g.Add(c.Pid); err != nil {
		return err
	}
	return c.alive()
}

// joinFreeze bounds the freeze of a zygote's group for a join (and its
// thaw): a zygote that will not freeze in time fails only its own starts.
const joinFreeze = 2 * time.Second

// kill kills c through its pidfd, and closes it.
func (c Child) kill() {
	unix.PidfdSendSignal(int(c.PidFD.Fd()), unix.SIGKILL, nil, 0)
	c.PidFD.Close()
}

// mapIDs maps host uid and gid, as themselves, into the user namespace
// of the child pid made: the only ids it can take. Only a process
// privileged outside that namespace (the worker) can write them.
func mapIDs(c Child, uid, gid int) error {
	// The directory first, then the check that the process lives: then
	// the directory is the process's, not a later one's with its pid.
	dir, err := os.OpenRoot(fmt.Sprintf("/proc/%d", c.Pid))
	if err != nil {
		return fmt.Errorf("child %d: %w", c.Pid, err)
	}
	defer dir.Close()
	if err := c.alive(); err != nil {
		return err
	}
	for _, m := range []struct {
		file string
		id   int
	}{{"uid_map", uid}, {"gid_map", gid}} {
		f, err := dir.OpenFile(m.file, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("child %d: %w", c.Pid, err)
		}
		_, err = f.Write(fmt.Appendf(nil, "%d %d 1\n", m.id, m.id))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("child %d: %s: %w", c.Pid, m.file, err)
		}
	}
	return nil
}

// broken kills a zygote whose control channel failed: its state is
// unknown, so it must not fork again.
func (p *Process) broken(err error) error {
	p.Kill()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("zygote %d: no reply in time: %w", p.pid, ErrDead)
	}
	return fmt.Errorf("zygote %d: %w: %w", p.pid, err, ErrDead)
}

// Fork clones a function child that builds its sandbox from t, loads
// the handler named in t.Env and serves t.Listener.
func (p *Process) Fork(ctx context.Context, t Target) (Child, error) {
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return Child{}, err
	}
	defer syncW.Close() // the child exits at EOF if it was not told to go on
	mounts, targets, err := detachAll(t.Mounts)
	if err != nil {
		syncR.Close()
		return Child{}, err
	}
	fds := append([]*os.File{syncR, t.Scratch, t.Listener, t.Stdout, t.Stderr}, mounts...)
	p.forking.Add(1)
	defer p.forking.Add(-1)
	r, got, queued, err := p.timedRequest(ctx, map[string]any{
		"op": "fork", "mounts": targets, "net": t.Net, "hostname": t.Hostname,
		"uid": t.UID, "gid": t.GID, "env": t.Env, "watch": t.WatchNet,
	}, fds)
	syncR.Close()
	closeAll(mounts)
	if err != nil {
		return Child{}, err
	}
	p.forks.Add(1)
	got, watch, watchErr := watchOf(r, got, t.WatchNet)
	c, err := p.childOf(got)
	if err != nil {
		if watch != nil {
			watch.Close()
		}
		return Child{}, fmt.Errorf("zygote %d: fork: %w", p.pid, err)
	}
	c.Watch, c.WatchErr = watch, watchErr
	err = c.join(t.Group, p, true)
	if err == nil {
		err = mapIDs(c, t.UID, t.GID)
	}
	if err != nil {
		c.kill()
		c.closeWatch()
		return Child{}, fmt.Errorf("zygote %d: fork: %w", p.pid, err)
	}
	if _, err := syncW.Write([]byte("1")); err != nil {
		c.PidFD.Close()
		c.closeWatch()
		return Child{}, fmt.Errorf("zygote %d: fork: %w", p.pid, err)
	}
	c.Queued = queued
	return c, nil
}

// detachAll detaches each mount's source (see detach) and returns the
// descriptors and the targets, in order. A writable mount is refused:
// what a child is handed of the host it only reads.
func detachAll(ms []sandbox.Bind) ([]*os.File, []string, error) {
	files := make([]*os.File, 0, len(ms))
	targets := make([]string, 0, len(ms))
	for _, m := range ms {
		if m.Writable {
			closeAll(files)
			return nil, nil, fmt.Errorf("mount %s: a zygote child gets read-only mounts only", m.Target)
		}
		f, err := detach(m.Source)
		if err != nil {
			closeAll(files)
			return nil, nil, err
		}
		files = append(files, f)
		targets = append(targets, m.Target)
	}
	return files, targets, nil
}

// Child forks a child zygote, moves it into group, and then has it
// append path to sys.path and import modules. It returns once the
// imports are done.
func (p *Process) Child(ctx context.Context, group *cgroup.Group, modules, path []string) (*Process, error) {
	ours, theirs, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	_, got, err := p.request(ctx, map[string]any{"op": "child", "modules": modules, "path": path}, []*os.File{theirs})
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	c, err := p.childOf(got)
	if err == nil {
		// In its group before it imports anything (it waits for "go").
		if err = c.join(group, p, false); err == nil {
			_, err = ours.Write([]byte("go"))
		}
		if err != nil {
			c.kill()
		}
	}
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("zygote %d: child: %w", p.pid, err)
	}
	z, err := attach(ctx, nil, group, ours, c)
	if err != nil {
		return nil, err
	}
	z.root = p.root
	return z, nil
}

// attach wraps a started zygote's control socket, waits for its ready
// message (which carries its pidfd) and then watches the process.
func attach(ctx context.Context, sb *sandbox.Sandbox, group *cgroup.Group, ctl *os.File, me Child) (*Process, error) {
	c, err := net.FileConn(ctl)
	ctl.Close()
	if err != nil {
		me.kill()
		return nil, err
	}
	p := &Process{sb: sb, group: group, ctl: c.(*net.UnixConn), dead: make(chan struct{}), pid: me.Pid, pidfd: me.PidFD}
	if sb != nil {
		p.root = p
	}
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(60 * time.Second)
	}
	p.ctl.SetDeadline(dl)
	r, got, err := p.read()
	closeAll(got) // the ready message carries nothing: the zygote's pidfd came from its parent
	if err == nil && !r.Ready {
		err = fmt.Errorf("zygote: unexpected first message %+v", r)
	}
	if err != nil {
		p.ctl.Close()
		me.kill()
		killGroup(group)
		if strings.HasPrefix(r.Error, "unavailable: ") {
			return nil, fmt.Errorf("%w: %s", ErrUnavailable, strings.TrimPrefix(r.Error, "unavailable: "))
		}
		return nil, err
	}
	p.ctl.SetDeadline(time.Time{})
	p.hugeCode, p.hugeCodeErr = r.HugeCode, r.HugeCodeError
	fd := int(me.PidFD.Fd())
	go func() {
		pidfd.Wait(context.Background(), fd)
		p.pidMu.Lock()
		p.pidfd.Close()
		p.pidfd = nil
		p.pidMu.Unlock()
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
		// By pidfd: the zygote may be gone, and its pid another's.
		p.pidMu.Lock()
		defer p.pidMu.Unlock()
		if p.pidfd != nil {
			unix.PidfdSendSignal(int(p.pidfd.Fd()), unix.SIGKILL, nil, 0)
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
