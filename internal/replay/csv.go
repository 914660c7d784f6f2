package replay

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"
)

// CSVHeader is the header of the per-invocation CSV. Times are in
// milliseconds; scheduled and fire times count from the replay's start,
// trace_ms from the window's start in trace time.
var CSVHeader = []string{"function", "hash", "trace_ms", "scheduled_ms", "fire_ms", "late_ms",
	"response_ms", "path", "wait_ms", "init_ms", "run_ms", "exec_ms", "status", "error", "turn_wait_ms"}

// WriteCSV writes one row per record.
func WriteCSV(w io.Writer, p *Plan, recs []Record) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return fmt.Errorf("writing csv: %w", err)
	}
	f := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
	g := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	for _, r := range recs {
		row := []string{r.Name, p.Funcs[r.Func].Hash, f(r.At), f(r.Scheduled), f(r.Fired), f(r.Late()),
			f(r.Response), r.Path, g(r.WaitMs), g(r.InitMs), g(r.RunMs), f(r.Exec), strconv.Itoa(r.Status), r.Err, g(r.TurnWaitMs)}
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
