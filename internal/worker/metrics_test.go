package worker

import (
	"os"
	"testing"
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
