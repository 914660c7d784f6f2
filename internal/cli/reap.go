package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/worker"
)

// newReapCmd is the reaper `hearth up` starts beside itself: a process
// that outlives the worker, however it ends, and sweeps what it left
// (frozen sandboxes, zygotes, CRIU's children, mounts, network objects).
func newReapCmd() *cobra.Command {
	var h worker.Host
	var owner int
	cmd := &cobra.Command{
		Use:    "reap",
		Short:  "Sweep after a worker once it exits (started by `hearth up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			alive := os.NewFile(3, "alive")
			if alive == nil {
				return fmt.Errorf("reap: no descriptor 3 from the worker")
			}
			s, err := worker.Reap(context.Background(), h, owner, alive)
			if !s.Empty() || err != nil {
				// Its stderr is /dev/null; the next worker logs this.
				note := fmt.Sprintf("%s worker %d exited leaving %s; swept (err: %v)\n",
					time.Now().UTC().Format(time.RFC3339), owner, s, err)
				if f, ferr := os.OpenFile(filepath.Join(h.DataDir, worker.ReapLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); ferr == nil {
					f.WriteString(note)
					f.Close()
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&h.DataDir, "data-dir", "", "the worker's data dir")
	f.StringVar(&h.CgroupParent, "cgroup-parent", "", "the worker's cgroup parent")
	f.StringVar(&h.NetPrefix, "net-prefix", "", "the worker's network object prefix")
	f.IntVar(&owner, "owner", 0, "the worker's pid")
	return cmd
}

// startReaper starts `hearth reap` for this process and returns the write
// end of its pipe: the worker holds it until it exits, and closing it
// early (after a clean shutdown) ends the reaper at once.
func startReaper(h worker.Host) (*os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe, "reap", "--data-dir", h.DataDir, "--cgroup-parent", h.CgroupParent,
		"--net-prefix", h.NetPrefix, "--owner", strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{r}
	// Its own session, no parent-death signal: it must outlive us. No
	// output of ours: whoever waits for our stdio to close must not wait
	// for it too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("reaper: %w", err)
	}
	// Reaped by whoever outlives it; releasing avoids a zombie while we
	// run.
	go cmd.Wait()
	return w, nil
}
