package zygote

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A Spare is a child forked ahead of need into a pre-made sandbox. It has
// done everything a fork start does up to the point where the function
// matters: it joined the sandbox's namespaces and cgroup, chrooted into
// its root and took its stdio and runtime socket. Go gives it a function;
// a start from a spare pays for none of the fork (about 1-2 ms for a
// numpy zygote, with the copy-on-write faults of the interpreter's
// after-fork work).
type Spare struct {
	pid int
	ctl *net.UnixConn
}

// SpareTarget is the pre-made sandbox a spare waits in.
type SpareTarget struct {
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
}

// Mount is a host directory a spare mounts read-only at Target in its
// sandbox before it loads the function.
type Mount struct {
	Source, Target string
}

// Start is what a spare needs to become a function's sandbox.
type Start struct {
	// Mounts are made in order (a later one may sit inside an earlier).
	Mounts []Mount
	// UID and GID the child runs as.
	UID, GID int
	// Env is the child's whole environment.
	Env map[string]string
}

// Spare forks a spare child into t's sandbox and returns once it is
// forked (it finishes joining in the background).
func (p *Process) Spare(ctx context.Context, t SpareTarget) (*Spare, error) {
	if len(t.Namespaces) != 4 && len(t.Namespaces) != 5 {
		return nil, fmt.Errorf("spare: want 4 or 5 namespaces, got %d", len(t.Namespaces))
	}
	ours, theirs, err := seqpacketPair()
	if err != nil {
		return nil, err
	}
	fds := append(append([]*os.File{}, t.Namespaces[:4]...), t.Listener, t.Stdout, t.Stderr)
	fds = append(fds, t.Cgroup...)
	if len(t.Namespaces) == 5 {
		fds = append(fds, t.Namespaces[4])
	}
	fds = append(fds, theirs)
	r, err := p.request(ctx, map[string]any{"op": "spare", "root": t.Root, "ncg": len(t.Cgroup), "net": len(t.Namespaces) == 5}, fds)
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	p.forks.Add(1)
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		unix.Kill(r.PID, unix.SIGKILL)
		return nil, err
	}
	return &Spare{pid: r.PID, ctl: c.(*net.UnixConn)}, nil
}

// Pid returns the spare's host pid.
func (s *Spare) Pid() int { return s.pid }

// Go hands the spare its function. The mounts are cloned here as
// detached read-only trees (open_tree) that the child moves into place,
// so the host paths never need to be visible in the sandbox. Go returns
// once the request is sent; the caller then waits for the runtime's READY
// on the sandbox socket, and on failure may ask Err why.
func (s *Spare) Go(st Start) error {
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	targets := make([]string, 0, len(st.Mounts))
	for _, m := range st.Mounts {
		f, err := detach(m.Source)
		if err != nil {
			return err
		}
		files = append(files, f)
		targets = append(targets, m.Target)
	}
	b, err := json.Marshal(map[string]any{"op": "go", "mounts": targets, "uid": st.UID, "gid": st.GID, "env": st.Env})
	if err != nil {
		return err
	}
	raw := make([]int, len(files))
	for i, f := range files {
		raw[i] = int(f.Fd())
	}
	var oob []byte
	if len(raw) > 0 {
		oob = unix.UnixRights(raw...)
	}
	s.ctl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := s.ctl.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("spare %d: %w", s.pid, err)
	}
	return nil
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
	return fmt.Errorf("spare %d: %s", s.pid, r.Error)
}

// Close closes the control socket; a spare that never got Go exits.
func (s *Spare) Close() error { return s.ctl.Close() }

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
