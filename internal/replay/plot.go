package replay

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// pathOrder fixes each start path's color across figures.
var pathOrder = []string{"warm", "fork", "snapshot", "cold", ""}

func pathStyle(p string) (color.Color, draw.GlyphDrawer) {
	i := slices.Index(pathOrder, p)
	if i < 0 {
		i = len(pathOrder)
	}
	return plotutil.Color(i), plotutil.Shape(i)
}

func pathName(p string) string {
	if p == "" {
		return "none"
	}
	return p
}

// Plot writes PNG figures of res into dir and returns their paths:
// response-<function>.png, each function's response time over the run
// with one color per start path (as PARSEC's Figure 10), and cdf.png, the
// response time CDF per start path.
func Plot(dir string, res *Result) ([]string, error) {
	var out []string
	byPath := map[string][]float64{}
	for i, f := range res.Plan.Funcs {
		pts := map[string]plotter.XYs{}
		for _, r := range res.Records {
			if r.Func != i || r.Status == 0 {
				continue
			}
			pts[r.Path] = append(pts[r.Path], plotter.XY{X: r.Fired.Seconds(), Y: msf(r.Response)})
		}
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s (%.2f calls/min, %s)", f.Name, f.Rate, label(f.Packages))
		p.X.Label.Text = "time since replay start (s)"
		p.Y.Label.Text = "response time (ms)"
		p.Y.Min = 0
		p.Legend.Top = true
		for _, path := range sortedKeys(pts) {
			s, err := plotter.NewScatter(pts[path])
			if err != nil {
				return out, fmt.Errorf("plotting %s: %w", f.Name, err)
			}
			s.Color, s.Shape = pathStyle(path)
			p.Add(s)
			p.Legend.Add(pathName(path), s)
		}
		file := filepath.Join(dir, "response-"+f.Name+".png")
		if err := p.Save(7*vg.Inch, 4*vg.Inch, file); err != nil {
			return out, fmt.Errorf("saving plot: %w", err)
		}
		out = append(out, file)
	}
	for _, r := range res.Records {
		if r.OK() {
			byPath[r.Path] = append(byPath[r.Path], msf(r.Response))
		}
	}
	p := plot.New()
	p.Title.Text = "Response time CDF by start path"
	p.X.Label.Text = "response time (ms, log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = "fraction of calls"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = true
	p.Legend.Left = true
	for _, path := range sortedKeys(byPath) {
		v := byPath[path]
		sort.Float64s(v)
		xy := make(plotter.XYs, len(v))
		for k, x := range v {
			xy[k] = plotter.XY{X: max(x, 0.01), Y: float64(k+1) / float64(len(v))}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return out, fmt.Errorf("plotting cdf: %w", err)
		}
		l.Color, _ = pathStyle(path)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s (%d)", pathName(path), len(v)), l)
	}
	file := filepath.Join(dir, "cdf.png")
	if err := p.Save(6*vg.Inch, 4*vg.Inch, file); err != nil {
		return out, fmt.Errorf("saving plot: %w", err)
	}
	return append(out, file), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return slices.Index(pathOrder, a) - slices.Index(pathOrder, b) })
	return keys
}
