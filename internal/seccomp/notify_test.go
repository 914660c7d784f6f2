package seccomp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// netChildEnv makes the test binary a process under NetFilter (see
// TestMain and netChild).
const netChildEnv = "HEARTH_SECCOMP_TEST_NET_CHILD"

// netChild installs NetFilter with a listener on its thread, sends the
// listener on fd 3 (a unix socket), then makes sockets on that thread
// and prints each one's errno: first a unix one, which the filter lets
// be, then an internet and a netlink one, which wait for the answer.
func netChild() int {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "no_new_privs:", err)
		return 2
	}
	l, err := InstallNet()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := unix.Sendmsg(3, []byte("l"), unix.UnixRights(l), nil, 0); err != nil {
		fmt.Fprintln(os.Stderr, "sending the listener:", err)
		return 2
	}
	unix.Close(l)
	if n, _ := strconv.Atoi(os.Getenv(netChildEnv + "_N")); n > 0 {
		for range n {
			fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 0)
			if e != 0 {
				fmt.Println("inet", int(e))
				return 1
			}
			unix.Close(int(fd))
		}
		return 0
	}
	for _, c := range []struct {
		name     string
		family   int
		protocol int
	}{{"unix", unix.AF_UNIX, 0}, {"inet", unix.AF_INET, 0}, {"netlink", unix.AF_NETLINK, unix.NETLINK_ROUTE}} {
		typ := unix.SOCK_DGRAM
		fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(c.family), uintptr(typ), uintptr(c.protocol))
		if e == 0 {
			unix.Close(int(fd))
		}
		fmt.Printf("%s %d\n", c.name, int(e))
	}
	return 0
}

// netProc is the test binary run as netChild, with its listener.
type netProc struct {
	cmd    *exec.Cmd
	out    *strings.Builder
	l      *Listener
	done   chan struct{}
	waited error
}

// startNetChild starts netChild (env added to its environment) and
// receives its listener; the child is killed and waited for at the end.
func startNetChild(t *testing.T, env ...string) *netProc {
	t.Helper()
	ours, theirs, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	p := &netProc{out: &strings.Builder{}, done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(append(os.Environ(), netChildEnv+"=1"), env...)
	p.cmd.ExtraFiles = []*os.File{theirs}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	go func() {
		p.waited = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if p.l != nil {
			p.l.Close()
		}
	})
	if p.l, err = ReceiveListener(ours, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return p
}

// wait waits for the child to exit and returns how.
func (p *netProc) wait() error {
	<-p.done
	return p.waited
}

// TestListener: a process under NetFilter stops in socket(2) of AF_INET
// and AF_NETLINK, not of AF_UNIX; each call waits for its answer, and
// then succeeds (Continue) or fails with the errno given (Fail); Next
// says ErrGone once the process is gone.
func TestListener(t *testing.T) {
	p := startNetChild(t)
	l, out, cmd := p.l, p.out, p.cmd
	for _, want := range []uint64{unix.AF_INET, unix.AF_NETLINK} {
		n, err := l.Next()
		if err != nil {
			t.Fatalf("waiting for the socket(%d) notification: %v (child: %s)", want, err, out.String())
		}
		// The child is a Go program: any of its threads may make the
		// call, and the notification names the thread.
		if n.Nr != unix.SYS_SOCKET || n.Args[0] != want || threadGroup(n.Pid) != cmd.Process.Pid {
			t.Fatalf("notification %+v, want socket(%d, ...) of pid %d", n, want, cmd.Process.Pid)
		}
		if !l.Valid(n.ID) {
			t.Errorf("notification %d not valid while its caller waits", n.ID)
		}
		// The caller waits for the answer.
		select {
		case <-p.done:
			t.Fatalf("the child went on without an answer: %v: %s", p.waited, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		answer := l.Continue
		if want == unix.AF_NETLINK {
			answer = func(id uint64) error { return l.Fail(id, unix.EPERM) }
		}
		if err := answer(n.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Next(); !errors.Is(err, ErrGone) {
		t.Errorf("Next after the child ended: %v, want ErrGone", err)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("child: %v: %s", err, out.String())
	}
	if got, want := out.String(), "unix 0\ninet 0\nnetlink 1\n"; got != want {
		t.Errorf("child said %q, want %q", got, want)
	}
}

// TestListenerClose: Close ends a Next that waits.
func TestListenerClose(t *testing.T) {
	l := startNetChild(t).l
	if _, err := l.Next(); err != nil { // the child's internet socket, left waiting
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Next()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Next after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after Close")
	}
}

// TestNewListenerRefuses: a descriptor that is not a seccomp listener
// (what a hostile process could send instead) is refused.
func TestNewListenerRefuses(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := NewListener(r); err == nil {
		t.Error("a pipe was taken for a listener")
	}
}

func socketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs"), nil
}

// TestListenerShared: a second holder of the listener (a copy a hostile
// process kept) takes some of the notifications. Next, which polls and
// then receives, must not stay blocked in the receive when the other
// took the one poll saw: it still sees the filter's last process go
// (ErrGone), and every call gets its answer from one or the other.
func TestListenerShared(t *testing.T) {
	p := startNetChild(t, netChildEnv+"_N=300")
	l, out := p.l, p.out
	var thief int
	rc, err := l.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { thief, err = unix.Dup(int(fd)) })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	stolen := 0
	go func() {
		// Blocking receives on its own copy, as another process would.
		defer wg.Done()
		runtime.LockOSThread()
		for {
			var n notif
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(thief), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n))); e != 0 {
				if e == unix.EINTR || e == unix.ENOENT {
					continue
				}
				return // the filter is gone (or the copy closed)
			}
			stolen++
			r := notifResp{id: n.id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
			unix.Syscall(unix.SYS_IOCTL, uintptr(thief), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&r)))
		}
	}()
	done := make(chan error, 1)
	got := 0
	go func() {
		for {
			n, err := l.Next()
			if err != nil {
				done <- err
				return
			}
			got++
			l.Continue(n.ID)
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrGone) {
			t.Errorf("Next: %v, want ErrGone once the child is gone", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Next still waits 30 s on (it answered %d; the other holder %d; child: %s)", got, stolen, out.String())
	}
	if err := p.wait(); err != nil {
		t.Errorf("child: %v: %s", err, out.String())
	}
	unix.Close(thief)
	t.Logf("answered %d, the other holder %d", got, stolen)
}

// threadGroup returns the process (thread group) of thread tid, or -1.
func threadGroup(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return -1
}
