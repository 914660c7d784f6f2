package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/localrun"
	"github.com/hearth-run/hearth/internal/runtime"
)

// runConfig is `hearth run`'s flags.
type runConfig struct {
	dataDir      string
	base         string
	init         string
	name         string
	event        string
	eventFile    string
	requirements string
	repeat       int
	watch        bool
	logLevel     string
}

func newRunCmd() *cobra.Command {
	var rc runConfig
	cmd := &cobra.Command{
		Use:   "run DIR",
		Short: "Run a function from a directory in a local sandbox, without a worker, for debugging",
		Long: `Run the function in DIR once (or --repeat N times, warm) in a sandbox on this
machine, the same sandbox and runtime a worker gives it, with no worker and no
registry, and print its output, its result or error, the start path and the
timings. --watch runs it again on every change to DIR. Needs root, as the
worker does; a running worker is neither needed nor disturbed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLocal(cmd.Context(), rc, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&rc.dataDir, "data-dir", image.DefaultDataDir, "data dir to run in (its base image; a running worker's is fine)")
	f.StringVar(&rc.base, "base", "", "base image (default DATA_DIR/base)")
	f.StringVar(&rc.init, "init", "", "hearth-init binary (default: next to hearth, then $PATH)")
	f.StringVar(&rc.name, "name", "", "function name the handler sees (default: DIR's name)")
	f.StringVar(&rc.event, "event", "", "JSON event (default {})")
	f.StringVar(&rc.eventFile, "event-file", "", "file holding the JSON event")
	f.StringVar(&rc.requirements, "requirements", "", "requirements file to use instead of DIR/requirements.txt")
	f.IntVar(&rc.repeat, "repeat", 1, "calls in the same (warm) sandbox")
	f.BoolVar(&rc.watch, "watch", false, "run again on every change to DIR, until interrupted")
	f.StringVar(&rc.logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

// errCallsFailed is the exit status of a run whose calls did not all
// return a result; what went wrong has been printed.
var errCallsFailed = errors.New("the function failed (see above)")

func runLocal(ctx context.Context, rc runConfig, dir string, out io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if err := localrun.CheckRoot(); err != nil {
		return err
	}
	if rc.repeat < 1 {
		return fmt.Errorf("--repeat %d: want at least 1", rc.repeat)
	}
	event, err := runEvent(rc)
	if err != nil {
		return err
	}
	var reqs []string
	if rc.requirements != "" {
		b, err := os.ReadFile(rc.requirements)
		if err != nil {
			return fmt.Errorf("--requirements: %w", err)
		}
		if reqs, err = function.ParseRequirements(b); err != nil {
			return fmt.Errorf("--requirements: %w", err)
		}
		if reqs == nil {
			reqs = []string{}
		}
	}
	if fi, err := os.Stat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	initPath, err := findInit(rc.init)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := localrun.Open(ctx, localrun.Config{
		DataDir:  rc.dataDir,
		Base:     rc.base,
		InitPath: initPath,
		Logger:   newLogger(rc.logLevel),
	})
	if err != nil {
		return err
	}
	defer func() {
		// Bounded, and not ctx: an interrupt must still clean up.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			fmt.Fprintln(os.Stderr, "hearth run: cleaning up:", err)
		}
	}()
	p := &runPrinter{w: out}
	opts := localrun.Options{Dir: dir, Name: rc.name, Requirements: reqs, Output: p.line}
	if !rc.watch {
		err := runOnce(ctx, s, opts, event, rc.repeat, p)
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	changes, err := localrun.Watch(ctx, dir, 0)
	if err != nil {
		return err
	}
	for {
		if err := runOnce(ctx, s, opts, event, rc.repeat, p); err != nil && !errors.Is(err, errCallsFailed) && ctx.Err() == nil {
			fmt.Fprintf(out, "error: %v\n", err)
		}
		if ctx.Err() != nil {
			return nil // Ctrl-C ends a watch
		}
		fmt.Fprintf(out, "watching %s for changes (Ctrl-C to stop)\n", dir)
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watching %s stopped", dir)
			}
		}
		fmt.Fprintf(out, "\n--- %s changed: running again\n", dir)
	}
}

// runEvent returns the event the flags give.
func runEvent(rc runConfig) ([]byte, error) {
	var event []byte
	switch {
	case rc.event != "" && rc.eventFile != "":
		return nil, errors.New("--event and --event-file: give one")
	case rc.eventFile != "":
		b, err := os.ReadFile(rc.eventFile)
		if err != nil {
			return nil, fmt.Errorf("--event-file: %w", err)
		}
		event = b
	case rc.event != "":
		event = []byte(rc.event)
	default:
		event = []byte("{}")
	}
	if !json.Valid(event) {
		return nil, errors.New("the event is not valid JSON")
	}
	return event, nil
}

// runOnce starts the function, calls it n times and stops it, printing
// as it goes.
func runOnce(ctx context.Context, s *localrun.Session, opts localrun.Options, event []byte, n int, p *runPrinter) error {
	inst, err := s.Prepare(opts)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		inst.Close(cctx)
	}()
	spec := inst.Spec()
	p.printf("function %s: handler %s, memory %d MB, timeout %d s\n", opts.Dir, spec.Handler, spec.MemoryMB, spec.TimeoutS)
	for _, w := range inst.Warnings() {
		p.printf("warning: %s\n", w)
	}
	st, err := inst.Start(ctx)
	var lf *localrun.LoadFailure
	switch {
	case errors.As(err, &lf):
		p.printf("start (%s): sandbox %s, handler failed to load after %s\n", st.Path, msec(st.Sandbox), msec(st.Ready))
		p.handlerError(lf.Err)
		return errCallsFailed
	case err != nil:
		return err
	}
	p.printf("start (%s): sandbox %s, handler ready %s (import %s)\n", st.Path, msec(st.Sandbox), msec(st.Ready), msec(st.Load))
	var warm []time.Duration
	failed := 0
	for i := 0; i < n; i++ {
		c, err := inst.Invoke(ctx, event)
		if err != nil {
			p.printf("call %d (%s): failed after %s\n", c.N, c.Path, msec(c.Latency))
			return err
		}
		p.printf("call %d (%s): %s (handler %s)\n", c.N, c.Path, msec(c.Latency), msec(c.Run))
		if c.Err != nil {
			failed++
			p.handlerError(c.Err)
		} else {
			p.printf("result: %s\n", c.Body)
		}
		if c.Path == "warm" {
			warm = append(warm, c.Latency)
		}
	}
	if len(warm) > 1 {
		slices.Sort(warm)
		p.printf("%d warm calls: min %s, p50 %s, max %s\n", len(warm), msec(warm[0]), msec(warm[len(warm)/2]), msec(warm[len(warm)-1]))
	}
	if failed > 0 {
		return errCallsFailed
	}
	return nil
}

// runPrinter writes a run's report; the function's output lines come
// from the sandbox's pipes, the rest from runOnce.
// Both write at once, so writes are serialised.
type runPrinter struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *runPrinter) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

func (p *runPrinter) line(stream runtime.Stream, text string) {
	p.printf("[%s] %s\n", stream, text)
}

// handlerError prints err as Python would, its frames the user's files.
func (p *runPrinter) handlerError(err *runtime.HandlerError) {
	p.printf("error: %s: %s\n", err.Type, err.Message)
	if len(err.StackTrace) == 0 {
		return
	}
	if !strings.HasPrefix(err.Type, "Runtime.UserCodeSyntaxError") {
		p.printf("Traceback (most recent call last):\n")
	}
	p.printf("%s", strings.Join(err.StackTrace, ""))
	if tr := err.StackTrace[len(err.StackTrace)-1]; !strings.HasSuffix(tr, "\n") {
		p.printf("\n")
	}
}

// msec formats d in milliseconds.
func msec(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
