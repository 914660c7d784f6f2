package criu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runner finds the private CRIU and starts a runner, set up for this
// host's breakpoints.
func runner(t testing.TB, noBreakpoints bool) *Runner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	ctx := context.Background()
	b, err := Find(ctx, os.Getenv("HEARTH_CRIU_ROOT"))
	if err != nil {
		t.Fatalf("no CRIU (run scripts/criu.sh): %v", err)
	}
	b.NoBreakpoints = noBreakpoints
	r, err := NewRunner(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// criuLeft lists this test's children still running: criu, the self-test's
// sleep and its restored copy (restored as our child).
func criuLeft() string {
	out, _ := exec.Command("pgrep", "-a", "-P", strconv.Itoa(os.Getpid())).Output()
	var left []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "criu") || strings.Contains(l, "sleep") {
			left = append(left, l)
		}
	}
	return strings.Join(left, "\n")
}

// TestSelfTest dumps and restores a process in the mode this host needs,
// which the breakpoint probe decides.
func TestSelfTest(t *testing.T) {
	bp := ProbeBreakpoints(context.Background(), 3*time.Second)
	if bp != nil && !errors.Is(bp, ErrNoBreakpoints) {
		t.Fatalf("breakpoint probe could not run: %v", bp)
	}
	t.Logf("hardware breakpoints: %v", bp)
	r := runner(t, bp != nil)
	res, err := r.SelfTest(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatalf("self-test in mode %s: %v", r.Binary().Mode(), err)
	}
	t.Logf("mode %s: dump %v, restore %v", r.Binary().Mode(), res.Dump, res.Restore)
	if left := criuLeft(); left != "" {
		t.Errorf("left running: %s", left)
	}
}

// TestProbeBreakpointsAgrees: the probe gives one answer on a host. A
// probe that stopped its child while the shell was still starting found
// no trap 2 times in 60 on a host where breakpoints trap, and the worker
// then ran CRIU in its slower mode, or in its hanging one the other way.
func TestProbeBreakpointsAgrees(t *testing.T) {
	first := ProbeBreakpoints(context.Background(), 3*time.Second)
	if first != nil && !errors.Is(first, ErrNoBreakpoints) {
		t.Fatalf("breakpoint probe could not run: %v", first)
	}
	for i := range 30 {
		if err := ProbeBreakpoints(context.Background(), 3*time.Second); (err == nil) != (first == nil) {
			t.Fatalf("probe %d: %v; the first said %v", i+2, err, first)
		}
	}
}

// TestHangKilled runs criu with breakpoints on a host where they do not
// trap: the dump hangs, and the deadline must kill criu and release and
// end the test process.
func TestHangKilled(t *testing.T) {
	if err := ProbeBreakpoints(context.Background(), 3*time.Second); !errors.Is(err, ErrNoBreakpoints) {
		t.Skipf("hardware breakpoints trap on this host (%v): a dump with them does not hang here", err)
	}
	r := runner(t, false)
	t0 := time.Now()
	_, err := r.SelfTest(context.Background(), time.Second)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("self-test with breakpoints: %v, want ErrTimeout", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the hang took %v to end, deadline 1s", d)
	}
	if left := criuLeft(); left != "" {
		t.Errorf("left running: %s", left)
	}
}
