package e2e

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/sandbox"
)

// waitReaped waits until nothing of the (dead) worker is left on the host:
// no mounts under its data dir, no cgroups, no sandbox processes.
func (w *worker) waitReaped(within time.Duration) {
	w.t.Helper()
	end := time.Now().Add(within)
	for {
		m, _ := sandbox.MountsUnder(w.dataDir)
		cg := cgroupsLeft(w.cgroup)
		out, _ := exec.Command("pgrep", "-f", "hearth-init.*"+w.dataDir).Output()
		procs := strings.TrimSpace(string(out))
		if len(m) == 0 && len(cg) == 0 && procs == "" {
			return
		}
		if time.Now().After(end) {
			w.t.Fatalf("%s after the worker died: mounts %v, cgroups %v, processes %q", within, m, cg, procs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrashReaped: a worker killed with SIGKILL, holding paused
// sandboxes, zygotes and spares, leaves nothing running for long: its
// reaper sweeps processes, cgroups and mounts without waiting for a
// restart, and the restarted worker says what the reaper found.
func TestCrashReaped(t *testing.T) {
	w := startWorker(t)
	w.deployDir("hello", "../examples/hello")
	w.deployDir("np", fn(t, "f.py", "import numpy\ndef f(event):\n    return float(numpy.arange(4).sum())\n",
		"requirements.txt", "numpy\n"))
	for range 3 {
		w.mustInvoke("hello", `{"name":"x"}`)
		w.mustInvoke("np", `{}`)
	}
	// Paused sandboxes are frozen: a kill alone would leave them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := w.c.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		paused := 0
		for _, sb := range st.Sandboxes {
			if sb.State == "paused" {
				paused++
			}
		}
		if paused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no paused sandbox: %+v", st.Sandboxes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t0 := time.Now()
	w.crash()
	w.waitReaped(15 * time.Second)
	t.Logf("reaped %v after SIGKILL", time.Since(t0).Round(time.Millisecond))
	w.start()
	if !strings.Contains(w.out.String(), "its reaper swept") {
		t.Errorf("the restarted worker did not report the reaper's sweep:\n%s", tail(w.out.String(), 20))
	}
	if inv := w.mustInvoke("hello", `{"name":"back"}`); !strings.Contains(string(inv.Body), "hello, back") {
		t.Errorf("after the crash: %s", inv.Body)
	}
}

// TestShutdownPrompt: SIGTERM stops a worker within its 5 s budget while
// a call that would run for a minute is in flight, and nothing is left.
func TestShutdownPrompt(t *testing.T) {
	w := startWorker(t)
	w.deployDir("slow", fn(t, "f.py", "import time\ndef f(event):\n    time.sleep(60)\n    return 1\n",
		"function.yaml", "timeout_s: 120\n"))
	w.deployDir("hello", "../examples/hello")
	w.mustInvoke("hello", `{"name":"x"}`)
	called := make(chan struct{})
	go func() {
		close(called)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		w.c.Invoke(ctx, "slow", []byte("{}"))
	}()
	<-called
	// The call is in its sandbox once the function has one.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := w.c.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		busy := false
		for _, sb := range st.Sandboxes {
			busy = busy || sb.Function == "slow" && sb.State == "busy"
		}
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow call never started: %+v", st.Sandboxes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t0 := time.Now()
	w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		<-done
		t.Fatalf("worker did not stop within 30 s of SIGTERM")
	}
	took := time.Since(t0)
	t.Logf("stopped %v after SIGTERM", took.Round(time.Millisecond))
	// The budget is 4.5 s; the rest is the process's own exit.
	if took > 6*time.Second {
		t.Errorf("stopped %v after SIGTERM, want within 5 s:\n%s", took, tail(w.out.String(), 20))
	}
	w.waitReaped(5 * time.Second)
}

// bigInit fills about 300 MB with non-zero pages, so that a snapshot's
// dump writes them all and is still running when the worker is stopped.
const bigInit = `BIG = [bytes([i % 251 + 1]) * (1 << 20) for i in range(300)]
def f(event):
    return len(BIG)
`

// TestShutdownDuringDump: SIGTERM while CRIU is dumping a large sandbox
// in the background stops the worker within its 5 s budget, and no CRIU
// process, sandbox, mount or cgroup outlives it.
func TestShutdownDuringDump(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--warm-budget-mb", "4096")
	w.needSnapshots()
	w.deployDir("big", fn(t, "f.py", bigInit, "function.yaml", "memory_mb: 768\nsnapshot: always\n"))
	if inv := w.mustInvoke("big", "{}"); inv.Path == "snapshot" {
		t.Fatalf("first call: path %s, want a fresh start", inv.Path)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := w.c.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		dumping := false
		for _, sb := range st.Sandboxes {
			dumping = dumping || sb.Function == "big" && sb.State == "snapshotting"
		}
		if dumping {
			break
		}
		if l := w.snapshots(); len(l.Snapshots) > 0 {
			t.Fatalf("the dump ended before it was seen running: %+v", l.Snapshots)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dump of big began; log:\n%s", tail(w.out.String(), 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	criu := func() string {
		out, _ := exec.Command("pgrep", "-a", "-f", "criu.*"+w.dataDir).Output()
		return strings.TrimSpace(string(out))
	}
	// The sandbox is set aside before CRIU starts: wait for CRIU itself.
	for criu() == "" {
		if l := w.snapshots(); len(l.Snapshots) > 0 {
			t.Fatalf("the dump ended before a criu process was seen: %+v", l.Snapshots)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox is snapshotting, but no criu process names the data dir %s", w.dataDir)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		<-done
		t.Fatalf("worker did not stop within 30 s of SIGTERM")
	}
	took := time.Since(t0)
	t.Logf("stopped %v after SIGTERM with a dump in flight", took.Round(time.Millisecond))
	if took > 6*time.Second {
		t.Errorf("stopped %v after SIGTERM, want within 5 s:\n%s", took, tail(w.out.String(), 20))
	}
	w.waitReaped(5 * time.Second)
	if p := criu(); p != "" {
		t.Errorf("criu outlived the worker:\n%s", p)
	}
}
