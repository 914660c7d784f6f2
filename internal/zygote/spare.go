package zygote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// A Spare is a child forked ahead of need into a pre-made sandbox. It has
// done everything a fork start does up to the point where the function
// matters: it joined the sandbox's namespaces and cgroup, chrooted into
// its root and took its stdio and runtime socket. Go gives it a function;
// a start from a spare pays for none of the fork (about 1-2 ms for a
// numpy zygote, with the copy-on-write faults of the interpreter's
// after-fork work).
type Spare struct {
	child Child
	ctl   *net.UnixConn
	// home is the home the spare entered (SpareTarget.Home), its ids
	// mapped: Go maps none and takes only a function of those ids.
	home *Home
	// prepare is SpareTarget.Prepare; prepared is what Prepare sent,
	// the only Start that Go then takes.
	prepare  bool
	prepared *Start
}

// SpareTarget is what a spare builds its sandbox from: Target's parts
// that do not depend on the function.
type SpareTarget struct {
	Scratch        *os.File
	Listener       *os.File
	Stdout, Stderr *os.File
	Group          *cgroup.Group // the worker moves the spare into it (see Target.Group)
	Net            bool
	Hostname       string
	WatchNet       bool // see Target.WatchNet
	// Home, if set, is a home the spare enters rather than make its user
	// and network namespaces (Net must be set): it can then serve only a
	// function of the home's ids. The caller keeps the home.
	Home *Home
	// Prepare makes a spare that waits for Prepare before Go: it then
	// does all of a start but load the handler ahead of need. The caller
	// must call Prepare (or Close) at once: until then the spare waits.
	Prepare bool
}

// Start is what a spare needs to become a function's sandbox.
type Start struct {
	// Mounts are host directories the spare mounts read-only before it
	// loads the function, in order (a later one may sit inside an
	// earlier). None may be Writable.
	Mounts []sandbox.Bind
	// UID and GID the child runs as.
	UID, GID int
	// Env is the child's whole environment.
	Env map[string]string
}

// Spare clones a spare child that builds its sandbox from t and returns
// once it is cloned (it finishes in the background) and, with
// t.WatchNet, has sent its listener.
func (p *Process) Spare(ctx context.Context, t SpareTarget) (*Spare, error) {
	ours, theirs, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	fds := []*os.File{t.Scratch, t.Listener, t.Stdout, t.Stderr, theirs}
	req := map[string]any{"op": "spare", "net": t.Net, "hostname": t.Hostname, "watch": t.WatchNet}
	if t.Prepare {
		req["prepare"] = true
	}
	if t.Home != nil {
		if !t.Net || t.Home.UID < 0 || t.Home.GID < 0 {
			ours.Close()
			theirs.Close()
			return nil, errors.New("spare: a home needs the network set and its ids mapped")
		}
		req["home"] = true
		fds = append(fds, t.Home.User, t.Home.Net)
	}
	r, got, err := p.backgroundRequest(ctx, req, fds)
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	p.forks.Add(1)
	got, _, _ = watchOf(r, got, false) // a spare sends its listener itself (watchFrom)
	child, err := p.childOf(got)
	if err == nil {
		if err = child.join(t.Group, p, false); err != nil {
			child.kill()
		}
	}
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("zygote %d: spare: %w", p.pid, err)
	}
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		child.kill()
		return nil, err
	}
	s := &Spare{child: child, ctl: c.(*net.UnixConn), home: t.Home, prepare: t.Prepare}
	// The child is in the spare's group already (weight 1), as it was
	// when its zygote relayed the listener: in the zygote's cgroup, spares
	// still sending theirs would count against its process limit.
	if t.WatchNet {
		if err := s.watchFrom(ctx); err != nil {
			unix.PidfdSendSignal(int(child.PidFD.Fd()), unix.SIGKILL, nil, 0)
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// watchFrom reads a watching spare's first message on its control
// socket: the listener of the network filter it installed on itself (a
// zygote's packages could send anything there: seccomp.NewListener
// checks it), or why there is none. The spare sends it there rather than
// through its zygote, so the zygote replies at once, and serves a start's
// fork meanwhile rather than wait for a child that, on a busy host, waits
// for a CPU. It waits at most watchWait, and no longer than ctx.
func (s *Spare) watchFrom(ctx context.Context) error {
	dl := time.Now().Add(watchWait)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	s.ctl.SetReadDeadline(dl)
	defer s.ctl.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { s.ctl.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	r, fds, err := readReply(s.ctl)
	if ctx.Err() != nil {
		closeAll(fds)
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("spare %d: waiting for its network filter's listener: %w", s.child.Pid, err)
	}
	switch {
	case len(fds) > 0:
		s.child.Watch = fds[0]
		closeAll(fds[1:])
	case r.Error != "":
		s.child.WatchErr = errors.New(r.Error)
	default:
		s.child.WatchErr = errors.New("the spare sent no listener")
	}
	return nil
}

// watchWait bounds how long Spare waits for a watching spare's
// listener: a few system calls after its clone, which even at the lowest
// CPU weight on a busy host take well under a second. A child that sends
// nothing is killed; the refill tries again. A variable for tests.
var watchWait = 10 * time.Second

// Pid returns the spare's host pid.
func (s *Spare) Pid() int { return s.child.Pid }

// Watch hands over the spare's network filter listener (see
// Child.Watch), once: the caller owns it.
func (s *Spare) Watch() (*os.File, error) {
	l, err := s.child.Watch, s.child.WatchErr
	s.child.Watch, s.child.WatchErr = nil, nil
	return l, err
}

// PidFD returns a new pidfd of the spare (a dup), which the caller owns.
func (s *Spare) PidFD() (*os.File, error) {
	fd, err := unix.FcntlInt(s.child.PidFD.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("spare %d: %w", s.child.Pid, err)
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

// Go hands the spare its function. The mounts are cloned here as
// detached read-only trees (open_tree) that the child moves into place,
// so the host paths never need to be visible in the sandbox. Go returns
// once the request is sent; the caller then waits for the runtime's READY
// on the sandbox socket, and on failure may ask Err why. A prepared
// spare (Prepare) takes only the Start it was prepared with, and is told
// just to go.
func (s *Spare) Go(st Start) error {
	if s.prepared != nil {
		if !s.Takes(st) {
			return fmt.Errorf("spare %d: prepared for another start", s.child.Pid)
		}
		return s.send(map[string]any{"op": "go"}, nil)
	}
	if s.prepare {
		return fmt.Errorf("spare %d: waits for Prepare", s.child.Pid)
	}
	return s.hand("go", st)
}

// Failed reports why the spare can no longer be given a function, if it
// said so or exited already: a spare sends nothing between its network
// listener (read when made) and Go, so anything there, or the socket's
// end, is a failure (a prepared spare whose arrival failed, one killed
// for its memory). It does not wait.
func (s *Spare) Failed() error {
	// A deadline watchFrom's cancel set after its read ended would
	// fail the peek; no read on the socket is under way now.
	s.ctl.SetReadDeadline(time.Time{})
	rc, err := s.ctl.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 4096)
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait
	}); err != nil {
		return fmt.Errorf("spare %d: %w", s.child.Pid, err)
	}
	switch {
	case errors.Is(rerr, unix.EAGAIN):
		return nil
	case rerr != nil:
		return fmt.Errorf("spare %d: %w", s.child.Pid, rerr)
	case n == 0:
		return fmt.Errorf("spare %d: exited before its start", s.child.Pid)
	}
	var r reply
	if json.Unmarshal(buf[:n], &r) == nil && r.Error != "" {
		return fmt.Errorf("spare %d: %s", s.child.Pid, r.Error)
	}
	return fmt.Errorf("spare %d: sent %q before its start", s.child.Pid, buf[:min(n, 80)])
}

// Takes reports whether Go would hand the spare st: any start, unless
// it was prepared (Prepare) for another.
func (s *Spare) Takes(st Start) bool {
	return s.prepared == nil || st.Equal(*s.prepared)
}

// Prepare hands a spare made with SpareTarget.Prepare its function, as Go
// would, but ahead of need: the child mounts its code, becomes its uid
// and gid, drops its capabilities and installs its filters, then waits
// for Go. No function code runs before Go. It returns once the request
// is sent; a failure in the child is reported at Go (Err).
func (s *Spare) Prepare(st Start) error {
	if !s.prepare || s.prepared != nil {
		return fmt.Errorf("spare %d: not made to be prepared, or prepared already", s.child.Pid)
	}
	if err := s.hand("prepare", st); err != nil {
		return err
	}
	s.prepared = &st
	return nil
}

// hand sends op with st's mounts, ids and environment, after mapping the
// ids (a home's are mapped already, and must be st's).
func (s *Spare) hand(op string, st Start) error {
	files, targets, err := detachAll(st.Mounts)
	if err != nil {
		return err
	}
	defer closeAll(files)
	if h := s.home; h != nil {
		// Mapped already, and for good.
		if st.UID != h.UID || st.GID != h.GID {
			return fmt.Errorf("spare %d: its home is for uid %d gid %d, not %d %d", s.child.Pid, h.UID, h.GID, st.UID, st.GID)
		}
	} else if err := mapIDs(s.child, st.UID, st.GID); err != nil {
		return fmt.Errorf("spare %d: %w", s.child.Pid, err)
	}
	return s.send(map[string]any{"op": op, "mounts": targets, "uid": st.UID, "gid": st.GID, "env": st.Env}, files)
}

// send writes one message with files to the spare.
func (s *Spare) send(msg map[string]any, files []*os.File) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	s.ctl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := s.ctl.WriteMsgUnix(b, rights(files), nil); err != nil {
		return fmt.Errorf("spare %d: %w", s.child.Pid, err)
	}
	return nil
}

// Equal reports whether st and o are the same start: the same mounts in
// the same order, ids and environment.
func (st Start) Equal(o Start) bool {
	return slices.Equal(st.Mounts, o.Mounts) && st.UID == o.UID && st.GID == o.GID && maps.Equal(st.Env, o.Env)
}

// Err returns the error the spare reported after Go, if it reported one
// within wait.
func (s *Spare) Err(wait time.Duration) error {
	s.ctl.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, _, _, _, err := s.ctl.ReadMsgUnix(buf, nil)
	if err != nil || n == 0 {
		return nil
	}
	var r reply
	if json.Unmarshal(buf[:n], &r) != nil || r.Error == "" {
		return nil
	}
	return fmt.Errorf("spare %d: %s", s.child.Pid, r.Error)
}

// Close closes the control socket (a spare that never got Go exits) and
// its pidfd, if not taken.
func (s *Spare) Close() error {
	s.child.closeWatch()
	s.child.Watch = nil
	if s.child.PidFD != nil {
		s.child.PidFD.Close()
		s.child.PidFD = nil
	}
	return s.ctl.Close()
}

// rights is the control message that passes files, or nil for none.
func rights(files []*os.File) []byte {
	if len(files) == 0 {
		return nil
	}
	raw := make([]int, len(files))
	for i, f := range files {
		raw[i] = int(f.Fd())
	}
	return unix.UnixRights(raw...)
}

// detach clones the mount tree at src into a detached, read-only,
// nosuid, nodev mount.
func detach(src string) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount_setattr %s: %w", src, err)
	}
	return os.NewFile(uintptr(fd), src), nil
}
