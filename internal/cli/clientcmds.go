package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/image"
)

// clientFlags are shared by the commands that talk to a worker.
type clientFlags struct {
	server    string
	token     string
	tokenFile string
}

func (f *clientFlags) add(cmd *cobra.Command) {
	def := os.Getenv("HEARTH_URL")
	if def == "" {
		def = client.DefaultURL
	}
	cmd.Flags().StringVar(&f.server, "server", def, "worker URL (or $HEARTH_URL)")
	cmd.Flags().StringVar(&f.token, "token", os.Getenv("HEARTH_TOKEN"), "bearer token (or $HEARTH_TOKEN)")
	tf := cmp.Or(os.Getenv("HEARTH_TOKEN_FILE"), filepath.Join(image.DefaultDataDir, api.TokenFile))
	cmd.Flags().StringVar(&f.tokenFile, "token-file", tf, "the worker's token file, read when no token is given and the worker is on this host's loopback (or $HEARTH_TOKEN_FILE)")
}

func (f *clientFlags) client() *client.Client { return client.New(f.server, f.bearer()) }

// bearer is the token to send: --token, or for a worker on this host's
// loopback the one in its token file (readable by root only). A token
// file is never sent to another host.
func (f *clientFlags) bearer() string {
	if f.token != "" || !client.Loopback(f.server) {
		return f.token
	}
	t, err := api.ReadToken(f.tokenFile)
	if err != nil {
		return ""
	}
	return t
}

func newDeployCmd() *cobra.Command {
	var cf clientFlags
	var name string
	cmd := &cobra.Command{
		Use:   "deploy DIR|ARCHIVE",
		Short: "Deploy a function from a directory or a tar.gz/zip archive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			if name == "" {
				name = defaultName(src)
			}
			info, err := os.Stat(src)
			if err != nil {
				return err
			}
			var body io.Reader
			if info.IsDir() {
				var buf bytes.Buffer
				if err := client.PackDir(src, &buf); err != nil {
					return err
				}
				body = &buf
			} else {
				f, err := os.Open(src)
				if err != nil {
					return err
				}
				defer f.Close()
				body = f
			}
			fn, err := cf.client().Deploy(cmd.Context(), name, body)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deployed %s revision %s (%d bytes)\n", fn.Name, fn.Revision, fn.Size)
			for _, w := range fn.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&name, "name", "", "function name (default: the directory or archive name)")
	return cmd
}

// defaultName derives a function name from a path: examples/hello ->
// hello, MyFunc.zip -> MyFunc. Names are case-sensitive, as Lambda's are.
func defaultName(src string) string {
	n := filepath.Base(filepath.Clean(src))
	for _, ext := range []string{".tar.gz", ".tgz", ".zip", ".tar"} {
		n = strings.TrimSuffix(n, ext)
	}
	return n
}

func newInvokeCmd() *cobra.Command {
	var cf clientFlags
	var data string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "invoke NAME",
		Short: "Invoke a function with a JSON event",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			event := []byte(data)
			if strings.HasPrefix(data, "@") {
				var err error
				if event, err = os.ReadFile(data[1:]); err != nil {
					return err
				}
			}
			inv, err := cf.client().Invoke(cmd.Context(), args[0], event)
			if verbose && inv.Path != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "path=%s %s total=%s revision=%s\n",
					inv.Path, timings(inv, err), inv.Latency.Round(time.Microsecond), inv.Revision)
			}
			if err != nil {
				var e *client.Error
				if errors.As(err, &e) && len(e.Body) > 0 {
					cmd.OutOrStdout().Write(e.Body)
				}
				return err
			}
			out := cmd.OutOrStdout()
			out.Write(bytes.TrimSpace(inv.Body))
			fmt.Fprintln(out)
			return nil
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVarP(&data, "data", "d", "{}", "JSON event, or @file")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the start path and timings to stderr")
	return cmd
}

// timings describes an invocation's init and run for invoke -v; a failed
// start shows as such, with its error, since nothing ran.
func timings(inv client.Invocation, err error) string {
	if inv.InitError == "" {
		return fmt.Sprintf("init=%.3fms run=%.3fms", inv.InitMs, inv.RunMs)
	}
	why := inv.InitError
	var e *client.Error
	if errors.As(err, &e) && e.Message != "" {
		why = e.Type + ": " + e.Message
	}
	return fmt.Sprintf("init=failed after %.3fms (%s) run=none", inv.InitMs, why)
}

func newLsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List deployed functions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fns, err := cf.client().List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tREVISION\tHANDLER\tMEMORY\tSIZE\tDEPLOYED")
			for _, f := range fns {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%dMB\t%d\t%s\n", f.Name, short(f.Revision), f.Spec.Handler,
					f.Spec.MemoryMB, f.Size, f.DeployedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cf.add(cmd)
	return cmd
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func newRmCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a function",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.client().Delete(cmd.Context(), args[0])
		},
	}
	cf.add(cmd)
	return cmd
}

func newStatusCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the worker's sandboxes and memory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := cf.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
	cf.add(cmd)
	return cmd
}

func newLogsCmd() *cobra.Command {
	var cf clientFlags
	var n int
	var stamps, follow bool
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a function's newest output lines, each with its stream",
		Long: `Print a function's newest output lines, oldest first, in the order the
handler wrote them, each after the stream it went to:

  stdout | hello
  stderr | Traceback (most recent call last):

Lines printed through Python's sys.stdout and sys.stderr keep their exact
order; writes straight to file descriptors 1 and 2 (C extensions,
subprocesses) keep their order within their stream.

The worker keeps a bounded number of lines per function, and a bounded
size of all functions' lines (up --log-lines, --logs-mb); a note on stderr
says when older lines were left out (-n) or are no longer kept. With -f, new lines are printed as they come
until interrupted.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmp.Or(cmd.Context(), context.Background()), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c := cf.client()
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			t, err := c.Logs(ctx, args[0], n, 0)
			if err != nil {
				return err
			}
			for _, l := range t.Lines {
				printLogLine(out, l, stamps)
			}
			if note := logsNote(t, n); note != "" {
				fmt.Fprintln(errOut, "hearth:", note)
			}
			if !follow {
				return nil
			}
			err = followLogs(ctx, c, args[0], t, every, func(l types.LogLine) { printLogLine(out, l, stamps) },
				func(note string) { fmt.Fprintln(errOut, "hearth:", note) })
			if ctx.Err() != nil {
				return nil // interrupted: the way a follow ends
			}
			return err
		},
	}
	cf.add(cmd)
	cmd.Flags().IntVarP(&n, "lines", "n", 100, "how many of the newest lines (0: all the worker keeps)")
	cmd.Flags().BoolVarP(&stamps, "timestamps", "t", false, "print when the worker received each line")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they come, until interrupted")
	cmd.Flags().DurationVar(&every, "interval", 500*time.Millisecond, "how often -f asks the worker for new lines")
	return cmd
}

// logsNote says what a first answer left out: older lines beyond -n,
// and lines the worker no longer keeps.
func logsNote(t types.LogTail, n int) string {
	var parts []string
	if t.Older > 0 {
		parts = append(parts, fmt.Sprintf("showing the newest %d of %d lines kept (-n %d or -n 0 shows them all)",
			len(t.Lines), len(t.Lines)+t.Older, len(t.Lines)+t.Older))
	}
	if t.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d older lines were dropped: the worker keeps %d lines per function, and %d MiB of all functions' lines",
			t.Dropped, t.Limit, t.LimitBytes>>20))
	}
	return strings.Join(parts, "; ")
}

// followLogs polls for the lines after t until ctx ends or the function
// is gone, passing each line to line and what it could not show to note.
func followLogs(ctx context.Context, c *client.Client, name string, t types.LogTail, every time.Duration,
	line func(types.LogLine), note func(string)) error {
	since, epoch := t.Next, t.Epoch
	tick := time.NewTicker(max(every, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		for {
			t, err := c.Logs(ctx, name, 0, since)
			if err != nil {
				return err
			}
			if t.Epoch != epoch {
				if epoch != "" {
					note("the log started anew: the function was deployed again or the worker restarted")
				}
				epoch, since = t.Epoch, 1
				continue
			}
			if t.Dropped > 0 {
				note(fmt.Sprintf("%d lines were dropped before they could be shown", t.Dropped))
			}
			for _, l := range t.Lines {
				line(l)
			}
			since = t.Next
			if t.Newer == 0 {
				break
			}
		}
	}
}

// printLogLine prints l as "stream | text", after its time with stamps.
func printLogLine(w io.Writer, l types.LogLine, stamps bool) {
	if stamps {
		fmt.Fprintf(w, "%s ", l.Time.Local().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	fmt.Fprintf(w, "%s | %s\n", l.Stream, l.Text)
}

func newImageCmd() *cobra.Command {
	img := &cobra.Command{Use: "image", Short: "Manage the base image"}
	var dataDir, mirror, suite string
	var force bool
	build := &cobra.Command{
		Use:   "build",
		Short: "Build the base image (Debian " + image.DefaultSuite + " minbase with python3, numpy, requests, Pillow) with debootstrap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			opts := image.BuildOptions{DataDir: dataDir, Mirror: mirror, Suite: suite, Progress: cmd.ErrOrStderr()}
			var dir string
			var err error
			if force {
				dir, err = image.Build(ctx, opts)
			} else {
				dir, err = image.Ensure(ctx, opts)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
	build.Flags().StringVar(&dataDir, "data-dir", image.DefaultDataDir, "data directory")
	build.Flags().StringVar(&mirror, "mirror", "", "Debian mirror (default: from the host's apt sources)")
	build.Flags().StringVar(&suite, "suite", image.DefaultSuite, "Debian release to build from")
	build.Flags().BoolVar(&force, "force", false, "rebuild even if an image exists")
	img.AddCommand(build)
	img.AddCommand(&cobra.Command{
		Use:   "mirror",
		Short: "Print the Debian mirror the host's apt sources use (what image build uses by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := image.HostMirror(image.DefaultAptDir, image.DefaultSuite)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), m)
			return nil
		},
	})
	return img
}
