package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-run/hearth/internal/zygote"
)

// NumpyRequestsFn imports numpy and requests from the base image.
var NumpyRequestsFn = map[string]string{
	"f.py":             "import numpy as np\nimport requests\n\ndef f(event):\n    return {'mean': float(np.mean([1.0, 2.0])), 'requests': requests.__version__}\n",
	"requirements.txt": "numpy\nrequests\n",
	"function.yaml":    "memory_mb: 256\n",
}

// ZygoteOptions configures Zygote.
type ZygoteOptions struct {
	Hearth string
	Base   string
	N      int
	// Background is how many CPU-bound processes (nice 10) run during
	// the measurement: 0 measures on a quiet host.
	Background int
	// OwnSession runs the background load in a niced session of its own
	// (see StartLoad).
	OwnSession bool
	// CPUWeight, if set, is passed to the workers as --cpu-weight.
	CPUWeight uint64
	Out       io.Writer
}

// ZygoteResult is what Zygote measured.
type ZygoteResult struct {
	Samples []Sample
	// Frozen is the memory of a paused numpy sandbox after one call, by
	// how it started: forked on demand, from a spare, fresh interpreter.
	Frozen []FrozenMemory
	// CPU is the CPU spent per start, by kind, over the cold and the
	// fork starts.
	CPU []CPUPerStart
	// Waits is, per fork-start method, what the sandbox process did
	// during its start: where a start's time goes on a busy host.
	Waits []StartWait
	// Scratch is, per method measured for CPU, what became of on-disk
	// /tmp file systems over its starts.
	Scratch []ScratchUse
	// Homes is, per method measured for CPU, how its starts used homes.
	Homes []HomeUse
	// Zygotes is each zygote node's anonymous memory, before its first
	// fork start.
	Zygotes []ZygoteMemory
}

// ZygoteMemory is a zygote node's anonymous memory (smaps_rollup's
// Anonymous, of its first replica): each fork copies its page-table
// entries, and each child's exit unmaps them, so a start's CPU grows
// with it.
type ZygoteMemory struct {
	Packages []string
	Anon     int64 // bytes
	// HugeCode is the code the zygote itself moved onto huge pages of
	// its own (0 for a build that does not), which Anon counts; a
	// node's Anon also counts what its parent moved.
	HugeCode int64
}

// ScratchUse counts the on-disk /tmp file systems a worker made, reused
// and dropped over one method's starts (all 0 for a build that does not
// say).
type ScratchUse struct {
	Name                  string
	Made, Reused, Dropped int
}

// useSeries are the worker's counts of /tmp file systems made, reused
// and dropped, and of starts from a spare in a home, homes kept and
// namespaces closed, read in one scrape before and after each method.
var useSeries = []string{
	`hearth_scratch_filesystems_total{outcome="made"}`, `hearth_scratch_filesystems_total{outcome="reused"}`,
	`hearth_scratch_filesystems_total{outcome="dropped"}`,
	`hearth_homes_total{event="taken"}`, `hearth_homes_total{event="kept"}`, `hearth_homes_total{event="closed"}`,
}

// HomeUse counts, over one method's starts, the starts that took a spare
// in a home (the user and network namespaces an earlier sandbox of the
// function left), the homes kept, and the sandboxes' namespaces closed at
// their end instead (all 0 for a build without homes).
type HomeUse struct {
	Name                string
	Taken, Kept, Closed int
}

// StartWait is what the sandbox processes of one method's fork starts
// did from the start's hand-over (a spare's go, an on-demand fork's
// clone) until their handler was loaded, per start: ran, or waited on
// a CPU run queue (the worker's schedstat metrics; -1 when the worker,
// an older build, has none); and how long the starts forked on demand
// waited for their zygote, behind spares' clones and other forks.
type StartWait struct {
	Name      string
	Starts    int
	Spares    int // of Starts, from a spare
	CPU, Wait time.Duration
	Forks     int           // of Starts, forked on demand (-1: unknown)
	Queued    time.Duration // per on-demand fork
}

// startSums are the worker's sums over its fork starts.
type startSums struct {
	cpu, wait, spares, forks, queued float64
}

// readStartSums reads the worker's sums of its fork starts' sandbox CPU
// and run-queue wait, its count of spare starts, and its on-demand
// forks' count and zygote wait, from one scrape.
func readStartSums(ctx context.Context, w *Worker) (startSums, error) {
	v, err := w.Metrics(ctx,
		`hearth_start_sandbox_cpu_seconds_total{start="spare"}`, `hearth_start_sandbox_cpu_seconds_total{start="fork"}`,
		`hearth_start_runqueue_seconds_total{start="spare"}`, `hearth_start_runqueue_seconds_total{start="fork"}`,
		"hearth_spare_starts_total", "hearth_fork_queue_seconds_count", "hearth_fork_queue_seconds_sum")
	if err != nil {
		return startSums{}, err
	}
	return startSums{cpu: v[0] + v[1], wait: v[2] + v[3], spares: v[4], forks: v[5], queued: v[6]}, nil
}

// measureWaits runs f, n fork starts named name, and notes their waits.
func (r *ZygoteResult) measureWaits(ctx context.Context, w *Worker, name string, n int, f func() error) error {
	s0, err := readStartSums(ctx, w)
	if err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	s1, err := readStartSums(ctx, w)
	if err != nil {
		return err
	}
	per := func(d float64, n int) time.Duration { return time.Duration(d / float64(n) * float64(time.Second)) }
	x := StartWait{Name: name, Starts: n, Spares: int(s1.spares - s0.spares), CPU: per(s1.cpu-s0.cpu, n), Wait: per(s1.wait-s0.wait, n),
		Forks: int(s1.forks - s0.forks)}
	if x.Forks > 0 {
		x.Queued = per(s1.queued-s0.queued, x.Forks)
	}
	if s1.cpu == 0 {
		// Starts ran, yet no CPU: a build from before these metrics.
		x.CPU, x.Wait = -1, -1
	}
	if x.Forks == 0 && x.Spares < n {
		// Forks ran, yet none counted: a build without the queue's.
		x.Forks = -1
	}
	r.Waits = append(r.Waits, x)
	return nil
}

// FrozenMemory is the memory of one paused sandbox.
type FrozenMemory struct {
	Start string
	// Charged is what its cgroup is charged: shared pages, and pages a
	// forked child copied before it joined the cgroup, stay with the
	// zygote.
	Charged int64
	// Private is what its processes map alone (smaps), wherever charged.
	Private int64
}

// Zygote compares, in one run, three ways to serve the numpy and the
// numpy+requests handlers: a fresh interpreter that imports on start
// (Installed+Imported), a fork from a zygote that already imported the
// packages, and the warm handler cache.
func Zygote(ctx context.Context, o ZygoteOptions) (ZygoteResult, error) {
	var res ZygoteResult
	if o.N <= 0 {
		o.N = 50
	}
	if o.Background < 0 {
		return res, fmt.Errorf("background: %d processes, want 0 or more", o.Background)
	}
	load, err := StartLoad(o.Background, o.OwnSession)
	if err != nil {
		return res, err
	}
	defer load.Stop()
	// A planned tree, so the zygotes exist before the first call.
	r := &zygote.BaseResolver{Base: o.Base}
	np, err := r.PackageSet([]string{"numpy"})
	if err != nil {
		return res, err
	}
	npr, err := r.PackageSet([]string{"numpy", "requests"})
	if err != nil {
		return res, err
	}
	dir, err := tempDir("plan")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	plan := filepath.Join(dir, "tree.json")
	b, _ := json.Marshal(zygote.Plan{Nodes: []zygote.PlanNode{{Packages: np}, {Packages: npr}}})
	if err := os.WriteFile(plan, b, 0o644); err != nil {
		return res, err
	}
	fns := []struct {
		name  string
		files map[string]string
	}{{"numpy", NumpyFn}, {"numpy-requests", NumpyRequestsFn}}

	type cfg struct {
		label string
		flags []string
		path  string
		warm  bool
	}
	cfgs := []cfg{
		// Snapshots off throughout: numpy's import is slow enough to earn
		// one, and this benchmark compares imports with forks.
		{"Installed+Imported", []string{"--no-warm-cache", "--no-zygotes", "--no-snapshots"}, "cold", false},
		{"Zygote", []string{"--no-warm-cache", "--no-snapshots", "--zygote-tree", plan}, "fork", false},
		{"Warm", []string{"--zygote-tree", plan}, "warm", true},
	}
	// The baseline of the network made at the first socket: the same
	// fork starts with it made at start (none of these functions opens
	// a socket). An older worker has no such flag, and no such choice.
	if hasFlag(o.Hearth, "up", "--eager-network") {
		cfgs = slices.Insert(cfgs, 2, cfg{eagerLabel, []string{"--no-warm-cache", "--no-snapshots", "--eager-network", "--zygote-tree", plan}, "fork", false})
	}
	for _, c := range cfgs {
		w, err := StartWorker(ctx, o.Hearth, o.Base, o.flags(c.flags)...)
		if err != nil {
			return res, err
		}
		err = func() error {
			defer w.Stop()
			// Deploys first: CPU per start counts starts alone.
			for _, f := range fns {
				if err := w.Deploy(ctx, f.name, f.files); err != nil {
					return err
				}
			}
			if c.path == "fork" && res.Zygotes == nil {
				if res.Zygotes, err = zygoteMemory(ctx, w); err != nil {
					return err
				}
			}
			var cpu0 CPUUse
			var use0 []float64
			starts := 0
			if !c.warm {
				u, err := w.CPU()
				if err != nil {
					return err
				}
				cpu0 = u
				if use0, err = w.Metrics(ctx, useSeries...); err != nil {
					return err
				}
			}
			for _, f := range fns {
				name := fmt.Sprintf("%s (%s)", c.label, f.name)
				run := func() error {
					s, err := invokeN(ctx, w, name, f.name, o.N, c.path, c.warm)
					res.Samples = append(res.Samples, s)
					return err
				}
				if c.path == "fork" {
					err = res.measureWaits(ctx, w, name, o.N, run)
				} else {
					err = run()
				}
				if err != nil {
					return err
				}
				starts += o.N
			}
			if c.path == "fork" {
				// Starts with no pause between them: the spare reserve
				// and teardown compete with the next start. Last, because
				// the node then refills a reserve as big as the run for a
				// while, which would load the starts measured after it.
				name := c.label + " (numpy), back to back"
				err := res.measureWaits(ctx, w, name, o.N, func() error {
					s, err := invokeSeq(ctx, w, name, "numpy", o.N, c.path, false, 0)
					res.Samples = append(res.Samples, s)
					return err
				})
				if err != nil {
					return err
				}
				starts += o.N
			}
			if cpu0 != nil {
				// The last start's teardown and refills count too.
				time.Sleep(cpuQuiet)
				cpu1, err := w.CPU()
				if err != nil {
					return err
				}
				res.CPU = append(res.CPU, CPUPerStart{Name: c.label, Starts: starts, Used: cpu1.Sub(cpu0)})
				use1, err := w.Metrics(ctx, useSeries...)
				if err != nil {
					return err
				}
				d := func(i int) int { return int(use1[i] - use0[i]) }
				res.Scratch = append(res.Scratch, ScratchUse{Name: c.label, Made: d(0), Reused: d(1), Dropped: d(2)})
				res.Homes = append(res.Homes, HomeUse{Name: c.label, Taken: d(3), Kept: d(4), Closed: d(5)})
			}
			if c.warm {
				// The numpy node keeps spares: a second function with the
				// same code starts from one.
				if err := w.Deploy(ctx, "numpy-2", NumpyFn); err != nil {
					return err
				}
				if err := waitSpares(ctx, w); err != nil {
					return err
				}
				before, err := w.Metric(ctx, "hearth_spare_starts_total")
				if err != nil {
					return err
				}
				inv, err := w.Client.Invoke(ctx, "numpy-2", []byte("{}"))
				if err != nil {
					return err
				}
				after, err := w.Metric(ctx, "hearth_spare_starts_total")
				if err != nil {
					return err
				}
				if inv.Path != "fork" || after != before+1 {
					return fmt.Errorf("numpy-2 took path %q and %v spares, want fork from a spare", inv.Path, after-before)
				}
				m := FrozenMemory{Start: "from a spare"}
				if m.Charged, m.Private, err = pausedMemory(ctx, w, "numpy-2"); err != nil {
					return err
				}
				res.Frozen = append(res.Frozen, m)
			}
			return nil
		}()
		if err != nil {
			return res, err
		}
	}
	// A paused sandbox forked on demand (no spares), and a fresh
	// interpreter's, for comparison.
	for _, c := range []struct {
		start, path string
		flags       []string
	}{
		{"forked on demand", "fork", []string{"--spares", "-1", "--no-snapshots", "--zygote-tree", plan}},
		{"fresh interpreter", "cold", []string{"--no-zygotes", "--no-snapshots"}},
	} {
		w, err := StartWorker(ctx, o.Hearth, o.Base, o.flags(c.flags)...)
		if err != nil {
			return res, err
		}
		err = func() error {
			defer w.Stop()
			if err := w.Deploy(ctx, "numpy", NumpyFn); err != nil {
				return err
			}
			inv, err := w.Client.Invoke(ctx, "numpy", []byte("{}"))
			if err != nil {
				return err
			}
			if inv.Path != c.path {
				return fmt.Errorf("%s: took path %q, want %q", c.start, inv.Path, c.path)
			}
			m := FrozenMemory{Start: c.start}
			m.Charged, m.Private, err = pausedMemory(ctx, w, "numpy")
			res.Frozen = append(res.Frozen, m)
			return err
		}()
		if err != nil {
			return res, err
		}
	}
	if o.Out != nil {
		weight := "the worker's default"
		if o.CPUWeight > 0 {
			weight = fmt.Sprint(o.CPUWeight)
		}
		session := "in the benchmark's session"
		if o.OwnSession {
			session = "in a session of their own, its autogroup niced too"
		}
		fmt.Fprintf(o.Out, "hearth bench zygote: %d samples each, end-to-end invoke over loopback HTTP;\n"+
			"starts %v apart (teardown and refills off the clock) unless back to back;\n"+
			"background load: %d CPU-bound processes at nice %d, %s; sandboxes' cpu weight: %s\n\n",
			o.N, settle, o.Background, backgroundNice, session, weight)
		Table(o.Out, res.Samples, [][2]string{
			{"Installed+Imported (numpy)", "Zygote (numpy)"},
			{"Installed+Imported (numpy-requests)", "Zygote (numpy-requests)"},
			{"Zygote (numpy)", "Warm (numpy)"},
			{eagerLabel + " (numpy)", "Zygote (numpy)"},
		})
		fmt.Fprintf(o.Out, "\nCPU per start over all starts of a method (gaps, teardown and refills included)\n")
		cpuTable(o.Out, res.CPU)
		if r := res.cpuRatio("Zygote", eagerLabel); r > 0 {
			fmt.Fprintf(o.Out, "CPU per fork start (all, kernel threads too): network at the first socket / at start = %.2f\n", r)
		}
		for _, x := range res.Scratch {
			fmt.Fprintf(o.Out, "%s: on-disk /tmp file systems made %d, reused %d, dropped %d\n", x.Name, x.Made, x.Reused, x.Dropped)
		}
		for _, x := range res.Homes {
			fmt.Fprintf(o.Out, "%s: starts from a spare in a home %d; homes kept %d, sandboxes' namespaces closed at their end %d\n", x.Name, x.Taken, x.Kept, x.Closed)
		}
		fmt.Fprintf(o.Out, "\nanonymous memory of each zygote (each fork copies its page-table entries, each exit unmaps them;\n"+
			"of it, code the zygote itself moved onto huge pages, one entry per 2 MiB; a node's also holds its parent's)\n")
		for _, z := range res.Zygotes {
			fmt.Fprintf(o.Out, "%-32s %8.2f MiB   code on huge pages %5.1f MiB\n", "["+strings.Join(z.Packages, " ")+"]",
				float64(z.Anon)/(1<<20), float64(z.HugeCode)/(1<<20))
		}
		fmt.Fprintf(o.Out, "\nthe sandbox process during a fork start (from hand-over to loaded handler), mean per start\n")
		fmt.Fprintf(o.Out, "(and, per start forked on demand, its wait for the zygote behind spares' clones and other forks)\n")
		fmt.Fprintf(o.Out, "%-32s %7s %7s %10s %14s %7s %16s\n", "method", "starts", "spares", "ran ms", "run-queue ms", "forks", "zygote queue ms")
		for _, x := range res.Waits {
			cpu, wait := ms(x.CPU), ms(x.Wait)
			if x.CPU < 0 {
				cpu, wait = "-", "-"
			}
			forks, queued := strconv.Itoa(x.Forks), ms(x.Queued)
			switch {
			case x.Forks < 0:
				forks, queued = "-", "-"
			case x.Forks == 0:
				queued = "-"
			}
			fmt.Fprintf(o.Out, "%-32s %7d %7d %10s %14s %7s %16s\n", x.Name, x.Starts, x.Spares, cpu, wait, forks, queued)
		}
		if slices.ContainsFunc(res.Waits, func(x StartWait) bool { return x.CPU < 0 || x.Forks < 0 }) {
			fmt.Fprintf(o.Out, "(-: the worker, an older build, has no such metric)\n")
		}
		fmt.Fprintf(o.Out, "\nmemory of a paused numpy sandbox after one call (charged: to its cgroup; private: mapped by it alone)\n")
		for _, m := range res.Frozen {
			fmt.Fprintf(o.Out, "%-20s charged %6.2f MiB   private %6.2f MiB\n", m.Start, float64(m.Charged)/(1<<20), float64(m.Private)/(1<<20))
		}
	}
	return res, nil
}

// eagerLabel names the fork starts whose network is made at start
// (--eager-network).
const eagerLabel = "Zygote, net at start"

// cpuRatio is the CPU per start, kernel threads included, of method a
// over method b's; 0 if either was not measured.
func (r ZygoteResult) cpuRatio(a, b string) float64 {
	per := func(name string) float64 {
		for _, c := range r.CPU {
			if c.Name == name && c.Starts > 0 {
				return float64(c.Used.Total()+c.Used["kernel"]) / float64(c.Starts)
			}
		}
		return 0
	}
	x, y := per(a), per(b)
	if x == 0 || y == 0 {
		return 0
	}
	return x / y
}

// hasFlag reports whether hearth's command cmd takes flag: a worker of
// an older build, being compared, may not.
func hasFlag(hearth, cmd, flag string) bool {
	out, err := exec.Command(hearth, cmd, "--help").Output()
	return err == nil && strings.Contains(string(out), flag+" ")
}

// cpuQuiet is how long CPU accounting waits after the last start, for
// its teardown and the refills it caused.
const cpuQuiet = 500 * time.Millisecond

// waitSpares waits until some zygote node of w holds a spare.
func waitSpares(ctx context.Context, w *Worker) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tree, err := w.Client.Zygotes(ctx)
		if err != nil {
			return err
		}
		for _, n := range tree.Nodes {
			if n.Spares > 0 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("no zygote node holds a spare")
}

// zygoteMemory reads the anonymous memory of each of w's zygote nodes
// that has a process, root first.
func zygoteMemory(ctx context.Context, w *Worker) ([]ZygoteMemory, error) {
	tree, err := w.Client.Zygotes(ctx)
	if err != nil {
		return nil, err
	}
	var out []ZygoteMemory
	for _, n := range tree.Nodes {
		if len(n.Pids) == 0 {
			continue
		}
		anon, err := anonymous(n.Pids[0])
		if err != nil {
			return nil, fmt.Errorf("zygote node %d: %w", n.ID, err)
		}
		out = append(out, ZygoteMemory{Packages: n.Packages, Anon: anon, HugeCode: n.HugeCode})
	}
	if len(out) == 0 {
		return nil, errors.New("no zygote node has a process")
	}
	return out, nil
}

// anonymous is the Anonymous line of pid's smaps_rollup, in bytes.
func anonymous(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Anonymous:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("smaps_rollup: %q: %w", line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("smaps_rollup has no Anonymous line")
}

// pausedMemory waits for fn's sandbox to be paused and returns its memory:
// as charged to its cgroup, and private to its processes.
func pausedMemory(ctx context.Context, w *Worker, fn string) (charged, private int64, err error) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := w.Client.Status(ctx)
		if err != nil {
			return 0, 0, err
		}
		for _, s := range st.Sandboxes {
			if s.Function == fn && s.State == "paused" {
				return s.Memory, s.Private, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, 0, fmt.Errorf("no paused sandbox of %s", fn)
}

// flags adds the options' worker flags to a method's.
func (o ZygoteOptions) flags(method []string) []string {
	if o.CPUWeight == 0 {
		return method
	}
	return append([]string{"--cpu-weight", fmt.Sprint(o.CPUWeight)}, method...)
}
