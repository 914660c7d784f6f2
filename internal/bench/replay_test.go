package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/sim"
	"github.com/hearth-run/hearth/internal/trace"
)

func rateTrace(rates ...int32) *trace.Trace {
	t := &trace.Trace{Minutes: 10}
	for i, r := range rates {
		c := make([]int32, 10)
		for m := 0; m < int(r); m++ {
			c[m%10]++
		}
		t.Functions = append(t.Functions, trace.Function{Hash: fmt.Sprintf("f%d", i), Counts: c})
	}
	return t
}

func TestPickByRate(t *testing.T) {
	// Rates per minute: 2.5, 1.6, 1, 0.5, 0.3, 0.1, 0 (totals over 10).
	tr := rateTrace(25, 16, 10, 5, 3, 1, 0)
	tests := []struct {
		name   string
		n      int
		hi, lo float64
		ok     func(*trace.Function) bool
		want   string // or "error"
	}{
		{"spread", 3, 2.5, 0.1, nil, "f0 f3 f5"}, // targets 2.5, 0.5, 0.1
		{"one", 1, 1, 1, nil, "f2"},              // closest to 1
		// Targets 2.5, 1.31, 0.69, 0.36, 0.19, 0.1: greedy in target order,
		// so f2 (1.0) is left for the last target.
		{"all positive", 6, 2.5, 0.1, nil, "f0 f1 f3 f4 f5 f2"},
		{"each once", 2, 0.1, 0.1, nil, "f5 f4"}, // second-closest after f5
		{"filtered", 1, 2.5, 2.5, func(f *trace.Function) bool { return f.Hash != "f0" }, "f1"},
		{"too many", 7, 2.5, 0.1, nil, "error"}, // f6 never runs
		{"bad range", 2, 0.1, 2.5, nil, "error"},
		{"zero", 0, 2.5, 0.1, nil, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickByRate(tr, tt.n, tt.hi, tt.lo, tt.ok)
			if tt.want == "error" {
				if err == nil {
					t.Errorf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestReplayTable(t *testing.T) {
	plan := &replay.Plan{Funcs: []replay.Func{{Name: "a", Rate: 2}, {Name: "b", Rate: 0.1, Packages: []string{"numpy"}}}}
	plan.Calls = make([]replay.Call, 7)
	sum := func(mean, p99 float64, path, parsec int) replay.Summary {
		return replay.Summary{N: 5, Mean: time.Duration(mean * 1e6), P99: time.Duration(p99 * 1e6), ColdPath: path, ColdParsec: parsec}
	}
	run := func(c ReplayConfig, paths []string, evictions uint64, sums ...replay.Summary) *ReplayRun {
		res := &replay.Result{Plan: plan}
		for _, p := range paths {
			// 100 ms: waits 20 (1 warm) and starts in 30 (none warm), runs
			// 40; a snapshot start waited 150 more.
			rec := replay.Record{Path: p, Status: 200, Response: 100 * time.Millisecond, WaitMs: 20, InitMs: 30, RunMs: 40}
			switch p {
			case "warm":
				rec.WaitMs, rec.InitMs = 1, 0
			case "snapshot":
				rec.WaitMs, rec.Response = 170, 250*time.Millisecond
			}
			res.Records = append(res.Records, rec)
		}
		return &ReplayRun{Config: c, Rep: 1, Result: res, Sums: sums, Pools: []types.PoolStatus{{Evictions: evictions, Drops: 1}},
			Mem: []MemSample{{Paused: 10 << 20, Zygotes: 40 << 20}, {Paused: 30 << 20, Zygotes: 60 << 20}}}
	}
	cs := ReplayConfigs()[:3]
	r := &ReplayReport{Plan: plan, Configs: cs, Parsec: 1, Runs: [][]*ReplayRun{{
		run(cs[0], []string{"cold", "cold", "cold"}, 0, sum(400, 900, 5, 5), sum(300, 310, 2, 2)),
		run(cs[1], []string{"warm", "cold", "cold"}, 4, sum(100, 150, 1, 1), sum(200, 250, 2, 2)),
		run(cs[2], []string{"warm", "fork", "snapshot"}, 2, sum(50, 60, 1, 0), sum(300, 320, 2, 1)),
	}}}
	var b strings.Builder
	if err := r.Table(&b, 0); err != nil {
		t.Fatal(err)
	}
	// Compare lines with runs of spaces squeezed, so column widths do
	// not matter.
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		// a: mean 400 -> 50 is 87.5% better, 100 -> 50 is 50%; p99s.
		"a parsec 2.00 none 5 400.0 100.0 50.0 900.0 150.0 60.0 87.5% 50.0%",
		// b got slower than sock-like: a negative improvement.
		"b extra 0.10 numpy 5 300.0 200.0 300.0 310.0 250.0 320.0 0.0% -50.0%",
		// cold starts: 5 -> 0 is 100%, 1 -> 0 is 100%.
		"a parsec 2.00 none 5 5 / 5 1 / 1 1 / 0 100.0% 100.0%",
		// totals over both: 7 -> 1 is 85.7%, 3 -> 1 is 66.7%.
		"all 7 7 / 7 3 / 3 3 / 1 85.7% 66.7%",
		// paths, PARSEC cold, evictions, drops, paused MiB mean and peak,
		// paused sandboxes, all MiB peak, zygotes MiB mean and peak.
		"sock-like 3 1 0 0 2 0 3 4 1 20.0 30.0 0.0 0.0 50.0 60.0",
		"hearth 3 1 1 1 0 0 1 2 1 20.0 30.0 0.0 0.0 50.0 60.0",
		// Where the time went: warm 100 = 1 + 0 + 40 + 59; the two
		// others waited 20 and 170, the rest 10 and 10.
		"hearth, warm 1 1.0 1.0 1.0 0 0.0 40.0 59.0",
		"hearth, non-warm 2 95.0 170.0 170.0 1 30.0 40.0 10.0",
		"sock-like, non-warm 2 20.0 20.0 20.0 0 30.0 40.0 10.0",
		"fresh, warm 0 - - - - - - -",
		// Runs at once: sock-like's two cold calls ran side by side
		// (each from 50 to 90 ms), its warm one alone (1 to 41 ms).
		"sock-like 1.0 2.0 1.7",
		"hearth 1.0 1.0 1.0",
		// a: 1 -> 1 cold by path (as many), b: 2 -> 2; by PARSEC a 1 -> 0,
		// b 2 -> 1: fewer for both.
		"hearth vs sock-like, 2 functions: fewer cold starts by start path for 0, as many for 2, more for 0; by PARSEC's count fewer for 2, as many for 0, more for 0",
		"target (fewer for every function): by start path NOT met, by PARSEC's count met",
		// The one PARSEC function, a, got faster: 1 of 1, target 0.
		"hearth's mean response lower than sock-like's for 1 of 1 PARSEC functions (target: at least 0): met",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// liveHearth builds the hearth binaries for a test that runs real
// workers, and returns the hearth binary and the base image to use.
func liveHearth(t *testing.T) (hearth, base string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it runs real workers")
	}
	base = os.Getenv("HEARTH_TEST_BASE")
	if base == "" {
		base = "/var/lib/hearth/base"
	}
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/hearth-run/hearth/cmd/...").CombinedOutput(); err != nil {
		t.Fatalf("building hearth: %v\n%s", err, out)
	}
	return filepath.Join(bin, "hearth"), base
}

// TestReplayBenchLive runs the comparison on two PARSEC functions and two
// more for four trace minutes at 60x, twice, with a warm budget that holds
// two busy sandboxes (144 MB each, as declared) and hardly any paused one
// beside them (SOCK-like's hold 12-13 MB; at 300 MB one fit, and a run
// whose calls never put two paused beside two busy evicted nothing), and
// checks that each configuration
// really removes its paths (fresh never serves warm or fork, SOCK-like
// never forks), that the runs are interleaved, that the budget evicts,
// that paused memory is sampled and plotted, and that the simulator
// predicted every run that keeps sandboxes.
func TestReplayBenchLive(t *testing.T) {
	hearth, base := liveHearth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	var out strings.Builder
	pop, err := replay.ParsePopularity("numpy=1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rep, err := Replay(ctx, ReplayOptions{Hearth: hearth, Base: base,
		TraceDir: "../../../shared/data/azure2019/sample100-min480-959", Minutes: 4, Speed: 60,
		Funcs: 2, HiRate: 2, LoRate: 1, Extra: 2, ExtraHiRate: 1, ExtraLoRate: 0.5,
		ExecCap: 200 * time.Millisecond, MemCapMB: 8, WarmBudgetMB: 292, Repeat: 2,
		SampleEvery: 100 * time.Millisecond, Sim: true, Popularity: pop, OutDir: dir, Out: &out, PoolEvents: true})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Plan.Funcs) != 4 || rep.Parsec != 2 {
		t.Fatalf("%d functions, %d PARSEC's; want 4 and 2", len(rep.Plan.Funcs), rep.Parsec)
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("%d repetitions, want 2", len(rep.Runs))
	}
	var order []string
	var last time.Time
	pausedSeen := map[string]bool{}
	evictions := uint64(0)
	for i, runs := range rep.Runs {
		if len(runs) != 3 {
			t.Fatalf("repetition %d: %d runs", i+1, len(runs))
		}
		for k, c := range rep.Configs {
			run := runs[k]
			if run.Rep != i+1 || run.Config.Name != c.Name {
				t.Errorf("run %d/%d is %s of repetition %d", i, k, run.Config.Name, run.Rep)
			}
			if !run.Started.After(last) {
				t.Errorf("repetition %d, %s started before the run listed before it", i+1, c.Name)
			}
			last = run.Started
			order = append(order, c.Name)
			paths := replay.PathCounts(run.Result.Records)
			n := len(rep.Plan.Calls)
			switch c.Name {
			case "fresh":
				if paths["cold"] != n {
					t.Errorf("fresh: paths %v, want all %d cold", paths, n)
				}
				if run.Sim != nil {
					t.Errorf("fresh keeps no sandboxes, yet was simulated")
				}
			case "sock-like":
				if paths["fork"] != 0 || paths["warm"] == 0 {
					t.Errorf("sock-like: paths %v, want warm and no fork", paths)
				}
				evictions += run.Evictions()
			case "hearth":
				// Which of its paths serve depends on how long calls take
				// (on a very busy host they overlap, and each needs a new
				// sandbox): it must use its own, not start cold.
				if paths["warm"]+paths["fork"]+paths["snapshot"] == 0 {
					t.Errorf("hearth: paths %v, want warm, fork or snapshot starts", paths)
				}
			}
			if c.Name != "fresh" {
				if len(run.Mem) < 2 {
					t.Errorf("%s: %d memory samples over a run of seconds at 100 ms", c.Name, len(run.Mem))
				}
				// Whether a sandbox is paused at a sample's instant depends
				// on the host's pace (a busy one overlaps the calls): asked
				// of all the repetitions together, below.
				if _, peak, _ := run.memStats(); peak > 0 {
					pausedSeen[c.Name] = true
				}
				if run.Sim == nil || len(run.Sim.Funcs) != 4 {
					t.Fatalf("%s: no per-function prediction: %+v", c.Name, run.Sim)
				}
				var calls uint64
				for _, f := range run.Sim.Funcs {
					calls += f.Invocations
				}
				if calls != uint64(len(rep.Plan.Calls)) {
					t.Errorf("%s: simulated %d calls of %d", c.Name, calls, len(rep.Plan.Calls))
				}
			}
			runDir := filepath.Join(dir, fmt.Sprintf("rep%d", i+1), c.Name)
			if _, err := os.Stat(filepath.Join(runDir, "calls.csv")); err != nil {
				t.Error(err)
			}
			// The pools' events, live and simulated, for the runs that
			// keep sandboxes: one admit or hit per call each (the run's
			// calls all succeed, and the simulator serves them all).
			for _, f := range []string{"pool-live.csv", "pool-sim.csv"} {
				b, err := os.ReadFile(filepath.Join(runDir, f))
				if c.Name == "fresh" {
					if err == nil {
						t.Errorf("fresh keeps no sandboxes, yet wrote %s", f)
					}
					continue
				}
				if err != nil {
					t.Error(err)
					continue
				}
				starts := strings.Count(string(b), ",admit,") + strings.Count(string(b), ",hit,")
				if !strings.HasPrefix(string(b), pool.EventHeader) || starts != len(rep.Plan.Calls) {
					t.Errorf("%s %s: %d admits and hits for %d calls:\n%.300s", c.Name, f, starts, len(rep.Plan.Calls), b)
				}
			}
		}
	}
	if got := strings.Join(order, " "); got != "fresh sock-like hearth fresh sock-like hearth" {
		t.Errorf("run order %s, want interleaved", got)
	}
	if evictions == 0 {
		t.Errorf("sock-like evicted nothing with room for two busy sandboxes and hardly a paused one")
	}
	for _, c := range []string{"sock-like", "hearth"} {
		if !pausedSeen[c] {
			t.Errorf("%s: no paused memory seen in any repetition", c)
		}
	}
	for _, f := range []string{"memory.csv", "paused-memory-rep1.png", "paused-memory-rep2.png"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, want := range []string{"Table IV", "=== Repetition 2 ===", "target (fewer for every function)", "sim misses"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestSimInputs checks what the simulator is given for a run: declared
// memory at admission, the paused memory measured per function (else the
// median of its package set's), and the mean measured start time of its
// non-warm starts with their wait for a turn (else the run's mean), not
// their response time, and the charge of a warm call grown to its
// function's peak, when the worker's growth charges came.
func TestSimInputs(t *testing.T) {
	plan := &replay.Plan{Funcs: []replay.Func{
		{Name: "a", MemoryMB: 144},
		{Name: "b", MemoryMB: 160, Packages: []string{"numpy"}},
		{Name: "c", MemoryMB: 192, Packages: []string{"numpy"}},
	}}
	ms := func(v float64) time.Duration { return time.Duration(v * 1e6) }
	run := &ReplayRun{Paused: []int64{5 << 20, 0, 20 << 20}, Result: &replay.Result{Records: []replay.Record{
		{Func: 0, Path: "cold", Status: 200, Response: ms(3000), Exec: ms(100), InitMs: 200},
		{Func: 0, Path: "warm", Status: 200, Response: ms(900), Exec: ms(100), InitMs: 0},      // warm: not a start
		{Func: 2, Path: "fork", Status: 200, Response: ms(500), InitMs: 50, TurnWaitMs: 30},    // held its room for both
		{Func: 2, Path: "cold", Status: 503, Err: "no room", Response: ms(10000), InitMs: 900}, // failed: no cost
	}}, Charge: "peak", Charges: []types.StartCharge{
		{Function: "a", Declared: 144 << 20, Peak: 4 << 20, Start: 12 << 20, Grown: 8 << 20},
		{Function: "c", Declared: 192 << 20, Start: 192 << 20}, // not measured: charged declared
	}}
	got := SimInputs(plan, run)
	want := []sim.Func{
		{Size: 144 << 20, Cold: ms(200), Paused: 5 << 20, Start: 12 << 20, Busy: 8 << 20, Kin: 1},
		{Size: 160 << 20, Cold: ms(140), Paused: 20 << 20, Kin: 2}, // numpy's median; the run's mean cost
		{Size: 192 << 20, Cold: ms(80), Paused: 20 << 20, Kin: 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	// A worker that says when its growth charges came: a gets its peak
	// that far into its calls; b, measured too but never charged for
	// growth (its calls too short to sample), none.
	run.Charges = append(run.Charges, types.StartCharge{Function: "b", Declared: 160 << 20, Peak: 30 << 20, Start: 40 << 20, Grown: 34 << 20})
	run.Charges[0].GrowthMs = 120
	got = SimInputs(plan, run)
	if got[0].Busy != 8<<20 || got[0].GrowAt != ms(120) || got[1].Busy != 0 || got[1].GrowAt != 0 || got[1].Start != 40<<20 {
		t.Errorf("with growth times: a %+v, b %+v; want a grown 8 MiB at 120 ms, b not grown", got[0], got[1])
	}
	// Charged declared, a worker charges no function like its kin.
	run.Charge = "declared"
	for i, f := range SimInputs(plan, run) {
		if f.Kin != 0 {
			t.Errorf("declared charge: function %d has kin %d", i, f.Kin)
		}
	}
}

func TestStepTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   string
	}{
		{0, 8000, "0 1000 2000 3000 4000 5000 6000 7000 8000"},
		{0, 135, "0 20 40 60 80 100 120"},
		{0, 1, "0.0 0.2 0.4 0.6 0.8 1.0"},
	} {
		var got []string
		for _, tk := range (stepTicks{}).Ticks(tc.lo, tc.hi) {
			got = append(got, tk.Label)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("ticks of [%v, %v]: %v, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestRunsAtOnce checks the overlap of calls' runs: partial overlaps
// count by their share of the run, failed calls not at all.
func TestRunsAtOnce(t *testing.T) {
	ms := func(v float64) time.Duration { return time.Duration(v * 1e6) }
	recs := []replay.Record{
		{Status: 200, Fired: ms(0), WaitMs: 10, InitMs: 10, RunMs: 100}, // runs 20-120
		{Status: 200, Fired: ms(70), RunMs: 100},                        // runs 70-170: half with the first
		{Status: 200, Fired: ms(500), RunMs: 10},                        // alone
		{Status: 500, Fired: ms(0), RunMs: 1000, Err: "boom"},           // failed: not counted
	}
	got := runsAtOnce(recs)
	want := []float64{1.5, 1.5, 1, 0}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Errorf("call %d: %v at once, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
}
