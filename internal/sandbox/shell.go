package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/pidfd"
)

// Shell makes the parts of a sandbox that a zygote child builds its own
// sandbox around: the scratch file system (detached, for the child to
// move onto its /tmp, see ScratchMount), the runtime's listening socket
// in it (cfg.Socket, see TakeListener) and cfg.Group, if set. No process
// runs in it until Adopt; the child makes its own namespaces, as their
// owner, in a user namespace of its own.
//
// Only ID, ScratchBytes, ScratchDisk, Socket and Group of cfg are used.
func (f *Factory) Shell(ctx context.Context, cfg Config) (_ *Sandbox, err error) {
	if cfg.ID == "" || filepath.Base(cfg.ID) != cfg.ID {
		return nil, fmt.Errorf("sandbox: bad id %q", cfg.ID)
	}
	s := &Sandbox{id: cfg.ID, dir: filepath.Join(f.Dir, cfg.ID), group: cfg.Group, done: make(chan struct{})}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	defer func() {
		if err != nil {
			s.cleanupFS(false)
		}
	}()
	if s.tmp, s.disk, err = f.scratch(ctx, cfg); err != nil {
		return nil, fmt.Errorf("sandbox %s: scratch: %w", s.id, err)
	}
	s.scratch = fdPath(s.tmp)
	if cfg.Socket != "" {
		if s.lis, err = listenUnix(filepath.Join(s.scratch, cfg.Socket), nil); err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		if err := s.preDial(cfg.Socket); err != nil {
			s.lis.Close()
			return nil, err
		}
	}
	return s, nil
}

// ScratchMount returns a descriptor of the shell's scratch file system,
// a detached mount until a process moves it into its mount namespace
// (move_mount). The caller closes it.
func (s *Sandbox) ScratchMount() (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, ErrExited)
	}
	fd, err := unix.FcntlInt(s.tmp.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: scratch: %w", s.id, err)
	}
	return os.NewFile(uintptr(fd), "scratch"), nil
}

// Join is a shell's join handle: what a process that builds its sandbox
// around the shell (a zygote child) takes from it. Its holder closes it
// once the process has its own copies.
type Join struct {
	// Scratch is the shell's scratch file system, a detached mount (see
	// ScratchMount).
	Scratch *os.File
	// Listener is the runtime's listening socket in Scratch.
	Listener *os.File
	// Group is the cgroup the joiner is moved into (see SetGroup).
	Group *cgroup.Group
}

// Close closes the handle's descriptors.
func (j *Join) Close() {
	for _, f := range []*os.File{j.Scratch, j.Listener} {
		if f != nil {
			f.Close()
		}
	}
}

// Join hands out the shell's join handle, once: the listener goes with
// the first. A shell needs its cgroup set (SetGroup, or Config.Group)
// before: its joiner is moved into it.
func (s *Sandbox) Join() (*Join, error) {
	if s.Group() == nil {
		return nil, fmt.Errorf("sandbox %s: join: no cgroup", s.id)
	}
	scratch, err := s.ScratchMount()
	if err != nil {
		return nil, err
	}
	lis := s.TakeListener()
	if lis == nil {
		scratch.Close()
		return nil, fmt.Errorf("sandbox %s: join: no listener to hand over", s.id)
	}
	return &Join{Scratch: scratch, Listener: lis, Group: s.Group()}, nil
}

// Adopt makes the process pidfd pf refers to (host pid pid) the shell's
// main process: Done closes when it exits. The shell owns pf.
func (s *Sandbox) Adopt(pf *os.File, pid int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil || s.pidfd != nil || s.restored != nil {
		pf.Close()
		return fmt.Errorf("sandbox %s: adopt: it has a main process", s.id)
	}
	if s.destroyed {
		pf.Close()
		return fmt.Errorf("sandbox %s: %w", s.id, ErrExited)
	}
	s.pidfd, s.pid = pf, pid
	fd := int(pf.Fd())
	go func() {
		pidfd.Wait(context.Background(), fd)
		close(s.done)
	}()
	return nil
}

// watchExit closes s.done once the process pid, the caller's child, has
// exited and reap has reaped it. It waits for the exit in Go's poller,
// on a pidfd opened now, before anyone can reap the child (only reap
// does): reap alone (a wait4) would hold an OS thread for the sandbox's
// whole life, one per live cold, restored or pre-made sandbox.
func (s *Sandbox) watchExit(pid int, reap func()) {
	fd, err := unix.PidfdOpen(pid, 0)
	go func() {
		if err == nil {
			pidfd.Wait(context.Background(), fd)
			unix.Close(fd)
		}
		reap()
		close(s.done)
	}()
}

// destroyShell is Destroy for a shell: its main process (pid 1 of its
// own pid namespace) dies with a kill of its cgroup, and the pid
// namespace with it. Called with s.mu held.
func (s *Sandbox) destroyShell(ctx context.Context, groupKill func(), errs []error) error {
	if s.group != nil {
		groupKill()
	}
	if s.pidfd != nil {
		// Not in the cgroup yet (killed while joining): by its pidfd.
		unix.PidfdSendSignal(int(s.pidfd.Fd()), unix.SIGKILL, nil, 0)
		if err := s.waitExit(ctx, "the main process"); err != nil {
			errs = append(errs, err)
		}
		// The poller is done with it (or never will be: leak one fd
		// rather than poll a reused descriptor).
		select {
		case <-s.done:
			s.pidfd.Close()
		default:
		}
	}
	if err := s.cleanupFS(len(errs) == 0); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy %s: %w", s.id, err)
	}
	return nil
}

// shellExit is the exit status of an exited adopted process, as
// ExitStatus reports it, from its pidfd (Linux 6.15 keeps it after the
// process is reaped); -1 where the kernel does not tell, or its parent
// has not reaped it within shellReap.
func shellExit(f *os.File) int {
	if f == nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), shellReap)
	defer cancel()
	ws, ok := pidfd.Exit(ctx, int(f.Fd()))
	switch {
	case !ok:
		return -1
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return ws.ExitStatus()
	}
}

// shellReap bounds how long ExitStatus waits for an adopted process's
// parent, a zygote, to reap it.
const shellReap = time.Second
