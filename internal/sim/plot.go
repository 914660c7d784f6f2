package sim

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// PlotInfo describes a run for the plots' titles, so that a figure says
// what it shows without its command line: two runs that differ only in
// threshold or cold-cost rule must not look alike. Empty fields are left
// out.
type PlotInfo struct {
	Trace     string // the trace's name, such as its folder's base name
	Threshold string // the size threshold(s) between partitions, such as "225 MB"
	Cold      string // the cold-cost rule, such as "cold cost = max - avg duration"
	Extra     string // anything else that shapes the figures, such as the arrival model
}

// Plot writes PNG figures of rs into dir and returns their paths:
// coldstart.png (every policy and split against memory size; colour per
// policy, dashes and marks per split) and coldstart-<policy>.png (one
// policy, unified vs partitioned: the KiSS figure). Each figure has two
// panels side by side, cold starts and drops, both as a percentage of all
// invocations: cold starts as a share of served calls rise with memory
// where drops dominate, which reads as if memory hurt. The legend sits
// beside the panels, never on the data.
func Plot(dir string, rs []Result, info PlotInfo) ([]string, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("nothing to plot: %w", ErrConfig)
	}
	var policies, splits []string
	var sizes []float64 // GB
	for _, r := range rs {
		if gb := float64(r.Memory) / (1 << 30); !slices.Contains(sizes, gb) {
			sizes = append(sizes, gb)
		}
		if !slices.Contains(policies, r.Policy) {
			policies = append(policies, r.Policy)
		}
		if !slices.Contains(splits, splitLabel(r)) {
			splits = append(splits, splitLabel(r))
		}
	}
	slices.Sort(sizes)
	// Sizes below a few GB read better in MB (FaasCache's, rounded to
	// whole MB, would show as 0.1992 GB).
	unit, perUnit := "GB", float64(1<<30)
	if sizes[len(sizes)-1] < 4 {
		unit, perUnit = "MB", MiB
		for i := range sizes {
			sizes[i] *= 1024
		}
	}
	figs := []struct {
		file, what string
		policies   []string
	}{{"coldstart.png", "cold starts and drops vs pool memory", policies}}
	for _, p := range policies {
		figs = append(figs, struct {
			file, what string
			policies   []string
		}{"coldstart-" + p + ".png", p + ": unified vs partitioned", []string{p}})
	}
	var paths []string
	for _, f := range figs {
		fig := figure{title: info.title(f.what, splits), legend: plot.NewLegend()}
		panels := []struct {
			title  string
			metric func(Result) float64
		}{
			{"cold starts", func(r Result) float64 { return pct(r.All.Misses, r.All.Invocations) }},
			{"drops", func(r Result) float64 { return r.All.DropPct() }},
		}
		for i, pn := range panels {
			p, err := panel(pn.title, sizes, unit)
			if err != nil {
				return nil, err
			}
			top := 0.0
			for _, pol := range f.policies {
				pi := slices.Index(policies, pol)
				for si, sp := range splits {
					var xy plotter.XYs
					for _, r := range rs {
						if r.Policy == pol && splitLabel(r) == sp {
							xy = append(xy, plotter.XY{X: float64(r.Memory) / perUnit, Y: pn.metric(r)})
						}
					}
					if len(xy) == 0 {
						continue
					}
					slices.SortFunc(xy, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
					for _, v := range xy {
						top = max(top, v.Y)
					}
					l, pts, err := plotter.NewLinePoints(xy)
					if err != nil {
						return nil, fmt.Errorf("plotting %s: %w", f.file, err)
					}
					l.Color = plotutil.Color(pi)
					l.Width = vg.Points(1.5)
					l.Dashes = plotutil.Dashes(si)
					pts.Color = plotutil.Color(pi)
					pts.Shape = plotutil.Shape(si)
					pts.Radius = vg.Points(3)
					p.Add(l, pts)
					if i == 0 {
						name := pol + " " + sp
						if len(f.policies) == 1 {
							name = sp
						}
						fig.legend.Add(name, l, pts)
					}
				}
			}
			niceY(p, top)
			fig.panels = append(fig.panels, p)
		}
		path := filepath.Join(dir, f.file)
		if err := fig.save(path); err != nil {
			return nil, fmt.Errorf("saving plot %s: %w", f.file, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// title is a figure's title: the trace and what is plotted, then the
// settings that change the curves.
func (in PlotInfo) title(what string, splits []string) string {
	first := what
	if in.Trace != "" {
		first = in.Trace + ": " + what
	}
	second := []string{"split " + strings.Join(splits, ", ")}
	for _, s := range []string{in.Threshold, in.Cold, in.Extra} {
		if s != "" {
			second = append(second, s)
		}
	}
	return first + "\n" + strings.Join(second, "   |   ")
}

// panel returns a plot of one metric against memory, with the memory
// sizes simulated (in unit) as the x ticks, on a log scale when they span a factor of
// four or more (sizes usually double), and a light grid.
func panel(title string, sizes []float64, unit string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title + " (% of all invocations)"
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.Y.Label.Text = "% of all invocations"
	p.X.Label.Text = "pool memory (" + unit + ")"
	ticks := make([]plot.Tick, len(sizes))
	for i, v := range sizes {
		ticks[i] = plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if lo, hi := sizes[0], sizes[len(sizes)-1]; lo > 0 && hi/lo >= 4 {
		p.X.Scale = plot.LogScale{}
		p.X.Label.Text = "pool memory (" + unit + ", log scale)"
		// A margin so that the end points are not on the frame.
		p.X.Min, p.X.Max = lo/1.15, hi*1.15
	} else if hi > lo {
		m := (hi - lo) * 0.05
		p.X.Min, p.X.Max = lo-m, hi+m
	} else {
		p.X.Min, p.X.Max = lo*0.9, lo*1.1+1e-9
	}
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 225}
	g.Horizontal.Color = color.Gray{Y: 225}
	p.Add(g)
	return p, nil
}

// niceY sets a y axis from 0 to the round value at or above top, with
// about six labelled ticks at round steps and an unlabelled one between
// each pair.
func niceY(p *plot.Plot, top float64) {
	if !(top > 0) || math.IsInf(top, 0) {
		top = 1 // nothing to show: 0 to 1
	}
	step := niceStep(top, 6)
	p.Y.Min = 0
	p.Y.Max = math.Ceil(top/step-1e-9) * step
	if p.Y.Max < top {
		p.Y.Max += step
	}
	p.Y.Tick.Marker = niceTicks{step: step}
}

// niceStep returns a step of 1, 2, 2.5 or 5 times a power of ten that
// divides [0, top] into at most n parts.
func niceStep(top float64, n int) float64 {
	if !(top > 0) || math.IsInf(top, 0) {
		top = 1
	}
	raw := top / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

// niceTicks marks multiples of step, labelled with as many decimals as
// step needs, and a minor tick halfway between each pair.
type niceTicks struct{ step float64 }

// Ticks implements plot.Ticker.
func (t niceTicks) Ticks(lo, hi float64) []plot.Tick {
	dec := 0
	for s := t.step; dec < 6 && math.Abs(s-math.Round(s)) > 1e-9; s *= 10 {
		dec++
	}
	var ticks []plot.Tick
	for k := math.Ceil(lo/t.step - 1e-9); ; k++ {
		v := k*t.step + 0 // no "-0"
		if v > hi+t.step*1e-9 {
			break
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', dec, 64)})
		if m := v + t.step/2; m <= hi {
			ticks = append(ticks, plot.Tick{Value: m})
		}
	}
	return ticks
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// figure is panels side by side under a title, with one legend to their
// right.
type figure struct {
	title  string
	panels []*plot.Plot
	legend plot.Legend
}

// layout places the title, the legend and the panels on c: the title on
// top, the legend in a column at the right, the panels in what is left.
func (f *figure) layout(c draw.Canvas) (title vg.Point, ts text.Style, legend, panels vg.Rectangle) {
	const pad = 0.15 * vg.Inch
	ts = text.Style{
		Color:   color.Black,
		Font:    font.From(plot.DefaultFont, 13),
		XAlign:  draw.XCenter,
		YAlign:  draw.YTop,
		Handler: plot.DefaultTextHandler,
	}
	r := c.Rectangle
	title = vg.Point{X: (r.Min.X + r.Max.X) / 2, Y: r.Max.Y - pad}
	top := r.Max.Y - pad - ts.Height(f.title) - pad

	f.legend.Top, f.legend.Left = true, true
	f.legend.Padding = vg.Points(3)
	f.legend.ThumbnailWidth = vg.Points(28)
	lw := f.legend.Rectangle(c).Size().X
	right := r.Max.X - pad - lw - pad
	legend = vg.Rectangle{Min: vg.Point{X: right + pad, Y: r.Min.Y + pad}, Max: vg.Point{X: r.Max.X - pad, Y: top - 0.3*vg.Inch}}
	panels = vg.Rectangle{Min: vg.Point{X: r.Min.X + pad, Y: r.Min.Y + pad}, Max: vg.Point{X: right, Y: top}}
	return title, ts, legend, panels
}

func (f *figure) save(path string) error {
	const w, h = 11 * vg.Inch, 4.8 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())

	at, ts, legend, panels := f.layout(dc)
	dc.FillText(ts, at, f.title)
	f.legend.Draw(draw.Canvas{Canvas: img, Rectangle: legend})
	tiles := draw.Tiles{Rows: 1, Cols: len(f.panels), PadX: 0.35 * vg.Inch}
	cs := plot.Align([][]*plot.Plot{f.panels}, tiles, draw.Canvas{Canvas: img, Rectangle: panels})
	for i, p := range f.panels {
		p.Draw(cs[0][i])
	}

	file, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(file); err != nil {
		file.Close()
		return err
	}
	return file.Close()
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
// returns the paths written; info titles the plots.
func WriteAll(dir string, rs []Result, info PlotInfo) ([]string, error) {
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
	ps, err := Plot(dir, rs, info)
	if err != nil {
		return nil, err
	}
	return append(paths, ps...), nil
}
