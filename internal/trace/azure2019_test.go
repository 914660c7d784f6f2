package trace

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// dataDir is the shared folder of real trace excerpts, relative to this
// package (/work/main/internal/trace -> /work/shared/data).
const dataDir = "../../../shared/data"

func loadReal(t testing.TB, name string) *Trace {
	t.Helper()
	tr, err := LoadAzure2019(filepath.Join(dataDir, "azure2019", name))
	if err != nil {
		t.Fatalf("loading real excerpt %s (expected in %s, see its README): %v", name, dataDir, err)
	}
	return tr
}

// TestLoadReal checks the real excerpts against facts computed
// independently with Python's csv module from the same files.
func TestLoadReal(t *testing.T) {
	tests := []struct {
		dir                  string
		funcs, first, minute int
		total                int64
		perFunc              []int64 // per-function totals, in file order; nil to skip
	}{
		{"extremes3-min540-689", 3, 540, 150, 48, []int64{1, 1, 46}},
		{"sample100-min480-959", 100, 480, 480, 339657, nil},
		{"sample10-day", 10, 1, 1440, 13037064,
			[]int64{281962, 1093671, 355556, 575863, 27056, 900001, 6171429, 30527, 900998, 2700001}},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			tr := loadReal(t, tt.dir)
			if len(tr.Functions) != tt.funcs || tr.FirstMinute != tt.first || tr.Minutes != tt.minute {
				t.Fatalf("got %d functions, minutes %d+%d; want %d, %d+%d",
					len(tr.Functions), tr.FirstMinute, tr.Minutes, tt.funcs, tt.first, tt.minute)
			}
			if got := tr.Invocations(); got != tt.total {
				t.Errorf("Invocations() = %d, want %d", got, tt.total)
			}
			if tr.Skipped.Total() != 0 {
				t.Errorf("skipped %v in a clean excerpt", tr.Skipped)
			}
			for i, want := range tt.perFunc {
				if got := tr.Functions[i].Total(); got != want {
					t.Errorf("function %d total = %d, want %d", i, got, want)
				}
			}
			for i := range tr.Functions {
				f := &tr.Functions[i]
				if len(f.Counts) != tr.Minutes || f.Hash == "" || f.App == "" || f.Owner == "" || f.Trigger == "" {
					t.Fatalf("function %d incomplete: %+v", i, f)
				}
				if f.MemMB <= 0 || f.Dur.P100 < f.Dur.P0 {
					t.Errorf("function %d: mem %v, durations %+v", i, f.MemMB, f.Dur)
				}
			}
		})
	}
}

// TestLoadRealValues spot-checks joined values of the tiny excerpt.
func TestLoadRealValues(t *testing.T) {
	tr := loadReal(t, "extremes3-min540-689")
	f := tr.Functions[0]
	if !strings.HasPrefix(f.Hash, "fdd2e3c3758d") || !strings.HasPrefix(f.App, "7668725e5528") || f.Trigger != "timer" {
		t.Fatalf("function 0 = %s/%s/%s", f.App, f.Hash, f.Trigger)
	}
	want := Durations{Avg: 93983, Min: 90640, Max: 98756, P0: 90640, P1: 90640, P25: 91138, P50: 93192, P75: 94213, P99: 98756, P100: 98756}
	if f.Dur != want {
		t.Errorf("durations = %+v, want %+v", f.Dur, want)
	}
	if f.MemMB != 145 {
		t.Errorf("MemMB = %v, want 145", f.MemMB)
	}
	// Its only invocation is in minute 548.
	if f.Counts[548-540] != 1 || f.Total() != 1 {
		t.Errorf("counts: minute 548 = %d, total %d", f.Counts[8], f.Total())
	}
	if got := tr.Functions[2].MemMB; got != 48.333333333333336 {
		t.Errorf("function 2 MemMB = %v", got)
	}
}

func TestHeaderOrderIndependent(t *testing.T) {
	ordered, err := LoadAzure2019("testdata/ordered")
	if err != nil {
		t.Fatal(err)
	}
	shuffled, err := LoadAzure2019("testdata/shuffled")
	if err != nil {
		t.Fatal(err)
	}
	want := &Trace{FirstMinute: 10, Minutes: 3, Functions: []Function{
		{Owner: "o1", App: "a1", Hash: "f1", Trigger: "http", Counts: []int32{1, 0, 2},
			Dur: Durations{Avg: 50, Min: 10, Max: 100, P0: 10, P1: 11, P25: 30, P50: 50, P75: 70, P99: 99, P100: 100}, MemMB: 128},
		{Owner: "o2", App: "a2", Hash: "f2", Trigger: "timer", Counts: []int32{0, 3, 0},
			Dur: Durations{Avg: 5.5, Min: 1, Max: 9, P0: 1, P1: 1, P25: 2, P50: 5, P75: 7, P99: 9, P100: 9}, MemMB: 256.5},
	}, Report: SkipReport{Rows: 2, Invocations: 6}}
	for name, got := range map[string]*Trace{"ordered": ordered, "shuffled": shuffled} {
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}
}

func TestSkipCounting(t *testing.T) {
	tr, err := LoadAzure2019("testdata/skips")
	if err != nil {
		t.Fatal(err)
	}
	want := SkipCounts{BadInvocations: 5, BadDurations: 3, BadMemory: 1, Duplicates: 2,
		NoDurations: 1, NoMemory: 1, Unmatched: 2}
	if tr.Skipped != want {
		t.Errorf("Skipped = %+v, want %+v", tr.Skipped, want)
	}
	if tr.Skipped.Total() != 15 {
		t.Errorf("Total() = %d, want 15", tr.Skipped.Total())
	}
	if len(tr.Functions) != 1 || tr.Functions[0].Hash != "f1" || tr.Functions[0].Total() != 3 || tr.Functions[0].MemMB != 100 {
		t.Errorf("functions = %+v, want only f1 (first row, 3 invocations, 100 MB)", tr.Functions)
	}
	if s := tr.Skipped.String(); !strings.Contains(s, "bad-invocations=5") || !strings.Contains(s, "unmatched=2") {
		t.Errorf("String() = %q", s)
	}
	if s := (SkipCounts{}).String(); s != "none" {
		t.Errorf("zero String() = %q", s)
	}
}

func TestPerAppMemory(t *testing.T) {
	tr, err := LoadAzure2019("testdata/perapp")
	if err != nil {
		t.Fatal(err)
	}
	// App A's 300 MB is split over fa1 and fa2; fa3 has no durations
	// and does not take a share. App C has no memory row.
	want := map[string]float64{"fa1": 150, "fa2": 150, "fb1": 99.5}
	got := map[string]float64{}
	for _, f := range tr.Functions {
		got[f.Hash] = f.MemMB
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MemMB = %v, want %v", got, want)
	}
	if w := (SkipCounts{NoDurations: 1, NoMemory: 1, Unmatched: 1}); tr.Skipped != w {
		t.Errorf("Skipped = %+v, want %+v", tr.Skipped, w)
	}
	if tr.FirstMinute != 0 || tr.Minutes != 2 {
		t.Errorf("minutes %d+%d, want 0+2", tr.FirstMinute, tr.Minutes)
	}
}

func TestLoadErrors(t *testing.T) {
	const (
		inv = "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,1\n"
		dur = "HashFunction,Average,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25," +
			"percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\nf,1,1,1,1,1,1,1,1,1,1\n"
		mem = "HashFunction,AverageAllocatedMb\nf,10\n"
	)
	tests := []struct {
		name          string
		inv, dur, mem string
		want          error // nil means it must load
	}{
		{"valid", inv, dur, mem, nil},
		{"minute gap", "HashApp,HashFunction,1,3\na,f,1,1\n", dur, mem, ErrBadHeader},
		{"duplicate minute", "HashApp,HashFunction,1,1\na,f,1,1\n", dur, mem, ErrBadHeader},
		{"no minutes", "HashApp,HashFunction\na,f\n", dur, mem, ErrBadHeader},
		{"no HashFunction", "HashApp,1\na,1\n", dur, mem, ErrMissingColumn},
		{"no percentile", inv, strings.Replace(dur, "percentile_Average_99,", "", 1), mem, ErrMissingColumn},
		{"no memory column", inv, dur, "HashFunction,SampleCount\nf,10\n", ErrMissingColumn},
		{"no memory key", inv, dur, "HashOwner,AverageAllocatedMb\no,10\n", ErrMissingColumn},
		{"nothing joins", inv, dur, "HashFunction,AverageAllocatedMb\ng,10\n", ErrEmpty},
		{"empty file", "", dur, mem, ErrEmpty},
		{"missing file", inv, "-", mem, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range map[string]string{"invocations.csv": tt.inv, "durations.csv": tt.dur, "memory.csv": tt.mem} {
				if body == "-" {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tr, err := LoadAzure2019(dir)
			if tt.want == nil {
				if err != nil || len(tr.Functions) != 1 {
					t.Fatalf("LoadAzure2019 = %v, %v; want one function", tr, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadAppMemory2019(t *testing.T) {
	am, err := LoadAppMemory2019("testdata/perapp")
	if err != nil {
		t.Fatal(err)
	}
	// durations.csv lists fa1, fa2 (A), fb1 (B) and fc1 (C); memory.csv is
	// per app, and apps without functions count too.
	wantMB := map[string]float64{"A": 300, "B": 99.5, "Z": 10}
	wantFuncs := map[string]int{"A": 2, "B": 1, "C": 1}
	if !reflect.DeepEqual(am.MB, wantMB) || !reflect.DeepEqual(am.Funcs, wantFuncs) {
		t.Errorf("MB %v Funcs %v; want %v %v", am.MB, am.Funcs, wantMB, wantFuncs)
	}

	// Per-function memory: the app's first row counts; a duplicate
	// durations row does not add a function.
	dir := t.TempDir()
	for name, body := range map[string]string{
		"durations.csv": "HashApp,HashFunction\nA,f1\nA,f2\nA,f1\nB,f3\n",
		"memory.csv":    "HashFunction,HashApp,AverageAllocatedMb\nf2,A,70\nf1,A,90\nf3,B,5\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	am, err = LoadAppMemory2019(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(am.MB, map[string]float64{"A": 70, "B": 5}) || !reflect.DeepEqual(am.Funcs, map[string]int{"A": 2, "B": 1}) {
		t.Errorf("MB %v Funcs %v", am.MB, am.Funcs)
	}
	// An app's first memory row must have a number.
	if err := os.WriteFile(filepath.Join(dir, "memory.csv"), []byte("HashApp,AverageAllocatedMb\nA,x\nA,5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAppMemory2019(dir); !errors.Is(err, ErrBadRow) || !strings.Contains(err.Error(), "memory.csv line 2") {
		t.Errorf("bad first memory row: %v", err)
	}
}
