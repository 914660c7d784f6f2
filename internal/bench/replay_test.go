package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/replay"
	"github.com/hearth-run/hearth/internal/trace"
)

func rateTrace(rates ...int32) *trace.Trace {
	t := &trace.Trace{Minutes: 10}
	for i, r := range rates {
		c := make([]int32, 10)
		for m := 0; m < int(r); m++ {
			c[m%10]++
		}
		t.Functions = append(t.Functions, trace.Function{Hash: fmt.Sprintf("f%d", i), Counts: c})
	}
	return t
}

func TestPickByRate(t *testing.T) {
	// Rates per minute: 2.5, 1.6, 1, 0.5, 0.3, 0.1, 0 (totals over 10).
	tr := rateTrace(25, 16, 10, 5, 3, 1, 0)
	tests := []struct {
		name   string
		n      int
		hi, lo float64
		ok     func(*trace.Function) bool
		want   string // or "error"
	}{
		{"spread", 3, 2.5, 0.1, nil, "f0 f3 f5"}, // targets 2.5, 0.5, 0.1
		{"one", 1, 1, 1, nil, "f2"},              // closest to 1
		// Targets 2.5, 1.31, 0.69, 0.36, 0.19, 0.1: greedy in target order,
		// so f2 (1.0) is left for the last target.
		{"all positive", 6, 2.5, 0.1, nil, "f0 f1 f3 f4 f5 f2"},
		{"each once", 2, 0.1, 0.1, nil, "f5 f4"}, // second-closest after f5
		{"filtered", 1, 2.5, 2.5, func(f *trace.Function) bool { return f.Hash != "f0" }, "f1"},
		{"too many", 7, 2.5, 0.1, nil, "error"}, // f6 never runs
		{"bad range", 2, 0.1, 2.5, nil, "error"},
		{"zero", 0, 2.5, 0.1, nil, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PickByRate(tr, tt.n, tt.hi, tt.lo, tt.ok)
			if tt.want == "error" {
				if err == nil {
					t.Errorf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestReplayTable(t *testing.T) {
	plan := &replay.Plan{Funcs: []replay.Func{{Name: "a", Rate: 2}, {Name: "b", Rate: 0.1, Packages: []string{"numpy"}}}}
	plan.Calls = make([]replay.Call, 7)
	sum := func(mean float64, path, parsec int) replay.Summary {
		return replay.Summary{N: 5, Mean: time.Duration(mean * 1e6), ColdPath: path, ColdParsec: parsec}
	}
	r := &ReplayReport{Plan: plan, Configs: ReplayConfigs(), Sums: [][]replay.Summary{
		{sum(400, 5, 5), sum(300, 2, 2)},
		{sum(100, 1, 1), sum(200, 2, 2)},
		{sum(50, 1, 0), sum(300, 2, 1)},
	}}
	var b strings.Builder
	if err := r.Table(&b); err != nil {
		t.Fatal(err)
	}
	// Compare lines with runs of spaces squeezed, so column widths do
	// not matter.
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		// a: mean 400 -> 50 is 87.5% better, 100 -> 50 is 50%.
		"a 2.00 none 5 400.0 100.0 50.0 87.5% 50.0%",
		// b got slower than sock-like: a negative improvement.
		"b 0.10 numpy 5 300.0 200.0 300.0 0.0% -50.0%",
		// cold starts: 5 -> 0 is 100%, 1 -> 0 is 100%.
		"a 2.00 none 5 5 / 5 1 / 1 1 / 0 100.0% 100.0%",
		// totals over both: 7 -> 1 is 85.7%, 3 -> 1 is 66.7%.
		"all 7 7 / 7 3 / 3 3 / 1 85.7% 66.7%",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// liveHearth builds the hearth binaries for a test that runs real
// workers, and returns the hearth binary and the base image to use.
func liveHearth(t *testing.T) (hearth, base string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it runs real workers")
	}
	base = os.Getenv("HEARTH_TEST_BASE")
	if base == "" {
		base = "/var/lib/hearth/base"
	}
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "github.com/hearth-run/hearth/cmd/...").CombinedOutput(); err != nil {
		t.Fatalf("building hearth: %v\n%s", err, out)
	}
	return filepath.Join(bin, "hearth"), base
}

// TestReplayBenchLive runs the comparison on two functions for four trace
// minutes at 60x and checks that each configuration really removes its
// paths: fresh never serves warm or fork, SOCK-like never forks.
func TestReplayBenchLive(t *testing.T) {
	hearth, base := liveHearth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out strings.Builder
	pop, err := replay.ParsePopularity("numpy=1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rep, err := Replay(ctx, ReplayOptions{Hearth: hearth, Base: base,
		TraceDir: "../../../shared/data/azure2019/sample100-min480-959", Minutes: 4, Speed: 60,
		Funcs: 2, HiRate: 2, LoRate: 1, ExecCap: 200 * time.Millisecond, MemCapMB: 8,
		Popularity: pop, OutDir: dir, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 3 {
		t.Fatalf("%d results", len(rep.Results))
	}
	for k, c := range rep.Configs {
		paths := replay.PathCounts(rep.Results[k].Records)
		n := len(rep.Plan.Calls)
		switch c.Name {
		case "fresh":
			if paths["cold"] != n {
				t.Errorf("fresh: paths %v, want all %d cold", paths, n)
			}
		case "sock-like":
			if paths["fork"] != 0 || paths["warm"] == 0 {
				t.Errorf("sock-like: paths %v, want warm and no fork", paths)
			}
		case "hearth":
			// Which of its paths serve depends on how long calls take
			// (on a very busy host they overlap, and each needs a new
			// sandbox): it must use its own, not start cold.
			if paths["warm"]+paths["fork"]+paths["snapshot"] == 0 {
				t.Errorf("hearth: paths %v, want warm, fork or snapshot starts", paths)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, c.Name, "calls.csv")); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(out.String(), "Table IV") {
		t.Errorf("no table in output")
	}
}
