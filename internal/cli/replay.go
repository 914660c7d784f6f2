package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/bench"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/trace"
)

// replayConfig holds the parsed flags of `hearth replay`.
type replayConfig struct {
	url, token  string
	traceDir    string
	trace2021   string
	from, to    int
	functions   int
	hashes      []string
	arrival     trace.Arrival
	seed        int64
	speed       float64
	inFlight    int
	memCap      int
	execCap     time.Duration
	popularity  string
	concurrency int
	lateTol     time.Duration
	out         string
	quiet, keep bool
}

func newReplayCmd() *cobra.Command {
	var c replayConfig
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Replay a serverless trace against a worker, open loop",
		Long: `replay deploys one synthetic function per trace function to a running worker
and replays the trace's invocations against it at their scheduled times,
whether or not earlier calls have answered (open loop), with a bounded
number in flight.

Each synthetic function imports a package set from the base image (numpy,
requests, Pillow and combinations, drawn by --popularity), touches the
trace function's memory (at most --mem-cap-mb) and runs for an execution
time sampled from the trace's duration percentiles (at most --exec-cap).
--speed compresses the gaps between calls, not the calls themselves.

It writes calls.csv (one row per invocation), summary.txt and PNG plots to
--out, and prints the per-function summary: mean and p99 response time,
cold starts by start path and by PARSEC's definition (response time more
than 30 ms above the run time), and errors. If the generator fell behind
its schedule, the summary says so.`,
		Example: `  hearth replay --trace ../shared/data/azure2019/sample100-min480-959 \
      --from 480 --to 540 --functions 8 --speed 4 --out replay-out`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			return runReplay(ctx, c, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.url, "url", client.DefaultURL, "worker URL")
	f.StringVar(&c.token, "token", os.Getenv("HEARTH_TOKEN"), "bearer token for deploys (or $HEARTH_TOKEN)")
	f.StringVar(&c.traceDir, "trace", "", "Azure 2019 trace `dir` (invocations.csv, durations.csv, memory.csv)")
	f.StringVar(&c.trace2021, "trace2021", "", "Azure 2021 invocation-level trace `file` (aggregated per minute)")
	f.IntVar(&c.from, "from", -1, "first trace minute to replay, numbered as in the file (default: the first)")
	f.IntVar(&c.to, "to", -1, "end of the minute range, exclusive (default: the last minute + 1)")
	f.IntVar(&c.functions, "functions", 0, "number of functions to pick at random (seeded) among those invoked in the range (default: all)")
	f.StringSliceVar(&c.hashes, "hashes", nil, "comma-separated function hashes to replay instead of a random pick")
	f.Var(&c.arrival, "arrival", "arrival model inside a minute: equidistant, uniform or exponential")
	f.Int64Var(&c.seed, "seed", 1, "seed for the function pick, arrivals, execution times and package sets")
	f.Float64Var(&c.speed, "speed", 1, "speed factor: 1 is real time, 4 replays an hour in 15 minutes")
	f.IntVar(&c.inFlight, "max-in-flight", 64, "most calls outstanding at once")
	f.IntVar(&c.memCap, "mem-cap-mb", 64, "most memory a handler touches, MB")
	f.DurationVar(&c.execCap, "exec-cap", 10*time.Second, "longest sampled execution time")
	f.StringVar(&c.popularity, "popularity", replay.DefaultPopularity, "package sets and their weights")
	f.IntVar(&c.concurrency, "concurrency", 8, "max_concurrency of each synthetic function")
	f.DurationVar(&c.lateTol, "late-tolerance", 50*time.Millisecond, "lateness beyond which the generator counts as behind")
	f.StringVar(&c.out, "out", "replay-out", "output `dir` for calls.csv, summary.txt and plots")
	f.BoolVar(&c.quiet, "quiet", false, "no progress bar")
	f.BoolVar(&c.keep, "keep", false, "leave the synthetic functions deployed afterwards")
	return cmd
}

// loadReplayTrace loads the trace and applies the minute range and the
// function selection.
func loadReplayTrace(c replayConfig) (*trace.Trace, error) {
	var t *trace.Trace
	switch {
	case c.traceDir != "" && c.trace2021 != "":
		return nil, errors.New("give either --trace or --trace2021, not both")
	case c.traceDir != "":
		var err error
		if t, err = trace.LoadAzure2019(c.traceDir); err != nil {
			return nil, fmt.Errorf("loading trace: %w", err)
		}
	case c.trace2021 != "":
		t21, err := trace.LoadAzure2021(c.trace2021)
		if err != nil {
			return nil, fmt.Errorf("loading trace: %w", err)
		}
		t = t21.Aggregate()
	default:
		return nil, errors.New("give a trace: --trace DIR (Azure 2019) or --trace2021 FILE")
	}
	from, to := c.from, c.to
	if from < 0 {
		from = t.FirstMinute
	}
	if to < 0 {
		to = t.FirstMinute + t.Minutes
	}
	t, err := t.Window(from, to)
	if err != nil {
		return nil, err
	}
	if len(c.hashes) > 0 {
		if c.functions != 0 {
			return nil, errors.New("give either --functions or --hashes, not both")
		}
		return t.Select(c.hashes...)
	}
	var active []string
	for i := range t.Functions {
		if t.Functions[i].Total() > 0 {
			active = append(active, t.Functions[i].Hash)
		}
	}
	if len(active) == 0 {
		return nil, fmt.Errorf("no function is invoked in minutes [%d, %d)", from, to)
	}
	if t, err = t.Select(active...); err != nil {
		return nil, err
	}
	if c.functions < 0 {
		return nil, fmt.Errorf("--functions %d must not be negative", c.functions)
	}
	if c.functions == 0 || c.functions == len(t.Functions) {
		return t, nil
	}
	if c.functions > len(t.Functions) {
		return nil, fmt.Errorf("--functions %d: only %d functions are invoked in minutes [%d, %d)", c.functions, len(t.Functions), from, to)
	}
	return t.Sample(c.functions, c.seed)
}

func runReplay(ctx context.Context, c replayConfig, stdout, stderr io.Writer) error {
	t, err := loadReplayTrace(c)
	if err != nil {
		return err
	}
	pop, err := replay.ParsePopularity(c.popularity)
	if err != nil {
		return err
	}
	if c.inFlight <= 0 {
		return fmt.Errorf("--max-in-flight %d must be positive", c.inFlight)
	}
	plan, err := replay.NewPlan(t, replay.PlanConfig{Arrival: c.arrival, Seed: c.seed, Speed: c.speed,
		MemCapMB: c.memCap, ExecCap: c.execCap, Popularity: pop, Concurrency: c.concurrency})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return fmt.Errorf("creating output dir: %w", err)
	}
	token := c.token
	if token == "" && client.Loopback(c.url) {
		// The worker on this host: its token file, as the other commands.
		token, _ = api.ReadToken(cmp.Or(os.Getenv("HEARTH_TOKEN_FILE"), filepath.Join(image.DefaultDataDir, api.TokenFile)))
	}
	cl := client.New(c.url, token)
	if !cl.Healthy(ctx) {
		return fmt.Errorf("no worker answers at %s (start one with hearth up)", c.url)
	}
	fmt.Fprintf(stderr, "replaying %d calls of %d functions over trace minutes [%d, %d) at speed %g: about %v\n",
		len(plan.Calls), len(plan.Funcs), t.FirstMinute, t.FirstMinute+t.Minutes, c.speed, plan.Duration().Round(time.Second))
	if err := replay.Deploy(ctx, cl, plan); err != nil {
		return err
	}
	if !c.keep {
		defer func() {
			// The run's ctx may be cancelled; removal still should happen.
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := replay.Remove(rctx, cl, plan); err != nil {
				fmt.Fprintln(stderr, "warning:", err)
			}
		}()
	}
	var progress io.Writer
	if !c.quiet {
		progress = stderr
	}
	res, runErr := replay.Run(ctx, cl, plan, replay.Options{MaxInFlight: c.inFlight, LateTolerance: c.lateTol, Progress: progress})
	if res == nil {
		return runErr
	}
	if err := writeReplayOut(c.out, res, stdout); err != nil {
		return err
	}
	if runErr != nil {
		return fmt.Errorf("replay interrupted after %d of %d calls: %w", res.Stats.Fired, res.Stats.Calls, runErr)
	}
	return nil
}

// writeReplayOut writes calls.csv, summary.txt and the plots to dir and
// prints the summary.
func writeReplayOut(dir string, res *replay.Result, stdout io.Writer) error {
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
	s, err := os.Create(filepath.Join(dir, "summary.txt"))
	if err != nil {
		return err
	}
	if err := replay.WriteSummary(io.MultiWriter(s, stdout), res); err != nil {
		s.Close()
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	paths, err := replay.Plot(dir, res)
	if err != nil && !errors.Is(err, replay.ErrNoCalls) {
		return err
	}
	fmt.Fprintf(stdout, "\nwrote %s, %s and %d plots\n", filepath.Join(dir, "calls.csv"), filepath.Join(dir, "summary.txt"), len(paths))
	return nil
}

// newBenchReplayCmd is `hearth bench replay`, the PARSEC comparison.
func newBenchReplayCmd(bin func() (string, error)) *cobra.Command {
	var o bench.ReplayOptions
	var dataDir string
	var configs []string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "PARSEC-style comparison: fresh vs SOCK-like vs Hearth on a trace replay",
		Long: `replay picks functions of an Azure 2019 trace whose invocation rates span
PARSEC's Table I (about 2.5 down to 0.1 calls per minute), and replays the
same window against three fresh workers: fresh (--no-warm-cache
--no-zygotes: every start a fresh interpreter), SOCK-like (--no-zygotes:
lean sandboxes and the handler cache) and Hearth (everything on). It prints
per-function mean response time and cold starts for each, with Hearth's
improvement in percent (PARSEC's Tables III and IV).

By default it measures under memory pressure: --extra more functions of the
trace join PARSEC's, every worker gets a warm budget small enough that
paused sandboxes are evicted throughout (--warm-budget-mb, one unified LRU
pool), and the configurations run interleaved, --repeat times. Each run
reports its start paths, evictions and the memory held by paused sandboxes
(read from the worker's status every --sample-every, plotted per
repetition under --out), and, with --sim, the simulator's prediction for
the same calls, given the start costs and paused memory the run measured.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			o.Hearth = exe
			if o.Base == "" {
				o.Base = filepath.Join(dataDir, "base")
			}
			if o.Configs, err = bench.PickReplayConfigs(configs); err != nil {
				return fmt.Errorf("--configs: %w", err)
			}
			o.Out, o.Progress = cmd.OutOrStdout(), cmd.ErrOrStderr()
			ctx, stop := benchContext(cmd)
			defer stop()
			_, err = bench.Replay(ctx, o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.TraceDir, "trace", "../shared/data/azure2019/sample100-min480-959", "Azure 2019 trace `dir`")
	f.IntVar(&o.From, "from", 0, "first trace minute (default: the trace's first)")
	f.IntVar(&o.Minutes, "minutes", 9, "trace minutes to replay")
	f.Float64Var(&o.Speed, "speed", 4, "speed factor (4: 9 minutes in 2m15s per run; the default workload's 1.2 calls/s fit two cores)")
	f.IntVar(&o.Funcs, "functions", 8, "number of functions")
	f.Float64Var(&o.HiRate, "hi-rate", 2.5, "highest target rate, calls per minute")
	f.Float64Var(&o.LoRate, "lo-rate", 0.1, "lowest target rate, calls per minute")
	f.Int64Var(&o.Seed, "seed", 1, "seed for arrivals, execution times and package sets")
	f.Var(&o.Arrival, "arrival", "arrival model inside a minute: equidistant, uniform or exponential")
	f.DurationVar(&o.ExecCap, "exec-cap", 2*time.Second, "longest sampled execution time; functions with a longer median are not picked")
	f.IntVar(&o.MemCapMB, "mem-cap-mb", 64, "most memory a handler touches, MB")
	f.IntVar(&o.Extra, "extra", 40, "more functions of the trace beyond PARSEC's, rates spread from --extra-hi-rate to --extra-lo-rate (0: none)")
	f.Float64Var(&o.ExtraHiRate, "extra-hi-rate", 0.5, "highest target rate of the extra functions, calls per minute")
	f.Float64Var(&o.ExtraLoRate, "extra-lo-rate", 0.05, "lowest target rate of the extra functions, calls per minute")
	f.IntVar(&o.WarmBudgetMB, "warm-budget-mb", bench.DefaultPressureBudgetMB, "every worker's warm budget, one unified pool, MB (0: the workers' default, half the machine's memory)")
	f.StringSliceVar(&configs, "configs", []string{"fresh", "sock-like", "hearth"}, "configurations to run, in this order (of fresh, sock-like, hearth, and sock-peak, hearth-declared, hearth-passlimit, hearth-shortfirst, hearth-nofirstcome, hearth-nosnap and hearth-noplant, which tell apart what the start charge, the start paths, the memory queue's pass limit, short-first and first-come CPU weights, snapshots and zygote nodes planted at deploy gain)")
	f.IntVar(&o.Repeat, "repeat", 3, "repetitions of the configurations, interleaved (fresh, sock-like, hearth, fresh, ...)")
	f.DurationVar(&o.SampleEvery, "sample-every", 2*time.Second, "period of the status reads for the paused sandboxes' memory")
	f.BoolVar(&o.Sim, "sim", true, "also run each run's workload in the simulator with its measured start costs and paused memory, and compare")
	f.StringVar(&o.OutDir, "out", "", "`dir` for each run's calls.csv and plots, memory.csv and the paused-memory plots (default: none)")
	f.BoolVar(&o.PoolEvents, "pool-events", false, "also write each run's warm pool events (admit, hit, release, resize, evict, expire, remove) to pool-live.csv under --out, and the simulator's to pool-sim.csv, to see where they part")
	f.StringVar(&o.Base, "base", "", "base image (default: DATA_DIR/base)")
	f.StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	return cmd
}
