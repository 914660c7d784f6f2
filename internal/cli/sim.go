package cli

import "github.com/spf13/cobra"

// newSimCmd is a placeholder replaced by the simulator work.
func newSimCmd() *cobra.Command {
	return &cobra.Command{Use: "sim", Short: "Simulate keep-alive policies on traces"}
}
