package trace

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Call is one invocation in a 2021 trace.
type Call struct {
	// Start is end_timestamp - duration in the file's own time base
	// (seconds from the trace's epoch). It may be negative for an
	// invocation that began before the trace window.
	Start time.Duration
	// Dur is the invocation's duration.
	Dur time.Duration
}

// End returns the time the call finished.
func (c Call) End() time.Duration { return c.Start + c.Dur }

// Function2021 is one function of a 2021 trace with its calls sorted by
// start time (ties by duration).
type Function2021 struct {
	App, Func string
	Calls     []Call
}

// Trace2021 is an invocation-level trace in the Azure Functions 2021 format.
type Trace2021 struct {
	// Functions are in order of first appearance in the file.
	Functions []Function2021
	// Origin is the time that replay and aggregation count from: 0, or the
	// earliest start if one is negative, so that no time is negative.
	Origin time.Duration
	// Skipped counts malformed rows under BadInvocations: wrong number
	// of fields, empty app or func, or an end or duration that is not a
	// finite non-negative number; and a last row without a final newline
	// under NoFinalNewline. Report locates them.
	Skipped SkipCounts
	Report  SkipReport
}

// Invocations returns the number of calls in the trace.
func (t *Trace2021) Invocations() int {
	n := 0
	for i := range t.Functions {
		n += len(t.Functions[i].Calls)
	}
	return n
}

// LoadAzure2021 reads a 2021 invocation-level CSV with the columns app,
// func, end_timestamp and duration (seconds), in any order. It fails if a
// column is missing or if no valid row remains.
func LoadAzure2021(path string) (*Trace2021, error) {
	tb, err := openTable(path)
	if err != nil {
		return nil, err
	}
	defer tb.close()
	cols, err := tb.need("app", "func", "end_timestamp", "duration")
	if err != nil {
		return nil, err
	}
	t := &Trace2021{}
	file := filepath.Base(path)
	rep := &t.Report
	type key struct{ app, fn string }
	index := map[key]int{}
	for {
		r, err := tb.next()
		if err != nil {
			return nil, err
		}
		if r.eof {
			break
		}
		rep.Rows++
		rep.Invocations++
		bad := func(detail string) {
			t.Skipped.BadInvocations++
			if r.last {
				detail += " (" + unterminatedShort + ")"
			}
			rep.add(file, r.line, reasonBadInvocations, detail)
			rep.affect(1)
		}
		if r.bad {
			bad(r.why)
			continue
		}
		rec := r.rec
		k := key{strings.TrimSpace(rec[cols[0]]), strings.TrimSpace(rec[cols[1]])}
		end, ok1 := parseNum(rec[cols[2]])
		dur, ok2 := parseNum(rec[cols[3]])
		switch {
		case k.app == "" || k.fn == "":
			bad("empty app or func")
			continue
		case !ok1:
			bad(fmt.Sprintf("end_timestamp %q is not a non-negative number", rec[cols[2]]))
			continue
		case !ok2:
			bad(fmt.Sprintf("duration %q is not a non-negative number", rec[cols[3]]))
			continue
		}
		if r.last {
			t.Skipped.NoFinalNewline++
			rep.add(file, r.line, reasonNoFinalNewline, unterminated)
			rep.affect(1)
		}
		// Convert both ends first so that Start+Dur equals End exactly.
		e, d := secToDuration(end), secToDuration(dur)
		c := Call{Start: e - d, Dur: d}
		i, seen := index[k]
		if !seen {
			i = len(t.Functions)
			index[k] = i
			t.Functions = append(t.Functions, Function2021{App: k.app, Func: k.fn})
		}
		t.Functions[i].Calls = append(t.Functions[i].Calls, c)
		t.Origin = min(t.Origin, c.Start)
	}
	if len(t.Functions) == 0 {
		return nil, fmt.Errorf("loading %s (skipped %s): %w", path, t.Skipped, ErrEmpty)
	}
	for i := range t.Functions {
		slices.SortFunc(t.Functions[i].Calls, func(a, b Call) int {
			if a.Start != b.Start {
				return cmpDur(a.Start, b.Start)
			}
			return cmpDur(a.Dur, b.Dur)
		})
	}
	return t, nil
}

func cmpDur(a, b time.Duration) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// secToDuration converts seconds to a Duration, rounding to the nearest
// nanosecond.
func secToDuration(s float64) time.Duration {
	return time.Duration(math.Round(s * 1e9))
}

// Replay returns every call as an Invocation in start order (ties by
// function index), with At = Start - Origin, Exec = the recorded duration
// and Func the index into t.Functions. This is the exact replay of the
// trace, with no synthetic arrivals or sampled durations.
func (t *Trace2021) Replay() []Invocation {
	out := make([]Invocation, 0, t.Invocations())
	for i := range t.Functions {
		for _, c := range t.Functions[i].Calls {
			out = append(out, Invocation{Func: int32(i), At: c.Start - t.Origin, Exec: c.Dur})
		}
	}
	slices.SortStableFunc(out, func(a, b Invocation) int {
		if a.At != b.At {
			return cmpDur(a.At, b.At)
		}
		return int(a.Func) - int(b.Func)
	})
	return out
}

// Aggregate turns the trace into the per-minute 2019 shape so that the
// Generator and the simulator can use it: minute 0 starts at Origin, a call
// counts in the minute its start falls in, and each function's Durations
// are computed from its recorded durations (average, extremes and linearly
// interpolated percentiles, in ms). The 2021 trace has no memory data, so
// MemMB is 0 and Owner and Trigger are empty; App and Hash are app and
// func.
func (t *Trace2021) Aggregate() *Trace {
	var last time.Duration
	for i := range t.Functions {
		for _, c := range t.Functions[i].Calls {
			last = max(last, c.Start-t.Origin)
		}
	}
	minutes := int(last/Minute) + 1
	out := &Trace{Minutes: minutes, Skipped: t.Skipped, Report: t.Report, Functions: make([]Function, len(t.Functions))}
	ms := []float64{}
	for i, f := range t.Functions {
		counts := make([]int32, minutes)
		ms = ms[:0]
		for _, c := range f.Calls {
			counts[(c.Start-t.Origin)/Minute]++
			ms = append(ms, float64(c.Dur)/1e6)
		}
		out.Functions[i] = Function{App: f.App, Hash: f.Func, Counts: counts, Dur: durationsOf(ms)}
	}
	return out
}

// durationsOf summarises execution times in ms. It sorts ms.
func durationsOf(ms []float64) Durations {
	if len(ms) == 0 {
		return Durations{}
	}
	slices.Sort(ms)
	sum := 0.0
	for _, v := range ms {
		sum += v
	}
	// pct interpolates linearly between closest ranks (numpy's default).
	pct := func(p float64) float64 {
		x := p / 100 * float64(len(ms)-1)
		lo := int(x)
		if lo >= len(ms)-1 {
			return ms[len(ms)-1]
		}
		return ms[lo] + (ms[lo+1]-ms[lo])*(x-float64(lo))
	}
	return Durations{
		Avg: sum / float64(len(ms)), Min: ms[0], Max: ms[len(ms)-1],
		P0: ms[0], P1: pct(1), P25: pct(25), P50: pct(50), P75: pct(75), P99: pct(99), P100: ms[len(ms)-1],
	}
}
