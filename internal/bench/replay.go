package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/trace"
)

// ReplayConfig is one worker configuration of the PARSEC comparison.
type ReplayConfig struct {
	// Name labels the configuration in tables and file names.
	Name string
	// Flags are the extra `hearth up` flags.
	Flags []string
}

// ReplayConfigs returns the three configurations of the PARSEC comparison:
// fresh (every start a fresh interpreter, nothing kept warm, a Docker-like
// baseline), SOCK-like (lean sandboxes and the handler cache, no zygotes,
// no snapshots) and Hearth (everything on).
func ReplayConfigs() []ReplayConfig {
	return []ReplayConfig{
		{"fresh", []string{"--fresh"}},
		{"sock-like", []string{"--no-zygotes", "--no-snapshots"}},
		{"hearth", nil},
	}
}

// ReplayOptions configure the PARSEC comparison. Zero values take the
// documented defaults.
type ReplayOptions struct {
	// Hearth is the hearth binary; Base the base image tree.
	Hearth, Base string
	// TraceDir is an Azure 2019 trace folder.
	TraceDir string
	// From is the first trace minute (default: the trace's first) and
	// Minutes the window's length (default 60).
	From, Minutes int
	// Speed is the speed factor (default 12: an hour in 5 minutes).
	Speed float64
	// Funcs is the number of functions (default 8), picked with rates
	// spread log-evenly from HiRate down to LoRate calls per minute
	// (defaults 2.5 and 0.1, PARSEC's Table I).
	Funcs          int
	HiRate, LoRate float64
	// Seed seeds arrivals, execution times and package sets.
	Seed int64
	// Arrival is the arrival model (default equidistant).
	Arrival trace.Arrival
	// ExecCap bounds sampled execution times (default 2 s); functions
	// whose median exceeds it are not picked.
	ExecCap time.Duration
	// MemCapMB bounds the memory a handler touches (default 64).
	MemCapMB int
	// Popularity assigns package sets (default replay.DefaultPopularity).
	Popularity replay.Popularity
	// Configs are the worker configurations (default ReplayConfigs).
	Configs []ReplayConfig
	// OutDir, if set, receives each configuration's CSV and plots.
	OutDir string
	// Out receives the tables; Progress, if set, progress bars and notes.
	Out, Progress io.Writer
}

// ReplayReport is the outcome of the comparison.
type ReplayReport struct {
	Plan    *replay.Plan
	Configs []ReplayConfig
	Results []*replay.Result // by config
	Sums    [][]replay.Summary
}

// PickByRate returns the hashes of n functions of t whose mean rates over
// t are closest, on a log scale, to n targets spread log-evenly from hi
// down to lo calls per minute, each function picked once. Only functions
// accepted by ok (nil: all) with a positive rate are candidates; ties go
// to the function listed first.
func PickByRate(t *trace.Trace, n int, hi, lo float64, ok func(*trace.Function) bool) ([]string, error) {
	if n <= 0 || !(hi > 0) || !(lo > 0) || lo > hi {
		return nil, fmt.Errorf("picking %d functions between %v and %v calls/min: bad range", n, hi, lo)
	}
	used := make([]bool, len(t.Functions))
	var out []string
	for k := 0; k < n; k++ {
		target := hi
		if n > 1 {
			target = hi * math.Pow(lo/hi, float64(k)/float64(n-1))
		}
		best, bestD := -1, math.Inf(1)
		for i := range t.Functions {
			f := &t.Functions[i]
			r := f.Rate()
			if used[i] || r <= 0 || (ok != nil && !ok(f)) {
				continue
			}
			if d := math.Abs(math.Log(r / target)); d < bestD {
				best, bestD = i, d
			}
		}
		if best < 0 {
			return nil, fmt.Errorf("only %d of %d functions have a positive rate and pass the filter", k, n)
		}
		used[best] = true
		out = append(out, t.Functions[best].Hash)
	}
	return out, nil
}

// upFlags returns the flags that `hearth up` of binary hearth accepts
// among want, and notes the missing ones on progress.
func upFlags(hearth string, progress io.Writer) (map[string]bool, error) {
	out, err := exec.Command(hearth, "up", "--help").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("hearth up --help: %v\n%s", err, out)
	}
	have := map[string]bool{}
	for _, c := range ReplayConfigs() {
		for _, f := range c.Flags {
			have[f] = strings.Contains(string(out), f+" ")
			if !have[f] && progress != nil {
				fmt.Fprintf(progress, "note: this hearth has no %s flag; configurations that need it run without it\n", f)
			}
		}
	}
	return have, nil
}

// Replay runs the PARSEC comparison: the same replay against a fresh
// worker per configuration, in order. It prints the tables to o.Out.
func Replay(ctx context.Context, o ReplayOptions) (*ReplayReport, error) {
	if o.Hearth == "" || o.Base == "" || o.TraceDir == "" {
		return nil, errors.New("replay bench: hearth binary, base image and trace dir are required")
	}
	o.Minutes = replayOr(o.Minutes, 60)
	o.Speed = replayOr(o.Speed, 12)
	o.Funcs = replayOr(o.Funcs, 8)
	o.HiRate = replayOr(o.HiRate, 2.5)
	o.LoRate = replayOr(o.LoRate, 0.1)
	o.ExecCap = replayOr(o.ExecCap, 2*time.Second)
	if o.Configs == nil {
		o.Configs = ReplayConfigs()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	full, err := trace.LoadAzure2019(o.TraceDir)
	if err != nil {
		return nil, fmt.Errorf("loading trace: %w", err)
	}
	from := o.From
	if from == 0 {
		from = full.FirstMinute
	}
	win, err := full.Window(from, from+o.Minutes)
	if err != nil {
		return nil, err
	}
	capMs := float64(o.ExecCap) / 1e6
	hashes, err := PickByRate(win, o.Funcs, o.HiRate, o.LoRate, func(f *trace.Function) bool { return f.Dur.P50 <= capMs })
	if err != nil {
		return nil, err
	}
	sel, err := win.Select(hashes...)
	if err != nil {
		return nil, err
	}
	plan, err := replay.NewPlan(sel, replay.PlanConfig{Arrival: o.Arrival, Seed: o.Seed, Speed: o.Speed,
		MemCapMB: o.MemCapMB, ExecCap: o.ExecCap, Popularity: o.Popularity, Prefix: "parsec-"})
	if err != nil {
		return nil, err
	}
	have, err := upFlags(o.Hearth, o.Progress)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "PARSEC comparison: %d functions, trace minutes [%d, %d) at speed %g (%v wall per configuration), %d calls, arrival %s, seed %d, execution times capped at %v\n\n",
		len(plan.Funcs), from, from+o.Minutes, o.Speed, plan.Duration().Round(time.Second), len(plan.Calls), o.Arrival, o.Seed, o.ExecCap)
	rep := &ReplayReport{Plan: plan, Configs: o.Configs}
	for _, c := range o.Configs {
		var flags []string
		for _, f := range c.Flags {
			if ok, known := have[f]; ok || !known {
				flags = append(flags, f)
			}
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s: hearth up %s\n", c.Name, strings.Join(flags, " "))
		}
		res, err := replayOne(ctx, o, plan, flags)
		if err != nil {
			return rep, fmt.Errorf("config %s: %w", c.Name, err)
		}
		fmt.Fprintf(o.Out, "%s: %s\n", c.Name, res.Stats)
		if o.OutDir != "" {
			if err := writeReplay(filepath.Join(o.OutDir, c.Name), res); err != nil {
				return rep, err
			}
		}
		rep.Results = append(rep.Results, res)
		rep.Sums = append(rep.Sums, replay.Summarize(plan, res.Records))
	}
	fmt.Fprintln(o.Out)
	return rep, rep.Table(o.Out)
}

func replayOne(ctx context.Context, o ReplayOptions, plan *replay.Plan, flags []string) (_ *replay.Result, err error) {
	w, err := StartWorker(ctx, o.Hearth, o.Base, flags...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := w.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	if err := replay.Deploy(ctx, w.Client, plan); err != nil {
		return nil, err
	}
	return replay.Run(ctx, w.Client, plan, replay.Options{Progress: o.Progress})
}

// writeReplay writes calls.csv and the plots of one configuration.
func writeReplay(dir string, res *replay.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.Create(filepath.Join(dir, "calls.csv"))
	if err != nil {
		return err
	}
	if err := replay.WriteCSV(f, res.Plan, res.Records); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if _, err := replay.Plot(dir, res); err != nil && !errors.Is(err, replay.ErrNoCalls) {
		return err
	}
	return nil
}

// Table prints PARSEC's Tables III and IV for the report: per function,
// mean response time and cold starts per configuration, and how much the
// last configuration improves on each of the others. Cold starts are
// shown as "by start path / by PARSEC's definition"; reductions use
// PARSEC's definition, as PARSEC did.
func (r *ReplayReport) Table(w io.Writer) error {
	n := len(r.Sums)
	if n == 0 {
		return nil
	}
	last := r.Configs[n-1].Name
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	head := func(title string) {
		fmt.Fprintln(tw, title)
		line := "function\trate/min\tpackages\tcalls\t"
		for _, c := range r.Configs[:n] {
			line += c.Name + "\t"
		}
		for _, c := range r.Configs[:n-1] {
			line += last + " vs " + c.Name + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	pct := func(base, x float64) string {
		if base == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*(base-x)/base)
	}
	head("Mean response time (ms) and improvement (Table III)")
	for i, f := range r.Plan.Funcs {
		line := fmt.Sprintf("%s\t%.2f\t%s\t%d\t", f.Name, f.Rate, pkgLabel(f.Packages), r.Sums[0][i].N)
		for k := range n {
			line += fmt.Sprintf("%.1f\t", float64(r.Sums[k][i].Mean)/1e6)
		}
		for k := range n - 1 {
			line += pct(float64(r.Sums[k][i].Mean), float64(r.Sums[n-1][i].Mean)) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	fmt.Fprintln(tw)
	head("Cold starts, by start path / by PARSEC (> run + 30 ms), and reduction by PARSEC's count (Table IV)")
	tot := make([][2]int, n)
	for i, f := range r.Plan.Funcs {
		line := fmt.Sprintf("%s\t%.2f\t%s\t%d\t", f.Name, f.Rate, pkgLabel(f.Packages), r.Sums[0][i].N)
		for k := range n {
			s := r.Sums[k][i]
			tot[k][0] += s.ColdPath
			tot[k][1] += s.ColdParsec
			line += fmt.Sprintf("%d / %d\t", s.ColdPath, s.ColdParsec)
		}
		for k := range n - 1 {
			line += pct(float64(r.Sums[k][i].ColdParsec), float64(r.Sums[n-1][i].ColdParsec)) + "\t"
		}
		fmt.Fprintln(tw, line)
	}
	line := fmt.Sprintf("all\t\t\t%d\t", len(r.Plan.Calls))
	for k := range n {
		line += fmt.Sprintf("%d / %d\t", tot[k][0], tot[k][1])
	}
	for k := range n - 1 {
		line += pct(float64(tot[k][1]), float64(tot[n-1][1])) + "\t"
	}
	fmt.Fprintln(tw, line)
	if err := tw.Flush(); err != nil {
		return err
	}
	errs := 0
	for k := range n {
		for _, s := range r.Sums[k] {
			errs += s.Errors
		}
	}
	if errs > 0 {
		_, err := fmt.Fprintf(w, "\n%d calls failed over all configurations; see the CSVs\n", errs)
		return err
	}
	return nil
}

func pkgLabel(p []string) string {
	if len(p) == 0 {
		return "none"
	}
	return strings.Join(p, "+")
}

func replayOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
