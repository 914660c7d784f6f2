package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/zygote"
)

func newZygoteCmd() *cobra.Command {
	z := &cobra.Command{Use: "zygote", Short: "Inspect and plan the zygote tree"}
	var cf clientFlags
	var base, dataDir string
	var min int
	plan := &cobra.Command{
		Use:   "plan [REQUIREMENTS_FILE...]",
		Short: "Plan a static zygote tree from requirements files or the deployed functions",
		Long: `Plan groups packages that co-occur in functions' requirements: each package
used by at least --min functions gets a node, and so does each exact set
of packages shared by at least --min functions. The output is JSON for
hearth up --zygote-tree. Without files, the deployed functions' requirements
are read from the worker.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var reqs [][]string
			if len(args) > 0 {
				for _, p := range args {
					b, err := os.ReadFile(p)
					if err != nil {
						return err
					}
					lines, err := function.ParseRequirements(b)
					if err != nil {
						return fmt.Errorf("%s: %w", p, err)
					}
					reqs = append(reqs, lines)
				}
			} else {
				fns, err := cf.client().List(cmd.Context())
				if err != nil {
					return err
				}
				for _, f := range fns {
					reqs = append(reqs, f.Spec.Requirements)
				}
			}
			if base == "" {
				base = filepath.Join(dataDir, "base")
			}
			r := &zygote.BaseResolver{Base: base}
			var sets [][]string
			for _, rq := range reqs {
				s, err := r.PackageSet(rq)
				if err != nil {
					return err
				}
				sets = append(sets, s)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(zygote.MakePlan(sets, min))
		},
	}
	cf.add(plan)
	plan.Flags().StringVar(&base, "base", "", "base image (default: DATA_DIR/base)")
	plan.Flags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory holding the base image")
	plan.Flags().IntVar(&min, "min", 2, "functions a package set needs to get a node")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "Show the worker's live zygote tree",
		Args:  cobra.NoArgs,
	}
	var lsFlags clientFlags
	lsFlags.add(ls)
	ls.RunE = func(cmd *cobra.Command, args []string) error {
		tree, err := lsFlags.client().Zygotes(cmd.Context())
		if err != nil {
			return err
		}
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(tree)
	}
	z.AddCommand(plan, ls)
	return z
}
