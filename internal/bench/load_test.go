package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// TestKernelCPU: kernel threads are told from processes by their flags,
// and their CPU grows by what freeing network namespaces costs them
// (cleanup_net runs in a kernel worker, 0.8 ms per namespace with a veth
// on this machine class). Other kernel work on a busy host counts too, so
// the growth check fails only where kernel threads go uncounted.
func TestKernelCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces needs root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("no ip (Debian: iproute2)")
	}
	var ku kernelUse
	read := func() (time.Duration, bool) {
		t.Helper()
		all, err := allProcs()
		if err != nil {
			t.Fatal(err)
		}
		return ku.read(all)
	}
	k0, ok := read()
	if !ok {
		t.Skip("no kernel threads in /proc: a pid namespace of the test's own")
	}
	for id := range ku.seen {
		if id.pid == os.Getpid() || id.pid == 1 {
			t.Errorf("pid %d counted as a kernel thread", id.pid)
		}
	}
	if _, ok := ku.seen[kthread{pid: 2, start: ku.startOf(t, 2)}]; !ok {
		t.Errorf("kthreadd (pid 2) not counted: %d threads", len(ku.seen))
	}
	const n = 20
	for i := range n {
		ns := fmt.Sprintf("hearth-test-kcpu-%d-%d", os.Getpid(), i)
		for _, args := range [][]string{
			{"netns", "add", ns},
			{"-n", ns, "link", "add", "a0", "type", "veth", "peer", "name", "b0"},
			{"-n", ns, "link", "set", "a0", "up"},
			{"netns", "del", ns},
		} {
			if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
				exec.Command(ip, "netns", "del", ns).Run()
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
	}
	// The namespaces are freed asynchronously; wait for the kernel's work.
	var k1 time.Duration
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		k1, _ = read()
		if k1-k0 >= n*200*time.Microsecond {
			break
		}
	}
	t.Logf("kernel threads used %v while %d network namespaces were freed", k1-k0, n)
	if d := k1 - k0; d < n*200*time.Microsecond {
		t.Errorf("kernel threads used %v while %d network namespaces were freed, want at least %v", d, n, n*200*time.Microsecond)
	}
}

// startOf is pid's start time, for a kthread key.
func (*kernelUse) startOf(t *testing.T, pid int) int64 {
	t.Helper()
	p, err := readProc(pid)
	if err != nil {
		t.Fatal(err)
	}
	return p.start
}

// TestCPUUseSub checks that a kind gone between two readings counts its
// loss, so the total stays exact.
func TestCPUUseSub(t *testing.T) {
	before := CPUUse{"worker": 10, "zygote": 5, "exited": 1}
	after := CPUUse{"worker": 12, "exited": 7} // the zygote exited: its 5 moved to exited
	d := after.Sub(before)
	if d["worker"] != 2 || d["exited"] != 6 || d["zygote"] != -5 || d.Total() != after.Total()-before.Total() {
		t.Fatalf("Sub = %v (total %v), want worker 2, exited 6, zygote -5, total %v", d, d.Total(), after.Total()-before.Total())
	}
}
