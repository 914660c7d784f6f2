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

// Trace is a per-minute trace: minute FirstMinute of the original trace is
// time 0, and it spans Minutes minutes.
type Trace struct {
	FirstMinute int
	Minutes     int
	Functions   []Function
	Skipped     SkipCounts
	// Report says which rows were skipped or are suspect and how much of
	// the trace they hold.
	Report SkipReport
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

// File names of a 2019 trace.
const (
	fileInvocations = "invocations.csv"
	fileDurations   = "durations.csv"
	fileMemory      = "memory.csv"
)

// loader2019 is the state of one LoadAzure2019.
type loader2019 struct {
	t     *Trace
	index map[string]int // HashFunction -> position in t.Functions
	lines []int          // invocations.csv line of each function
	// suspect marks functions whose row in some file is the unterminated
	// last line of that file.
	suspect []bool
}

// LoadAzure2019 loads invocations.csv, durations.csv and memory.csv from
// dir and joins them on HashFunction. Only functions present in all three
// files (memory by app if memory.csv has no HashFunction column) are kept,
// in invocations.csv order; everything skipped is counted in
// Trace.Skipped and located in Trace.Report. It fails if a required column
// is missing, if the minute columns are not a contiguous range, or if no
// function remains.
func LoadAzure2019(dir string) (*Trace, error) {
	l := &loader2019{}
	if err := l.invocations(filepath.Join(dir, fileInvocations)); err != nil {
		return nil, err
	}
	t := l.t
	durs, err := l.durations(filepath.Join(dir, fileDurations))
	if err != nil {
		return nil, err
	}
	mem, err := l.memory(filepath.Join(dir, fileMemory))
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
	rep := &t.Report
	kept := t.Functions[:0]
	for i := range t.Functions {
		f := t.Functions[i]
		d, ok := durs[i]
		if !ok {
			t.Skipped.NoDurations++
			rep.add(fileInvocations, l.lines[i], reasonNoDurations, "function "+f.Hash+" has no usable row in "+fileDurations)
			rep.affect(f.Total())
			continue
		}
		f.Dur = d
		if mem.byApp != nil {
			m, ok := mem.byApp[f.App]
			if !ok {
				t.Skipped.NoMemory++
				rep.add(fileInvocations, l.lines[i], reasonNoMemory, "app "+f.App+" has no usable row in "+fileMemory)
				rep.affect(f.Total())
				continue
			}
			f.MemMB = m / float64(appFuncs[f.App])
		} else {
			m, ok := mem.byFunc[i]
			if !ok {
				t.Skipped.NoMemory++
				rep.add(fileInvocations, l.lines[i], reasonNoMemory, "function "+f.Hash+" has no usable row in "+fileMemory)
				rep.affect(f.Total())
				continue
			}
			f.MemMB = m
		}
		if l.suspect[i] {
			rep.affect(f.Total())
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

// unterminated is the detail of a suspect last row.
const unterminated = "last line of the file, which does not end in a newline: kept, but its last field may be cut short"

// readable sums the counts of rec's minute columns that can be read, for a
// row that is skipped.
func readable(rec []string, mins []mcol) int64 {
	var n int64
	for _, m := range mins {
		if m.col < len(rec) {
			if c, ok := parseCount(rec[m.col]); ok {
				n += int64(c)
			}
		}
	}
	return n
}

// mcol is a minute column: the trace's minute number and its position.
type mcol struct{ minute, col int }

// invocations reads invocations.csv into l.t, with unjoined functions, and
// builds l.index.
func (l *loader2019) invocations(path string) error {
	tb, err := openTable(path)
	if err != nil {
		return err
	}
	defer tb.close()
	keys, err := tb.need(colFunc, colApp)
	if err != nil {
		return err
	}
	fc, ac := keys[0], keys[1]
	oc, hasOwner := tb.col[colOwner]
	tc, hasTrigger := tb.col[colTrigger]

	// Minute columns are the integer headers, placed by their number so
	// their order in the file does not matter.
	var mins []mcol
	for i, h := range tb.header {
		if m, err := strconv.Atoi(h); err == nil {
			mins = append(mins, mcol{m, i})
		}
	}
	if len(mins) == 0 {
		return fmt.Errorf("%s: no minute columns: %w", path, ErrBadHeader)
	}
	sort.Slice(mins, func(i, j int) bool { return mins[i].minute < mins[j].minute })
	for i := 1; i < len(mins); i++ {
		if mins[i].minute != mins[i-1].minute+1 {
			return fmt.Errorf("%s: minute columns jump from %d to %d: %w",
				path, mins[i-1].minute, mins[i].minute, ErrBadHeader)
		}
	}

	t := &Trace{FirstMinute: mins[0].minute, Minutes: len(mins)}
	l.t, l.index = t, map[string]int{}
	rep := &t.Report
	for {
		r, err := tb.next()
		if err != nil {
			return err
		}
		if r.eof {
			return nil
		}
		rep.Rows++
		skip := func(reason, detail string) {
			if r.last {
				detail += " (" + unterminatedShort + ")"
			}
			n := readable(r.rec, mins)
			rep.Invocations += n
			rep.affect(n)
			rep.add(fileInvocations, r.line, reason, detail)
		}
		if r.bad {
			t.Skipped.BadInvocations++
			skip(reasonBadInvocations, r.why)
			continue
		}
		h, app := strings.TrimSpace(r.rec[fc]), strings.TrimSpace(r.rec[ac])
		if h == "" || app == "" {
			t.Skipped.BadInvocations++
			skip(reasonBadInvocations, "empty "+colFunc+" or "+colApp)
			continue
		}
		counts := make([]int32, len(mins))
		why := ""
		for i, m := range mins {
			c, ok := parseCount(r.rec[m.col])
			if !ok {
				why = fmt.Sprintf("minute %d: count %q is not a non-negative integer", m.minute, r.rec[m.col])
				break
			}
			counts[i] = c
		}
		if why != "" {
			t.Skipped.BadInvocations++
			skip(reasonBadInvocations, why)
			continue
		}
		if first, dup := l.index[h]; dup {
			t.Skipped.Duplicates++
			skip(reasonDuplicate, fmt.Sprintf("function %s already on line %d", h, l.lines[first]))
			continue
		}
		f := Function{App: app, Hash: h, Counts: counts}
		if hasOwner {
			f.Owner = strings.TrimSpace(r.rec[oc])
		}
		if hasTrigger {
			f.Trigger = strings.TrimSpace(r.rec[tc])
		}
		rep.Invocations += f.Total()
		if r.last {
			t.Skipped.NoFinalNewline++
			rep.add(fileInvocations, r.line, reasonNoFinalNewline, unterminated)
		}
		l.index[h] = len(t.Functions)
		l.lines = append(l.lines, r.line)
		l.suspect = append(l.suspect, r.last)
		t.Functions = append(t.Functions, f)
	}
}

// unterminatedShort is added to the detail of a skipped last row.
const unterminatedShort = "last line, no final newline"

// durations reads durations.csv into a map from function position.
func (l *loader2019) durations(path string) (map[int]Durations, error) {
	sk, rep := &l.t.Skipped, &l.t.Report
	tb, err := openTable(path)
	if err != nil {
		return nil, err
	}
	defer tb.close()
	cols, err := tb.need(append([]string{colFunc}, durCols[:]...)...)
	if err != nil {
		return nil, err
	}
	out := make(map[int]Durations, len(l.index))
	var v [len(durCols)]float64
	for {
		r, err := tb.next()
		if err != nil {
			return nil, err
		}
		if r.eof {
			return out, nil
		}
		bad := func(detail string) {
			sk.BadDurations++
			if r.last {
				detail += " (" + unterminatedShort + ")"
			}
			rep.add(fileDurations, r.line, reasonBadDurations, detail)
		}
		if r.bad {
			bad(r.why)
			continue
		}
		why := ""
		for i, c := range cols[1:] {
			var ok bool
			if v[i], ok = parseNum(r.rec[c]); !ok {
				why = fmt.Sprintf("%s %q is not a non-negative number", durCols[i], r.rec[c])
				break
			}
		}
		d := Durations{Avg: v[0], Min: v[1], Max: v[2], P0: v[3], P1: v[4], P25: v[5],
			P50: v[6], P75: v[7], P99: v[8], P100: v[9]}
		h := strings.TrimSpace(r.rec[cols[0]])
		switch {
		case why != "":
		case h == "":
			why = "empty " + colFunc
		case !d.monotone():
			why = "percentiles decrease"
		}
		if why != "" {
			bad(why)
			continue
		}
		i, known := l.index[h]
		if !known {
			sk.Unmatched++
			rep.add(fileDurations, r.line, reasonUnmatched, "function "+h+" is not in "+fileInvocations)
			continue
		}
		if _, dup := out[i]; dup {
			sk.Duplicates++
			rep.add(fileDurations, r.line, reasonDuplicate, "function "+h+" has an earlier row")
			continue
		}
		out[i] = d
		if r.last {
			sk.NoFinalNewline++
			rep.add(fileDurations, r.line, reasonNoFinalNewline, unterminated)
			l.suspect[i] = true
		}
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

// memory reads memory.csv. Without a HashFunction column the file is per
// app and keyed by HashApp.
func (l *loader2019) memory(path string) (memTable, error) {
	t := l.t
	sk, rep := &t.Skipped, &t.Report
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
		mt.byFunc = make(map[int]float64, len(l.index))
	} else {
		mt.byApp = map[string]float64{}
		apps = map[string]bool{}
		for i := range t.Functions {
			apps[t.Functions[i].App] = true
		}
	}
	for {
		r, err := tb.next()
		if err != nil {
			return memTable{}, err
		}
		if r.eof {
			return mt, nil
		}
		bad := func(detail string) {
			sk.BadMemory++
			if r.last {
				detail += " (" + unterminatedShort + ")"
			}
			rep.add(fileMemory, r.line, reasonBadMemory, detail)
		}
		if r.bad {
			bad(r.why)
			continue
		}
		k := strings.TrimSpace(r.rec[cols[0]])
		m, valid := parseNum(r.rec[cols[1]])
		switch {
		case k == "":
			bad("empty " + key)
			continue
		case !valid:
			bad(fmt.Sprintf("%s %q is not a non-negative number", colMem, r.rec[cols[1]]))
			continue
		}
		suspect := func() {
			sk.NoFinalNewline++
			rep.add(fileMemory, r.line, reasonNoFinalNewline, unterminated)
		}
		if mt.byFunc != nil {
			i, known := l.index[k]
			if !known {
				sk.Unmatched++
				rep.add(fileMemory, r.line, reasonUnmatched, "function "+k+" is not in "+fileInvocations)
				continue
			}
			if _, dup := mt.byFunc[i]; dup {
				sk.Duplicates++
				rep.add(fileMemory, r.line, reasonDuplicate, "function "+k+" has an earlier row")
				continue
			}
			mt.byFunc[i] = m
			if r.last {
				suspect()
				l.suspect[i] = true
			}
			continue
		}
		if !apps[k] {
			sk.Unmatched++
			rep.add(fileMemory, r.line, reasonUnmatched, "app "+k+" has no function in "+fileInvocations)
			continue
		}
		if _, dup := mt.byApp[k]; dup {
			sk.Duplicates++
			rep.add(fileMemory, r.line, reasonDuplicate, "app "+k+" has an earlier row")
			continue
		}
		mt.byApp[k] = m
		if r.last {
			suspect()
			for i := range t.Functions {
				if t.Functions[i].App == k {
					l.suspect[i] = true
				}
			}
		}
	}
}
