package replay

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// ParsecThreshold is PARSEC's cold-start margin: a call is a cold start
// when its response time exceeds its run time by more than this.
const ParsecThreshold = 30 * time.Millisecond

// ParsecCold reports whether r is a cold start by PARSEC's definition. Only
// successful calls, whose run time the worker measured, are judged.
func ParsecCold(r Record) bool {
	if !r.OK() {
		return false
	}
	run := time.Duration(r.RunMs * 1e6)
	return r.Response > run+ParsecThreshold
}

// Summary is one function's figures over a replay.
type Summary struct {
	Func int
	Name string
	Hash string
	// N counts the function's fired calls; Errors of them failed.
	N, Errors int
	// Mean and P99 are response times of the successful calls.
	Mean, P99 time.Duration
	// Paths counts calls by reported start path ("" when none).
	Paths map[string]int
	// ColdPath counts calls whose start path was not warm (cold, fork,
	// snapshot); ColdParsec counts PARSEC cold starts (ParsecCold).
	ColdPath, ColdParsec int
}

// Summarize computes per-function summaries of recs for the plan's
// functions, in plan order; functions without calls get zero figures.
func Summarize(p *Plan, recs []Record) []Summary {
	out := make([]Summary, len(p.Funcs))
	lat := make([][]time.Duration, len(p.Funcs))
	for i, f := range p.Funcs {
		out[i] = Summary{Func: i, Name: f.Name, Hash: f.Hash, Paths: map[string]int{}}
	}
	for _, r := range recs {
		s := &out[r.Func]
		s.N++
		s.Paths[r.Path]++
		if r.Path != "" && r.Path != "warm" {
			s.ColdPath++
		}
		if !r.OK() {
			s.Errors++
			continue
		}
		if ParsecCold(r) {
			s.ColdParsec++
		}
		lat[r.Func] = append(lat[r.Func], r.Response)
	}
	for i := range out {
		out[i].Mean, out[i].P99 = meanP99(lat[i])
	}
	return out
}

// meanP99 returns the mean and the nearest-rank 99th percentile of d,
// which it sorts.
func meanP99(d []time.Duration) (mean, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	k := (99*len(d)+99)/100 - 1 // ceil(0.99 n) - 1
	return sum / time.Duration(len(d)), d[k]
}

// PathCounts counts records by reported start path over all functions.
func PathCounts(recs []Record) map[string]int {
	m := map[string]int{}
	for _, r := range recs {
		m[r.Path]++
	}
	return m
}

// WriteSummary prints the per-function table and the generator's stats.
func WriteSummary(w io.Writer, res *Result) error {
	sums := Summarize(res.Plan, res.Records)
	var paths []string
	for p := range PathCounts(res.Records) {
		if p != "" && p != "warm" {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := "function\trate/min\tpackages\tcalls\tmean ms\tp99 ms\tcold (path)\tcold (PARSEC)\terrors\t"
	for _, p := range paths {
		head += p + "\t"
	}
	fmt.Fprintln(tw, head)
	for _, s := range sums {
		f := res.Plan.Funcs[s.Func]
		line := fmt.Sprintf("%s\t%.2f\t%s\t%d\t%.1f\t%.1f\t%d\t%d\t%d\t", s.Name, f.Rate, label(f.Packages),
			s.N, msf(s.Mean), msf(s.P99), s.ColdPath, s.ColdParsec, s.Errors)
		for _, p := range paths {
			line += fmt.Sprintf("%d\t", s.Paths[p])
		}
		fmt.Fprintln(tw, line)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing summary: %w", err)
	}
	var pc []string
	for p, n := range PathCounts(res.Records) {
		if p == "" {
			p = "none"
		}
		pc = append(pc, fmt.Sprintf("%s=%d", p, n))
	}
	sort.Strings(pc)
	_, err := fmt.Fprintf(w, "\nstart paths: %s\n%s\n", strings.Join(pc, " "), res.Stats)
	return err
}

func msf(d time.Duration) float64 { return float64(d) / 1e6 }
