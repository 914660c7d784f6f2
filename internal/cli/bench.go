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
	return b
}
