package worker

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExitFromCode(t *testing.T) {
	for _, c := range []struct {
		code int
		want string
	}{
		{-1, "ended (its exit status is unknown)"},
		{0, "exited with status 0"},
		{3, "exited with status 3"},
		{128, "exited with status 128"},
		{137, "was killed by signal 9 (SIGKILL)"},
		{139, "was killed by signal 11 (SIGSEGV)"},
		{255, "exited with status 255"},
	} {
		if got := exitFromCode(c.code).String(); got != c.want {
			t.Errorf("code %d: %q, want %q", c.code, got, c.want)
		}
	}
	if !exitFromCode(137).killed() || exitFromCode(9).killed() || exitFromCode(-1).killed() {
		t.Errorf("killed() wrong")
	}
}

// TestProcExit reads real processes' exit statuses through their pidfds,
// after their parent (here the test) reaped them.
func TestProcExit(t *testing.T) {
	if probe := openProcT(t, unix.Getpid()); probe == nil {
		t.Fatal("pidfd_open on self failed")
	} else {
		defer probe.close()
		info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_EXIT}
		if err := unix.IoctlPidfdInfo(probe.fd, &info); err != nil {
			t.Skipf("host limit: no PIDFD_GET_INFO on this kernel (Linux 6.15 keeps exit statuses): %v", err)
		}
	}
	for _, c := range []struct {
		script, want string
	}{
		{"sleep 0.1; exit 3", "exited with status 3"},
		{"sleep 0.1; kill -SEGV $$", "was killed by signal 11 (SIGSEGV)"},
		{"sleep 0.1; kill -KILL $$", "was killed by signal 9 (SIGKILL)"},
	} {
		cmd := exec.Command("/bin/sh", "-c", c.script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := openProcT(t, cmd.Process.Pid)
		if p == nil {
			t.Fatalf("%s: no pidfd", c.script)
		}
		go cmd.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		e := p.exit(ctx)
		cancel()
		p.close()
		if got := e.String(); got != c.want {
			t.Errorf("%s: %q, want %q", c.script, got, c.want)
		}
	}
	// A process that outlives the wait: unknown, in bounded time.
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	p := openProcT(t, cmd.Process.Pid)
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if e := p.exit(ctx); e.known {
		t.Errorf("live process: %v, want unknown", e)
	}
}

// openProcT watches process pid through a pidfd opened by pid (the test's
// own child, or itself: no reuse), as procOf does through its own.
func openProcT(t *testing.T, pid int) *proc {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	return procOf(f)
}
