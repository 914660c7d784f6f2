package worker

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
)

func TestComeWeights(t *testing.T) {
	for n, want := range map[int][]uint64{
		0: {},
		1: {100}, // alone: a sandbox's own
		2: {133, 67},
		3: {171, 86, 43},
		6: {300, 150, 75, 38, 19, 19},
	} {
		got := comeWeights(n)
		if !slices.Equal(got, want) {
			t.Errorf("comeWeights(%d) = %v, want %v", n, got, want)
		}
		var sum uint64
		for _, w := range got {
			sum += w
		}
		if d := int(sum) - 100*n; d < -n || d > n {
			t.Errorf("comeWeights(%d) adds up to %d, want %d (give or take rounding)", n, sum, 100*n)
		}
	}
	// Many calls: the earliest still leads, none below 1.
	w := comeWeights(1000)
	if w[0] <= w[1] || w[999] < 1 {
		t.Errorf("comeWeights(1000): first %d, second %d, last %d", w[0], w[1], w[999])
	}
}

// TestFirstCome drives the bookkeeping on a fake clock: the running
// calls are weighed by their order of arrival as calls start and end, a
// call alone keeps a sandbox's weight, one past comeHold leaves the
// order, and no weight is written that is already set.
func TestFirstCome(t *testing.T) {
	now := time.Unix(1000, 0)
	var writes []uint64
	fc := newFirstCome(func(inst *instance, w uint64) {
		inst.weight = w
		writes = append(writes, w)
	})
	fc.now = func() time.Time { return now }
	fc.cpu = func(*instance) (time.Duration, bool) { return 0, true }
	weights := func(insts ...*instance) []uint64 {
		var w []uint64
		for _, i := range insts {
			w = append(w, cmp.Or(i.weight, sandboxWeight))
		}
		return w
	}
	same := func(a, b []uint64) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}

	a, b, c := &instance{id: "a"}, &instance{id: "b"}, &instance{id: "c"}
	fc.add(a, now.Add(-100*time.Millisecond))
	if len(writes) != 0 {
		t.Fatalf("a call alone wrote %v", writes)
	}
	// c arrived after b but starts running first (b's start took longer).
	fc.add(c, now.Add(-20*time.Millisecond))
	fc.add(b, now.Add(-50*time.Millisecond))
	if got := weights(a, b, c); !same(got, []uint64{171, 86, 43}) {
		t.Fatalf("three calls: weights %v, want 171 86 43 by arrival", got)
	}
	n := len(writes)
	fc.update()
	if len(writes) != n {
		t.Fatalf("an update with nothing changed wrote %v", writes[n:])
	}
	fc.done(a) // the others move up
	if got := weights(a, b, c); !same(got, []uint64{100, 133, 67}) {
		t.Fatalf("a done: weights %v, want 100 133 67", got)
	}
	n = len(writes)
	fc.done(a) // twice: as the deferred one does after the call's own
	if len(writes) != n {
		t.Fatalf("a second done wrote %v", writes[n:])
	}
	now = now.Add(comeHold - 30*time.Millisecond) // b past comeHold, c not
	fc.update()
	if got := weights(b, c); !same(got, []uint64{100, 100}) {
		t.Fatalf("b past its hold, c alone in the order: weights %v, want 100 100", got)
	}
	d := &instance{id: "d"}
	fc.add(d, now)
	if got := weights(b, c, d); !same(got, []uint64{100, 133, 67}) {
		t.Fatalf("d after c, b out of the order: weights %v, want 100 133 67", got)
	}
	fc.done(b)
	fc.done(c)
	fc.done(d)
	if got := weights(b, c, d); !same(got, []uint64{100, 100, 100}) {
		t.Fatalf("all done: weights %v", got)
	}
	n = len(writes)
	fc.update()
	if len(writes) != n {
		t.Fatalf("an update with no call running wrote %v", writes[n:])
	}

	// Stopped (the worker closing): nothing is written any more.
	e, f := &instance{id: "e"}, &instance{id: "f"}
	fc.add(e, now)
	fc.add(f, now)
	fc.stop()
	n = len(writes)
	fc.add(&instance{id: "g"}, now)
	fc.update()
	fc.done(e)
	if len(writes) != n {
		t.Fatalf("writes after stop: %v", writes[n:])
	}
}

// TestFirstComeRun: the loop wakes for calls added to an empty set, lets
// a call go past comeHold with real time, and ends with its context.
func TestFirstComeRun(t *testing.T) {
	var mu sync.Mutex
	fc := newFirstCome(func(inst *instance, w uint64) {
		mu.Lock()
		inst.weight = w
		mu.Unlock()
	})
	fc.cpu = func(*instance) (time.Duration, bool) { return 0, true }
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		fc.run(ctx)
		close(ended)
	}()
	time.Sleep(3 * comeTick) // idle: the loop waits for a call
	old, young := &instance{id: "old"}, &instance{id: "young"}
	fc.add(old, time.Now().Add(-comeHold+time.Second))
	fc.add(young, time.Now())
	weight := func(i *instance) uint64 {
		mu.Lock()
		defer mu.Unlock()
		return i.weight
	}
	if w := comeWeights(2)[0]; weight(old) != w {
		t.Fatalf("the older call: weight %d, want %d", weight(old), w)
	}
	deadline := time.Now().Add(10 * time.Second)
	for weight(old) != sandboxWeight {
		if time.Now().After(deadline) {
			t.Fatalf("weight %d 10 s after the call passed its hold, want %d", weight(old), sandboxWeight)
		}
		time.Sleep(comeTick)
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not end with its context")
	}
}

// TestFirstComeHeavy: a young call that has used comeCPU of CPU since
// its first reading goes to the end of the order, behind later calls;
// CPU used before the first reading does not count.
func TestFirstComeHeavy(t *testing.T) {
	now := time.Unix(1000, 0)
	used := map[*instance]time.Duration{}
	fc := newFirstCome(func(inst *instance, w uint64) { inst.weight = w })
	fc.now = func() time.Time { return now }
	fc.cpu = func(inst *instance) (time.Duration, bool) { return used[inst], true }

	a, b, c := &instance{id: "a"}, &instance{id: "b"}, &instance{id: "c"}
	used[a] = 5 * time.Second // a warm sandbox's earlier calls
	fc.add(a, now)
	fc.add(b, now.Add(10*time.Millisecond))
	fc.add(c, now.Add(20*time.Millisecond))
	fc.update() // first readings
	if a.weight != 171 {
		t.Fatalf("a, the earliest, with CPU from earlier calls only: weight %d, want 171", a.weight)
	}
	used[a] += comeCPU - time.Millisecond
	fc.update()
	if a.weight != 171 {
		t.Fatalf("a just short of comeCPU: weight %d, want 171", a.weight)
	}
	used[a] += time.Millisecond
	fc.update()
	if a.weight != 43 || b.weight != 171 || c.weight != 86 {
		t.Fatalf("a heavy: weights a %d b %d c %d, want 43 171 86 (b, c, then a)", a.weight, b.weight, c.weight)
	}
	used[a] = 0 // it stays heavy for the rest of its call
	fc.update()
	if a.weight != 43 {
		t.Fatalf("a heavy once: weight %d, want 43", a.weight)
	}
	fc.done(a)
	fc.add(a, now.Add(30*time.Millisecond)) // its next call starts afresh
	fc.update()
	if a.weight != 43 || b.weight != 171 {
		t.Fatalf("a's next call, the latest: weights a %d b %d, want 43 171", a.weight, b.weight)
	}
}

// TestSandboxCPU reads a real process's CPU in a real cgroup, and what
// its exited, waited-for child used.
func TestSandboxCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	cm, err := cgroup.NewManager(fmt.Sprintf("hearth-test-%d-cpu", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm.Close(context.Background()) })
	g, err := cm.Create("sb", cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Delete(context.Background()) })
	// The shell waits for a line, has a child spin for 0.3 s of CPU,
	// waits for it, then sleeps.
	cmd := exec.Command("/bin/sh", "-c", "read x; timeout 0.3 sh -c 'while :; do :; done'; echo spun; sleep 600")
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	inst := &instance{id: "sb", group: g}
	before, ok := sandboxCPU(inst)
	if !ok {
		t.Fatal("no CPU read for a live sandbox")
	}
	in.Write([]byte("go\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatal(err)
	}
	after, ok := sandboxCPU(inst)
	// The child ran 0.3 s of wall time; on a busy host less of CPU.
	if !ok || after-before < 50*time.Millisecond || after-before > 2*time.Second {
		t.Errorf("CPU %v, then %v after a child spun for 0.3 s (ok %v)", before, after, ok)
	}
}
