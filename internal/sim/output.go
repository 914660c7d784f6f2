package sim

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
)

// WriteCSV writes one row per result: the point, then counts and
// percentages for all, small and large functions.
func WriteCSV(w io.Writer, rs []Result) error {
	cw := csv.NewWriter(w)
	hdr := []string{"policy", "split", "borrow", "memory_mb", "memory_gb"}
	for _, c := range []string{"all", "small", "large"} {
		hdr = append(hdr, c+"_invocations", c+"_hits", c+"_misses", c+"_drops",
			c+"_cold_pct", c+"_drop_pct", c+"_exec_increase_pct")
	}
	hdr = append(hdr, "evictions", "expirations", "prewarms", "peak_used_mb", "wall_ms")
	if err := cw.Write(hdr); err != nil {
		return fmt.Errorf("writing csv: %w", err)
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	for _, r := range rs {
		row := []string{r.Policy, r.Split, strconv.FormatBool(r.Borrow),
			strconv.FormatInt(r.Memory/MiB, 10), f(float64(r.Memory) / (1 << 30))}
		for _, c := range []Class{r.All, r.Small, r.Large} {
			row = append(row, u(c.Invocations), u(c.Hits), u(c.Misses), u(c.Drops),
				f(c.ColdPct()), f(c.DropPct()), f(c.ExecIncreasePct()))
		}
		row = append(row, u(r.Evictions), u(r.Expirations), u(r.Prewarms),
			strconv.FormatInt(r.PeakUsed/MiB, 10), strconv.FormatInt(r.Wall.Milliseconds(), 10))
		if err := cw.Write(row); err != nil {
			return fmt.Errorf("writing csv: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing csv: %w", err)
	}
	return nil
}

// WriteMemoryCSV writes the memory samples of every result in long form:
// one row per (point, time, partition).
func WriteMemoryCSV(w io.Writer, rs []Result) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"policy", "split", "borrow", "memory_mb", "minute", "partition", "used_mb", "total_used_mb"}); err != nil {
		return fmt.Errorf("writing memory csv: %w", err)
	}
	for _, r := range rs {
		for _, s := range r.Samples {
			for p, used := range s.Parts {
				row := []string{r.Policy, r.Split, strconv.FormatBool(r.Borrow), strconv.FormatInt(r.Memory/MiB, 10),
					strconv.FormatFloat(s.At.Minutes(), 'f', 2, 64), strconv.Itoa(p),
					strconv.FormatFloat(float64(used)/MiB, 'f', 1, 64), strconv.FormatFloat(float64(s.Used)/MiB, 'f', 1, 64)}
				if err := cw.Write(row); err != nil {
					return fmt.Errorf("writing memory csv: %w", err)
				}
			}
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing memory csv: %w", err)
	}
	return nil
}
