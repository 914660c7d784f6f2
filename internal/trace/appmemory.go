package trace

import (
	"fmt"
	"path/filepath"
	"strings"
)

// AppMemory holds what FaasCache's trace generator (gen/trace_split_funcs.py
// of github.com/aFuerst/faascache-sim) divides memory by. It gives each
// function ceil(MB[app] / Funcs[app]) MB, whatever memory.csv holds per
// function, so an app's functions share its memory rather than each taking
// a whole row's value.
type AppMemory struct {
	// MB is the AverageAllocatedMb of each app's first row in memory.csv
	// (pandas' drop_duplicates("HashApp") keeps the first), whether the file
	// is per app or per function.
	MB map[string]float64
	// Funcs is the number of distinct functions durations.csv lists for each
	// app (its groupby("HashApp").size() after drop_duplicates on
	// HashFunction), including functions that invocations.csv lacks or
	// invokes fewer than twice.
	Funcs map[string]int
}

// LoadAppMemory2019 reads the AppMemory of the 2019-format trace in dir. It
// needs HashApp in durations.csv and memory.csv. An app whose first memory
// row has no readable AverageAllocatedMb is an error, since FaasCache cannot
// size its functions either.
func LoadAppMemory2019(dir string) (*AppMemory, error) {
	am := &AppMemory{MB: map[string]float64{}, Funcs: map[string]int{}}

	tb, err := openTable(filepath.Join(dir, "durations.csv"))
	if err != nil {
		return nil, err
	}
	cols, err := tb.need(colFunc, colApp)
	if err != nil {
		tb.close()
		return nil, err
	}
	seen := map[string]bool{}
	for {
		r, err := tb.next()
		if err != nil {
			tb.close()
			return nil, err
		}
		if r.eof {
			break
		}
		if r.bad {
			continue
		}
		fn, app := strings.TrimSpace(r.rec[cols[0]]), strings.TrimSpace(r.rec[cols[1]])
		if fn == "" || seen[fn] {
			continue
		}
		seen[fn] = true
		if app != "" {
			am.Funcs[app]++
		}
	}
	tb.close()

	tb, err = openTable(filepath.Join(dir, "memory.csv"))
	if err != nil {
		return nil, err
	}
	defer tb.close()
	cols, err = tb.need(colApp, colMem)
	if err != nil {
		return nil, err
	}
	for {
		r, err := tb.next()
		if err != nil {
			return nil, err
		}
		if r.eof {
			return am, nil
		}
		if r.bad {
			continue
		}
		app := strings.TrimSpace(r.rec[cols[0]])
		if _, dup := am.MB[app]; dup || app == "" {
			continue
		}
		mb, ok := parseNum(r.rec[cols[1]])
		if !ok {
			return nil, fmt.Errorf("%s line %d: app %s: %s %q is not a number: %w",
				filepath.Base(tb.path), r.line, app, colMem, r.rec[cols[1]], ErrBadRow)
		}
		am.MB[app] = mb
	}
}
