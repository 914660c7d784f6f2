package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// WeightsOptions configures the CPU-weights benchmark: bursts of calls
// that each need CPU (they write memory), more at once than the host has
// CPUs, against workers that weigh calls' CPU in different ways.
type WeightsOptions struct {
	// Hearth is the hearth binary; Base the base image.
	Hearth, Base string
	// Rounds is how many bursts each configuration gets (default 20),
	// interleaved: one burst of each in turn.
	Rounds int
	// Size is the calls in a burst (default 8), Gap the time between
	// their arrivals (default 25 ms).
	Size int
	Gap  time.Duration
	// TouchMB is the memory each call writes, in a fresh buffer (default
	// 64): its CPU, mostly page faults.
	TouchMB int
	// Heavy is how many of a burst's first calls write HeavyMB instead
	// (default 0): a burst led by calls that need much more CPU than the
	// rest, where an order by arrival makes the rest wait.
	Heavy, HeavyMB int
	// Background is how many CPU-bound processes (nice 10) run during
	// the measurement.
	Background int
	// Configs are the configurations, by name (default: alike,
	// first-come); the first is the baseline of the ratios.
	Configs []string
	Out     io.Writer
}

// WeightsConfigs are the configurations the benchmark knows: the worker's
// flags of each.
var WeightsConfigs = map[string][]string{
	"alike":       {"--first-come=false"},
	"first-come":  {"--first-come"},
	"short-first": {"--short-first"},
}

// WeightsResult is one configuration's calls.
type WeightsResult struct {
	Config string
	// Response is each measured call's latency as the client saw it,
	// from its own send; Last is each burst's time from its first send
	// to its last answer.
	Response, Last []time.Duration
	// Heavy is the part of Response of the bursts' heavy calls
	// (WeightsOptions.Heavy).
	Heavy []time.Duration
	// Warm counts the measured calls that found a warm sandbox.
	Warm int
}

// weightsHandler writes mb MB afresh (bytearray zero-fills them; the
// byte a page is the replay's handler's), then frees them: page faults.
const weightsHandler = `import time

def f(event):
    mb = int(event.get("mb", 0))
    if mb > 0:
        buf = bytearray(mb << 20)
        buf[::4096] = b"\x01" * ((len(buf) + 4095) // 4096)
        del buf
    return mb
`

// Weights runs the benchmark. Each configuration's worker first serves one
// burst unmeasured, so that the measured ones find their sandboxes warm:
// what differs is only how the CPU is shared while they run.
func Weights(ctx context.Context, o WeightsOptions) ([]WeightsResult, error) {
	if o.Rounds <= 0 {
		o.Rounds = 20
	}
	if o.Size <= 0 {
		o.Size = 8
	}
	if o.Gap <= 0 {
		o.Gap = 25 * time.Millisecond
	}
	if o.TouchMB <= 0 {
		o.TouchMB = 64
	}
	if o.Heavy > 0 && o.HeavyMB <= 0 {
		o.HeavyMB = 8 * o.TouchMB
	}
	most := o.TouchMB
	if o.Heavy > 0 {
		most = max(most, o.HeavyMB)
	}
	if len(o.Configs) == 0 {
		o.Configs = []string{"alike", "first-come"}
	}
	for _, c := range o.Configs {
		if _, ok := WeightsConfigs[c]; !ok {
			return nil, fmt.Errorf("bench weights: unknown configuration %q", c)
		}
	}
	files := map[string]string{
		"f.py": weightsHandler,
		"function.yaml": fmt.Sprintf("memory_mb: %d\ntimeout_s: 60\nmax_concurrency: %d\n",
			(most+64+15)/16*16, o.Size),
	}
	events := make([][]byte, o.Size)
	for i := range events {
		mb := o.TouchMB
		if i < o.Heavy {
			mb = o.HeavyMB
		}
		events[i] = fmt.Appendf(nil, `{"mb": %d}`, mb)
	}

	workers := make([]*Worker, len(o.Configs))
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.Stop()
			}
		}
	}()
	for i, c := range o.Configs {
		// Room for every sandbox of a burst twice over, in one pool (the
		// size partitions would hold fewer large ones), so that none is
		// evicted between bursts.
		budget := 2 * o.Size * (most + 64)
		// The workers run side by side: each its own cgroup parent and
		// subnet, or the second would sweep the first's as left over.
		flags := append([]string{"--no-snapshots", "--warm-budget-mb", fmt.Sprint(budget), "--pools", "unified",
			"--cgroup-parent", fmt.Sprintf("hearth-bench-%d-w%d", os.Getpid(), i),
			"--netns-subnet", fmt.Sprintf("10.%d.0.0/16", 240+i%16)}, WeightsConfigs[c]...)
		w, err := StartWorker(ctx, o.Hearth, o.Base, flags...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c, err)
		}
		workers[i] = w
		if err := w.Deploy(ctx, "burst", files); err != nil {
			return nil, fmt.Errorf("%s: deploy: %w", c, err)
		}
		// All at once, so that none finds another's sandbox free: Size
		// sandboxes for the measured bursts.
		if _, err := weightsBurst(ctx, w, 0, events); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", c, err)
		}
	}
	if o.Background > 0 {
		load, err := StartLoad(o.Background, false)
		if err != nil {
			return nil, err
		}
		defer load.Stop()
	}
	res := make([]WeightsResult, len(o.Configs))
	for i, c := range o.Configs {
		res[i].Config = c
	}
	order := make([]int, len(workers))
	for round := range o.Rounds {
		// Each round in the other order (ABBA): what one worker's burst
		// leaves behind (freezes, refills) falls on each alike.
		for k := range order {
			order[k] = k
			if round%2 == 1 {
				order[k] = len(order) - 1 - k
			}
		}
		for _, i := range order {
			w := workers[i]
			calls, err := weightsBurst(ctx, w, o.Gap, events)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", o.Configs[i], err)
			}
			var last time.Duration
			for j, c := range calls {
				res[i].Response = append(res[i].Response, c.latency)
				if j < o.Heavy {
					res[i].Heavy = append(res[i].Heavy, c.latency)
				}
				last = max(last, c.sent+c.latency)
				if c.path == "warm" {
					res[i].Warm++
				}
			}
			res[i].Last = append(res[i].Last, last)
			time.Sleep(200 * time.Millisecond) // the sandboxes pause
		}
	}
	if o.Out != nil {
		weightsReport(o, res)
	}
	return res, nil
}

// weightsCall is one call of a burst: when it was sent after the burst's
// first, and how long its answer took.
type weightsCall struct {
	sent, latency time.Duration
	path          string
}

// weightsBurst sends n calls gap apart, each from its own goroutine, and waits
// for all of them.
func weightsBurst(ctx context.Context, w *Worker, gap time.Duration, events [][]byte) ([]weightsCall, error) {
	n := len(events)
	calls := make([]weightsCall, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		if d := time.Until(t0.Add(time.Duration(i) * gap)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			calls[i].sent = time.Since(t0)
			inv, err := w.Client.Invoke(ctx, "burst", events[i])
			calls[i].latency, calls[i].path, errs[i] = inv.Latency, inv.Path, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return calls, nil
}

func meanOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s / time.Duration(len(d))
}

func weightsReport(o WeightsOptions, res []WeightsResult) {
	w := o.Out
	fmt.Fprintf(w, "hearth bench weights: %d bursts per configuration, interleaved; %d calls a burst, %v apart, each writing %d MB afresh",
		o.Rounds, o.Size, o.Gap, o.TouchMB)
	if o.Heavy > 0 {
		fmt.Fprintf(w, ", but the first %d %d MB", o.Heavy, o.HeavyMB)
	}
	fmt.Fprintln(w, ";")
	fmt.Fprintf(w, "sandboxes warm (one burst unmeasured first), configurations in turn, each round in the other order; background load: %d CPU-bound processes at nice %d\n\n", o.Background, backgroundNice)
	fmt.Fprintf(w, "%-12s %6s %6s %10s %10s %10s %10s\n", "config", "calls", "warm", "mean ms", "p50 ms", "p99 ms", "burst ms")
	for _, r := range res {
		s := Sample{D: r.Response}
		fmt.Fprintf(w, "%-12s %6d %6d %10s %10s %10s %10s\n", r.Config, len(r.Response), r.Warm,
			ms(meanOf(r.Response)), ms(s.P50()), ms(s.P99()), ms(meanOf(r.Last)))
		if o.Heavy > 0 {
			light := lightOf(r)
			fmt.Fprintf(w, "%-12s %13s %10s %10s (the %d heavy calls of each burst)\n", "", "heavy", ms(meanOf(r.Heavy)), ms(Sample{D: r.Heavy}.P99()), o.Heavy)
			fmt.Fprintf(w, "%-12s %13s %10s %10s (the others)\n", "", "light", ms(meanOf(light)), ms(Sample{D: light}.P99()))
		}
	}
	for _, r := range res {
		if r.Warm < len(r.Response) {
			fmt.Fprintf(w, "warning: %s: %d of %d measured calls started a sandbox: their start is in their response\n",
				r.Config, len(r.Response)-r.Warm, len(r.Response))
		}
	}
	if len(res) < 2 {
		return
	}
	fmt.Fprintln(w)
	b := res[0]
	for _, r := range res[1:] {
		if o.Heavy > 0 {
			fmt.Fprintf(w, "%s / %s: light calls' mean %.2fx, heavy calls' mean %.2fx\n", r.Config, b.Config,
				ratio(meanOf(lightOf(r)), meanOf(lightOf(b))), ratio(meanOf(r.Heavy), meanOf(b.Heavy)))
		}
		fmt.Fprintf(w, "%s / %s: mean response %.2fx, p99 %.2fx, burst %.2fx; bursts with a lower mean %d of %d\n",
			r.Config, b.Config,
			ratio(meanOf(r.Response), meanOf(b.Response)),
			ratio(Sample{D: r.Response}.P99(), Sample{D: b.Response}.P99()),
			ratio(meanOf(r.Last), meanOf(b.Last)),
			lowerBursts(r.Response, b.Response, o.Size), len(b.Last))
	}
}

// lightOf returns r's responses of the calls that are not heavy.
func lightOf(r WeightsResult) []time.Duration {
	if len(r.Heavy) == 0 {
		return r.Response
	}
	size := len(r.Response) / len(r.Last)
	heavy := len(r.Heavy) / len(r.Last)
	var out []time.Duration
	for i, d := range r.Response {
		if i%size >= heavy {
			out = append(out, d)
		}
	}
	return out
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// lowerBursts counts the rounds in which a's burst had a lower mean
// response than b's in the same round (each burst is size calls).
func lowerBursts(a, b []time.Duration, size int) int {
	n := 0
	for i := 0; i+size <= min(len(a), len(b)); i += size {
		if meanOf(a[i:i+size]) < meanOf(b[i:i+size]) {
			n++
		}
	}
	return n
}
