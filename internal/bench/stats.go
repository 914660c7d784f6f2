// Package bench holds Hearth's benchmarks: they start a real worker,
// measure end-to-end latency, and report ratios against baselines measured
// in the same run, because these machines are noisy.
package bench

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// Sample is a set of latencies of one method.
type Sample struct {
	Name string
	D    []time.Duration
}

// Quantile returns the q-quantile (0..1) by nearest rank.
func (s Sample) Quantile(q float64) time.Duration {
	if len(s.D) == 0 {
		return 0
	}
	d := append([]time.Duration(nil), s.D...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(q*float64(len(d))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i]
}

// P50 is the median.
func (s Sample) P50() time.Duration { return s.Quantile(0.5) }

// P99 is the 99th percentile.
func (s Sample) P99() time.Duration { return s.Quantile(0.99) }

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

// Table prints samples with p50, p99 and, for each, the ratio of its p50 to
// the baseline's.
func Table(w io.Writer, samples []Sample, ratios [][2]string) {
	width := 34
	for _, s := range samples {
		width = max(width, len(s.Name))
	}
	fmt.Fprintf(w, "%-*s %6s %10s %10s\n", width, "method", "n", "p50 ms", "p99 ms")
	byName := map[string]Sample{}
	for _, s := range samples {
		byName[s.Name] = s
		fmt.Fprintf(w, "%-*s %6d %10s %10s\n", width, s.Name, len(s.D), ms(s.P50()), ms(s.P99()))
	}
	if len(ratios) > 0 {
		fmt.Fprintln(w)
	}
	for _, r := range ratios {
		a, b := byName[r[0]], byName[r[1]]
		if a.P50() == 0 || b.P50() == 0 {
			continue
		}
		fmt.Fprintf(w, "p50 %-28s / %-28s = %.2fx\n", r[0], r[1], float64(a.P50())/float64(b.P50()))
	}
}
