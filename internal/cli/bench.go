package cli

import (
	"context"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/bench"
)

func newBenchCmd() *cobra.Command {
	b := &cobra.Command{Use: "bench", Short: "Run benchmarks against a real worker"}
	var n int
	var base, dataDir string
	startup := &cobra.Command{
		Use:   "startup",
		Short: "Warm and cold invoke latency, against bare python3 started in the same run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if base == "" {
				base = filepath.Join(dataDir, "base")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			_, err = bench.Startup(ctx, bench.StartupOptions{Hearth: exe, Base: base, N: n, Out: cmd.OutOrStdout()})
			return err
		},
	}
	startup.Flags().IntVarP(&n, "n", "n", 100, "samples per method")
	startup.Flags().StringVar(&base, "base", "", "base image (default: DATA_DIR/base)")
	startup.Flags().StringVar(&dataDir, "data-dir", "/var/lib/hearth", "data directory holding the base image")
	b.AddCommand(startup)
	var zn int
	var zbase, zdata string
	zyg := &cobra.Command{
		Use:   "zygote",
		Short: "Fresh import vs zygote fork vs warm, for numpy and numpy+requests handlers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if zbase == "" {
				zbase = filepath.Join(zdata, "base")
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			_, err = bench.Zygote(ctx, bench.ZygoteOptions{Hearth: exe, Base: zbase, N: zn, Out: cmd.OutOrStdout()})
			return err
		},
	}
	zyg.Flags().IntVarP(&zn, "n", "n", 100, "samples per method")
	zyg.Flags().StringVar(&zbase, "base", "", "base image (default: DATA_DIR/base)")
	zyg.Flags().StringVar(&zdata, "data-dir", "/var/lib/hearth", "data directory holding the base image")
	b.AddCommand(zyg)
	b.AddCommand(newBenchReplayCmd())
	return b
}
