package replay

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/trace"
)

// tiny is a hand-made trace: f0 is called 3, 0, 1 times, f1 once in
// minute 1.
func tiny() *trace.Trace {
	d := trace.Durations{P0: 100, P1: 100, P25: 100, P50: 100, P75: 100, P99: 100, P100: 100}
	return &trace.Trace{FirstMinute: 10, Minutes: 3, Functions: []trace.Function{
		{Hash: "ABCdef0123456789", Counts: []int32{3, 0, 1}, Dur: d, MemMB: 20.2},
		{Hash: "ff", Counts: []int32{0, 1, 0}, Dur: trace.Durations{P0: 50000, P1: 50000, P25: 50000, P50: 50000, P75: 50000, P99: 50000, P100: 50000}, MemMB: 900},
	}}
}

func TestScheduleEquidistant(t *testing.T) {
	p, err := NewPlan(tiny(), PlanConfig{Speed: 4, Popularity: Popularity{{Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	type c struct {
		fn       int
		at, wall time.Duration
		exec     time.Duration
	}
	want := []c{
		{0, 0, 0, 100 * time.Millisecond},
		{0, 20 * time.Second, 5 * time.Second, 100 * time.Millisecond},
		{0, 40 * time.Second, 10 * time.Second, 100 * time.Millisecond},
		{1, 60 * time.Second, 15 * time.Second, 10 * time.Second}, // capped from 50 s
		{0, 120 * time.Second, 30 * time.Second, 100 * time.Millisecond},
	}
	var got []c
	for _, x := range p.Calls {
		got = append(got, c{x.Func, x.At, x.Wall, x.Exec})
	}
	if !slices.Equal(got, want) {
		t.Errorf("calls\n got %v\nwant %v", got, want)
	}
	if p.Duration() != 45*time.Second {
		t.Errorf("duration %v, want 3 min / 4", p.Duration())
	}
	f0, f1 := p.Funcs[0], p.Funcs[1]
	if f0.Name != "replay-00-abcdef012345" || f1.Name != "replay-01-ff" {
		t.Errorf("names %q %q", f0.Name, f1.Name)
	}
	if f0.TouchMB != 21 || f1.TouchMB != 64 {
		t.Errorf("touch %d %d MB, want 21 (rounded up) and 64 (capped)", f0.TouchMB, f1.TouchMB)
	}
	if f0.MemoryMB != 160 || f1.MemoryMB != 192 {
		t.Errorf("memory_mb %d %d, want touch+128 rounded up to 16", f0.MemoryMB, f1.MemoryMB)
	}
	if f0.TimeoutS != 40 {
		t.Errorf("timeout %d, want exec cap 10 s + 30", f0.TimeoutS)
	}
	if f0.Rate != 4.0/3 {
		t.Errorf("rate %v", f0.Rate)
	}
}

func TestScheduleSeeded(t *testing.T) {
	for _, a := range []trace.Arrival{trace.Uniform, trace.Exponential} {
		t.Run(a.String(), func(t *testing.T) {
			mk := func(seed int64) []Call {
				p, err := NewPlan(tiny(), PlanConfig{Speed: 2, Arrival: a, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				return p.Calls
			}
			a1, a2, b := mk(1), mk(1), mk(2)
			if !slices.Equal(a1, a2) {
				t.Error("same seed, different schedules")
			}
			if slices.Equal(a1, b) {
				t.Error("different seeds, same schedule")
			}
			if len(a1) != 5 {
				t.Fatalf("%d calls, want 5", len(a1))
			}
			for i, c := range a1 {
				if c.Wall != c.At/2 {
					t.Errorf("call %d: wall %v, at %v / speed 2", i, c.Wall, c.At)
				}
				if i > 0 && c.At < a1[i-1].At {
					t.Errorf("call %d out of order", i)
				}
			}
			// Minute 0 holds f0's three calls, the first at its start.
			if a1[0].At != 0 || a1[2].At >= time.Minute {
				t.Errorf("minute 0 arrivals %v", a1[:3])
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct {
		name string
		tr   *trace.Trace
		cfg  PlanConfig
		want error
	}{
		{"zero speed", tiny(), PlanConfig{}, ErrBadConfig},
		{"negative speed", tiny(), PlanConfig{Speed: -1}, ErrBadConfig},
		{"infinite speed", tiny(), PlanConfig{Speed: math.Inf(1)}, ErrBadConfig},
		{"NaN speed", tiny(), PlanConfig{Speed: math.NaN()}, ErrBadConfig},
		{"empty trace", &trace.Trace{Minutes: 1}, PlanConfig{Speed: 1}, ErrBadConfig},
		{"negative cap", tiny(), PlanConfig{Speed: 1, MemCapMB: -1}, ErrBadConfig},
		{"huge exec cap", tiny(), PlanConfig{Speed: 1, ExecCap: time.Hour}, ErrBadConfig},
		{"bad popularity", tiny(), PlanConfig{Speed: 1, Popularity: Popularity{{Weight: 0}}}, ErrBadPopularity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewPlan(tt.tr, tt.cfg); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParsePopularity(t *testing.T) {
	tests := []struct {
		in   string
		want string // labels=weights, or "" for an error
	}{
		{"none=30, numpy=25", "none=30 numpy=25"},
		{"pillow+NUMPY=2,requests=1", "numpy+Pillow=2 requests=1"},
		{"numpy+numpy=1", "numpy=1"},
		{DefaultPopularity, "none=30 numpy=25 requests=15 numpy+requests=10 Pillow=5 numpy+Pillow=10 numpy+requests+Pillow=5"},
		{"", ""},
		{"numpy", ""},
		{"numpy=-1", ""},
		{"numpy=NaN", ""},
		{"numpy=0", ""},
		{"tensorflow=1", ""},
		{"numpy=1,numpy=2", ""},
		{"requests+numpy=1,numpy+requests=2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePopularity(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrBadPopularity) {
					t.Errorf("got %v, %v; want ErrBadPopularity", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range p {
				got = append(got, s.Label()+"="+strconv.FormatFloat(s.Weight, 'g', -1, 64))
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("got %q, want %q", strings.Join(got, " "), tt.want)
			}
		})
	}
}

func TestAssign(t *testing.T) {
	p, err := ParsePopularity("none=50,numpy=30,numpy+requests=20,Pillow=0")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	a, err := p.Assign(n, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Assign(n, 7)
	c, _ := p.Assign(n, 8)
	same := func(x, y [][]string) bool {
		return slices.EqualFunc(x, y, func(u, v []string) bool { return slices.Equal(u, v) })
	}
	if !same(a, b) {
		t.Error("same seed, different assignment")
	}
	if same(a, c) {
		t.Error("different seeds, same assignment")
	}
	count := map[string]int{}
	for _, s := range a {
		count[label(s)]++
	}
	want := map[string]float64{"none": 0.5, "numpy": 0.3, "numpy+requests": 0.2}
	for k, w := range want {
		// 4 standard deviations of a binomial share at n = 20000.
		sd := math.Sqrt(w * (1 - w) / n)
		if got := float64(count[k]) / n; math.Abs(got-w) > 4*sd {
			t.Errorf("%s: share %.4f, want %.2f", k, got, w)
		}
	}
	if count["Pillow"] != 0 || len(count) != 3 {
		t.Errorf("counts %v: a zero weight was drawn or a set is unknown", count)
	}
	if _, err := p.Assign(-1, 1); !errors.Is(err, ErrBadConfig) {
		t.Errorf("negative n: %v", err)
	}
	// A zero weight last in the table is never drawn either.
	z := Popularity{{Packages: []string{"numpy"}, Weight: 1}, {Weight: 0}}
	got, err := z.Assign(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		if label(s) != "numpy" {
			t.Fatalf("drew %s", label(s))
		}
	}
}

// TestHandlerSource runs a synthetic handler with the host's python3, to
// check that it is valid Python, touches memory, and runs for the asked
// time.
func TestHandlerSource(t *testing.T) {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("need %s: %v", py, err)
	}
	f := Func{Name: "x", Hash: "h", Packages: nil, TouchMB: 8, MemoryMB: 144, TimeoutS: 40, Concurrency: 8}
	dir := t.TempDir()
	for name, src := range f.Files() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := f.Files()["requirements.txt"]; ok {
		t.Error("a function without packages has requirements.txt")
	}
	ev := string(f.Event(150 * time.Millisecond))
	if ev != `{"ms":150.000,"mb":8}` {
		t.Errorf("event %s", ev)
	}
	// VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the Go
	// test binary across exec.
	script := `import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
sys.path.insert(0, sys.argv[1])
import f
before = hwm()
t0 = time.perf_counter()
out = f.f(json.loads(sys.argv[2]))
el = time.perf_counter() - t0
after = hwm()
print(json.dumps({"out": out, "ms": el * 1000, "rss_kb": after - before}))`
	out, err := exec.Command(py, "-c", script, dir, ev).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got struct {
		Out   map[string]float64 `json:"out"`
		Ms    float64            `json:"ms"`
		RssKB float64            `json:"rss_kb"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got.Ms < 150 || got.Ms > 400 {
		t.Errorf("handler ran %.1f ms, want about 150", got.Ms)
	}
	if got.RssKB < 7*1024 {
		t.Errorf("max RSS grew by %.0f KB, want at least 7 MB touched: %s", got.RssKB, out)
	}
	y := f.Files()["function.yaml"]
	if y != "memory_mb: 144\ntimeout_s: 40\nmax_concurrency: 8\n" {
		t.Errorf("function.yaml:\n%s", y)
	}
	g := Func{Packages: []string{"numpy", "Pillow"}}
	if r := g.Files()["requirements.txt"]; r != "numpy\nPillow\n" {
		t.Errorf("requirements.txt %q", r)
	}
	if src := g.Files()["f.py"]; !strings.Contains(src, "import numpy\nimport PIL.Image\n") {
		t.Errorf("imports missing:\n%s", src)
	}
}
