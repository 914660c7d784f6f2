package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/bench"
	"github.com/hearth-run/hearth/internal/image"
)

func newBenchCmd() *cobra.Command {
	b := &cobra.Command{Use: "bench", Short: "Run benchmarks against a real worker"}
	var worker string
	b.PersistentFlags().StringVar(&worker, "worker", "",
		"hearth binary whose workers are measured, e.g. an earlier build to compare with (default: this one)")
	// The binary the workers run; the benchmark itself (its clients and
	// tables) is always this one's, so two builds are measured alike.
	bin := func() (string, error) {
		if worker != "" {
			return worker, nil
		}
		return os.Executable()
	}
	b.AddCommand(
		samplesCmd(bin, "startup", "Warm and cold invoke latency, against bare python3 started in the same run",
			func(ctx context.Context, exe, base string, n int, out io.Writer) error {
				_, err := bench.Startup(ctx, bench.StartupOptions{Hearth: exe, Base: base, N: n, Out: out})
				return err
			}),
		newBenchZygoteCmd(bin),
		samplesCmd(bin, "lambda", "Warm invoke through the Lambda API (SigV4) against /v1 in the same run, and the signature check alone",
			func(ctx context.Context, exe, base string, n int, out io.Writer) error {
				_, err := bench.LambdaAPI(ctx, bench.LambdaOptions{Hearth: exe, Base: base, N: n, Out: out})
				return err
			}),
		samplesCmd(bin, "network", "What an internet socket costs a forked sandbox under the network filter (until its function has used the network) and with its network from the start",
			func(ctx context.Context, exe, base string, n int, out io.Writer) error {
				_, err := bench.Network(ctx, bench.NetworkOptions{Hearth: exe, Base: base, N: n, Out: out})
				return err
			}),
		newBenchReplayCmd(bin), newBenchConcurrencyCmd(bin), newBenchWeightsCmd(bin), newBenchSnapshotCmd(bin), newBenchChurnCmd(bin))
	return b
}

// benchContext is cmd's context, canceled by SIGINT or SIGTERM: a
// benchmark then stops its workers and background load and removes what
// it made, as it does when it ends, instead of dying with its workers
// orphaned. A second signal kills it at once.
func benchContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmp.Or(cmd.Context(), context.Background()), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// samplesCmd is a benchmark that takes the hearth binary, a base image and
// a sample count.
func samplesCmd(bin func() (string, error), use, short string, run func(ctx context.Context, exe, base string, n int, out io.Writer) error) *cobra.Command {
	var n int
	var base, dataDir string
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			if base == "" {
				base = filepath.Join(dataDir, "base")
			}
			ctx, stop := benchContext(cmd)
			defer stop()
			return run(ctx, exe, base, n, cmd.OutOrStdout())
		},
	}
	c.Flags().IntVarP(&n, "n", "n", 100, "samples per method")
	c.Flags().StringVar(&base, "base", "", "base image (default: DATA_DIR/base)")
	c.Flags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	return c
}

func newBenchZygoteCmd(bin func() (string, error)) *cobra.Command {
	var background int
	var own bool
	var weight uint64
	c := samplesCmd(bin, "zygote", "Fresh import vs zygote fork vs warm, for numpy and numpy+requests handlers",
		func(ctx context.Context, exe, base string, n int, out io.Writer) error {
			_, err := bench.Zygote(ctx, bench.ZygoteOptions{Hearth: exe, Base: base, N: n, Background: background, OwnSession: own, CPUWeight: weight, Out: out})
			return err
		})
	c.Flags().IntVar(&background, "background", 0,
		"CPU-bound processes (busy loops at nice 10) to run during the measurement, as on a busy host")
	c.Flags().BoolVar(&own, "background-session", false,
		"run the background loops in a session of their own whose autogroup is niced too, as nice works without autogroup (default: in the benchmark's session, which competes with the sandboxes at equal weight)")
	c.Flags().Uint64Var(&weight, "cpu-weight", 0,
		"the workers' --cpu-weight (default: theirs, 100 per CPU up to 1000)")
	return c
}

func newBenchWeightsCmd(bin func() (string, error)) *cobra.Command {
	var o bench.WeightsOptions
	var dataDir string
	c := &cobra.Command{
		Use:   "weights",
		Short: "Bursts of CPU-hungry calls, more than the CPUs: CPU shared alike vs first-come (and short-first), interleaved",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			o.Hearth, o.Out = exe, cmd.OutOrStdout()
			if o.Base == "" {
				o.Base = filepath.Join(dataDir, "base")
			}
			ctx, stop := benchContext(cmd)
			defer stop()
			_, err = bench.Weights(ctx, o)
			return err
		},
	}
	f := c.Flags()
	f.IntVarP(&o.Rounds, "n", "n", 20, "bursts per configuration")
	f.IntVar(&o.Size, "size", 8, "calls in a burst")
	f.DurationVar(&o.Gap, "gap", 25*time.Millisecond, "time between a burst's calls")
	f.IntVar(&o.TouchMB, "touch-mb", 64, "memory each call writes afresh")
	f.IntVar(&o.Heavy, "heavy", 0, "how many of a burst's first calls write --heavy-mb instead: a burst led by calls that need much more CPU")
	f.IntVar(&o.HeavyMB, "heavy-mb", 0, "memory the heavy calls write (default: 8 times --touch-mb)")
	f.IntVar(&o.Background, "background", 0, "CPU-bound processes (busy loops at nice 10) to run during the measurement")
	f.StringSliceVar(&o.Configs, "configs", []string{"alike", "first-come"}, "configurations, the first the baseline (of alike, first-come, short-first)")
	f.StringVar(&o.Base, "base", "", "base image (default: DATA_DIR/base)")
	f.StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	return c
}

func newBenchSnapshotCmd(bin func() (string, error)) *cobra.Command {
	var o bench.SnapshotOptions
	var dataDir string
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Cold vs local vs remote snapshot restore of a numpy + 1 s init handler (Table 6.2)",
		Long: `Reproduce the thesis' Table 6.2 in one run: a handler with numpy and a
1 s init started cold (no snapshots, zygotes or warm cache), restored from
the local snapshot cache, restored on a second worker that fetches the
snapshot from S3 every time (its local copy dropped before each call), and
restored on that worker from its cached copy. Without --s3-endpoint a
versitygw is started on loopback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			o.Hearth = exe
			if o.Base == "" {
				o.Base = filepath.Join(dataDir, "base")
			}
			if o.S3Endpoint != "" {
				if o.S3Access == "" {
					o.S3Access = firstEnv("HEARTH_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
				}
				if o.S3Secret == "" {
					o.S3Secret = firstEnv("HEARTH_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
				}
			}
			o.Out = cmd.OutOrStdout()
			ctx, stop := benchContext(cmd)
			defer stop()
			_, err = bench.Snapshot(ctx, o)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.N, "n", "n", 50, "samples per snapshot method")
	f.IntVar(&o.ColdN, "cold-n", 10, "cold-start samples (over a second each)")
	f.StringVar(&o.Base, "base", "", "base image (default: DATA_DIR/base)")
	f.StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	f.StringVar(&o.S3Endpoint, "s3-endpoint", "", "host:port of an S3 store to use (default: start versitygw on loopback)")
	f.StringVar(&o.S3Access, "s3-access-key", "", "S3 access key (or $HEARTH_S3_ACCESS_KEY)")
	f.StringVar(&o.S3Secret, "s3-secret-key", "", "S3 secret key (or $HEARTH_S3_SECRET_KEY)")
	f.StringVar(&o.VersityGW, "versitygw", "", "versitygw binary (default: $PATH, $GOPATH/bin, ~/go/bin)")
	return cmd
}

func newBenchConcurrencyCmd(bin func() (string, error)) *cobra.Command {
	var base, dataDir, subnet string
	var ns []int
	var rounds int
	c := &cobra.Command{
		Use:   "concurrency",
		Short: "Bursts of concurrent cold starts: host network vs isolated, pooled vs unpooled; PCPM Table 1",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			if base == "" {
				base = filepath.Join(dataDir, "base")
			}
			p, err := netip.ParsePrefix(subnet)
			if err != nil {
				return fmt.Errorf("--subnet: %w", err)
			}
			ctx, stop := benchContext(cmd)
			defer stop()
			_, err = bench.Concurrency(ctx, bench.ConcurrencyOptions{Hearth: exe, Base: base, Ns: ns, Rounds: rounds, Subnet: p, Out: cmd.OutOrStdout()})
			return err
		},
	}
	c.Flags().IntSliceVar(&ns, "n", []int{1, 10, 50, 100}, "burst sizes")
	c.Flags().IntVar(&rounds, "rounds", 3, "bursts of each size")
	c.Flags().StringVar(&subnet, "subnet", "10.199.0.0/16", "subnet for isolated sandboxes and the namespace table")
	c.Flags().StringVar(&base, "base", "", "base image (default: DATA_DIR/base)")
	c.Flags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	return c
}

func newBenchChurnCmd(bin func() (string, error)) *cobra.Command {
	var o bench.ChurnOptions
	var dataDir string
	c := &cobra.Command{
		Use:   "churn",
		Short: "Deploy, invoke and delete many functions, each under a new name: does the worker's memory stay bounded?",
		Long: `Run --cycles deploy/invoke/delete cycles against one worker, each with a
new function name (and code), and print the worker's resident memory
(VmRSS), Go heap (live after the last collection, and allocated),
goroutines and open descriptors at the start, every --every cycles and at
the end, each once the deleted functions' sandboxes are gone. What a
worker keeps per function must go with the function: after the first
cycles the figures should stay flat.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := bin()
			if err != nil {
				return err
			}
			o.Hearth = exe
			if o.Base == "" {
				o.Base = filepath.Join(dataDir, "base")
			}
			o.Out = cmd.OutOrStdout()
			ctx, stop := benchContext(cmd)
			defer stop()
			_, err = bench.Churn(ctx, o)
			return err
		},
	}
	c.Flags().IntVar(&o.Cycles, "cycles", 500, "deploy/invoke/delete cycles")
	c.Flags().IntVar(&o.Every, "every", 100, "cycles between samples")
	c.Flags().IntVar(&o.Lines, "lines", 10, "lines each call prints, half to stdout, half to stderr")
	c.Flags().IntVar(&o.LineBytes, "line-bytes", 8, "bytes of each line")
	c.Flags().BoolVar(&o.Keep, "keep", false, "leave the functions deployed (the worker keeps all their logs, up to its bound)")
	c.Flags().StringArrayVar(&o.Flags, "worker-flag", nil, "extra flag for the worker's hearth up (repeatable), e.g. --worker-flag=--no-snapshots")
	c.Flags().StringVar(&o.Base, "base", "", "base image (default: DATA_DIR/base)")
	c.Flags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	return c
}
