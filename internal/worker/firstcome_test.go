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
	"golang.org/x/sys/unix"
)

func TestComeWeights(t *testing.T) {
	for n, want := range map[int][]uint64{
		0: {},
		1: {100}, // alone: a sandbox's own
		2: {133, 67},
		3: {171, 86, 43},
		4: {213, 107, 53, 27},
		6: {293, 147, 73, 37, 25, 25}, // the tail at comeTail
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
	// Any number: by rank, never above comeMax, and never more than the
	// default's sum (exactly it, give or take rounding, until the cap).
	for n := 1; n <= 1000; n++ {
		w := comeWeights(n)
		var sum uint64
		for r, x := range w {
			sum += x
			if x > comeMax || x < 1 || r > 0 && x > w[r-1] {
				t.Fatalf("comeWeights(%d): weight %d of rank %d (the one before: %v)", n, x, r, w[max(r-1, 0)])
			}
		}
		if d := int(sum) - 100*n; d > n || w[0] < comeMax && d < -n {
			t.Fatalf("comeWeights(%d) adds up to %d, want %d", n, sum, 100*n)
		}
	}
	if w := comeWeights(1000); w[0] != comeMax || w[4] != comeTail || w[999] != comeTail {
		t.Errorf("comeWeights(1000): first %d, fifth %d, last %d", w[0], w[4], w[999])
	}
}

// TestFirstComeBurstWrites counts the weight writes of a burst of 200
// calls that arrive together and end in turn: each start and end
// rewrites the first comeTop's weights and its own, not every young
// call's. (Weighing the tail by 100·n/parts as well wrote 7,335.)
func TestFirstComeBurstWrites(t *testing.T) {
	now := time.Unix(1000, 0)
	writes := 0
	fc := newFirstCome(func(inst *instance, w uint64) {
		inst.weight = w
		writes++
	})
	fc.now = func() time.Time { return now }
	const n = 200
	insts := make([]*instance, n)
	for i := range insts {
		insts[i] = &instance{id: fmt.Sprintf("%03d", i)}
		fc.running(insts[i], now.Add(time.Duration(i)*time.Millisecond-time.Second))
	}
	if w := insts[0].weight; w != comeWeights(n)[0] || insts[n-1].weight != comeTail {
		t.Fatalf("after the burst's starts: first %d, last %d, want %d, %d", w, insts[n-1].weight, comeWeights(n)[0], comeTail)
	}
	for _, inst := range insts {
		fc.done(inst)
	}
	for _, inst := range insts {
		if inst.weight != sandboxWeight {
			t.Fatalf("%s left at weight %d", inst.id, inst.weight)
		}
	}
	if limit := 6 * 2 * n; writes > limit {
		t.Errorf("a burst of %d calls wrote %d weights, want at most %d (6 per start or end)", n, writes, limit)
	}
	t.Logf("a burst of %d calls: %d weight writes", n, writes)
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
	fc.running(a, now.Add(-100*time.Millisecond))
	if len(writes) != 0 {
		t.Fatalf("a call alone wrote %v", writes)
	}
	// c arrived after b but starts running first (b's start took longer).
	fc.running(c, now.Add(-20*time.Millisecond))
	fc.running(b, now.Add(-50*time.Millisecond))
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
	fc.running(d, now)
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
	fc.running(e, now)
	fc.running(f, now)
	fc.stop()
	n = len(writes)
	fc.running(&instance{id: "g"}, now)
	fc.update()
	fc.done(e)
	if len(writes) != n {
		t.Fatalf("writes after stop: %v", writes[n:])
	}
}

// TestFirstComeForget: a call added at its start (Worker.connect) keeps
// its place when its handler runs (running), and a sandbox destroyed
// while it runs (a failed start) leaves the order with no write to its
// group, which the pool hands on.
func TestFirstComeForget(t *testing.T) {
	now := time.Unix(1000, 0)
	writes := map[string][]uint64{}
	fc := newFirstCome(func(inst *instance, w uint64) {
		inst.weight = w
		writes[inst.id] = append(writes[inst.id], w)
	})
	fc.now = func() time.Time { return now }
	a, b, c := &instance{id: "a"}, &instance{id: "b"}, &instance{id: "c"}
	fc.load(b, now.Add(-500*time.Millisecond)) // b's start, for a call that waited
	fc.running(a, now.Add(-100*time.Millisecond))
	fc.load(b, now) // loaded twice: the first stands
	fc.running(b, now.Add(-500*time.Millisecond))
	if a.weight != 67 || b.weight != 133 {
		t.Fatalf("b's handler runs: weights a %d b %d, want 67 133 (b arrived first)", a.weight, b.weight)
	}
	fc.load(c, now) // the latest, loading: not below a sandbox's weight
	if cw := cmp.Or(c.weight, sandboxWeight); a.weight != 86 || b.weight != 171 || cw != 100 {
		t.Fatalf("c loads: weights a %d b %d c %d, want 86 171 100", a.weight, b.weight, cw)
	}
	before := len(writes["c"])
	fc.forget(c)
	if len(writes["c"]) != before {
		t.Fatalf("forget wrote %v to the destroyed sandbox's group", writes["c"][before:])
	}
	if a.weight != 67 || b.weight != 133 {
		t.Fatalf("c forgotten: weights a %d b %d, want 67 133", a.weight, b.weight)
	}
	fc.forget(c) // twice, and after done
	fc.done(a)
	fc.forget(a)
	if a.weight != 100 || b.weight != 100 {
		t.Fatalf("a done: weights a %d b %d, want 100 100", a.weight, b.weight)
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
	fc.running(old, time.Now().Add(-comeHold+time.Second))
	fc.running(young, time.Now())
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
	fc.running(a, now)
	fc.running(b, now.Add(10*time.Millisecond))
	fc.running(c, now.Add(20*time.Millisecond))
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
	fc.running(a, now) // its next call starts afresh: light, and the earliest
	fc.update()
	if a.weight != 171 || b.weight != 86 {
		t.Fatalf("a's next call, the earliest: weights a %d b %d, want 171 86", a.weight, b.weight)
	}

	// A start's load: its CPU sends a call being loaded last, but not
	// once the handler runs the call (running counts afresh).
	d := &instance{id: "d"}
	fc.load(d, now.Add(-time.Second)) // waited: the earliest
	fc.update()                       // first reading
	if d.weight != 213 {
		t.Fatalf("d loading, the earliest of four: weight %d, want 213", d.weight)
	}
	used[d] += comeCPU // a heavy import
	fc.update()
	if d.weight != 100 || c.weight != 53 {
		t.Fatalf("d heavy while loading: weights d %d c %d, want 100 53 (last, but a load keeps a sandbox's weight)", d.weight, c.weight)
	}
	fc.running(d, now.Add(-time.Second))
	if d.weight != 213 {
		t.Fatalf("d's handler runs: weight %d, want 213 (its load not counted)", d.weight)
	}
	fc.update() // a fresh first reading
	used[d] += comeCPU - time.Millisecond
	fc.update()
	if d.weight != 213 {
		t.Fatalf("d short of comeCPU since it ran: weight %d, want 213", d.weight)
	}
}

// TestFirstComeProbe: a reading that fails, or that comes back after
// its call ended (and another began on the same sandbox), changes
// nothing; a call alone is not read at all.
func TestFirstComeProbe(t *testing.T) {
	now := time.Unix(1000, 0)
	fc := newFirstCome(func(inst *instance, w uint64) { inst.weight = w })
	fc.now = func() time.Time { return now }
	a, b := &instance{id: "a"}, &instance{id: "b"}
	reads := 0
	fc.cpu = func(*instance) (time.Duration, bool) { reads++; return 0, true }
	fc.running(a, now)
	fc.update()
	if reads != 0 {
		t.Fatalf("a call alone read %d times", reads)
	}
	fc.running(b, now.Add(time.Millisecond))
	fc.cpu = func(*instance) (time.Duration, bool) { return 0, false }
	fc.update()
	if c := fc.calls[a]; c.cpu0 != -1 {
		t.Fatalf("a failed read set cpu0 %v", c.cpu0)
	}
	// During the read, a's call ends and the next begins: the reading,
	// of the call before, is dropped.
	fc.cpu = func(inst *instance) (time.Duration, bool) {
		if inst == a {
			fc.done(a)
			fc.running(a, now)
		}
		return time.Hour, true
	}
	fc.update()
	if c := fc.calls[a]; c.cpu0 != -1 || c.heavy {
		t.Fatalf("a reading of the call before: cpu0 %v heavy %v", c.cpu0, c.heavy)
	}
}

func TestStatCPU(t *testing.T) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority ...
	line := "42 (a) (b c) S 1 42 42 0 -1 4194560 100 200 3 4 250 50 7 3 20 0 1 0 100 0 0\n"
	d, ok := statCPU([]byte(line))
	if !ok || d != 3100*time.Millisecond {
		t.Errorf("statCPU = %v %v, want 3.1s (utime 250 + stime 50 + cutime 7 + cstime 3 ticks)", d, ok)
	}
	if _, ok := statCPU([]byte("42 (a) S 1")); ok {
		t.Error("a short line parsed")
	}
}

// TestSandboxCPU reads a real sandbox's CPU in a real cgroup: a child
// that spun for 0.3 s of its own CPU and was reaped, then a live process
// that did the same.
func TestSandboxCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 to spin: not found")
	}
	// The detected mode and a hybrid host's cgroup2 side, each read by
	// the group's own count where it has one (v1's cpuacct.usage, v2's
	// cpu.stat usage_usec) and by the sum over its processes, which a
	// v1 host without cpuacct falls back to.
	type reader struct {
		name string
		read func(*instance) (time.Duration, bool)
	}
	readers := []reader{{"own count", sandboxCPU}, {"process sum", func(inst *instance) (time.Duration, bool) { return procCPU(inst.group) }}}
	for _, m := range cgroupModes() {
		for _, r := range readers {
			t.Run(m.name+"/"+r.name, func(t *testing.T) {
				cm, err := cgroup.NewManager(fmt.Sprintf("hearth-test-%d-cpu-%s", os.Getpid(), m.name), m.opts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cm.Close(context.Background()) })
				g, err := cm.Create("sb", cgroup.Limits{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { g.Delete(context.Background()) })
				// Spinning counts its own CPU, not wall time: a busy host only
				// makes it take longer.
				spin := py + ` -c 'import sys, time
while time.process_time() < 0.3: pass
print("spun", flush=True)
if sys.argv[1:]: time.sleep(600)' `
				// The shell says "reap" once it has waited for the first
				// spinner: until then, on a busy host, the spinner may be
				// gone from the group and not yet counted in the shell's
				// children (the unreaped window firstcome.go's doc names).
				cmd := exec.Command("/bin/sh", "-c", "read x; "+spin+"; echo reap; read x; "+spin+" live")
				in, _ := cmd.StdinPipe()
				out, _ := cmd.StdoutPipe()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
				if err := g.Add(cmd.Process.Pid); err != nil {
					t.Fatal(err)
				}
				if _, err := g.CPUUsage(); r.name == "own count" && err != nil {
					if cm.Mode() == cgroup.V2 || hasCpuacct() {
						t.Fatalf("the group's own CPU count: %v", err)
					}
					t.Skip("no cpuacct hierarchy on this v1 host: the group keeps no CPU count")
				}
				inst := &instance{id: "sb", group: g}
				step := func(what, says string) time.Duration {
					t.Helper()
					before, ok := r.read(inst)
					if !ok {
						t.Fatal("no CPU read for a live sandbox")
					}
					in.Write([]byte("go\n"))
					buf := make([]byte, len(says))
					if _, err := io.ReadFull(out, buf); err != nil || string(buf) != says {
						t.Fatalf("%s: read %q, %v; want %q", what, buf, err, says)
					}
					after, ok := r.read(inst)
					if !ok || after-before < 250*time.Millisecond || after-before > 3*time.Second {
						t.Errorf("%s: CPU %v, then %v after 0.3 s of spinning (ok %v)", what, before, after, ok)
					}
					return after
				}
				step("a reaped child", "spun\nreap\n")
				step("a live process", "spun\n")
			})
		}
	}
}

// hasCpuacct says whether the host mounts a cgroup v1 cpuacct hierarchy.
func hasCpuacct() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup/cpuacct", &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC
}
