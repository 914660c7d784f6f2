package trace

import (
	"fmt"
	"io"
	"strings"
)

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
	// NoFinalNewline counts rows that were kept but are suspect: the last
	// row of a file that does not end in a newline. A file cut inside
	// that row's last field reads as a valid, shorter value (a count of 30
	// as 3), so the row cannot be trusted; a file written without the
	// final newline is complete and loses nothing. Not in Total.
	NoFinalNewline int
}

// Total returns the number of skipped rows over all reasons.
func (s SkipCounts) Total() int {
	return s.BadInvocations + s.BadDurations + s.BadMemory + s.Duplicates +
		s.NoDurations + s.NoMemory + s.Unmatched
}

// String lists the non-zero counts, or "none".
func (s SkipCounts) String() string {
	var b strings.Builder
	for _, r := range s.reasons() {
		if r.n == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", r.name, r.n)
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

type reasonCount struct {
	name string
	n    int
}

func (s SkipCounts) reasons() []reasonCount {
	return []reasonCount{
		{reasonBadInvocations, s.BadInvocations}, {reasonBadDurations, s.BadDurations},
		{reasonBadMemory, s.BadMemory}, {reasonDuplicate, s.Duplicates},
		{reasonNoDurations, s.NoDurations}, {reasonNoMemory, s.NoMemory},
		{reasonUnmatched, s.Unmatched}, {reasonNoFinalNewline, s.NoFinalNewline},
	}
}

// Reason names, as SkipCounts.String and SkippedRow.Reason spell them.
const (
	reasonBadInvocations = "bad-invocations"
	reasonBadDurations   = "bad-durations"
	reasonBadMemory      = "bad-memory"
	reasonDuplicate      = "duplicates"
	reasonNoDurations    = "no-durations"
	reasonNoMemory       = "no-memory"
	reasonUnmatched      = "unmatched"
	reasonNoFinalNewline = "no-final-newline"
)

// MaxSkipExamples is how many rows of each reason a SkipReport lists.
const MaxSkipExamples = 5

// SkippedRow is one row skipped while loading, or kept but suspect.
type SkippedRow struct {
	File   string // base name, such as invocations.csv
	Line   int    // line the row starts on; the header is line 1
	Reason string // as SkipCounts.String names it
	Detail string // what is wrong with it
}

func (r SkippedRow) String() string {
	return fmt.Sprintf("%s line %d: %s", r.File, r.Line, r.Detail)
}

// SkipReport tells where a load skipped rows or kept suspect ones, and how
// much of the trace they hold, so that a caller can refuse a damaged trace
// instead of simulating what is left of it.
type SkipReport struct {
	// Examples lists the first MaxSkipExamples rows of each reason, in the
	// order they were met.
	Examples []SkippedRow
	// Rows is the number of data rows of invocations.csv (of the 2021
	// file), well-formed or not.
	Rows int
	// AffectedRows is how many of them were skipped, dropped because
	// durations.csv or memory.csv has nothing usable for them, or kept but
	// suspect (see SkipCounts.NoFinalNewline).
	AffectedRows int
	// Invocations is the number of invocations in those Rows, as far as
	// their cells can be read: an unreadable or negative count adds
	// nothing. AffectedInvocations is the part in AffectedRows. A -1 in
	// the busiest function's row makes this share large even though it is
	// one row.
	Invocations, AffectedInvocations int64
}

// Share returns the larger of the affected shares of rows and of
// invocations, in [0, 1].
func (r *SkipReport) Share() float64 {
	var s float64
	if r.Rows > 0 {
		s = float64(r.AffectedRows) / float64(r.Rows)
	}
	if r.Invocations > 0 {
		s = max(s, float64(r.AffectedInvocations)/float64(r.Invocations))
	}
	return min(s, 1)
}

// add records an example row unless its reason already has
// MaxSkipExamples.
func (r *SkipReport) add(file string, line int, reason, detail string) {
	n := 0
	for _, e := range r.Examples {
		if e.Reason == reason {
			n++
		}
	}
	if n < MaxSkipExamples {
		r.Examples = append(r.Examples, SkippedRow{File: file, Line: line, Reason: reason, Detail: detail})
	}
}

// affect counts one affected row of invocations.csv holding n invocations.
func (r *SkipReport) affect(n int64) {
	r.AffectedRows++
	r.AffectedInvocations += n
}

// WriteSkips writes a human-readable account of what a load skipped or
// kept as suspect: the counts by reason, then each reason's first rows.
// It writes nothing when nothing was skipped or suspect.
func WriteSkips(w io.Writer, c SkipCounts, r *SkipReport) {
	if c.Total() == 0 && c.NoFinalNewline == 0 {
		return
	}
	fmt.Fprintf(w, "trace: skipped %d rows, kept %d suspect (%s); %d of %d invocation rows (%.2f%%) and %d of %d invocations (%.2f%%) affected\n",
		c.Total(), c.NoFinalNewline, c, r.AffectedRows, r.Rows, pctOf(int64(r.AffectedRows), int64(r.Rows)),
		r.AffectedInvocations, r.Invocations, pctOf(r.AffectedInvocations, r.Invocations))
	for _, rc := range c.reasons() {
		if rc.n == 0 {
			continue
		}
		fmt.Fprintf(w, "  %s: %d", rc.name, rc.n)
		if rc.n > MaxSkipExamples {
			fmt.Fprintf(w, " (first %d below)", MaxSkipExamples)
		}
		fmt.Fprintln(w)
		for _, e := range r.Examples {
			if e.Reason == rc.name {
				fmt.Fprintf(w, "    %s\n", e)
			}
		}
	}
}

func pctOf(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// CheckSkips returns an error wrapping ErrDamaged if the affected share of
// r is above maxShare (a fraction: 0.01 is 1 %).
func CheckSkips(c SkipCounts, r *SkipReport, maxShare float64) error {
	if s := r.Share(); s > maxShare {
		return fmt.Errorf("%.2f%% of the trace is in skipped or suspect rows (%s), more than %.2f%%: %w",
			100*s, c, 100*maxShare, ErrDamaged)
	}
	return nil
}
