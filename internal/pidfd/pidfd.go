// Package pidfd reads how a process ended through a pidfd on it, which
// works for a process the reader did not start and cannot reap.
package pidfd

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// reapGrace bounds how long ESRCH is taken for a process being reaped:
// the kernel answers so for a moment while the parent reaps it, and for
// good on a kernel that keeps no exit status (before Linux 6.15).
const reapGrace = 100 * time.Millisecond

// Exit waits until the process fd refers to has exited and been reaped
// and returns its wait status. ok is false if ctx ends first, or if the
// kernel keeps no exit status (PIDFD_INFO_EXIT, Linux 6.15).
func Exit(ctx context.Context, fd int) (ws unix.WaitStatus, ok bool) {
	var gone time.Time // when it was first seen reaping
	for {
		ws, st := read(fd)
		switch st {
		case ended:
			return ws, true
		case unsupported:
			return 0, false
		case reaping:
			if gone.IsZero() {
				gone = time.Now()
			} else if time.Since(gone) > reapGrace {
				return 0, false
			}
		}
		if ctx.Err() != nil {
			return 0, false
		}
		// Exited (POLLIN) and not reaped yet, or being reaped: look again
		// soon. Running: wait for its exit, holding no thread.
		if Exited(fd) {
			time.Sleep(time.Millisecond)
		} else if Wait(ctx, fd) != nil {
			// ctx ended (its deadline may pass a moment before ctx.Err
			// says so): one last look.
			if ws, st := read(fd); st == ended {
				return ws, true
			}
			return 0, false
		}
	}
}

// state is what one read of a pidfd's exit information says.
type state int

const (
	running     state = iota // or exited and not reaped yet
	reaping                  // ESRCH: being reaped, or reaped and no status kept
	ended                    // reaped, with its status
	unsupported              // no PIDFD_GET_INFO (before Linux 6.13)
)

// read reads the exit information of the process fd refers to once.
func read(fd int) (unix.WaitStatus, state) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	err := unix.IoctlPidfdInfo(fd, &info)
	switch {
	case err == nil && info.Mask&unix.PIDFD_INFO_EXIT != 0:
		return unix.WaitStatus(info.Exit_code), ended
	case err == nil:
		return 0, running
	case errors.Is(err, unix.ESRCH):
		// The kernel stores the status a moment after it answers so,
		// in the reap.
		return 0, reaping
	default:
		return 0, unsupported
	}
}

// Wait waits until the process fd refers to has exited (its pidfd polls
// readable), or ctx ends, and then returns ctx's error; fd must stay open
// until it returns. It waits in the Go runtime's poller, through an
// epoll instance of its own that watches fd (fd's open file is left as
// it is: no flag of it changes): a poll(2) that blocks holds an OS
// thread for as long as it waits, one per live sandbox and zygote, and
// has the scheduler take its processor back each time. Where that fails,
// it polls.
func Wait(ctx context.Context, fd int) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return pollWait(ctx, fd)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(ep)
		return pollWait(ctx, fd)
	}
	// Non-blocking, so that os.NewFile hands it to the poller: it polls
	// readable while fd does.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return pollWait(ctx, fd)
	}
	f := os.NewFile(uintptr(ep), "pidfd-epoll")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{})
	}
	if err != nil {
		return pollWait(ctx, fd) // not in the poller
	}
	if dl, ok := ctx.Deadline(); ok {
		f.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	err = rc.Read(func(uintptr) bool { return Exited(fd) })
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return context.DeadlineExceeded
		}
		return pollWait(ctx, fd)
	}
	return nil
}

// Exited reports whether the pidfd fd polls readable now: its process
// has exited.
func Exited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, _ := unix.Poll(fds, 0)
	return n > 0
}

// pollWait is Wait in bounded poll(2)s, for a pidfd the poller refuses.
func pollWait(ctx context.Context, fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Poll(fds, 10)
		if n > 0 || (err != nil && err != unix.EINTR) {
			return nil
		}
	}
}
