package pidfd

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// keepsExit skips unless the kernel keeps a reaped process's exit status
// for a pidfd's holder (PIDFD_INFO_EXIT, Linux 6.15).
func keepsExit(t *testing.T) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd.Wait()
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
	if err := unix.IoctlPidfdInfo(fd, &info); err != nil || info.Mask&unix.PIDFD_INFO_EXIT == 0 {
		t.Skipf("host limit: the kernel keeps no exit status for a pidfd (PIDFD_INFO_EXIT, Linux 6.15): %v", err)
	}
}

// TestExitWhileReaped reads the status of processes that die while their
// parent (here the test) reaps them concurrently, once with Exit and once
// by reading in a tight loop: the kernel answers ESRCH for a moment in
// the reap, which is not the end of the story.
func TestExitWhileReaped(t *testing.T) {
	keepsExit(t)
	reapings := 0
	for i := range 400 {
		script, want := "kill -ABRT $$", unix.SIGABRT
		if i%2 == 1 {
			script, want = "kill -SEGV $$", unix.SIGSEGV
		}
		cmd := exec.Command("/bin/sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		var ws unix.WaitStatus
		ok := false
		if i < 100 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			ws, ok = Exit(ctx, fd)
			cancel()
		} else {
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
				var st state
				ws, st = read(fd)
				if st == reaping {
					reapings++
				}
				if ok = st == ended; ok || st == unsupported {
					break
				}
			}
		}
		unix.Close(fd)
		if !ok || !ws.Signaled() || ws.Signal() != want {
			t.Fatalf("run %d (%s): status %v ok %v, want killed by %v", i, script, ws, ok, want)
		}
	}
	t.Logf("ESRCH answered in the reap %d times", reapings)
}

// TestExitStatus: an exit code; a process that outlives ctx is unknown
// in bounded time; one reaped late is waited for.
func TestExitStatus(t *testing.T) {
	keepsExit(t)
	cmd := exec.Command("/bin/sh", "-c", "sleep 0.1; exit 3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, _ := unix.PidfdOpen(cmd.Process.Pid, 0)
	go cmd.Wait()
	if ws, ok := Exit(context.Background(), fd); !ok || ws.Signaled() || ws.ExitStatus() != 3 {
		t.Errorf("exit 3: %v %v", ws, ok)
	}
	unix.Close(fd)

	live := exec.Command("/bin/sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	fd, _ = unix.PidfdOpen(live.Process.Pid, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if _, ok := Exit(ctx, fd); ok {
		t.Errorf("live process: ok, want unknown")
	}
	cancel()

	// Killed and reaped late: its parent is slow, the status comes.
	live.Process.Kill()
	time.AfterFunc(300*time.Millisecond, func() { live.Wait() })
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ws, ok := Exit(ctx, fd); !ok || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Errorf("reaped late: %v %v, want killed by SIGKILL", ws, ok)
	}
	unix.Close(fd)
}

// TestWaitHoldsNoThread: 40 goroutines wait with Wait on 40 live
// processes, and the test process gains far fewer than 40 threads (a
// blocking poll(2) holds one each); each Wait returns once its process
// is killed, and not before; one bounded by a deadline returns
// context.DeadlineExceeded while its process lives.
func TestWaitHoldsNoThread(t *testing.T) {
	const n = 40
	threads := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	var cmds []*exec.Cmd
	var fds []int
	t.Cleanup(func() {
		for i, c := range cmds {
			c.Process.Kill()
			c.Wait()
			unix.Close(fds[i])
		}
	})
	for range n {
		c := exec.Command("/bin/sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.PidfdOpen(c.Process.Pid, 0)
		if err != nil {
			c.Process.Kill()
			c.Wait()
			t.Fatal(err)
		}
		cmds, fds = append(cmds, c), append(fds, fd)
	}
	before := threads()
	done := make(chan int, n)
	for i, fd := range fds {
		go func() {
			if err := Wait(context.Background(), fd); err != nil {
				t.Errorf("Wait %d: %v", i, err)
			}
			done <- i
		}()
	}
	time.Sleep(200 * time.Millisecond)
	if len(done) > 0 {
		t.Fatalf("%d waits returned while their processes live", len(done))
	}
	grew := threads() - before
	t.Logf("%d waits added %d threads", n, grew)
	if grew >= n/2 {
		t.Errorf("%d goroutines waiting on pidfds added %d threads, want far fewer", n, grew)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	flags, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Wait(ctx, fds[0]); err != context.DeadlineExceeded {
		t.Errorf("Wait past its deadline = %v, want context.DeadlineExceeded", err)
	}
	// The caller's pidfd is as it was: no flag of its open file changed
	// (O_NONBLOCK would make a waitid(P_PIDFD) on it fail with EAGAIN).
	if after, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFL, 0); err != nil || after != flags {
		t.Errorf("pidfd flags %#x after Wait, %#x before (%v)", after, flags, err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); ccancel() }()
	if err := Wait(cctx, fds[1]); err != context.Canceled {
		t.Errorf("Wait cancelled = %v, want context.Canceled", err)
	}
	for _, c := range cmds {
		c.Process.Kill()
	}
	for range n {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("waits still blocked 5 s after their processes were killed")
		}
	}
}
