// Package cli holds Hearth's cobra commands. Each command parses flags into
// a plain config struct and calls into the internal packages; no command
// keeps state in package-level variables.
package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Main runs the hearth command line with args and returns the exit code.
func Main(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hearth:", err)
		return 1
	}
	return 0
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "hearth",
		Short:         "Hearth runs Python functions with millisecond cold starts",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newZygoteCmd(), newUpCmd(), newReapCmd(), newUsernsProbeCmd(), newNetWatchProbeCmd(), newDeployCmd(), newInvokeCmd(), newLsCmd(), newRmCmd(),
		newStatusCmd(), newLogsCmd(), newImageCmd(), newBenchCmd(), newSimCmd(), newPackagesCmd(), newReplayCmd(), newDoctorCmd(), newSnapshotCmd(), newAsyncCmd(), newRunCmd())
	return root
}
