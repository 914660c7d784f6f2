package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/pool/policy"
	"github.com/hearth-run/hearth/internal/sim"
	"github.com/hearth-run/hearth/internal/trace"
)

// simConfig holds the parsed flags of `hearth sim`.
type simConfig struct {
	traceDir   string
	trace2021  string
	funcMB     float64
	policies   string
	mem        string
	splits     string
	thresholds string
	borrow     bool
	arrival    trace.Arrival
	seed       int64
	cold       time.Duration
	ttl        time.Duration
	out        string
	parallel   int
	quiet      bool
	faascache  bool
	maxSkipped float64 // percent of the trace that may be in skipped or suspect rows
}

func newSimCmd() *cobra.Command {
	var c simConfig
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate keep-alive policies on traces",
		Long: `sim replays an Azure Functions trace against the warm-pool engine for every
combination of policy, memory size and partition split, in parallel, and
writes results.csv, memory.csv and PNG plots to --out.

Cold-start cost per function: by default FaasCache-style, the maximum minus
the average execution time from the trace (which excludes cold starts);
--cold sets a fixed cost instead. Warm execution times are sampled from the
duration percentiles (2019) or replayed exactly (2021).

Rows of the trace that cannot be used are skipped, and the last row of a
file without a final newline is kept but suspect (a file cut inside it reads
30 as 3). sim lists them on stderr by reason with their line numbers, and
refuses the trace when they hold more than --max-skipped percent of its rows
or of its invocations (a -1 in the busiest function's row is one row but
most of the trace).

--faascache reproduces the simulator of FaasCache (ASPLOS'21) instead, for
cross-checking against it: its trace rules (functions invoked at least
twice, an app's memory divided among the functions durations.csv lists for
it and rounded up to whole MB, float-millisecond equidistant arrivals,
same-instant arrivals in the order of its joined table, which groups them
by app), a miss running for the maximum duration and a hit for the
average, its eviction and priority rules and its tie order. It takes a 2019
trace, a unified pool and the policies ` + strings.Join(sim.FaasCachePolicies(), ", ") + `.`,
		Example: `  hearth sim --trace ../shared/data/azure2019/sample100-min480-959 \
      --policies lru,gd,freq --mem 1,2,4,8,16,24 --split unified,80/20 --out sim-out`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.faascache {
				// FaasCache's rules fix these; accepting them would mislead.
				for _, n := range []string{"trace2021", "func-mb", "split", "borrow", "arrival", "seed", "cold"} {
					if cmd.Flags().Changed(n) {
						return fmt.Errorf("--faascache follows FaasCache's own rules and does not take --%s", n)
					}
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			return runSim(ctx, c, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.traceDir, "trace", "", "Azure 2019 trace `dir` (invocations.csv, durations.csv, memory.csv)")
	f.StringVar(&c.trace2021, "trace2021", "", "Azure 2021 invocation-level trace `file` (replayed exactly)")
	f.Float64Var(&c.funcMB, "func-mb", 256, "memory per function in MB for --trace2021, which has no memory data")
	f.StringVar(&c.policies, "policies", "lru,gd,freq", "comma-separated policies: "+strings.Join(policy.Names(), ", "))
	f.StringVar(&c.mem, "mem", "1,2,4,8,16,24", "comma-separated pool memory sizes in GB")
	f.StringVar(&c.splits, "split", "unified,80/20", `comma-separated splits: "unified" or small/large percentages like 80/20`)
	f.StringVar(&c.thresholds, "threshold", "225", "size threshold(s) in MB between partitions, slash-separated for splits of 3 or more")
	f.BoolVar(&c.borrow, "borrow", false, "let partitions borrow spare memory from each other")
	f.Var(&c.arrival, "arrival", "arrival model inside a minute: equidistant, uniform or exponential")
	f.Int64Var(&c.seed, "seed", 1, "seed for arrivals and sampled execution times")
	f.DurationVar(&c.cold, "cold", 0, "fixed cold-start cost for every function (default: max - avg duration)")
	f.DurationVar(&c.ttl, "ttl", policy.DefaultTTL, "keep-alive of the ttl policy")
	f.StringVar(&c.out, "out", "sim-out", "output `dir` for CSV and PNG files")
	f.IntVar(&c.parallel, "parallel", 0, "points simulated at once (default: one per CPU)")
	f.BoolVar(&c.quiet, "quiet", false, "no progress bar")
	f.BoolVar(&c.faascache, "faascache", false, "reproduce FaasCache's simulator (see above) instead of Hearth's engine")
	f.Float64Var(&c.maxSkipped, "max-skipped", 1, "refuse a trace with more than this `percent` of its rows or invocations in skipped or suspect rows (100 allows any)")
	return cmd
}

func runSim(ctx context.Context, c simConfig, stdout, stderr io.Writer) error {
	if !(c.maxSkipped >= 0 && c.maxSkipped <= 100) {
		return fmt.Errorf("--max-skipped %v: want a percentage from 0 to 100", c.maxSkipped)
	}
	if c.faascache {
		return runSimFaasCache(ctx, c, stdout, stderr)
	}
	w, err := loadWorkload(c, stderr)
	if err != nil {
		return err
	}
	cfgs, err := simPoints(c)
	if err != nil {
		return err
	}
	var progress io.Writer
	if !c.quiet {
		progress = stderr
		fmt.Fprintf(stderr, "simulating %d points of %d invocations (%d functions)\n", len(cfgs), w.Total, len(w.Funcs))
	}
	start := time.Now()
	rs, err := sim.Sweep(ctx, w, cfgs, c.parallel, progress)
	if err != nil {
		return fmt.Errorf("simulating: %w", err)
	}
	return writeSim(c.out, rs, plotInfo(c), w.Total, time.Since(start), stdout)
}

// plotInfo describes the run for the plots' titles.
func plotInfo(c simConfig) sim.PlotInfo {
	in := sim.PlotInfo{Threshold: "threshold " + c.thresholds + " MB"}
	switch {
	case c.faascache:
		in.Trace = filepath.Base(c.traceDir)
		in.Cold = "FaasCache's rules: a miss runs for the max duration, a hit for the avg"
		in.Extra = "hearth sim --faascache"
		return in
	case c.traceDir != "":
		in.Trace = filepath.Base(c.traceDir)
		in.Extra = c.arrival.String() + " arrivals"
	default:
		in.Trace = filepath.Base(c.trace2021)
		in.Extra = fmt.Sprintf("exact replay, %g MB per function", c.funcMB)
	}
	in.Cold = "cold cost = max - avg duration"
	if c.cold > 0 {
		in.Cold = "cold cost " + c.cold.String()
	}
	return in
}

// runSimFaasCache is runSim in FaasCache-compatible mode.
func runSimFaasCache(ctx context.Context, c simConfig, stdout, stderr io.Writer) error {
	if c.traceDir == "" {
		return errors.New("--faascache needs a 2019 trace: give --trace DIR")
	}
	t, err := trace.LoadAzure2019(c.traceDir)
	if err != nil {
		return fmt.Errorf("loading trace: %w", err)
	}
	if err := checkSkips(c, t.Skipped, &t.Report, stderr); err != nil {
		return err
	}
	mem, err := trace.LoadAppMemory2019(c.traceDir)
	if err != nil {
		return fmt.Errorf("loading trace: %w", err)
	}
	ft, err := sim.NewFaasCacheTrace(t, mem)
	if err != nil {
		return fmt.Errorf("converting trace: %w", err)
	}
	pts, err := simPoints(simConfig{policies: "lru", mem: c.mem, splits: "unified", thresholds: c.thresholds})
	if err != nil {
		return err
	}
	var cfgs []sim.FaasCacheConfig
	for _, name := range splitList(c.policies, ",") {
		for _, p := range pts {
			cfgs = append(cfgs, sim.FaasCacheConfig{Policy: name, Memory: p.Memory, SmallMax: p.SmallMax, TTL: c.ttl})
		}
	}
	var progress io.Writer
	if !c.quiet {
		progress = stderr
		fmt.Fprintf(stderr, "simulating %d points of %d invocations (%d functions, %d invoked fewer than twice left out) with FaasCache's rules\n",
			len(cfgs), ft.Total, len(ft.Funcs), ft.Skipped)
	}
	start := time.Now()
	rs, err := sim.SweepFaasCache(ctx, ft, cfgs, c.parallel, progress)
	if err != nil {
		return fmt.Errorf("simulating: %w", err)
	}
	return writeSim(c.out, rs, plotInfo(c), ft.Total, time.Since(start), stdout)
}

// writeSim writes the results to out and prints the table and throughput.
func writeSim(out string, rs []sim.Result, info sim.PlotInfo, invocations int64, el time.Duration, stdout io.Writer) error {
	paths, err := sim.WriteAll(out, rs, info)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tsplit\tmemory GB\tcold %\tdrop %\tsmall cold %\tlarge cold %\texec +%\tevictions\t")
	for _, r := range rs {
		split := r.Split
		if r.Borrow {
			split += "+borrow"
		}
		fmt.Fprintf(tw, "%s\t%s\t%g\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%d\t\n", r.Policy, split, float64(r.Memory)/(1<<30),
			r.All.ColdPct(), r.All.DropPct(), r.Small.ColdPct(), r.Large.ColdPct(), r.All.ExecIncreasePct(), r.Evictions)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing table: %w", err)
	}
	var cpu time.Duration
	for _, r := range rs {
		cpu += r.Wall
	}
	total := float64(invocations) * float64(len(rs))
	fmt.Fprintf(stdout, "\n%d points, %.0f invocations in %v (%.1f M/s overall, %.1f M/s per core)\n",
		len(rs), total, el.Round(time.Millisecond), total/el.Seconds()/1e6, total/cpu.Seconds()/1e6)
	for _, p := range paths {
		fmt.Fprintln(stdout, "wrote", p)
	}
	return nil
}

// checkSkips lists what loading the trace skipped or doubted on stderr and
// refuses the trace if that is more than --max-skipped of it.
func checkSkips(c simConfig, counts trace.SkipCounts, r *trace.SkipReport, stderr io.Writer) error {
	trace.WriteSkips(stderr, counts, r)
	if err := trace.CheckSkips(counts, r, c.maxSkipped/100); err != nil {
		return fmt.Errorf("%w; the rows are listed above: repair the trace, or pass --max-skipped 100 to simulate what is left", err)
	}
	return nil
}

func loadWorkload(c simConfig, stderr io.Writer) (sim.Workload, error) {
	cold := sim.ColdModel{Fixed: c.cold}
	if c.cold < 0 {
		return sim.Workload{}, fmt.Errorf("--cold %v must not be negative", c.cold)
	}
	switch {
	case c.traceDir != "" && c.trace2021 != "":
		return sim.Workload{}, errors.New("give either --trace or --trace2021, not both")
	case c.traceDir != "":
		t, err := trace.LoadAzure2019(c.traceDir)
		if err != nil {
			return sim.Workload{}, fmt.Errorf("loading trace: %w", err)
		}
		if err := checkSkips(c, t.Skipped, &t.Report, stderr); err != nil {
			return sim.Workload{}, err
		}
		return sim.FromTrace(t, c.arrival, c.seed, cold)
	case c.trace2021 != "":
		if !(c.funcMB > 0) {
			return sim.Workload{}, fmt.Errorf("--func-mb %v must be positive", c.funcMB)
		}
		t, err := trace.LoadAzure2021(c.trace2021)
		if err != nil {
			return sim.Workload{}, fmt.Errorf("loading trace: %w", err)
		}
		if err := checkSkips(c, t.Skipped, &t.Report, stderr); err != nil {
			return sim.Workload{}, err
		}
		agg := t.Aggregate() // for per-function durations, hence cold costs
		funcs := make([]sim.Func, len(agg.Functions))
		for i := range agg.Functions {
			funcs[i] = sim.Func{Size: int64(c.funcMB * sim.MiB), Cold: cold.Cost(agg.Functions[i].Dur)}
		}
		return sim.FromInvocations(funcs, t.Replay())
	}
	return sim.Workload{}, errors.New("no trace: give --trace DIR or --trace2021 FILE")
}

func simPoints(c simConfig) ([]sim.Config, error) {
	var ths []int64
	for _, s := range splitList(c.thresholds, "/") {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0) {
			return nil, fmt.Errorf("--threshold: bad size %q MB", s)
		}
		ths = append(ths, int64(v*sim.MiB))
	}
	var mems []int64
	for _, s := range splitList(c.mem, ",") {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0) || v > 1<<20 {
			return nil, fmt.Errorf("--mem: bad size %q GB", s)
		}
		mems = append(mems, int64(v*(1<<30)))
	}
	var splits []sim.Split
	for _, s := range splitList(c.splits, ",") {
		n := strings.Count(s, "/")
		var th []int64
		if n > 0 {
			if len(ths) < n {
				return nil, fmt.Errorf("--split %s needs %d thresholds, --threshold has %d", s, n, len(ths))
			}
			th = ths[:n]
		}
		sp, err := sim.ParseSplit(s, th)
		if err != nil {
			return nil, fmt.Errorf("--split: %w", err)
		}
		splits = append(splits, sp)
	}
	opts := policy.Options{TTL: c.ttl}
	var cfgs []sim.Config
	for _, name := range splitList(c.policies, ",") {
		np, err := policy.New(name, opts)
		if err != nil {
			return nil, fmt.Errorf("--policies: %w", err)
		}
		for _, sp := range splits {
			for _, m := range mems {
				cfgs = append(cfgs, sim.Config{Policy: strings.ToLower(name), NewPolicy: np, Memory: m, Split: sp, Borrow: c.borrow,
					SmallMax: ths[0]})
			}
		}
	}
	if len(cfgs) == 0 {
		return nil, errors.New("nothing to simulate: give --policies, --mem and --split")
	}
	return cfgs, nil
}

// splitList splits a flag value on sep, dropping empty items.
func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
