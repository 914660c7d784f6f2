package seccomp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Notif is a system call stopped by a filter's SECCOMP_RET_USER_NOTIF,
// as struct seccomp_notif gives it.
type Notif struct {
	// ID names it in the replies; it is valid while the caller waits.
	ID uint64
	// Pid is the caller's thread, in the listener reader's pid
	// namespace.
	Pid int
	// Nr is the call's number, Args its arguments.
	Nr   int32
	Args [6]uint64
}

// notif and notifResp are struct seccomp_notif and seccomp_notif_resp.
type notif struct {
	id    uint64
	pid   uint32
	flags uint32
	nr    int32
	arch  uint32
	ip    uint64
	args  [6]uint64
}

type notifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

// notifIDValid is SECCOMP_IOCTL_NOTIF_ID_VALID, _IOW('!', 2, __u64),
// which x/sys does not have.
const notifIDValid = 0x40082102

// A Listener reads the notifications of one filter (the listener
// descriptor that seccomp(2) returned for it with
// SECCOMP_FILTER_FLAG_NEW_LISTENER) and answers them.
//
// Every process under the filter that makes a notified call waits until
// it is answered: a Listener must be served (Next) for as long as any of
// them lives. Closing it makes their later calls fail with ENOSYS.
type Listener struct {
	f      *os.File
	closed atomic.Bool
	// recv is the thread in the receive ioctl, or 0; see Next.
	recv atomic.Int32
}

// recvStall is how long the receive ioctl may block before its thread
// is interrupted (see Next).
const recvStall = 50 * time.Millisecond

// NewListener takes f, which must be a seccomp listener (a process under
// the filter may have sent anything else); f is closed either way.
func NewListener(f *os.File) (*Listener, error) {
	defer f.Close()
	fd := int(f.Fd())
	if link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil || link != "anon_inode:seccomp notify" {
		return nil, fmt.Errorf("seccomp: descriptor %d is not a seccomp listener (%q)", fd, link)
	}
	// A descriptor of its own, non-blocking, so that the runtime's
	// poller waits for notifications instead of a thread.
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	return &Listener{f: os.NewFile(uintptr(nfd), "seccomp-listener")}, nil
}

// InstallNet installs NetFilter on the calling thread with a listener,
// with the flags a root zygote uses (internal/runtime's zygote.py), and
// returns the listener's descriptor. The caller has set no_new_privs
// and locked its thread; the filter stays on that thread and what it
// starts.
func InstallNet() (int, error) {
	b, err := NetFilter()
	if err != nil {
		return -1, err
	}
	prog := unix.SockFprog{Len: uint16(len(b) / InstructionSize), Filter: (*unix.SockFilter)(unsafe.Pointer(&b[0]))}
	// Once the listener has read a notification, a signal no longer
	// interrupts the caller's wait (Linux 5.19): else a caller under a
	// stream of signals (the Go runtime's preemption ones among them)
	// withdraws its notification and sends it again.
	fd, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, uintptr(unsafe.Pointer(&prog)))
	if e == unix.EINVAL {
		fd, _, e = unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER,
			uintptr(unsafe.Pointer(&prog)))
	}
	runtime.KeepAlive(b)
	if e != 0 {
		return -1, fmt.Errorf("seccomp: installing the network filter with a listener: %w", e)
	}
	return int(fd), nil
}

// ReceiveListener reads one descriptor sent with SCM_RIGHTS on the unix
// socket s (a process under the filter handing its listener over) and
// takes it as a Listener (see NewListener). It waits until timeout.
func ReceiveListener(s *os.File, timeout time.Duration) (*Listener, error) {
	c, err := net.FileConn(s)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(timeout))
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.(*net.UnixConn).ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return nil, fmt.Errorf("seccomp: receiving the listener: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("seccomp: no listener came")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, errors.New("seccomp: no listener came")
	}
	return NewListener(os.NewFile(uintptr(fds[0]), "listener"))
}

// ErrGone is returned by Next once no process is left under the filter.
var ErrGone = errors.New("seccomp: no process is left under the filter")

// Next waits for the next notification. It returns ErrGone when the
// filter has no process left, and an error wrapping os.ErrClosed once
// Close was called.
func (l *Listener) Next() (Notif, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return Notif{}, err
	}
	var (
		n    notif
		got  bool
		ierr error
	)
	err = rc.Read(func(fd uintptr) bool {
		// The receive ioctl blocks whatever the descriptor's flags, so
		// it is made only once poll says a notification waits.
		for {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for try := 0; ; try++ {
				pfd[0].Revents = 0
				_, err := unix.Poll(pfd, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					ierr = fmt.Errorf("seccomp: poll: %w", err)
					return true
				}
				// Older kernels say POLLERR alone when a signal interrupted
				// their wait for the filter's lock: ask again.
				if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP) != unix.POLLERR || try == 100 {
					break
				}
			}
			switch {
			case pfd[0].Revents&unix.POLLIN != 0:
			case pfd[0].Revents&unix.POLLHUP != 0:
				ierr = ErrGone
				return true
			case pfd[0].Revents&unix.POLLERR != 0:
				ierr = errors.New("seccomp: the listener says POLLERR")
				return true
			default:
				return false
			}
			// The ioctl blocks until a notification is there, whatever poll
			// said: another holder of the listener (one a hostile process
			// kept a copy of) may take it first. So the thread is
			// interrupted if it waits (SIGURG, the Go runtime's preemption
			// signal, harmless to it if it has gone on meanwhile), and the
			// call fails with EINTR.
			n = notif{}
			l.recv.Store(int32(unix.Gettid()))
			t := time.AfterFunc(recvStall, func() {
				if tid := l.recv.Load(); tid != 0 {
					unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
				}
			})
			_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n)))
			l.recv.Store(0)
			t.Stop()
			switch e {
			case 0:
				got = true
				return true
			case unix.ENOENT, unix.EINTR:
				// The caller was killed between poll and receive, or
				// another holder took the notification: poll again.
				if l.closed.Load() {
					ierr = fmt.Errorf("seccomp: listener: %w", os.ErrClosed)
					return true
				}
			default:
				ierr = fmt.Errorf("seccomp: receiving a notification: %w", e)
				return true
			}
		}
	})
	if err != nil {
		if l.closed.Load() {
			// The poller's own "use of closed file" is not os.ErrClosed.
			return Notif{}, fmt.Errorf("seccomp: listener: %w", os.ErrClosed)
		}
		return Notif{}, err
	}
	if !got {
		return Notif{}, ierr
	}
	return Notif{ID: n.id, Pid: int(n.pid), Nr: n.nr, Args: n.args}, nil
}

// Valid reports whether notification id still waits for its answer: a
// lookup by its pid made after Next is about that caller only if id is
// still valid after it (the pid could have been reused otherwise).
func (l *Listener) Valid(id uint64) bool {
	return l.ioctl(notifIDValid, unsafe.Pointer(&id)) == nil
}

// Continue lets the call of notification id go on as if the filter had
// allowed it (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Nothing is decided by
// it that the caller could change meanwhile: it is for calls that are
// allowed anyway, whose notification only says that they happen.
func (l *Listener) Continue(id uint64) error {
	r := notifResp{id: id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
	err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	if errors.Is(err, unix.ENOENT) {
		return nil // the caller is gone
	}
	return err
}

// Fail makes the call of notification id fail with errno e.
func (l *Listener) Fail(id uint64, e unix.Errno) error {
	r := notifResp{id: id, error: -int32(e)}
	err := l.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&r))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

func (l *Listener) ioctl(req uintptr, arg unsafe.Pointer) error {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var e unix.Errno
	if err := rc.Control(func(fd uintptr) {
		// Older kernels take the filter's lock interruptibly.
		for {
			_, _, e = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
			if e != unix.EINTR {
				return
			}
		}
	}); err != nil {
		if l.closed.Load() {
			return fmt.Errorf("seccomp: listener: %w", os.ErrClosed)
		}
		return err
	}
	if e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	return nil
}

// Close ends a Next in progress (with os.ErrClosed) and closes the
// listener: the calls of processes under the filter fail with ENOSYS
// from then on.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}
