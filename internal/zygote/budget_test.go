package zygote

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
)

// heldProcess is a Process standing for a zygote that holds mb MB: a
// real python3 in a real cgroup of cm, which writes mb MB and sleeps, so
// that the manager's memory figures are the kernel's. The process and
// its group go when the manager releases it (Destroy by pidfd, then the
// group's Delete), or at the test's end.
func heldProcess(t *testing.T, cm *cgroup.Manager, name string, mb int) *Process {
	t.Helper()
	g, err := cm.Create(name, cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Delete(context.Background()) })
	// The child waits for a byte on its stdin before it writes, so that
	// it is in the group by then and its memory charged there.
	cmd := exec.Command("python3", "-c", fmt.Sprintf(
		"import sys, time\nsys.stdin.read(1)\nb = bytearray(%d << 20)\nb[::4096] = b'\\x01' * (len(b) // 4096)\nprint('held', flush=True)\ntime.sleep(600)\n", mb))
	// Gone with the test binary, should it die before its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("python3 to hold memory: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	in.Write([]byte("x"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "held\n" {
		t.Fatalf("%s: python3 did not hold its memory: %q %v", name, buf, err)
	}
	p := &Process{pid: cmd.Process.Pid, pidfd: os.NewFile(uintptr(fd), "pidfd"), group: g, dead: make(chan struct{})}
	go func() {
		<-exited
		p.pidMu.Lock()
		p.pidfd.Close()
		p.pidfd = nil
		p.pidMu.Unlock()
		close(p.dead)
	}()
	return p
}

// TestMemoryBudgetRealZygotes checks the zygotes' memory budget against
// the memory real processes are charged in real cgroups: a planted node
// no call has used is evicted first when the zygotes are over budget,
// then the least recently used; eviction stops once they are within it
// and kills the evicted node's process; and a deployed set is planted
// only while the zygotes' memory plus one mean zygote's fits the budget.
func TestMemoryBudgetRealZygotes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	cm, err := cgroup.NewManager(fmt.Sprintf("hearth-test-%d-zbudget", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close(context.Background()) })

	m := testManager(Config{MaxZygotes: 100})
	defer m.bg.Wait()
	defer m.cancel()
	now := time.Now()
	// Nodes made by hand, each with a held process as its zygote: no
	// build runs (the root has no zygote here, so planted ones fail).
	add := func(key string, mb int, deployed bool, hits int64, lastUse time.Time) *Process {
		t.Helper()
		p := heldProcess(t, cm, strings.TrimSuffix(key, "==1"), mb)
		m.mu.Lock()
		defer m.mu.Unlock()
		n := &Node{Packages: []string{key}, Parent: m.root, replicas: []*Process{p},
			deployed: deployed, hits: hits, lastUse: lastUse}
		m.root.Children = append(m.root.Children, n)
		m.nodes[key] = n
		m.procs++
		return p
	}
	// Oldest first: b, then the planted a (never called), then c.
	pb := add("b==1", 24, false, 5, now.Add(-3*time.Minute))
	pa := add("a==1", 24, true, 0, now.Add(-2*time.Minute))
	add("c==1", 24, false, 5, now.Add(-time.Minute))

	m.mu.Lock()
	total, mean := m.memoryStatsLocked()
	m.mu.Unlock()
	if mean < 20<<20 || total < 3*(20<<20) {
		t.Fatalf("zygotes' memory: total %d, mean %d: the held processes' 24 MB are not charged", total, mean)
	}

	// Over budget by less than a node: one goes, the unused planted one,
	// though b was used less recently.
	m.cfg.MemoryBudget = total - mean/2
	m.evict(now)
	if got, want := keys(m.nodes), []string{"", "b==1", "c==1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("over budget by half a node: nodes %v, want %v (the unused planted a==1 first)", got, want)
	}
	select {
	case <-pa.Dead():
	case <-time.After(10 * time.Second):
		t.Fatal("the evicted node's process still runs")
	}

	// Over budget again: now the least recently used.
	m.cfg.MemoryBudget -= mean
	m.evict(now)
	if got, want := keys(m.nodes), []string{"", "c==1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("over budget by another node: nodes %v, want %v (b==1, least recently used)", got, want)
	}
	select {
	case <-pb.Dead():
	case <-time.After(10 * time.Second):
		t.Fatal("the evicted node's process still runs")
	}

	// Planting: refused while one more mean zygote does not fit ...
	m.mu.Lock()
	total, mean = m.memoryStatsLocked()
	m.mu.Unlock()
	m.cfg.MemoryBudget = total + mean/2
	m.Deployed(map[string][]string{"f": {"d==1"}})
	m.mu.Lock()
	_, ok := m.nodes["d==1"]
	m.mu.Unlock()
	if ok {
		t.Fatalf("planted d==1 with %d bytes of zygotes, a mean of %d and a budget of %d", total, mean, m.cfg.MemoryBudget)
	}
	// ... and done once it does.
	m.cfg.MemoryBudget = total + mean + mean/2
	m.Deployed(map[string][]string{"f": {"d==1"}, "g": {"e==1"}})
	m.mu.Lock()
	got := keys(m.nodes)
	m.mu.Unlock()
	if want := []string{"", "c==1", "d==1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("budget for one more mean zygote and a half: nodes %v, want %v (one of two sets planted)", got, want)
	}
}
