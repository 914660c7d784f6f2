package sim

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// TestNiceTicks: the y axis gets four to seven labelled round ticks from 0
// to at least the largest value, whatever its size (the old axis showed
// only 0 and 25).
func TestNiceTicks(t *testing.T) {
	tests := []struct {
		top  float64
		want string // the labels
	}{
		{25, "0 5 10 15 20 25"},
		{26, "0 5 10 15 20 25 30"},
		{12.1, "0.0 2.5 5.0 7.5 10.0 12.5"},
		{0.3, "0.00 0.05 0.10 0.15 0.20 0.25 0.30"},
		{100, "0 20 40 60 80 100"},
		{0, "0.0 0.2 0.4 0.6 0.8 1.0"},
		{1e-4, "0.00000 0.00002 0.00004 0.00006 0.00008 0.00010"},
	}
	for _, tc := range tests {
		p := plot.New()
		niceY(p, tc.top)
		if p.Y.Min != 0 || p.Y.Max < tc.top {
			t.Errorf("top %v: axis [%v, %v]", tc.top, p.Y.Min, p.Y.Max)
		}
		var labels []string
		minor := 0
		for _, k := range p.Y.Tick.Marker.Ticks(p.Y.Min, p.Y.Max) {
			if k.Label == "" {
				minor++
				continue
			}
			labels = append(labels, k.Label)
		}
		if got := strings.Join(labels, " "); got != tc.want || minor != len(labels)-1 {
			t.Errorf("top %v: labels %q and %d minor ticks; want %q and %d", tc.top, got, minor, tc.want, len(labels)-1)
		}
	}
}

// TestPlotTitle: the title names the trace and every setting that shapes
// the curves, so plots of runs at different thresholds differ.
func TestPlotTitle(t *testing.T) {
	in := PlotInfo{Trace: "sample100", Threshold: "threshold 100 MB", Cold: "cold cost 500ms", Extra: "uniform arrivals"}
	got := in.title("cold starts and drops vs pool memory", []string{"unified", "80/20"})
	want := "sample100: cold starts and drops vs pool memory\nsplit unified, 80/20   |   threshold 100 MB   |   cold cost 500ms   |   uniform arrivals"
	if got != want {
		t.Errorf("title %q, want %q", got, want)
	}
}

// TestPlotFigures: each figure is a PNG of two panels and a legend beside
// them; points are plotted as a share of all invocations, and sizes below
// 4 GB in MB.
func TestPlotFigures(t *testing.T) {
	rs := []Result{
		{Policy: "lru", Split: "unified", Memory: 256 * MiB, All: Class{Invocations: 100, Hits: 40, Misses: 10, Drops: 50}},
		{Policy: "lru", Split: "unified", Memory: 512 * MiB, All: Class{Invocations: 100, Hits: 70, Misses: 20, Drops: 10}},
		{Policy: "lru", Split: "80/20", Memory: 256 * MiB, All: Class{Invocations: 100, Hits: 30, Misses: 10, Drops: 60}},
		{Policy: "lru", Split: "80/20", Memory: 512 * MiB, All: Class{Invocations: 100, Hits: 75, Misses: 25}},
	}
	dir := t.TempDir()
	paths, err := Plot(dir, rs, PlotInfo{Trace: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || filepath.Base(paths[0]) != "coldstart.png" || filepath.Base(paths[1]) != "coldstart-lru.png" {
		t.Fatalf("paths %v", paths)
	}
	f, err := os.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// 11 x 4.8 inches at vgimg's default 96 dpi.
	if b := img.Bounds(); b.Dx() != 1056 || b.Dy() != 461 {
		t.Errorf("image %v, want 1056x461", b)
	}
	// The legend has a column of its own right of the panels, wide and
	// tall enough for its entries.
	fig := figure{title: "a\nb", legend: plot.NewLegend()}
	for _, name := range []string{"lru unified", "lru 80/20+borrow", "gd unified"} {
		fig.legend.Add(name)
	}
	c := draw.New(vgimg.New(11*vg.Inch, 4.8*vg.Inch))
	_, _, legend, panels := fig.layout(c)
	need := fig.legend.Rectangle(c).Size()
	if legend.Min.X < panels.Max.X || legend.Size().X < need.X || legend.Size().Y < need.Y || panels.Size().X < 6*vg.Inch {
		t.Errorf("legend %v (needs %v) and panels %v overlap or do not fit", legend, need, panels)
	}
}
