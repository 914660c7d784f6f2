package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/sim"
	"github.com/hearth-run/hearth/internal/trace"
)

// ReplayConfig is one worker configuration of the PARSEC comparison.
type ReplayConfig struct {
	// Name labels the configuration in tables and file names.
	Name string
	// Flags are the extra `hearth up` flags.
	Flags []string
	// PassLimit is the worker's pass limit that Flags set (--pass-limit),
	// for the simulator, which follows the worker's queue.
	PassLimit time.Duration
}

// ReplayConfigs returns the configurations of the PARSEC comparison:
// fresh (every start a fresh interpreter, nothing kept warm, a Docker-like
// baseline), SOCK-like (lean sandboxes and the handler cache, no zygotes,
// no snapshots, and OpenLambda's charge of a new sandbox: its memory
// limit until paused; both share the CPU alike among calls) and Hearth
// (everything on), and others that tell the parts of Hearth's gain
// apart: SOCK-like charged its measured peaks as Hearth is (sock-peak),
// Hearth charged memory limits (hearth-declared), Hearth with a pass
// limit of 100 ms on its memory queue (hearth-passlimit), Hearth
// weighing calls' CPU by their functions' run time (hearth-shortfirst),
// Hearth sharing running calls' CPU alike rather than by their arrival
// (hearth-nofirstcome), Hearth without snapshots (hearth-nosnap), and
// Hearth without zygote nodes planted at deploy for the functions'
// packages (hearth-noplant): its nodes come only from calls. The first
// three are the default.
func ReplayConfigs() []ReplayConfig {
	return []ReplayConfig{
		{Name: "fresh", Flags: []string{"--fresh", "--pool-charge=declared"}},
		{Name: "sock-like", Flags: []string{"--no-zygotes", "--no-snapshots", "--pool-charge=declared", "--first-come=false"}},
		{Name: "hearth"},
		{Name: "sock-peak", Flags: []string{"--no-zygotes", "--no-snapshots", "--pool-charge=peak", "--first-come=false"}},
		{Name: "hearth-declared", Flags: []string{"--pool-charge=declared"}},
		{Name: "hearth-passlimit", Flags: []string{"--pass-limit=100ms"}, PassLimit: 100 * time.Millisecond},
		{Name: "hearth-shortfirst", Flags: []string{"--short-first"}},
		{Name: "hearth-nofirstcome", Flags: []string{"--first-come=false"}},
		{Name: "hearth-nosnap", Flags: []string{"--no-snapshots"}},
		{Name: "hearth-noplant", Flags: []string{"--plant-deployed=-1"}},
	}
}

// DefaultPressureBudgetMB is the warm budget of `hearth bench replay`
// under memory pressure, from measurements of its default workload (48
// functions, 9 trace minutes at speed 4, 151 calls) on the 2-core, 24 GB
// host. Unconstrained (6000 MB, 8 minutes), SOCK-like held 490-720 MB in
// paused sandboxes (about 13 MB each) and Hearth 270-540 MB, besides the
// busy sandboxes, each charged its declared 144-192 MB until paused. At
// 768 MB the busy sandboxes alone filled the budget: paused ones held
// 25-46 MiB on average and every non-warm start waited about 2 s for
// room. At 1280 MB the busy charge still peaks at the budget, and
// SOCK-like evicts 80-91 paused sandboxes per run (most of its 95-105
// non-warm starts evict) while holding 66-152 MiB paused on average:
// evictions throughout, with paused memory a real share of the budget.
const DefaultPressureBudgetMB = 1280

// PickReplayConfigs returns the configurations of ReplayConfigs named in
// names, in that order.
func PickReplayConfigs(names []string) ([]ReplayConfig, error) {
	var out []ReplayConfig
	for _, n := range names {
		i := slices.IndexFunc(ReplayConfigs(), func(c ReplayConfig) bool { return c.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown configuration %q (want %s)", n, configNames(ReplayConfigs()))
		}
		if slices.ContainsFunc(out, func(c ReplayConfig) bool { return c.Name == n }) {
			return nil, fmt.Errorf("configuration %q named twice", n)
		}
		out = append(out, ReplayConfigs()[i])
	}
	if len(out) == 0 {
		return nil, errors.New("no configuration named")
	}
	return out, nil
}

// ReplayOptions configure the PARSEC comparison. Zero values take the
// documented defaults.
type ReplayOptions struct {
	// Hearth is the hearth binary; Base the base image tree.
	Hearth, Base string
	// TraceDir is an Azure 2019 trace folder.
	TraceDir string
	// From is the first trace minute (default: the trace's first) and
	// Minutes the window's length (default 60).
	From, Minutes int
	// Speed is the speed factor (default 12: an hour in 5 minutes).
	Speed float64
	// Funcs is the number of functions (default 8), picked with rates
	// spread log-evenly from HiRate down to LoRate calls per minute
	// (defaults 2.5 and 0.1, PARSEC's Table I).
	Funcs          int
	HiRate, LoRate float64
	// Seed seeds arrivals, execution times and package sets.
	Seed int64
	// Arrival is the arrival model (default equidistant).
	Arrival trace.Arrival
	// ExecCap bounds sampled execution times (default 2 s); functions
	// whose median exceeds it are not picked.
	ExecCap time.Duration
	// MemCapMB bounds the memory a handler touches (default 64).
	MemCapMB int
	// Popularity assigns package sets (default replay.DefaultPopularity).
	Popularity replay.Popularity
	// Extra is how many more functions of the window join PARSEC's
	// (default none), picked like them with rates spread log-evenly from
	// ExtraHiRate down to ExtraLoRate (defaults 0.5 and 0.05 calls per
	// minute) but not filtered by median: their execution times are
	// capped at ExecCap like every call's.
	Extra                    int
	ExtraHiRate, ExtraLoRate float64
	// WarmBudgetMB is every worker's warm budget, one unified pool
	// (--warm-budget-mb, --pools unified); 0 leaves the worker's
	// defaults.
	WarmBudgetMB int
	// Repeat runs the configurations that many times, interleaved (A B C
	// A B C ...); default 1.
	Repeat int
	// SampleEvery is how often the worker's status is read for the
	// memory of its paused sandboxes (default 2 s).
	SampleEvery time.Duration
	// Sim also runs each run's workload in the simulator (internal/sim)
	// with the start costs and paused memory the run measured, and
	// compares its non-warm starts with the run's.
	Sim bool
	// Configs are the worker configurations (default the first three of
	// ReplayConfigs).
	Configs []ReplayConfig
	// OutDir, if set, receives each run's CSV and plots and the memory
	// plots.
	OutDir string
	// PoolEvents also writes, for each run that keeps sandboxes warm,
	// every change to its warm pool's sandboxes (pool.Event) to
	// pool-live.csv beside its calls.csv, and with Sim the simulator's
	// to pool-sim.csv: where the two part shows why their cold starts
	// differ. It needs OutDir.
	PoolEvents bool
	// Out receives the tables; Progress, if set, progress bars and notes.
	Out, Progress io.Writer
}

// ReplayReport is the outcome of the comparison.
type ReplayReport struct {
	Plan    *replay.Plan
	Configs []ReplayConfig
	// Parsec is how many of Plan.Funcs, the first ones, are PARSEC's
	// picks; the rest are the extra functions.
	Parsec int
	// BudgetMB is the warm budget given to the workers (0: their default).
	BudgetMB int
	// Runs holds the runs by repetition, then configuration; a run that
	// did not happen is nil.
	Runs [][]*ReplayRun
}

// ReplayRun is one configuration's run in one repetition.
type ReplayRun struct {
	Config ReplayConfig
	Rep    int // from 1
	// Started is when its worker was started.
	Started time.Time
	Result  *replay.Result
	Sums    []replay.Summary
	// Mem is the warm pool's memory over the run, read from the worker's
	// status every ReplayOptions.SampleEvery.
	Mem []MemSample
	// Paused is each function's mean memory per paused sandbox (cgroup
	// charge) over the samples that saw one, by function index; 0 when
	// none was seen.
	Paused []int64
	// Pools is the warm pool's state at the end of the run.
	Pools []types.PoolStatus
	// Charges are the start charges of its functions at the end of the
	// run (types.Status.Charges).
	Charges []types.StartCharge
	// Charge is the worker's pool_charge (types.Status.Charge).
	Charge string
	// GrowthCharges is how many times a call's growth was charged while
	// it ran (hearth_warm_growth_charges_total): each may evict paused
	// sandboxes. The simulator charges a call's growth once, at its
	// function's peak (sim.Result.Growths).
	GrowthCharges int
	// CPU is what the worker and the processes it started spent over the
	// calls, by kind (Worker.CPU).
	CPU CPUUse
	// GrowthEvery is how often the worker measured a call's growth
	// (types.Status.GrowthEveryMs): the simulator charges a call its
	// function's grown peak only if it runs that long.
	GrowthEvery time.Duration
	// Sim is the simulator's prediction for the run, if asked for.
	Sim *sim.Result
	// StopErr is how the run's worker failed to stop cleanly, if it did.
	StopErr error
}

// Evictions returns the paused sandboxes the run's worker evicted for room.
func (r *ReplayRun) Evictions() uint64 {
	var n uint64
	for _, p := range r.Pools {
		n += p.Evictions
	}
	return n
}

// Drops returns the requests the run's worker refused (or gave up
// waiting) for lack of memory.
func (r *ReplayRun) Drops() uint64 {
	var n uint64
	for _, p := range r.Pools {
		n += p.Drops
	}
	return n
}

// PickByRate returns the hashes of n functions of t whose mean rates over
// t are closest, on a log scale, to n targets spread log-evenly from hi
// down to lo calls per minute, each function picked once. Only functions
// accepted by ok (nil: all) with a positive rate are candidates; ties go
// to the function listed first.
func PickByRate(t *trace.Trace, n int, hi, lo float64, ok func(*trace.Function) bool) ([]string, error) {
	if n <= 0 || !(hi > 0) || !(lo > 0) || lo > hi {
		return nil, fmt.Errorf("picking %d functions between %v and %v calls/min: bad range", n, hi, lo)
	}
	used := make([]bool, len(t.Functions))
	var out []string
	for k := 0; k < n; k++ {
		target := hi
		if n > 1 {
			target = hi * math.Pow(lo/hi, float64(k)/float64(n-1))
		}
		best, bestD := -1, math.Inf(1)
		for i := range t.Functions {
			f := &t.Functions[i]
			r := f.Rate()
			if used[i] || r <= 0 || (ok != nil && !ok(f)) {
				continue
			}
			if d := math.Abs(math.Log(r / target)); d < bestD {
				best, bestD = i, d
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("only %d of %d functions have a positive rate and pass the filter", k, n)
		}
		used[best] = true
		out = append(out, t.Functions[best].Hash)
	}
	return out, nil
}

// poolEventsFlag is hearth up's flag for ReplayOptions.PoolEvents.
const poolEventsFlag = "--pool-events"

// upFlags returns the flags that `hearth up` of binary hearth accepts
// among want, and notes the missing ones on progress.
func upFlags(hearth string, progress io.Writer) (map[string]bool, error) {
	out, err := exec.Command(hearth, "up", "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("hearth up --help: %v\n%s", err, out)
	}
	have := map[string]bool{poolEventsFlag: strings.Contains(string(out), poolEventsFlag+" ")}
	for _, c := range ReplayConfigs() {
		for _, f := range c.Flags {
			name, _, _ := strings.Cut(f, "=")
			have[f] = strings.Contains(string(out), name+" ")
			if !have[f] && progress != nil {
				fmt.Fprintf(progress, "note: this hearth has no %s flag; configurations that need it run without it\n", f)
			}
		}
	}
	return have, nil
}

// Replay runs the PARSEC comparison: the same replay against a fresh
// worker per configuration, the configurations interleaved and repeated
// o.Repeat times. It prints the tables to o.Out.
func Replay(ctx context.Context, o ReplayOptions) (*ReplayReport, error) {
	if o.Hearth == "" || o.Base == "" || o.TraceDir == "" {
		return nil, errors.New("replay bench: hearth binary, base image and trace dir are required")
	}
	if o.Minutes < 0 || o.Funcs < 0 || o.Extra < 0 || o.Repeat < 0 || o.WarmBudgetMB < 0 || o.SampleEvery < 0 {
		return nil, errors.New("replay bench: minutes, functions, extra, repeat, warm budget and sample period must not be negative")
	}
	o.Minutes = replayOr(o.Minutes, 60)
	o.Speed = replayOr(o.Speed, 12)
	o.Funcs = replayOr(o.Funcs, 8)
	o.HiRate = replayOr(o.HiRate, 2.5)
	o.LoRate = replayOr(o.LoRate, 0.1)
	o.ExtraHiRate = replayOr(o.ExtraHiRate, 0.5)
	o.ExtraLoRate = replayOr(o.ExtraLoRate, 0.05)
	o.ExecCap = replayOr(o.ExecCap, 2*time.Second)
	o.Repeat = replayOr(o.Repeat, 1)
	o.SampleEvery = replayOr(o.SampleEvery, 2*time.Second)
	if o.Configs == nil {
		o.Configs = ReplayConfigs()[:3]
	}
	if o.PoolEvents && o.OutDir == "" {
		return nil, errors.New("replay bench: pool events need an output dir")
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	full, err := trace.LoadAzure2019(o.TraceDir)
	if err != nil {
		return nil, fmt.Errorf("loading trace: %w", err)
	}
	from := o.From
	if from == 0 {
		from = full.FirstMinute
	}
	win, err := full.Window(from, from+o.Minutes)
	if err != nil {
		return nil, err
	}
	capMs := float64(o.ExecCap) / 1e6
	hashes, err := PickByRate(win, o.Funcs, o.HiRate, o.LoRate, func(f *trace.Function) bool { return f.Dur.P50 <= capMs })
	if err != nil {
		return nil, err
	}
	if o.Extra > 0 {
		taken := map[string]bool{}
		for _, h := range hashes {
			taken[h] = true
		}
		extra, err := PickByRate(win, o.Extra, o.ExtraHiRate, o.ExtraLoRate, func(f *trace.Function) bool { return !taken[f.Hash] })
		if err != nil {
			return nil, fmt.Errorf("extra functions: %w", err)
		}
		hashes = append(hashes, extra...)
	}
	sel, err := win.Select(hashes...)
	if err != nil {
		return nil, err
	}
	plan, err := replay.NewPlan(sel, replay.PlanConfig{Arrival: o.Arrival, Seed: o.Seed, Speed: o.Speed,
		MemCapMB: o.MemCapMB, ExecCap: o.ExecCap, Popularity: o.Popularity, Prefix: "parsec-"})
	if err != nil {
		return nil, err
	}
	have, err := upFlags(o.Hearth, o.Progress)
	if err != nil {
		return nil, err
	}
	if o.PoolEvents && !have[poolEventsFlag] {
		return nil, fmt.Errorf("replay bench: %s has no %s flag to write its pool's events", o.Hearth, poolEventsFlag)
	}
	var common []string
	budget := "the workers' default warm budget"
	if o.WarmBudgetMB > 0 {
		common = []string{"--warm-budget-mb", strconv.Itoa(o.WarmBudgetMB), "--pools", "unified"}
		budget = fmt.Sprintf("warm budget %d MB (one unified LRU pool)", o.WarmBudgetMB)
	}
	rate := 0.0
	for _, f := range plan.Funcs {
		rate += f.Rate
	}
	fmt.Fprintf(o.Out, "PARSEC comparison: %d functions (%d PARSEC + %d more of the trace), trace minutes [%d, %d) at speed %g (%v wall per run), %d calls (%.1f/s), arrival %s, seed %d, execution times capped at %v;\n%s; %d repetitions of %s, interleaved\n\n",
		len(plan.Funcs), o.Funcs, len(plan.Funcs)-o.Funcs, from, from+o.Minutes, o.Speed, plan.Duration().Round(time.Second),
		len(plan.Calls), rate*o.Speed/60, o.Arrival, o.Seed, o.ExecCap, budget, o.Repeat, configNames(o.Configs))
	rep := &ReplayReport{Plan: plan, Configs: o.Configs, Parsec: o.Funcs, BudgetMB: o.WarmBudgetMB}
	for r := 1; r <= o.Repeat; r++ {
		runs := make([]*ReplayRun, len(o.Configs))
		rep.Runs = append(rep.Runs, runs)
		for k, c := range o.Configs {
			flags := slices.Clone(common)
			for _, f := range c.Flags {
				if ok, known := have[f]; ok || !known {
					flags = append(flags, f)
				}
			}
			runDir := filepath.Join(o.OutDir, fmt.Sprintf("rep%d", r), c.Name)
			events := o.PoolEvents && warmCached(c)
			if events {
				if err := os.MkdirAll(runDir, 0o755); err != nil {
					return rep, err
				}
				abs, err := filepath.Abs(filepath.Join(runDir, "pool-live.csv"))
				if err != nil {
					return rep, err
				}
				flags = append(flags, poolEventsFlag+"="+abs)
			}
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "repetition %d/%d, %s: hearth up %s\n", r, o.Repeat, c.Name, strings.Join(flags, " "))
			}
			started := time.Now()
			run, err := replayOne(ctx, o, plan, flags)
			if err != nil {
				return rep, fmt.Errorf("repetition %d, config %s: %w", r, c.Name, err)
			}
			run.Config, run.Rep, run.Started = c, r, started
			fmt.Fprintf(o.Out, "repetition %d, %s: %s\n", r, c.Name, run.Result.Stats)
			if run.StopErr != nil {
				fmt.Fprintf(o.Out, "  warning: the worker did not stop cleanly: %s\n", lastLine(run.StopErr.Error()))
			}
			if o.OutDir != "" {
				if err := writeReplay(runDir, run.Result); err != nil {
					return rep, err
				}
			}
			if o.Sim && warmCached(c) {
				var simEvents string
				if events {
					simEvents = filepath.Join(runDir, "pool-sim.csv")
				}
				if run.Sim, err = simulateRun(ctx, plan, run, o.WarmBudgetMB, simEvents); err != nil {
					return rep, fmt.Errorf("repetition %d, config %s: simulating: %w", r, c.Name, err)
				}
			}
			runs[k] = run
		}
	}
	if o.OutDir != "" {
		if err := rep.writeMemory(o.OutDir, o.Speed); err != nil {
			return rep, err
		}
	}
	fmt.Fprintln(o.Out)
	return rep, rep.Tables(o.Out)
}

// lastLine returns the last non-empty line of s: the worker's last word.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

func configNames(cs []ReplayConfig) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// warmCached reports whether configuration c keeps sandboxes warm, so
// that the simulator's warm pool stands for it.
func warmCached(c ReplayConfig) bool {
	return !slices.Contains(c.Flags, "--fresh") && !slices.Contains(c.Flags, "--no-warm-cache")
}

func replayOne(ctx context.Context, o ReplayOptions, plan *replay.Plan, flags []string) (run *ReplayRun, err error) {
	w, err := StartWorker(ctx, o.Hearth, o.Base, flags...)
	if err != nil {
		return nil, err
	}
	defer func() {
		serr := w.Stop()
		switch {
		case serr == nil:
		case err == nil:
			// The measurement is complete: a worker that was slow to
			// clean up on a busy host (its reaper sweeps the rest) is
			// reported with the run, not worth the whole comparison.
			run.StopErr = serr
		default:
			err = errors.Join(err, serr)
		}
	}()
	if err := replay.Deploy(ctx, w.Client, plan); err != nil {
		return nil, err
	}
	cpu0, err := w.CPU()
	if err != nil {
		return nil, fmt.Errorf("reading the worker's CPU: %w", err)
	}
	smp := startSampler(ctx, w.Client, plan, o.SampleEvery)
	res, err := replay.Run(ctx, w.Client, plan, replay.Options{Progress: o.Progress})
	mem, paused := smp.stop()
	if err != nil {
		return nil, err
	}
	run = &ReplayRun{Result: res, Sums: replay.Summarize(plan, res.Records), Mem: mem, Paused: paused}
	// The background work the calls left (snapshot dumps, which wait up
	// to 10 s for a moment with no call; spare refills) is theirs too.
	select {
	case <-time.After(cpuSettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cpu1, err := w.CPU()
	if err != nil {
		return nil, fmt.Errorf("reading the worker's CPU: %w", err)
	}
	run.CPU = cpu1.Sub(cpu0)
	st, err := w.Client.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the worker's status: %w", err)
	}
	run.Pools, run.Charge, run.Charges = st.Pools, st.Charge, st.Charges
	run.GrowthEvery = time.Duration(st.GrowthEveryMs * float64(time.Millisecond))
	g, err := w.Metric(ctx, "hearth_warm_growth_charges_total")
	if err != nil {
		return nil, fmt.Errorf("reading the worker's metrics: %w", err)
	}
	run.GrowthCharges = int(g)
	return run, nil
}

// cpuSettle is how long after its last call a run's CPU is read.
const cpuSettle = 12 * time.Second

// writeReplay writes calls.csv and the plots of one configuration.
func writeReplay(dir string, res *replay.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.Create(filepath.Join(dir, "calls.csv"))
	if err != nil {
		return err
	}
	if err := replay.WriteCSV(f, res.Plan, res.Records); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := replay.Plot(dir, res); err != nil && !errors.Is(err, replay.ErrNoCalls) {
		return err
	}
	return nil
}

// Tables prints, for each repetition, PARSEC's Tables III and IV, the
// start paths and memory of each run and the targets' checks, and then
// the simulator's predictions against the live runs.
func (r *ReplayReport) Tables(w io.Writer) error {
	for i := range r.Runs {
		if err := r.Table(w, i); err != nil {
			return err
		}
	}
	return r.SimTable(w)
}

// Table prints PARSEC's Tables III and IV for repetition i (from 0): per
// function, mean and p99 response time and cold starts per configuration,
// and how much the last configuration improves on each of the others.
// Cold starts are shown as "by start path / by PARSEC's definition";
// reductions use PARSEC's definition, as PARSEC did. Then each run's
// start paths, evictions and paused memory, and the targets' checks.
func (r *ReplayReport) Table(w io.Writer, i int) error {
	runs := r.Runs[i]
	n := 0
	for n < len(runs) && runs[n] != nil {
		n++
	}
	if n == 0 {
		return nil
	}
	last := r.Configs[n-1].Name
	fmt.Fprintf(w, "=== Repetition %d ===\n\n", i+1)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := func(title string, p99 bool) {
		fmt.Fprintln(tw, title)
		line := "function\tset\trate/min\tpackages\tcalls\t"
		for _, c := range r.Configs[:n] {
			line += c.Name + "\t"
		}
		if p99 {
			for _, c := range r.Configs[:n] {
				line += "p99 " + c.Name + "\t"
			}
		}
		for _, c := range r.Configs[:n-1] {
			line += last + " vs " + c.Name + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	pct := func(base, x float64) string {
		if base == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*(base-x)/base)
	}
	set := func(f int) string {
		if f < r.Parsec {
			return "parsec"
		}
		return "extra"
	}
	head("Mean and p99 response time (ms) and improvement of the mean (Table III)", true)
	for fi, f := range r.Plan.Funcs {
		line := fmt.Sprintf("%s\t%s\t%.2f\t%s\t%d\t", f.Name, set(fi), f.Rate, pkgLabel(f.Packages), runs[0].Sums[fi].N)
		for k := range n {
			line += fmt.Sprintf("%.1f\t", float64(runs[k].Sums[fi].Mean)/1e6)
		}
		for k := range n {
			line += fmt.Sprintf("%.1f\t", float64(runs[k].Sums[fi].P99)/1e6)
		}
		for k := range n - 1 {
			line += pct(float64(runs[k].Sums[fi].Mean), float64(runs[n-1].Sums[fi].Mean)) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	fmt.Fprintln(tw)
	head("Cold starts, by start path / by PARSEC (> run + 30 ms), and reduction by PARSEC's count (Table IV)", false)
	tot := make([][2]int, n)
	for fi, f := range r.Plan.Funcs {
		line := fmt.Sprintf("%s\t%s\t%.2f\t%s\t%d\t", f.Name, set(fi), f.Rate, pkgLabel(f.Packages), runs[0].Sums[fi].N)
		for k := range n {
			s := runs[k].Sums[fi]
			tot[k][0] += s.ColdPath
			tot[k][1] += s.ColdParsec
			line += fmt.Sprintf("%d / %d\t", s.ColdPath, s.ColdParsec)
		}
		for k := range n - 1 {
			line += pct(float64(runs[k].Sums[fi].ColdParsec), float64(runs[n-1].Sums[fi].ColdParsec)) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	line := fmt.Sprintf("all\t\t\t\t%d\t", len(r.Plan.Calls))
	for k := range n {
		line += fmt.Sprintf("%d / %d\t", tot[k][0], tot[k][1])
	}
	for k := range n - 1 {
		line += pct(float64(tot[k][1]), float64(tot[n-1][1])) + "\t"
	}
	fmt.Fprintln(tw, line)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Start paths, evictions and memory held by paused sandboxes (the pool's charge; all: busy and paused), and by the zygotes (their cgroups, outside the pool)")
	fmt.Fprintln(tw, "config\tcalls\twarm\tsnapshot\tfork\tcold\tnone\tPARSEC cold\tevictions\tdrops\tpaused MiB mean\tpeak\tpaused sandboxes mean\tall MiB peak\tzygotes MiB mean\tpeak\t")
	for k := range n {
		run := runs[k]
		pc := replay.PathCounts(run.Result.Records)
		mean, peak, cnt := run.memStats()
		var used int64
		for _, m := range run.Mem {
			used = max(used, m.Used)
		}
		zmean, zpeak := run.zygoteStats()
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", run.Config.Name, len(run.Result.Records),
			pc["warm"], pc["snapshot"], pc["fork"], pc["cold"], pc[""], tot[k][1], run.Evictions(), run.Drops(),
			mean/(1<<20), peak/(1<<20), cnt, float64(used)/(1<<20), zmean/(1<<20), zpeak/(1<<20))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Where the response time went, ms: wait (for a concurrency slot and for memory, before the start), start, run, and the rest (HTTP, the client); means, and the wait's p99 and max")
	fmt.Fprintln(tw, "config\tcalls\twait mean\twait p99\twait max\twaited >100 ms\tstart mean\trun mean\trest mean\t")
	for k := range n {
		for _, warm := range []bool{true, false} {
			var waits []float64
			var start, run, rest float64
			for _, rec := range runs[k].Result.Records {
				if !rec.OK() || (rec.Path == "warm") != warm {
					continue
				}
				waits = append(waits, rec.WaitMs)
				start += rec.InitMs
				run += rec.RunMs
				rest += float64(rec.Response)/1e6 - rec.WaitMs - rec.InitMs - rec.RunMs
			}
			name := runs[k].Config.Name + ", non-warm"
			if warm {
				name = runs[k].Config.Name + ", warm"
			}
			if len(waits) == 0 {
				fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\t-\t-\t-\t\n", name)
				continue
			}
			slices.Sort(waits)
			var sum float64
			over := 0
			for _, v := range waits {
				sum += v
				if v > 100 {
					over++
				}
			}
			c := float64(len(waits))
			p99 := waits[min(len(waits)-1, int(0.99*c))]
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t%.1f\t%.1f\t%.1f\t\n", name, len(waits), sum/c, p99, waits[len(waits)-1],
				over, start/c, run/c, rest/c)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "Calls running at once during a call's run (itself included), mean over its run time, then over the calls: what a call's CPU was shared with")
	fmt.Fprintln(tw, "config\twarm\tnon-warm\tall\t")
	for k := range n {
		recs := runs[k].Result.Records
		var sum [2]float64
		var cnt [2]int
		for i, o := range runsAtOnce(recs) {
			if o == 0 {
				continue
			}
			j := 1
			if recs[i].Path == "warm" {
				j = 0
			}
			sum[j] += o
			cnt[j]++
		}
		mean := func(s float64, c int) string {
			if c == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", s/float64(c))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", runs[k].Config.Name, mean(sum[0], cnt[0]), mean(sum[1], cnt[1]),
			mean(sum[0]+sum[1], cnt[0]+cnt[1]))
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "CPU over the calls and the %v after them, s, by process: the worker, hearth-init, zygotes, the functions' interpreters (spares included), sandboxes gone and tools (exited), and the host's kernel threads; and the calls' run time beyond their sampled execution (the handler touching its memory, and waiting for a CPU)\n", cpuSettle)
	line = "config\t"
	for _, k := range CPUKinds {
		line += k + "\t"
	}
	fmt.Fprintln(tw, line+"total\tkernel\trun - exec\t")
	for k := range n {
		u := runs[k].CPU
		line := runs[k].Config.Name + "\t"
		for _, kind := range CPUKinds {
			if x, ok := u[kind]; ok {
				line += fmt.Sprintf("%.1f\t", x.Seconds())
			} else {
				line += "-\t"
			}
		}
		kern := "-"
		if x, ok := u["kernel"]; ok {
			kern = fmt.Sprintf("%.1f", x.Seconds())
		}
		var over float64
		for _, rec := range runs[k].Result.Records {
			if rec.OK() {
				over += rec.RunMs - float64(rec.Exec)/1e6
			}
		}
		fmt.Fprintf(tw, "%s%.1f\t%s\t%.1f\t\n", line, u.Total().Seconds(), kern, over/1e3)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	errs := 0
	for k := range n {
		for _, s := range runs[k].Sums {
			errs += s.Errors
		}
	}
	if errs > 0 {
		fmt.Fprintf(w, "\n%d calls failed in this repetition; see the CSVs\n", errs)
	}
	fmt.Fprintln(w)
	r.targets(w, runs[:n])
	fmt.Fprintln(w)
	return nil
}

// targets prints issue 15's checks for one repetition: Hearth has fewer
// cold starts than SOCK-like for every function, and a lower mean
// response for at least 7 of the 8 PARSEC functions.
func (r *ReplayReport) targets(w io.Writer, runs []*ReplayRun) {
	var sock, hearth *ReplayRun
	for _, run := range runs {
		switch run.Config.Name {
		case "sock-like":
			sock = run
		case "hearth":
			hearth = run
		}
	}
	if sock == nil || hearth == nil {
		return
	}
	var fewer, same, more, fewerP, sameP, moreP, faster int
	for fi := range r.Plan.Funcs {
		s, h := sock.Sums[fi], hearth.Sums[fi]
		switch {
		case h.ColdPath < s.ColdPath:
			fewer++
		case h.ColdPath == s.ColdPath:
			same++
		default:
			more++
		}
		switch {
		case h.ColdParsec < s.ColdParsec:
			fewerP++
		case h.ColdParsec == s.ColdParsec:
			sameP++
		default:
			moreP++
		}
		if fi < r.Parsec && h.Mean < s.Mean {
			faster++
		}
	}
	nf := len(r.Plan.Funcs)
	fmt.Fprintf(w, "hearth vs sock-like, %d functions: fewer cold starts by start path for %d, as many for %d, more for %d; by PARSEC's count fewer for %d, as many for %d, more for %d\n",
		nf, fewer, same, more, fewerP, sameP, moreP)
	fmt.Fprintf(w, "  target (fewer for every function): by start path %s, by PARSEC's count %s\n", okWord(fewer == nf), okWord(fewerP == nf))
	fmt.Fprintf(w, "hearth's mean response lower than sock-like's for %d of %d PARSEC functions (target: at least %d): %s\n",
		faster, r.Parsec, max(r.Parsec-1, 0), okWord(faster >= r.Parsec-1))
}

func okWord(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func pkgLabel(p []string) string {
	if len(p) == 0 {
		return "none"
	}
	return strings.Join(p, "+")
}

func replayOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// runsAtOnce returns, for each of recs, how many calls ran at once during
// its run, itself included, averaged over its run time: on a small host
// the calls share the CPUs (a handler touching its memory is CPU), so
// more at once stretches each. 0 for a call that failed or ran no time.
func runsAtOnce(recs []replay.Record) []float64 {
	type span struct{ a, b float64 }
	sp := make([]span, len(recs))
	for i, r := range recs {
		if !r.OK() || r.RunMs <= 0 {
			continue
		}
		a := float64(r.Fired)/1e6 + r.WaitMs + r.InitMs
		sp[i] = span{a, a + r.RunMs}
	}
	out := make([]float64, len(recs))
	for i, s := range sp {
		if s.b <= s.a {
			continue
		}
		var tot float64
		for _, o := range sp {
			tot += max(0, min(s.b, o.b)-max(s.a, o.a))
		}
		out[i] = tot / (s.b - s.a)
	}
	return out
}
