package criu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Job is one criu invocation.
type Job struct {
	// Args follow the criu binary, e.g. {"dump", "-t", "42", ...}.
	Args []string
	// Files become descriptors 3, 4, ... of criu, for --inherit-fd.
	Files []*os.File
	// UID and GID, if non-zero, become criu's real uid and gid; its
	// effective ids stay root. prlimit(2) on another user's process needs
	// either CAP_SYS_RESOURCE or matching real ids, so a dump of a process
	// running as UID:GID sets them when the host withholds the capability.
	UID, GID int
	// Stderr receives criu's own output (default: kept for the error).
	Stderr io.Writer
	// Timeout bounds the run (default DefaultTimeout): criu is then
	// killed with its whole process group, which releases the tasks it
	// traced.
	Timeout time.Duration
	// Cgroup lists a cgroup's directories (one per hierarchy) that criu
	// starts in, so that what it restores is created, and charged, there
	// from the first page. On cgroup v1 the runner thread joins them
	// through their tasks files just long enough to fork; a v2 group
	// (a hybrid host's too) criu enters stopped at its exec (see
	// joinCgroup).
	Cgroup []string
}

// Runner launches criu from a dedicated thread in a private mount namespace
// with a tmpfs on /run, where criu caches its kernel-feature probe. The
// caller must Close it.
type Runner struct {
	bin  *Binary
	reqs chan *startReq
	quit chan struct{}
	once sync.Once
	gone chan struct{} // closed when the thread has exited
}

type startReq struct {
	job Job
	cmd *exec.Cmd
	fn  func() error // instead of cmd: run fn on the thread
	err chan error
}

// NewRunner starts the runner thread and runs `criu check` on it, which
// also fills the probe cache. It fails with ErrCheck if the check fails.
func NewRunner(ctx context.Context, bin *Binary) (*Runner, error) {
	r := &Runner{bin: bin, reqs: make(chan *startReq), quit: make(chan struct{}), gone: make(chan struct{})}
	ready := make(chan error, 1)
	go r.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	if err := r.Run(ctx, Job{Args: []string{"check"}}); err != nil {
		r.Close()
		return nil, fmt.Errorf("%v: %w", err, ErrCheck)
	}
	return r, nil
}

// Binary returns the criu the runner runs.
func (r *Runner) Binary() *Binary { return r.bin }

func (r *Runner) loop(ready chan<- error) {
	defer close(r.gone)
	// Never unlocked: the thread's mount namespace and ids differ from the
	// rest of the process, so it must die with this goroutine.
	runtime.LockOSThread()
	if err := privateRun(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case req := <-r.reqs:
			req.err <- r.start(req)
		case <-r.quit:
			return
		}
	}
}

// privateRun moves the calling thread into a new mount namespace that
// follows the host's (slave propagation) and mounts a tmpfs on /run.
func privateRun() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("criu runner: unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("criu runner: make / slave: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4m,mode=755"); err != nil {
		return fmt.Errorf("criu runner: tmpfs on /run: %w", err)
	}
	return nil
}

// start runs on the runner thread.
func (r *Runner) start(req *startReq) error {
	if req.fn != nil {
		return req.fn()
	}
	var v2 []string
	back := func() {}
	if len(req.job.Cgroup) > 0 {
		b, dirs, err := joinCgroup(req.job.Cgroup, req.cmd)
		if err != nil {
			return err
		}
		// Called at once after the fork: while this thread is in the
		// group, a kill of the group would list the worker itself.
		back, v2 = b, dirs
		defer func() { back() }()
	}
	if req.job.GID != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(req.job.GID), ^uintptr(0), ^uintptr(0)); e != 0 {
			return fmt.Errorf("setresgid %d: %w", req.job.GID, e)
		}
		defer unix.RawSyscall(unix.SYS_SETRESGID, 0, ^uintptr(0), ^uintptr(0))
	}
	if req.job.UID != 0 {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(req.job.UID), ^uintptr(0), ^uintptr(0)); e != 0 {
			return fmt.Errorf("setresuid %d: %w", req.job.UID, e)
		}
		defer unix.RawSyscall(unix.SYS_SETRESUID, 0, ^uintptr(0), ^uintptr(0))
	}
	if err := req.cmd.Start(); err != nil {
		return err
	}
	back()
	back = func() {}
	if len(v2) > 0 {
		if err := enterStopped(req.cmd.Process.Pid, v2); err != nil {
			req.cmd.Process.Kill()
			req.cmd.Wait()
			return err
		}
	}
	return nil
}

// Start launches criu for job on the runner thread and returns the
// running command; the caller must Wait for it. ctx kills criu.
func (r *Runner) Start(ctx context.Context, job Job) (*exec.Cmd, error) {
	cmd := r.bin.Command(ctx, job.Args...)
	cmd.ExtraFiles = job.Files
	cmd.Stderr = job.Stderr
	// Pdeathsig (set by Command) follows the forking thread, which lives
	// as long as r.
	req := &startReq{job: job, cmd: cmd, err: make(chan error, 1)}
	select {
	case r.reqs <- req:
	case <-r.gone:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := <-req.err; err != nil {
		return nil, fmt.Errorf("starting criu: %w", err)
	}
	return cmd, nil
}

// Do runs fn on the runner thread, in its mount namespace: for example to
// mount something only criu should see. fn must not unlock the thread.
func (r *Runner) Do(ctx context.Context, fn func() error) error {
	req := &startReq{fn: fn, err: make(chan error, 1)}
	select {
	case r.reqs <- req:
	case <-r.gone:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.err
}

// DefaultTimeout bounds a criu run whose Job sets no Timeout. A dump or
// restore of a sandbox takes well under a second; a criu that runs for
// this long is stuck (a parasite that never stops, say).
const DefaultTimeout = 30 * time.Second

// Run runs criu for job to completion, or until job.Timeout, when it kills
// criu's process group and returns an error wrapping ErrTimeout. On
// failure the error carries the tail of criu's output.
func (r *Runner) Run(ctx context.Context, job Job) error {
	timeout := job.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var buf bytes.Buffer
	if job.Stderr == nil {
		job.Stderr = &buf
	}
	cmd, err := r.Start(ctx, job)
	if err != nil {
		if parent.Err() == nil && ctx.Err() != nil {
			// Killed while it started (stopped at its exec, see
			// enterStopped): the timeout's.
			return fmt.Errorf("criu %s: killed after %s while starting (%v): %w", job.Args[0], timeout, err, ErrTimeout)
		}
		return err
	}
	if err := cmd.Wait(); err != nil {
		if parent.Err() != nil {
			return fmt.Errorf("criu %s: %w", job.Args[0], parent.Err())
		}
		if ctx.Err() != nil {
			return fmt.Errorf("criu %s: killed after %s (mode %s): %w", job.Args[0], timeout, r.bin.Mode(), ErrTimeout)
		}
		return fmt.Errorf("criu %s: %v: %s", job.Args[0], err, tail(buf.Bytes(), 800))
	}
	return nil
}

// Close stops the runner thread. Commands already started keep running.
func (r *Runner) Close() error {
	r.once.Do(func() { close(r.quit) })
	<-r.gone
	return nil
}

func tail(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}
