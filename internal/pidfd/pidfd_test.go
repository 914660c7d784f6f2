package pidfd

import (
	"context"
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
