package trace

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadAzure2021Small(t *testing.T) {
	tr, err := LoadAzure2021("testdata/azure2021_small.csv")
	if err != nil {
		t.Fatal(err)
	}
	s := time.Second
	want := []Function2021{
		{App: "a", Func: "f", Calls: []Call{{2 * s, s}, {10 * s, s / 2}}},
		{App: "b", Func: "g", Calls: []Call{{-s, 2 * s}, {70 * s, s / 4}}},
	}
	if !reflect.DeepEqual(tr.Functions, want) {
		t.Errorf("Functions = %+v, want %+v", tr.Functions, want)
	}
	if tr.Origin != -s {
		t.Errorf("Origin = %v, want -1s", tr.Origin)
	}
	if tr.Skipped != (SkipCounts{BadInvocations: 4}) {
		t.Errorf("Skipped = %+v, want 4 bad rows", tr.Skipped)
	}
	if got := tr.Functions[1].Calls[1].End(); got != 70250*time.Millisecond {
		t.Errorf("End() = %v, want 70.25s", got)
	}

	rep := tr.Replay()
	wantRep := []Invocation{{1, 0, 2 * s}, {0, 3 * s, s}, {0, 11 * s, s / 2}, {1, 71 * s, s / 4}}
	if !reflect.DeepEqual(rep, wantRep) {
		t.Errorf("Replay() = %+v, want %+v", rep, wantRep)
	}

	agg := tr.Aggregate()
	if agg.FirstMinute != 0 || agg.Minutes != 2 || len(agg.Functions) != 2 {
		t.Fatalf("Aggregate: minutes %d+%d, %d functions", agg.FirstMinute, agg.Minutes, len(agg.Functions))
	}
	if c := agg.Functions[0].Counts; !reflect.DeepEqual(c, []int32{2, 0}) {
		t.Errorf("f counts = %v", c)
	}
	if c := agg.Functions[1].Counts; !reflect.DeepEqual(c, []int32{1, 1}) {
		t.Errorf("g counts = %v", c)
	}
	// f's durations are 500 and 1000 ms.
	wantDur := Durations{Avg: 750, Min: 500, Max: 1000, P0: 500, P1: 505, P25: 625, P50: 750, P75: 875, P99: 995, P100: 1000}
	if got := agg.Functions[0].Dur; !closeDur(got, wantDur) {
		t.Errorf("f durations = %+v, want %+v", got, wantDur)
	}
	if agg.Functions[0].Hash != "f" || agg.Functions[0].App != "a" {
		t.Errorf("identity = %s/%s", agg.Functions[0].App, agg.Functions[0].Hash)
	}
}

func closeDur(a, b Durations) bool {
	x := []float64{a.Avg, a.Min, a.Max, a.P0, a.P1, a.P25, a.P50, a.P75, a.P99, a.P100}
	y := []float64{b.Avg, b.Min, b.Max, b.P0, b.P1, b.P25, b.P50, b.P75, b.P99, b.P100}
	for i := range x {
		if math.Abs(x[i]-y[i]) > 1e-9 {
			return false
		}
	}
	return true
}

// TestLoadAzure2021Real checks the real excerpt against facts computed
// independently with Python from the same file.
func TestLoadAzure2021Real(t *testing.T) {
	tr, err := LoadAzure2021(filepath.Join(dataDir, "azure2021", "Azure2021_200.csv"))
	if err != nil {
		t.Fatal(err)
	}
	apps := map[string]bool{}
	for _, f := range tr.Functions {
		apps[f.App] = true
	}
	if n := tr.Invocations(); n != 199 || len(tr.Functions) != 31 || len(apps) != 13 {
		t.Fatalf("%d calls, %d functions, %d apps; want 199, 31, 13", n, len(tr.Functions), len(apps))
	}
	if tr.Origin != 0 || tr.Skipped.Total() != 0 {
		t.Errorf("Origin %v, skipped %v", tr.Origin, tr.Skipped)
	}
	rep := tr.Replay()
	// First row: end 0.07949090003967285 s, duration 0.078 s.
	if rep[0].At != 1490900 || rep[0].Exec != 78*time.Millisecond || !strings.HasPrefix(tr.Functions[rep[0].Func].Func, "e3cdb48830f6") {
		t.Errorf("first replayed invocation = %+v", rep[0])
	}
	var sum time.Duration
	for i, inv := range rep {
		if i > 0 && inv.At < rep[i-1].At {
			t.Fatalf("replay out of order at %d", i)
		}
		sum += inv.Exec
	}
	if math.Abs(sum.Seconds()-10599.17) > 1e-6 {
		t.Errorf("total duration %v, want 10599.17s", sum.Seconds())
	}
	agg := tr.Aggregate()
	perMinute := []int32{42, 8, 6, 6, 7, 13, 6, 4, 6, 6, 34, 4, 7, 4, 6, 15, 3, 7, 6, 5, 4}
	if agg.Minutes != len(perMinute) || agg.Invocations() != 199 {
		t.Fatalf("aggregate: %d minutes, %d invocations", agg.Minutes, agg.Invocations())
	}
	for m, want := range perMinute {
		var got int32
		for _, f := range agg.Functions {
			got += f.Counts[m]
		}
		if got != want {
			t.Errorf("minute %d: %d invocations, want %d", m, got, want)
		}
	}
	// The busiest function (32 calls): 1.955 s to 404.987 s, mean 256.3094375 s.
	for _, f := range agg.Functions {
		if strings.HasPrefix(f.Hash, "556ccf8758c8") {
			if f.Total() != 32 || f.Dur.Min != 1955 || f.Dur.Max != 404987 || math.Abs(f.Dur.Avg-256309.4375) > 1e-6 {
				t.Errorf("556ccf8758c8: %d calls, %+v", f.Total(), f.Dur)
			}
		}
	}
	// The aggregate feeds the Generator.
	if n := len(collect(agg, Equidistant, 1)); n != 199 {
		t.Errorf("generator over aggregate yields %d", n)
	}
}

func TestLoadAzure2021Errors(t *testing.T) {
	tests := []struct {
		name, body string
		want       error
	}{
		{"missing duration", "app,func,end_timestamp\na,f,1\n", ErrMissingColumn},
		{"only bad rows", "app,func,end_timestamp,duration\na,f,x,1\n", ErrEmpty},
		{"empty", "", ErrEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "t.csv")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadAzure2021(p); !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := LoadAzure2021("testdata/nonexistent.csv"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
