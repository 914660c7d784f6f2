package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/snapshot"
)

// snapshotDir is where a worker keeps its snapshot cache.
func snapshotDir(dataDir string) string { return filepath.Join(dataDir, "snapshots") }

func newSnapshotCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "List, remove and create function snapshots",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List cached snapshots, most recently used first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return snapshotLs(cmd.OutOrStdout(), snapshotDir(dataDir))
		},
	}
	rm := &cobra.Command{
		Use:   "rm KEY...",
		Short: "Remove cached snapshots (a worker then falls back to a fork or a cold start)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return snapshotRm(snapshotDir(dataDir), args)
		},
	}
	var cf clientFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Snapshot a function's current revision now, through the worker's API",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			info, err := snapshotCreate(ctx, cf.server, cf.bearer(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s of %s revision %s (%.1f MiB)\n",
				info.Key, info.Function, info.Revision, float64(info.Bytes)/(1<<20))
			return nil
		},
	}
	cf.add(create)
	cmd.AddCommand(ls, rm, create)
	return cmd
}

// snapshotCreate asks the worker at server to snapshot function name.
func snapshotCreate(ctx context.Context, server, token, name string) (types.Snapshot, error) {
	var info types.Snapshot
	if ctx == nil {
		ctx = context.Background()
	}
	u := strings.TrimRight(server, "/") + "/v1/functions/" + url.PathEscape(name) + "/snapshot"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &client.Error{Status: resp.StatusCode, Body: body}
		json.Unmarshal(body, e)
		return info, fmt.Errorf("snapshot %s: %w", name, e)
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return info, fmt.Errorf("snapshot %s: decoding the answer: %w", name, err)
	}
	return info, nil
}

func snapshotLs(w io.Writer, dir string) error {
	l, err := snapshot.ReadDir(dir)
	if os.IsNotExist(err) {
		l, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("listing snapshots: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tFUNCTION\tREVISION\tSIZE\tON DISK\tCREATED\tLAST USED")
	for _, i := range l {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f MiB\t%.1f MiB\t%s\t%s\n", i.Key, i.Function, i.Revision,
			float64(i.Bytes)/(1<<20), float64(i.Blocks)/(1<<20),
			i.Created.Local().Format(time.DateTime), i.LastUse.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func snapshotRm(dir string, keys []string) error {
	for _, k := range keys {
		if err := snapshot.ValidKey(k); err != nil {
			return err
		}
		p := filepath.Join(dir, k)
		if _, err := os.Stat(filepath.Join(p, snapshot.DescriptorName)); err != nil {
			return fmt.Errorf("snapshot %s: %w", k, snapshot.ErrNotFound)
		}
		// Descriptor first: what is left is never taken for a snapshot.
		if err := os.Remove(filepath.Join(p, snapshot.DescriptorName)); err != nil {
			return fmt.Errorf("removing snapshot %s: %w", k, err)
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("removing snapshot %s: %w", k, err)
		}
	}
	return nil
}
