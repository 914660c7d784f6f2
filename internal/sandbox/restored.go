package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
)

// Restored describes a process tree restored from a checkpoint
// (internal/snapshot) for a Sandbox to adopt (AdoptRestored).
type Restored struct {
	// ID names the sandbox.
	ID string
	// Dir is the sandbox's directory, which Destroy removes.
	Dir string
	// Scratch is the sandbox's /tmp: a descriptor of the root of the
	// file system mounted for it (O_PATH), opened before any process of
	// the sandbox ran. The Sandbox owns it.
	Scratch *os.File
	// ScratchMount is where that file system is mounted on the host;
	// Destroy unmounts it.
	ScratchMount string
	// Group is the sandbox's cgroup, the caller's: the restored tree was
	// created in it.
	Group *cgroup.Group
	// Init is the restored init, the runtime, in fresh namespaces: a
	// child of this process (CRIU's --restore-sibling), which the Sandbox
	// reaps. Killing it kills the tree.
	Init *os.Process
}

// AdoptRestored makes a Sandbox of a restored process tree. From then on
// the Sandbox owns r's parts, and its owner must call Destroy. It has no
// runtime connection made ahead (see Dial): the restored runtime was
// listening before the restore, and its connection is dialled through
// the checks of DialAt.
func AdoptRestored(r Restored) *Sandbox {
	s := &Sandbox{id: r.ID, dir: r.Dir, tmp: r.Scratch, group: r.Group, restored: r.Init,
		pid: r.Init.Pid, mnt: r.ScratchMount, done: make(chan struct{})}
	s.scratch = fdPath(s.tmp)
	s.watchExit(r.Init.Pid, func() { s.restoredState, _ = s.restored.Wait() })
	return s
}

// restoredExit is ExitStatus for a restored sandbox, once done.
func (s *Sandbox) restoredExit() int {
	if s.restoredState == nil {
		return -1
	}
	if ws, ok := s.restoredState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return s.restoredState.ExitCode()
}

// destroyRestored is Destroy for a restored sandbox: its cgroup is
// killed, then its init (pid 1 of its pid namespace), which takes the
// tree with it; the scratch file system is unmounted. Called with s.mu
// held.
func (s *Sandbox) destroyRestored(ctx context.Context, errs []error) error {
	if err := s.group.Kill(ctx); err != nil {
		errs = append(errs, err)
	}
	s.restored.Kill()
	if err := s.waitExit(ctx, "init"); err != nil {
		errs = append(errs, err)
	}
	if err := s.cleanupFS(false); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy %s: %w", s.id, err)
	}
	return nil
}

// unmountScratch unmounts the scratch file system mounted for a
// restored sandbox at mnt, if it is still there.
func unmountScratch(mnt string) error {
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount scratch: %w", err)
	}
	return nil
}
