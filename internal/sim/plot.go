package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot writes PNG figures of rs into dir and returns their paths:
// coldstart.png and drops.png (every policy and split against memory
// size; color per policy, dashes per split) and coldstart-<policy>.png
// (one policy, unified vs partitioned: the KiSS figure).
func Plot(dir string, rs []Result) ([]string, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("nothing to plot: %w", ErrConfig)
	}
	var policies, splits []string
	var ticks []plot.Tick
	for _, r := range rs {
		gb := float64(r.Memory) / (1 << 30)
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == gb }) {
			ticks = append(ticks, plot.Tick{Value: gb, Label: strconv.FormatFloat(gb, 'g', 4, 64)})
		}
		if !slices.Contains(policies, r.Policy) {
			policies = append(policies, r.Policy)
		}
		if !slices.Contains(splits, splitLabel(r)) {
			splits = append(splits, splitLabel(r))
		}
	}
	var paths []string
	figs := []struct {
		file, title, y string
		policies       []string
		metric         func(Result) float64
	}{
		{"coldstart.png", "Cold starts vs memory", "cold starts (% of served)", policies, func(r Result) float64 { return r.All.ColdPct() }},
		{"drops.png", "Drops vs memory", "drops (% of invocations)", policies, func(r Result) float64 { return r.All.DropPct() }},
	}
	for _, p := range policies {
		figs = append(figs, struct {
			file, title, y string
			policies       []string
			metric         func(Result) float64
		}{"coldstart-" + p + ".png", "Cold starts vs memory: " + p + ", unified vs partitioned", "cold starts (% of served)", []string{p}, func(r Result) float64 { return r.All.ColdPct() }})
	}
	for _, f := range figs {
		p := plot.New()
		p.Title.Text = f.title
		p.X.Label.Text = "memory (GB)"
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.Y.Label.Text = f.y
		p.Y.Min = 0
		p.Legend.Top = true
		for _, pol := range f.policies {
			pi := slices.Index(policies, pol)
			for si, sp := range splits {
				var xy plotter.XYs
				for _, r := range rs {
					if r.Policy == pol && splitLabel(r) == sp {
						xy = append(xy, plotter.XY{X: float64(r.Memory) / (1 << 30), Y: f.metric(r)})
					}
				}
				if len(xy) == 0 {
					continue
				}
				slices.SortFunc(xy, func(a, b plotter.XY) int {
					switch {
					case a.X < b.X:
						return -1
					case a.X > b.X:
						return 1
					}
					return 0
				})
				l, pts, err := plotter.NewLinePoints(xy)
				if err != nil {
					return nil, fmt.Errorf("plotting %s: %w", f.file, err)
				}
				l.Color = plotutil.Color(pi)
				l.Dashes = plotutil.Dashes(si)
				pts.Color = plotutil.Color(pi)
				pts.Shape = plotutil.Shape(si)
				p.Add(l, pts)
				p.Legend.Add(pol+" "+sp, l, pts)
			}
		}
		path := filepath.Join(dir, f.file)
		if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
			return nil, fmt.Errorf("saving plot: %w", err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

func splitLabel(r Result) string {
	if r.Borrow {
		return r.Split + "+borrow"
	}
	return r.Split
}

// ensureDir creates dir if needed.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating output dir: %w", err)
	}
	return nil
}

// WriteAll writes results.csv, memory.csv and the plots into dir and
// returns the paths written.
func WriteAll(dir string, rs []Result) ([]string, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	var paths []string
	for _, f := range []struct {
		name  string
		write func(*os.File) error
	}{
		{"results.csv", func(f *os.File) error { return WriteCSV(f, rs) }},
		{"memory.csv", func(f *os.File) error { return WriteMemoryCSV(f, rs) }},
	} {
		path := filepath.Join(dir, f.name)
		file, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("creating %s: %w", f.name, err)
		}
		err = f.write(file)
		if cerr := file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("closing %s: %w", f.name, cerr)
		}
		if err != nil {
			return nil, err
		}
		paths = append(paths, path)
	}
	ps, err := Plot(dir, rs)
	if err != nil {
		return nil, err
	}
	return append(paths, ps...), nil
}
