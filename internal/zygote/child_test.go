package zygote

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
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

// TestJoinChecksThePidfd: a child reaped by its zygote before the worker
// moves it, its pid already another's, is refused, and what the move took
// into the group is moved out again, not killed with it: into the
// zygote's group if it is of the zygote's pid namespace (here, the test's
// own), else to the root groups; a thread's id moves its whole process
// out. A live child joins.
func TestJoinChecksThePidfd(t *testing.T) {
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
	home := mk("zygote")
	self, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := pidNS(self, os.Getpid())
	unix.Close(self)
	if err != nil || ns == 0 {
		t.Fatalf("pidNS(self) = %d, %v", ns, err)
	}
	// A pidfd of a process reaped already.
	reaped := func() *os.File {
		gone := exec.Command("/bin/true")
		if err := gone.Start(); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.PidfdOpen(gone.Process.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		gone.Wait()
		return os.NewFile(uintptr(fd), "pidfd")
	}
	type proc struct {
		pid  int
		done chan struct{} // closed once it has exited (and err is set)
		err  *error
	}
	run := func(args ...string) (proc, *os.File) {
		cmd := exec.Command(args[0], args[1:]...)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout = w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		p := proc{cmd.Process.Pid, make(chan struct{}), new(error)}
		go func() { *p.err = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-p.done; r.Close() })
		return p, r
	}
	inGroup := func(g *cgroup.Group, pid int) bool {
		p, _ := g.Pids()
		return slices.Contains(p, pid)
	}

	threaded, out := run("/usr/bin/python3", "-S", "-c",
		"import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); print(flush=True); time.sleep(60)")
	out.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := out.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the threaded process did not start: %v", err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", threaded.pid))
	if err != nil || len(tasks) != 2 {
		t.Fatalf("threaded process has tasks %v (%v), want 2", tasks, err)
	}
	tid := threaded.pid
	for _, e := range tasks {
		if n, _ := strconv.Atoi(e.Name()); n != threaded.pid {
			tid = n
		}
	}
	a, _ := run("/bin/sleep", "60")
	b, _ := run("/bin/sleep", "60")
	for _, c := range []struct {
		name   string
		p      proc
		id     int
		z      *Process
		toHome bool
	}{
		{"of the zygote's pid namespace", a, a.pid, &Process{group: home, ns: ns}, true},
		{"of another pid namespace", b, b.pid, &Process{group: home, ns: ns + 1}, false},
		{"a thread's id", threaded, tid, &Process{group: home, ns: ns}, true},
	} {
		g := mk("join-" + strconv.Itoa(c.p.pid))
		ch := Child{Pid: c.id, PidFD: reaped()}
		err := ch.join(g, c.z)
		ch.PidFD.Close()
		if err == nil {
			t.Errorf("%s: join of a reaped child's pid: accepted", c.name)
		}
		if p, err := g.Pids(); err != nil || len(p) != 0 {
			t.Errorf("%s: group holds %v (%v) after a refused join, want nothing", c.name, p, err)
		}
		if got := inGroup(home, c.p.pid); got != c.toHome {
			t.Errorf("%s: in the zygote's group: %v, want %v", c.name, got, c.toHome)
		}
		if err := g.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.p.done:
			t.Errorf("%s: the process moved out ended: %v", c.name, *c.p.err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// A live child joins.
	live, _ := run("/bin/sleep", "60")
	lfd, err := unix.PidfdOpen(live.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	lc := Child{Pid: live.pid, PidFD: os.NewFile(uintptr(lfd), "pidfd")}
	defer lc.PidFD.Close()
	g := mk("live")
	if err := lc.join(g, &Process{group: home, ns: ns}); err != nil {
		t.Fatalf("join of a live child: %v", err)
	}
	if p, _ := g.Pids(); len(p) != 1 || p[0] != live.pid {
		t.Errorf("group holds %v, want [%d]", p, live.pid)
	}
}
