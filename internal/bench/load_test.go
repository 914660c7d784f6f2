package bench

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoadRunsNicedAndStops: the background loops run at nice 10 and burn
// CPU, and Stop leaves none behind.
func TestLoadRunsNicedAndStops(t *testing.T) {
	l, err := StartLoad(2, false)
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

// TestLoadOwnSession: with own, a loop leads a session of its own, and
// its autogroup is niced as it is.
func TestLoadOwnSession(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Skipf("host limit: no autogroup (%q, %v)", b, err)
	}
	l, err := StartLoad(1, true)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()
	pid := l.cmds[0].Process.Pid
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("session %d (%v), want its own, %d", sid, err, pid)
	}
	ag, err := os.ReadFile(fmt.Sprintf("/proc/%d/autogroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("nice %d", backgroundNice); !strings.HasSuffix(strings.TrimSpace(string(ag)), want) {
		t.Errorf("autogroup %q, want %q", ag, want)
	}
	mine, _ := os.ReadFile("/proc/self/autogroup")
	if string(mine) == string(ag) {
		t.Errorf("the loop shares the test's autogroup %q", mine)
	}
}
