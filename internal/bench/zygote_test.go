package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestZygoteBenchLive runs bench zygote with a few samples and checks what
// it measures, not how fast: every method took its start path (Zygote
// asserts that per call), each memory figure comes from the start it
// names, a paused forked sandbox holds far less of its own than a
// fresh interpreter's, CPU per start is counted for the cold and the
// fork starts (the network made at the first socket, and at start, with
// their ratio), and so is each fork start's sandbox CPU and run-queue
// wait, and each on-demand fork's wait for its zygote. With one
// background loop, which the run must leave behind.
func TestZygoteBenchLive(t *testing.T) {
	hearth, base := liveHearth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	res, err := Zygote(ctx, ZygoteOptions{Hearth: hearth, Base: base, N: 3, Background: 1, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 10 {
		t.Errorf("%d samples, want 10 methods", len(res.Samples))
	}
	if !strings.Contains(out.String(), "background load: 1 ") {
		t.Errorf("report does not give the background load used")
	}
	if len(res.CPU) != 3 {
		t.Fatalf("CPU per start for %d methods, want cold, fork and fork with the network made at start: %+v", len(res.CPU), res.CPU)
	}
	if r := res.cpuRatio("Zygote", eagerLabel); r <= 0 || !strings.Contains(out.String(), "network at the first socket / at start = ") {
		t.Errorf("no ratio of CPU per fork start with the network made at the first socket to at start (%v)", r)
	}
	for _, c := range res.CPU {
		// A start costs the worker CPU (an HTTP call, a cgroup at least),
		// and its sandbox much more: not all 10 ms ticks can be empty.
		if c.Starts == 0 || c.Used.Total() <= 0 {
			t.Errorf("%s: %d starts, %v CPU", c.Name, c.Starts, c.Used.Total())
		}
	}
	// The sandbox process of every fork start runs (it loads a handler):
	// a method whose starts show no CPU lost the worker's schedstat sums.
	if len(res.Waits) != 6 {
		t.Fatalf("start waits for %d methods, want the 6 fork methods: %+v", len(res.Waits), res.Waits)
	}
	for _, x := range res.Waits {
		if x.Starts != 3 || x.CPU <= 0 || x.Wait < 0 || x.Spares < 0 || x.Spares > x.Starts {
			t.Errorf("%s: %+v", x.Name, x)
		}
		// A fork start is from a spare or forked on demand, and each
		// of the latter reports its wait for the zygote.
		if x.Forks != x.Starts-x.Spares || x.Queued < 0 {
			t.Errorf("%s: %d forks on demand, %v queued each; want %d", x.Name, x.Forks, x.Queued, x.Starts-x.Spares)
		}
	}
	mem := map[string]FrozenMemory{}
	for _, m := range res.Frozen {
		mem[m.Start] = m
	}
	fresh := mem["fresh interpreter"]
	for _, start := range []string{"forked on demand", "from a spare"} {
		m, ok := mem[start]
		if !ok {
			t.Errorf("no memory figure %q: %+v", start, res.Frozen)
			continue
		}
		if m.Private <= 0 || m.Private*4 > fresh.Private {
			t.Errorf("%s: %d bytes private, want (0, a quarter of a fresh interpreter's %d]", start, m.Private, fresh.Private)
		}
	}
	// The planned tree's zygotes (root, numpy, numpy+requests) each hold
	// anonymous memory, and one that imported numpy more than the root.
	anon := map[string]int64{}
	for _, z := range res.Zygotes {
		anon[strings.Join(z.Packages, " ")] = z.Anon
	}
	root, ok := anon[""]
	if len(res.Zygotes) != 3 || !ok || root <= 0 || !strings.Contains(out.String(), "anonymous memory of each zygote") {
		t.Fatalf("zygotes' anonymous memory: %+v, want root, numpy and numpy+requests, reported", res.Zygotes)
	}
	for pkgs, a := range anon {
		if pkgs != "" && a <= root {
			t.Errorf("zygote [%s]: %d bytes anonymous, want more than the root's %d", pkgs, a, root)
		}
	}
}
