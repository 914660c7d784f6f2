package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ChurnOptions configures Churn.
type ChurnOptions struct {
	Hearth string // the hearth binary
	Base   string // the base image
	// Cycles is how many functions are deployed, invoked and deleted, one
	// after the other, each under its own name (default 500).
	Cycles int
	// Every is how many cycles apart the worker's memory is sampled
	// (default 100), besides at the start and the end.
	Every int
	// Lines is how many lines each call prints, half to stdout and half
	// to stderr (default 10), LineBytes how long each is (default 8).
	Lines, LineBytes int
	// Keep leaves the functions deployed: the worker then holds the logs
	// of all of them, which its log bound (up --logs-mb) must cap.
	Keep bool
	// Flags are extra flags for the worker's `hearth up`.
	Flags []string
	Out   io.Writer
}

// ChurnSample is the worker's state after Cycle cycles, once the sandboxes
// of the deleted functions are gone.
type ChurnSample struct {
	Cycle int
	// RSS is the worker process's resident memory (VmRSS).
	RSS int64
	// HeapLive is the Go heap the last garbage collection found live
	// (go_gc_heap_live_bytes); HeapAlloc what the heap holds now, garbage
	// included (go_memstats_heap_alloc_bytes).
	HeapLive, HeapAlloc int64
	Goroutines          int
	FDs                 int // open file descriptors of the worker process
	Sandboxes           int // live sandboxes (hearth_sandboxes)
	// Spares and Zygotes are the zygote children waiting for a function
	// and the zygote processes: reserves that follow demand, each with
	// descriptors and goroutines of its own in the worker.
	Spares, Zygotes int
}

// ChurnResult is what Churn measured.
type ChurnResult struct {
	Samples []ChurnSample
	Took    time.Duration
}

// churnFn is the function of cycle i: distinct code, so each cycle is a
// new revision too, that prints the lines its event asks for.
func churnFn(i int) map[string]string {
	return map[string]string{"f.py": fmt.Sprintf(`import sys
# churn cycle %d
def f(event):
    line = "x" * event["bytes"]
    for i in range(event["lines"] // 2):
        print(line)
        print(line, file=sys.stderr)
    return {"cycle": %d}
`, i, i)}
}

// Churn measures whether the worker's memory stays bounded while
// functions come and go: it runs Cycles deploy/invoke/delete cycles, each
// with a new function name, against one worker, and samples the worker's
// resident memory, Go heap, goroutines and descriptors at the start, every
// Every cycles and at the end.
func Churn(ctx context.Context, o ChurnOptions) (ChurnResult, error) {
	if o.Cycles <= 0 {
		o.Cycles = 500
	}
	if o.Every <= 0 {
		o.Every = 100
	}
	if o.Lines <= 0 {
		o.Lines = 10
	}
	if o.LineBytes <= 0 {
		o.LineBytes = 8
	}
	var res ChurnResult
	w, err := StartWorker(ctx, o.Hearth, o.Base, o.Flags...)
	if err != nil {
		return res, err
	}
	defer w.Stop()
	if o.Out != nil {
		what := "deploy/invoke/delete"
		if o.Keep {
			what = "deploy/invoke (kept)"
		}
		fmt.Fprintf(o.Out, "hearth bench churn: %d %s cycles, each a new function name, calls printing %d lines of %d bytes\n\n",
			o.Cycles, what, o.Lines, o.LineBytes)
		fmt.Fprintf(o.Out, "%6s %9s %12s %13s %10s %5s %9s %6s %7s\n", "cycle", "rss MiB", "heap live MiB", "heap alloc MiB", "goroutines", "fds", "sandboxes", "spares", "zygotes")
	}
	sample := func(cycle int) error {
		s, err := w.churnSample(ctx, cycle)
		if err != nil {
			return fmt.Errorf("after %d cycles: %w", cycle, err)
		}
		res.Samples = append(res.Samples, s)
		if o.Out != nil {
			fmt.Fprintf(o.Out, "%6d %9.1f %12.2f %13.2f %10d %5d %9d %6d %7d\n", s.Cycle, mib(s.RSS), mib(s.HeapLive), mib(s.HeapAlloc),
				s.Goroutines, s.FDs, s.Sandboxes, s.Spares, s.Zygotes)
		}
		return nil
	}
	if err := sample(0); err != nil {
		return res, err
	}
	t0 := time.Now()
	for i := 1; i <= o.Cycles; i++ {
		if err := w.churnCycle(ctx, i, o); err != nil {
			return res, fmt.Errorf("cycle %d: %w", i, err)
		}
		if i%o.Every == 0 || i == o.Cycles {
			if err := sample(i); err != nil {
				return res, err
			}
		}
	}
	res.Took = time.Since(t0)
	if o.Out != nil && len(res.Samples) > 2 {
		a, b := res.Samples[1], res.Samples[len(res.Samples)-1]
		fmt.Fprintf(o.Out, "\nfrom cycle %d to %d (%s): rss %+.1f MiB, heap live %+.2f MiB, goroutines %+d, fds %+d\n",
			a.Cycle, b.Cycle, res.Took.Round(time.Second), mib(b.RSS-a.RSS), mib(b.HeapLive-a.HeapLive),
			b.Goroutines-a.Goroutines, b.FDs-a.FDs)
	}
	return res, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// churnCycle deploys the function of cycle i, invokes it twice (a start,
// then warm), reads its logs and, unless o.Keep, deletes it.
func (w *Worker) churnCycle(ctx context.Context, i int, o ChurnOptions) error {
	name := fmt.Sprintf("churn-%d", i)
	if err := w.Deploy(ctx, name, churnFn(i)); err != nil {
		return err
	}
	event := fmt.Appendf(nil, `{"lines": %d, "bytes": %d}`, o.Lines, o.LineBytes)
	for range 2 {
		inv, err := w.Client.Invoke(ctx, name, event)
		if err != nil {
			return err
		}
		if want := fmt.Sprintf(`{"cycle":%d}`, i); string(inv.Body) != want {
			return fmt.Errorf("%s answered %s, want %s", name, inv.Body, want)
		}
	}
	if _, err := w.Client.Logs(ctx, name, 10, 0); err != nil {
		return err
	}
	if o.Keep {
		return nil
	}
	return w.Client.Delete(ctx, name)
}

// churnSample waits until the deleted functions' sandboxes are gone (up to
// 30 s; with Keep, until their number is steady for a second), then reads
// the worker's memory.
func (w *Worker) churnSample(ctx context.Context, cycle int) (ChurnSample, error) {
	s := ChurnSample{Cycle: cycle}
	last, since := -1.0, time.Now()
	for end := time.Now().Add(30 * time.Second); ; {
		n, err := w.Metric(ctx, "hearth_sandboxes")
		if err != nil {
			return s, err
		}
		if n != last {
			last, since = n, time.Now()
		}
		s.Sandboxes = int(n)
		if n == 0 || time.Since(since) > time.Second || time.Now().After(end) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range []struct {
		series string
		v      *int64
	}{
		{"go_gc_heap_live_bytes", &s.HeapLive},
		{"go_memstats_heap_alloc_bytes", &s.HeapAlloc},
	} {
		v, err := w.Metric(ctx, m.series)
		if err != nil {
			return s, err
		}
		*m.v = int64(v)
	}
	tree, err := w.Client.Zygotes(ctx)
	if err != nil {
		return s, err
	}
	for _, n := range tree.Nodes {
		s.Spares += n.Spares
		s.Zygotes += n.Replicas
	}
	g, err := w.Metric(ctx, "go_goroutines")
	if err != nil {
		return s, err
	}
	s.Goroutines = int(g)
	pid := w.cmd.Process.Pid
	if s.RSS, err = vmRSS(pid); err != nil {
		return s, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}

// vmRSS reads a process's resident memory from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}
