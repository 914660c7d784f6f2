package trace

import (
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Durations are a function's execution-time statistics in milliseconds,
// excluding cold-start time, as given in the 2019 durations.csv. The P
// fields are the percentile_Average_N columns.
type Durations struct{ Avg, Min, Max, P0, P1, P25, P50, P75, P99, P100 float64 }

// Function is one function of a 2019 trace.
type Function struct {
	Owner, App, Hash, Trigger string
	// Counts holds per-minute invocation counts; Counts[i] is minute
	// FirstMinute+i of the trace.
	Counts []int32
	// Dur holds the execution-time percentiles.
	Dur Durations
	// MemMB is the average allocated memory in MB for this function. When
	// memory.csv is per app, the app's memory is divided evenly over the
	// app's functions in the trace.
	MemMB float64
}

// Total returns the function's number of invocations over the trace.
func (f *Function) Total() int64 {
	var n int64
	for _, c := range f.Counts {
		n += int64(c)
	}
	return n
}

// Rate returns the function's mean number of invocations per minute, or 0
// for an empty trace.
func (f *Function) Rate() float64 {
	if len(f.Counts) == 0 {
		return 0
	}
	return float64(f.Total()) / float64(len(f.Counts))
}

// SkipCounts counts the rows skipped while loading, by reason. A row is
// counted once, under the first reason that applies.
type SkipCounts struct {
	// BadInvocations, BadDurations and BadMemory count rows of the
	// respective file that were malformed: wrong number of fields, an
	// empty key, or a missing, negative or unparsable number (including
	// percentiles that decrease). In a 2021 trace BadInvocations counts
	// its malformed rows.
	BadInvocations, BadDurations, BadMemory int
	// Duplicates counts rows whose key was already seen in the same file;
	// the first row wins.
	Duplicates int
	// NoDurations and NoMemory count invocation rows dropped because the
	// other file has no row for the function (or its app).
	NoDurations, NoMemory int
	// Unmatched counts durations and memory rows for which
	// invocations.csv has no function.
	Unmatched int
}

// Total returns the number of skipped rows over all reasons.
func (s SkipCounts) Total() int {
	return s.BadInvocations + s.BadDurations + s.BadMemory + s.Duplicates +
		s.NoDurations + s.NoMemory + s.Unmatched
}

// String lists the non-zero counts, or "none".
func (s SkipCounts) String() string {
	var b strings.Builder
	add := func(name string, n int) {
		if n == 0 {
			return
		}
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", name, n)
	}
	add("bad-invocations", s.BadInvocations)
	add("bad-durations", s.BadDurations)
	add("bad-memory", s.BadMemory)
	add("duplicates", s.Duplicates)
	add("no-durations", s.NoDurations)
	add("no-memory", s.NoMemory)
	add("unmatched", s.Unmatched)
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// Trace is a per-minute trace: minute FirstMinute of the original trace is
// time 0, and it spans Minutes minutes.
type Trace struct {
	FirstMinute int
	Minutes     int
	Functions   []Function
	Skipped     SkipCounts
}

// Invocations returns the total number of invocations in the trace.
func (t *Trace) Invocations() int64 {
	var n int64
	for i := range t.Functions {
		n += t.Functions[i].Total()
	}
	return n
}

// Column names of the 2019 files.
const (
	colOwner   = "HashOwner"
	colApp     = "HashApp"
	colFunc    = "HashFunction"
	colTrigger = "Trigger"
	colMem     = "AverageAllocatedMb"
)

var durCols = [...]string{"Average", "Minimum", "Maximum",
	"percentile_Average_0", "percentile_Average_1", "percentile_Average_25",
	"percentile_Average_50", "percentile_Average_75", "percentile_Average_99",
	"percentile_Average_100"}

// LoadAzure2019 loads invocations.csv, durations.csv and memory.csv from
// dir and joins them on HashFunction. Only functions present in all three
// files (memory by app if memory.csv has no HashFunction column) are kept,
// in invocations.csv order; everything skipped is counted in
// Trace.Skipped. It fails if a required column is missing, if the minute
// columns are not a contiguous range, or if no function remains.
func LoadAzure2019(dir string) (*Trace, error) {
	t, index, err := loadInvocations(filepath.Join(dir, "invocations.csv"))
	if err != nil {
		return nil, err
	}
	durs, err := loadDurations(filepath.Join(dir, "durations.csv"), index, &t.Skipped)
	if err != nil {
		return nil, err
	}
	mem, err := loadMemory(filepath.Join(dir, "memory.csv"), t, index)
	if err != nil {
		return nil, err
	}

	// Per-app memory is divided over the app's functions that survive the
	// durations join, since only those take part in the trace.
	appFuncs := map[string]int{}
	if mem.byApp != nil {
		for i := range t.Functions {
			if _, ok := durs[i]; ok {
				appFuncs[t.Functions[i].App]++
			}
		}
	}
	kept := t.Functions[:0]
	for i := range t.Functions {
		f := t.Functions[i]
		d, ok := durs[i]
		if !ok {
			t.Skipped.NoDurations++
			continue
		}
		f.Dur = d
		if mem.byApp != nil {
			m, ok := mem.byApp[f.App]
			if !ok {
				t.Skipped.NoMemory++
				continue
			}
			f.MemMB = m / float64(appFuncs[f.App])
		} else {
			m, ok := mem.byFunc[i]
			if !ok {
				t.Skipped.NoMemory++
				continue
			}
			f.MemMB = m
		}
		kept = append(kept, f)
	}
	// Clear the tail so dropped functions' slices can be collected.
	clear(t.Functions[len(kept):])
	t.Functions = kept
	if len(t.Functions) == 0 {
		return nil, fmt.Errorf("loading %s (skipped %s): %w", dir, t.Skipped, ErrEmpty)
	}
	return t, nil
}

// loadInvocations reads invocations.csv and returns the trace with
// unjoined functions and an index from HashFunction to position.
func loadInvocations(path string) (*Trace, map[string]int, error) {
	tb, err := openTable(path)
	if err != nil {
		return nil, nil, err
	}
	defer tb.close()
	keys, err := tb.need(colFunc, colApp)
	if err != nil {
		return nil, nil, err
	}
	fc, ac := keys[0], keys[1]
	oc, hasOwner := tb.col[colOwner]
	tc, hasTrigger := tb.col[colTrigger]

	// Minute columns are the integer headers, placed by their number so
	// their order in the file does not matter.
	type mcol struct{ minute, col int }
	var mins []mcol
	for i, h := range tb.header {
		if m, err := strconv.Atoi(h); err == nil {
			mins = append(mins, mcol{m, i})
		}
	}
	if len(mins) == 0 {
		return nil, nil, fmt.Errorf("%s: no minute columns: %w", path, ErrBadHeader)
	}
	sort.Slice(mins, func(i, j int) bool { return mins[i].minute < mins[j].minute })
	for i := 1; i < len(mins); i++ {
		if mins[i].minute != mins[i-1].minute+1 {
			return nil, nil, fmt.Errorf("%s: minute columns jump from %d to %d: %w",
				path, mins[i-1].minute, mins[i].minute, ErrBadHeader)
		}
	}

	t := &Trace{FirstMinute: mins[0].minute, Minutes: len(mins)}
	index := map[string]int{}
	for {
		rec, bad, ok, err := tb.next()
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			break
		}
		if bad || strings.TrimSpace(rec[fc]) == "" || strings.TrimSpace(rec[ac]) == "" {
			t.Skipped.BadInvocations++
			continue
		}
		counts := make([]int32, len(mins))
		valid := true
		for i, m := range mins {
			c, ok := parseCount(rec[m.col])
			if !ok {
				valid = false
				break
			}
			counts[i] = c
		}
		if !valid {
			t.Skipped.BadInvocations++
			continue
		}
		h := strings.TrimSpace(rec[fc])
		if _, dup := index[h]; dup {
			t.Skipped.Duplicates++
			continue
		}
		f := Function{App: strings.TrimSpace(rec[ac]), Hash: h, Counts: counts}
		if hasOwner {
			f.Owner = strings.TrimSpace(rec[oc])
		}
		if hasTrigger {
			f.Trigger = strings.TrimSpace(rec[tc])
		}
		index[h] = len(t.Functions)
		t.Functions = append(t.Functions, f)
	}
	return t, index, nil
}

// loadDurations reads durations.csv into a map from function position.
func loadDurations(path string, index map[string]int, sk *SkipCounts) (map[int]Durations, error) {
	tb, err := openTable(path)
	if err != nil {
		return nil, err
	}
	defer tb.close()
	cols, err := tb.need(append([]string{colFunc}, durCols[:]...)...)
	if err != nil {
		return nil, err
	}
	out := make(map[int]Durations, len(index))
	var v [len(durCols)]float64
	for {
		rec, bad, ok, err := tb.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if bad {
			sk.BadDurations++
			continue
		}
		valid := true
		for i, c := range cols[1:] {
			if v[i], valid = parseNum(rec[c]); !valid {
				break
			}
		}
		d := Durations{Avg: v[0], Min: v[1], Max: v[2], P0: v[3], P1: v[4], P25: v[5],
			P50: v[6], P75: v[7], P99: v[8], P100: v[9]}
		h := strings.TrimSpace(rec[cols[0]])
		if !valid || h == "" || !d.monotone() {
			sk.BadDurations++
			continue
		}
		i, known := index[h]
		if !known {
			sk.Unmatched++
			continue
		}
		if _, dup := out[i]; dup {
			sk.Duplicates++
			continue
		}
		out[i] = d
	}
}

// monotone reports whether the percentiles never decrease, which the
// inverse-CDF sampler relies on.
func (d Durations) monotone() bool {
	return d.P0 <= d.P1 && d.P1 <= d.P25 && d.P25 <= d.P50 && d.P50 <= d.P75 &&
		d.P75 <= d.P99 && d.P99 <= d.P100
}

// memTable is memory.csv keyed either by function position or by app.
type memTable struct {
	byFunc map[int]float64
	byApp  map[string]float64
}

// loadMemory reads memory.csv. Without a HashFunction column the file is
// per app and keyed by HashApp.
func loadMemory(path string, t *Trace, index map[string]int) (memTable, error) {
	sk := &t.Skipped
	tb, err := openTable(path)
	if err != nil {
		return memTable{}, err
	}
	defer tb.close()
	key := colFunc
	if _, ok := tb.col[colFunc]; !ok {
		key = colApp
	}
	cols, err := tb.need(key, colMem)
	if err != nil {
		return memTable{}, fmt.Errorf("memory.csv needs %s or %s: %w", colFunc, colApp, err)
	}
	var mt memTable
	var apps map[string]bool // apps that have functions in invocations.csv
	if key == colFunc {
		mt.byFunc = make(map[int]float64, len(index))
	} else {
		mt.byApp = map[string]float64{}
		apps = map[string]bool{}
		for i := range t.Functions {
			apps[t.Functions[i].App] = true
		}
	}
	for {
		rec, bad, ok, err := tb.next()
		if err != nil {
			return memTable{}, err
		}
		if !ok {
			break
		}
		if bad {
			sk.BadMemory++
			continue
		}
		k := strings.TrimSpace(rec[cols[0]])
		m, valid := parseNum(rec[cols[1]])
		if !valid || k == "" {
			sk.BadMemory++
			continue
		}
		if mt.byFunc != nil {
			i, known := index[k]
			if !known {
				sk.Unmatched++
				continue
			}
			if _, dup := mt.byFunc[i]; dup {
				sk.Duplicates++
				continue
			}
			mt.byFunc[i] = m
			continue
		}
		if !apps[k] {
			sk.Unmatched++
			continue
		}
		if _, dup := mt.byApp[k]; dup {
			sk.Duplicates++
			continue
		}
		mt.byApp[k] = m
	}
	return mt, nil
}
