package sim

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sweep runs every config against w, parallel at a time (0 means one per
// CPU), and returns the results in cfgs order. If progress is non-nil, a
// progress bar is redrawn on it a few times a second. The first error
// cancels the rest.
func Sweep(ctx context.Context, w Workload, cfgs []Config, parallel int, progress io.Writer) ([]Result, error) {
	if parallel <= 0 {
		parallel = runtime.GOMAXPROCS(0)
	}
	parallel = min(parallel, len(cfgs))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := make([]Result, len(cfgs))
	var (
		next, done atomic.Int64
		sims       atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
		first      error
	)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cfgs) || ctx.Err() != nil {
					return
				}
				cfg := cfgs[i]
				cfg.Progress = &sims
				r, err := Run(ctx, w, cfg)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("policy %s, %d MiB, split %s: %w", cfg.Policy, cfg.Memory/MiB, cfg.Split.Name, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				res[i] = r
				done.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	var bar sync.WaitGroup
	if progress != nil {
		bar.Add(1)
		go func() {
			defer bar.Done()
			start := time.Now()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			draw := func() {
				drawBar(progress, int(done.Load()), len(cfgs), sims.Load(), w.Total*int64(len(cfgs)), time.Since(start))
			}
			for {
				select {
				case <-stop:
					draw()
					fmt.Fprintln(progress)
					return
				case <-tick.C:
					draw()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	bar.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// drawBar redraws a one-line progress bar.
func drawBar(w io.Writer, done, total int, inv, invTotal int64, el time.Duration) {
	const width = 30
	frac := float64(done) / float64(max(total, 1))
	if invTotal > 0 {
		frac = min(float64(inv)/float64(invTotal), 1)
	}
	n := int(frac * width)
	rate := float64(inv) / max(el.Seconds(), 1e-9) / 1e6
	fmt.Fprintf(w, "\r[%s%s] %3.0f%% %d/%d points, %.1f M invocations/s, %s ",
		strings.Repeat("#", n), strings.Repeat(" ", width-n), 100*frac, done, total, rate, el.Round(time.Second))
}
