package bench

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoadRunsNicedAndStops: the background loops run at nice 10 and burn
// CPU, and Stop leaves none behind.
func TestLoadRunsNicedAndStops(t *testing.T) {
	l, err := StartLoad(2)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	if len(l.cmds) != 2 {
		t.Fatalf("%d processes, want 2", len(l.cmds))
	}
	var pids []int
	for _, c := range l.cmds {
		pid := c.Process.Pid
		pids = append(pids, pid)
		// getpriority's raw value is 20 - nice.
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, pid)
		if err != nil {
			t.Fatal(err)
		}
		if nice := 20 - prio; nice != backgroundNice {
			t.Errorf("pid %d at nice %d, want %d", pid, nice, backgroundNice)
		}
	}
	// Each spends CPU: even on a busy machine, some within seconds.
	deadline := time.Now().Add(20 * time.Second)
	for _, pid := range pids {
		for {
			p, err := readProc(pid)
			if err != nil {
				t.Fatal(err)
			}
			if p.self > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d used no CPU", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	l.Stop()
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("pid %d still there after Stop: %v", pid, err)
		}
	}
}
