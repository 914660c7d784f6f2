package worker

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestSchedstatOf reads a live process's run and wait times (the test's
// own main thread has run) and says no for a pid that is not there.
func TestSchedstatOf(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skipf("host limit: no /proc/PID/schedstat (CONFIG_SCHED_INFO): %v", err)
	}
	s, ok := schedstatOf(os.Getpid())
	if !ok || s.cpu <= 0 || s.wait < 0 {
		t.Errorf("schedstatOf(self) = %+v, %v; want some CPU", s, ok)
	}
	if s, ok := schedstatOf(1 << 30); ok {
		t.Errorf("schedstatOf(no such pid) = %+v, true", s)
	}
}

// TestNoteStartLoadCPU checks that a start's CPU is at least what its
// runtime measured of its import: the kernel's schedstat lags a process
// that runs on (here a sleeping one, which has run nothing since).
func TestNoteStartLoadCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skipf("host limit: no /proc/PID/schedstat (CONFIG_SCHED_INFO): %v", err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	started := time.Now()
	time.Sleep(50 * time.Millisecond)
	from, ok := schedstatOf(cmd.Process.Pid)
	if !ok {
		t.Fatal("no schedstat for a live process")
	}
	// The process may still be finishing its start-up: what schedstat
	// shows it ran since from only grows between the two notes.
	m := newMetrics()
	m.noteStart("spare", cmd.Process.Pid, from, 3*time.Millisecond, started)
	m.noteStart("fork", cmd.Process.Pid, from, 0, started)
	spare, fork := counterValue(t, m.startCPU.WithLabelValues("spare")), counterValue(t, m.startCPU.WithLabelValues("fork"))
	if spare < 0.003 || spare > max(fork, 0.003) {
		t.Errorf("start CPU: %v s with the runtime's 3 ms, %v s without; want at least 3 ms, and no more than the larger of 3 ms and what schedstat shows", spare, fork)
	}
}
