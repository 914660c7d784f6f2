package zygote

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
)

// TestChildOf: the pidfd a zygote replies with is taken only if it is a
// pidfd, of a live process, whose parent is that zygote; the pid comes
// from the pidfd, through PIDFD_GET_INFO where the kernel has it, and
// the same answers come from /proc where it has not.
func TestChildOf(t *testing.T) {
	pidfdOf := func(pid int) *os.File {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "pidfd")
	}
	cmd := exec.Command("/bin/sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid

	f := pidfdOf(pid)
	_, _, viaIoctl := pidInfo(int(f.Fd()))
	t.Logf("PIDFD_GET_INFO used: %v", viaIoctl)
	c, err := childOf([]*os.File{f}, os.Getpid())
	if err != nil || c.Pid != pid {
		t.Fatalf("childOf a child: %+v, %v; want pid %d", c, err, pid)
	}
	c.PidFD.Close()
	// The fallback through /proc gives the same answers.
	f = pidfdOf(pid)
	if got, err := pidOf(f); err != nil || got != pid {
		t.Errorf("pidOf = %d, %v; want %d", got, err, pid)
	}
	if err := (Child{Pid: pid, PidFD: f}).parentIs(os.Getpid()); err != nil {
		t.Errorf("parentIs(the test) = %v", err)
	}
	f.Close()

	// Of another parent (the test's own parent is not this child's).
	if _, err := childOf([]*os.File{pidfdOf(pid)}, os.Getppid()); err == nil || !strings.Contains(err.Error(), "its parent is") {
		t.Errorf("childOf with the wrong parent = %v, want refused", err)
	}
	// Not a pidfd at all.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := childOf([]*os.File{r}, os.Getpid()); err == nil {
		t.Errorf("childOf a pipe: accepted")
	}
	// A pidfd of one thread (PIDFD_THREAD), of a child that has two: it
	// would poll readable when that thread exits.
	py := exec.Command("/usr/bin/python3", "-S", "-c",
		"import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); print(flush=True); time.sleep(60)")
	out, err := py.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { py.Process.Kill(); py.Wait() }()
	if _, err := out.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the threaded child did not start: %v", err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", py.Process.Pid))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threaded child has tasks %v (%v), want 2", tasks, err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		fd, err := unix.PidfdOpen(tid, unix.O_EXCL) // PIDFD_THREAD
		if err != nil {
			t.Skipf("host limit: no thread pidfds (PIDFD_THREAD, Linux 6.9): %v", err)
		}
		if c, err := childOf([]*os.File{os.NewFile(uintptr(fd), "pidfd")}, os.Getpid()); err == nil {
			t.Errorf("childOf a thread's pidfd (tid %d): accepted as %+v", tid, c)
		}
	}
	// A pidfd of a process that has exited and been reaped.
	gone := exec.Command("/bin/true")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	g := pidfdOf(gone.Process.Pid)
	gone.Wait()
	if _, err := childOf([]*os.File{g}, os.Getpid()); err == nil {
		t.Errorf("childOf a reaped process: accepted")
	}
}

// TestJoinHoldsTheZygoteStill: a child is moved while its zygote's group
// is frozen, after a check through its pidfd: one reaped already (its pid
// another's now) is refused and nothing is moved, so that other process
// is neither moved nor killed with the group; so is one outside the
// zygote's group; a live one in it is moved, and both groups are left
// thawed; a zygote without a group is refused.
func TestJoinHoldsTheZygoteStill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	cm, err := cgroup.NewManager(fmt.Sprintf("hearth-test-%d-zjoin", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer cm.Close(ctx)
	mk := func(name string) *cgroup.Group {
		g, err := cm.Create(name, cgroup.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	type proc struct {
		pid  int
		done chan struct{} // closed once it has exited (and err is set)
		err  *error
	}
	run := func(args ...string) proc {
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := proc{cmd.Process.Pid, make(chan struct{}), new(error)}
		go func() { *p.err = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-p.done })
		return p
	}
	zg := mk("zygote")
	z := &Process{pid: 1, group: zg}

	// A pidfd of a process reaped already, and a live process given as
	// its pid (as if that pid had been taken since).
	gone := exec.Command("/bin/true")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(gone.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	gone.Wait()
	other := run("/bin/sleep", "60")
	// In the zygote's group, as the zygote's own fork that took the pid
	// would be: only the pidfd tells them apart.
	za := &Process{pid: 1, group: mk("zygote-a")}
	if err := za.group.Add(other.pid); err != nil {
		t.Fatal(err)
	}
	g := mk("reaped")
	c := Child{Pid: other.pid, PidFD: os.NewFile(uintptr(fd), "pidfd")}
	if err := c.join(g, za, true); err == nil {
		t.Errorf("join of a reaped child: accepted")
	}
	c.PidFD.Close()
	if p, err := g.Pids(); err != nil || len(p) != 0 {
		t.Errorf("group holds %v (%v) after a refused join, want nothing", p, err)
	}
	if p, _ := za.group.Pids(); len(p) != 1 || p[0] != other.pid {
		t.Errorf("the zygote's group holds %v, want [%d] still", p, other.pid)
	}
	if err := g.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-other.done:
		t.Errorf("the other process ended: %v", *other.err)
	case <-time.After(50 * time.Millisecond):
	}

	// A live child of the zygote's that is not in its group (one in a
	// sandbox's already, say): not held still by the freeze, and not the
	// zygote's to hand over.
	away := run("/bin/sleep", "60")
	afd, err := unix.PidfdOpen(away.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	ac := Child{Pid: away.pid, PidFD: os.NewFile(uintptr(afd), "pidfd")}
	g = mk("away")
	if err := ac.join(g, z, false); err == nil || !strings.Contains(err.Error(), "not in zygote") {
		t.Errorf("join of a child outside the zygote's group = %v, want refused", err)
	}
	ac.PidFD.Close()
	if p, _ := g.Pids(); len(p) != 0 {
		t.Errorf("group holds %v after a refused join, want nothing", p)
	}

	// A live child, in its zygote's group as a fork is.
	live := run("/bin/sleep", "60")
	if err := zg.Add(live.pid); err != nil {
		t.Fatal(err)
	}
	lfd, err := unix.PidfdOpen(live.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	lc := Child{Pid: live.pid, PidFD: os.NewFile(uintptr(lfd), "pidfd")}
	defer lc.PidFD.Close()
	g = mk("live")
	if err := lc.join(g, z, true); err != nil {
		t.Fatalf("join of a live child: %v", err)
	}
	if p, _ := g.Pids(); len(p) != 1 || p[0] != live.pid {
		t.Errorf("group holds %v, want [%d]", p, live.pid)
	}
	if p, _ := zg.Pids(); len(p) != 0 {
		t.Errorf("the zygote's group still holds %v", p)
	}
	for _, x := range []*cgroup.Group{zg, g} {
		for _, d := range x.Dirs() {
			if b, err := os.ReadFile(d + "/freezer.state"); err == nil && string(b) != "THAWED\n" {
				t.Errorf("%s/freezer.state = %q after a join, want THAWED", d, b)
			}
			if b, err := os.ReadFile(d + "/cgroup.freeze"); err == nil && string(b) != "0\n" {
				t.Errorf("%s/cgroup.freeze = %q after a join, want 0", d, b)
			}
		}
	}

	if err := lc.join(g, &Process{pid: 1}, false); err == nil {
		t.Errorf("join with a zygote without a group: accepted")
	}
}
