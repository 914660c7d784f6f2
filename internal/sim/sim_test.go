package sim

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/pool/policy"
	"github.com/hearth-run/hearth/internal/trace"
)

const dataDir = "/work/shared/data/azure2019"

func mustPolicy(t testing.TB, name string, o policy.Options) func() pool.Policy {
	t.Helper()
	c, err := policy.New(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func inv(fn int32, at, exec time.Duration) trace.Invocation {
	return trace.Invocation{Func: fn, At: at, Exec: exec}
}

const s = time.Second

func TestGolden(t *testing.T) {
	// A is small (100 MiB, cold cost 5 s), B large (300 MiB, cold 2 s).
	funcs := []Func{{Size: 100 * MiB, Cold: 5 * s}, {Size: 300 * MiB, Cold: 2 * s}}
	kiss, err := ParseSplit("80/20", []int64{DefaultThreshold})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		policy string
		o      policy.Options
		mem    int64
		split  Split
		invs   []trace.Invocation
		small  Class
		large  Class
		evict  uint64
		expire uint64
	}{
		{
			// Two overlapping A's each need a container (the first is busy
			// until 0+5+1 = 6 s, cold cost included). The arrival at 6 s
			// sees the completion at 6 s first: a hit. At 7.5 s the
			// container released at 7 s is reused.
			name: "concurrency", policy: "lru", mem: 1 << 30,
			invs:  []trace.Invocation{inv(0, 0, s), inv(0, 2*s, s), inv(0, 6*s, s), inv(0, 7500*time.Millisecond, s)},
			small: Class{Invocations: 4, Hits: 2, Misses: 2, ColdTime: 10 * s, WarmTime: 4 * s},
		},
		{
			// 350 MiB: B does not fit next to the busy A (100 + 300 > 350)
			// and nothing is idle: drop. Once A is idle, B evicts it.
			name: "drop then evict", policy: "lru", mem: 350 * MiB,
			invs:  []trace.Invocation{inv(0, 0, s), inv(1, s, s), inv(1, 10*s, 3*s)},
			small: Class{Invocations: 1, Misses: 1, ColdTime: 5 * s, WarmTime: s},
			large: Class{Invocations: 2, Misses: 1, Drops: 1, ColdTime: 2 * s, WarmTime: 3 * s},
			evict: 1,
		},
		{
			// TTL 1 min: A idle at 5 s expires at 65 s; an arrival at
			// exactly 65 s is still served warm (it ends at 65 s again, so
			// the next expiry is 125 s, before the arrival at 200 s, which
			// is cold again). The container idle from 205 s would expire at
			// 265 s, after the trace ends at 200 s: one expiry in all.
			name: "ttl boundary", policy: "ttl", o: policy.Options{TTL: time.Minute}, mem: 1 << 30,
			invs:   []trace.Invocation{inv(0, 0, 0), inv(0, 65*s, 0), inv(0, 200*s, 0)},
			small:  Class{Invocations: 3, Hits: 1, Misses: 2, ColdTime: 10 * s},
			expire: 1,
		},
		{
			// 80/20 of 1000 MiB: B (300 MiB) never fits the 200 MiB large
			// partition though the small one is empty: always dropped.
			name: "partition routing", policy: "gd", mem: 1000 * MiB, split: kiss,
			invs:  []trace.Invocation{inv(1, 0, s), inv(0, s, s), inv(1, 10*s, s), inv(0, 10*s, s)},
			small: Class{Invocations: 2, Hits: 1, Misses: 1, ColdTime: 5 * s, WarmTime: 2 * s},
			large: Class{Invocations: 2, Drops: 2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := FromInvocations(funcs, tc.invs)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Run(context.Background(), w, Config{Policy: tc.policy, NewPolicy: mustPolicy(t, tc.policy, tc.o),
				Memory: tc.mem, Split: tc.split, Check: true, SampleEvery: -1})
			if err != nil {
				t.Fatal(err)
			}
			if r.Small != tc.small || r.Large != tc.large {
				t.Fatalf("small %+v large %+v\nwant small %+v large %+v", r.Small, r.Large, tc.small, tc.large)
			}
			if r.Evictions != tc.evict {
				t.Fatalf("evictions %d, want %d", r.Evictions, tc.evict)
			}
			if r.Expirations != tc.expire {
				t.Fatalf("expirations %d, want %d", r.Expirations, tc.expire)
			}
		})
	}
}

func TestExecIncrease(t *testing.T) {
	c := Class{Invocations: 4, Hits: 3, Misses: 1, Drops: 0, ColdTime: 5 * s, WarmTime: 20 * s}
	if got := c.ExecIncreasePct(); got != 25 {
		t.Fatalf("exec increase %v, want 25", got)
	}
	if got := c.ColdPct(); got != 25 {
		t.Fatalf("cold %v, want 25", got)
	}
	c = Class{Invocations: 10, Hits: 3, Misses: 2, Drops: 5}
	if c.DropPct() != 50 || c.ColdPct() != 40 {
		t.Fatalf("drop %v cold %v", c.DropPct(), c.ColdPct())
	}
	if (Class{}).ColdPct() != 0 || (Class{}).ExecIncreasePct() != 0 {
		t.Fatal("empty class is not 0")
	}
}

func loadTrace(t testing.TB, name string) *trace.Trace {
	t.Helper()
	tr, err := trace.LoadAzure2019(filepath.Join(dataDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestRealTraceInvariants runs every policy on the real excerpts with the
// engine's invariant checks on: memory never exceeds capacity and every
// invocation is counted exactly once (Run itself fails otherwise; this
// test checks the results again from outside).
func TestRealTraceInvariants(t *testing.T) {
	kiss, _ := ParseSplit("80/20", []int64{DefaultThreshold})
	borrow := kiss
	borrow.Name = "80/20 borrowing"
	for _, tc := range []struct {
		dir     string
		arrival trace.Arrival
		mems    []int64
	}{
		{"extremes3-min540-689", trace.Equidistant, []int64{256 * MiB, 1 << 30}},
		{"sample100-min480-959", trace.Uniform, []int64{1 << 30, 4 << 30}},
	} {
		tr := loadTrace(t, tc.dir)
		w, err := FromTrace(tr, tc.arrival, 7, ColdModel{})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range policy.Names() {
			for _, sp := range []Split{Unified(), kiss, borrow} {
				for _, mem := range tc.mems {
					r, err := Run(context.Background(), w, Config{Policy: name, NewPolicy: mustPolicy(t, name, policy.Options{}),
						Memory: mem, Split: sp, Borrow: sp.Name == "80/20 borrowing", Check: true})
					if err != nil {
						t.Fatalf("%s %s %s %d MiB: %v", tc.dir, name, sp.Name, mem/MiB, err)
					}
					a := r.All
					if a.Invocations != uint64(tr.Invocations()) || a.Hits+a.Misses+a.Drops != a.Invocations ||
						r.Small.Invocations+r.Large.Invocations != a.Invocations {
						t.Fatalf("%s %s: counts %+v small %+v large %+v, trace has %d", tc.dir, name, a, r.Small, r.Large, tr.Invocations())
					}
					if r.PeakUsed > mem || r.PeakUsed == 0 {
						t.Fatalf("%s %s: peak %d of %d bytes", tc.dir, name, r.PeakUsed, mem)
					}
					if len(r.Samples) < tr.Minutes {
						t.Fatalf("%d memory samples for %d minutes", len(r.Samples), tr.Minutes)
					}
					for _, smp := range r.Samples {
						for i, u := range smp.Parts {
							if u > r.Parts[i].Capacity {
								t.Fatalf("sample at %v: partition %d uses %d of %d", smp.At, i, u, r.Parts[i].Capacity)
							}
						}
					}
				}
			}
		}
	}
}

func TestSweepMatchesRun(t *testing.T) {
	w, err := FromTrace(loadTrace(t, "sample100-min480-959"), trace.Equidistant, 1, ColdModel{})
	if err != nil {
		t.Fatal(err)
	}
	kiss, _ := ParseSplit("80/20", []int64{DefaultThreshold})
	var cfgs []Config
	for _, name := range []string{"lru", "gd", "hist"} {
		for _, sp := range []Split{Unified(), kiss} {
			cfgs = append(cfgs, Config{Policy: name, NewPolicy: mustPolicy(t, name, policy.Options{}), Memory: 2 << 30, Split: sp})
		}
	}
	var bar bytes.Buffer
	rs, err := Sweep(context.Background(), w, cfgs, 2, &bar)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(bar.String(), "100%") || !strings.Contains(bar.String(), "6/6 points") {
		t.Fatalf("progress bar ended with %q", bar.String()[max(0, bar.Len()-120):])
	}
	for i, cfg := range cfgs {
		want, err := Run(context.Background(), w, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := rs[i]
		if got.Policy != cfg.Policy || got.Split != cfg.Split.Name || got.All != want.All || got.Small != want.Small ||
			got.Evictions != want.Evictions || got.PeakUsed != want.PeakUsed {
			t.Fatalf("point %d (%s %s): sweep %+v, run %+v", i, cfg.Policy, cfg.Split.Name, got.All, want.All)
		}
	}
	// The policies must actually differ on this trace, or the comparison
	// above proves little.
	if rs[0].All == rs[2].All {
		t.Fatal("lru and gd gave identical results")
	}
}

func TestRunErrors(t *testing.T) {
	funcs := []Func{{Size: MiB, Cold: s}}
	good, _ := FromInvocations(funcs, []trace.Invocation{inv(0, 0, s)})
	lru := mustPolicy(t, "lru", policy.Options{})
	bad := Workload{Funcs: funcs, Open: func() Source {
		return &sliceSource{invs: []trace.Invocation{inv(0, 2*s, s), inv(0, s, s)}}
	}}
	outOfRange := Workload{Funcs: funcs, Open: func() Source { return &sliceSource{invs: []trace.Invocation{inv(3, 0, s)}} }}
	wrongTotal := good
	wrongTotal.Total = 5
	tests := []struct {
		name string
		w    Workload
		cfg  Config
	}{
		{"no policy", good, Config{Memory: 1 << 30}},
		{"no memory", good, Config{NewPolicy: lru}},
		{"bad split", good, Config{NewPolicy: lru, Memory: 1 << 30, Split: Split{Name: "x", Fractions: []float64{0.5}}}},
		{"empty workload", Workload{}, Config{NewPolicy: lru, Memory: 1 << 30}},
		{"unsorted source", bad, Config{NewPolicy: lru, Memory: 1 << 30}},
		{"function out of range", outOfRange, Config{NewPolicy: lru, Memory: 1 << 30}},
		{"wrong total", wrongTotal, Config{NewPolicy: lru, Memory: 1 << 30}},
		{"zero-size function", Workload{Funcs: []Func{{}}, Open: good.Open}, Config{NewPolicy: lru, Memory: 1 << 30}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Run(context.Background(), tc.w, tc.cfg); err == nil {
				t.Fatal("Run succeeded")
			}
		})
	}
	if _, err := FromInvocations(funcs, []trace.Invocation{inv(0, s, s), inv(0, 0, s)}); !errors.Is(err, ErrConfig) {
		t.Fatalf("FromInvocations(unsorted) = %v", err)
	}
	if _, err := FromInvocations(funcs, []trace.Invocation{inv(1, 0, s)}); !errors.Is(err, ErrConfig) {
		t.Fatalf("FromInvocations(bad func) = %v", err)
	}
	if _, err := FromTrace(&trace.Trace{}, trace.Equidistant, 1, ColdModel{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("FromTrace(empty) = %v", err)
	}
}

func TestCancel(t *testing.T) {
	w, err := FromTrace(loadTrace(t, "sample100-min480-959"), trace.Equidistant, 1, ColdModel{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := Config{NewPolicy: mustPolicy(t, "lru", policy.Options{}), Memory: 1 << 30}
	if _, err := Run(ctx, w, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
	if _, err := Sweep(ctx, w, []Config{cfg, cfg}, 2, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sweep with a cancelled context: %v", err)
	}
}

func TestParseSplit(t *testing.T) {
	tests := []struct {
		in   string
		th   []int64
		want []float64
		err  bool
	}{
		{"unified", nil, []float64{1}, false},
		{"UNIFIED", nil, []float64{1}, false},
		{"80/20", []int64{225 * MiB}, []float64{0.8, 0.2}, false},
		{"60/30/10", []int64{100, 200}, []float64{0.6, 0.3, 0.1}, false},
		{"80/20", nil, nil, true},
		{"80/30", []int64{1}, nil, true},
		{"80", nil, nil, true},
		{"a/b", []int64{1}, nil, true},
		{"0/100", []int64{1}, nil, true},
		{"", nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			sp, err := ParseSplit(tc.in, tc.th)
			if tc.err {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err %v, want ErrConfig", err)
				}
				return
			}
			if err != nil || len(sp.Fractions) != len(tc.want) {
				t.Fatalf("ParseSplit = %+v, %v", sp, err)
			}
			for i := range tc.want {
				if d := sp.Fractions[i] - tc.want[i]; d > 1e-9 || d < -1e-9 {
					t.Fatalf("fractions %v, want %v", sp.Fractions, tc.want)
				}
			}
		})
	}
}

func TestFromTrace(t *testing.T) {
	tr := &trace.Trace{Minutes: 2, Functions: []trace.Function{
		{Hash: "a", Counts: []int32{2, 1}, MemMB: 0.2, Dur: trace.Durations{Avg: 100, Max: 1100}},
		{Hash: "b", Counts: []int32{0, 3}, MemMB: 300, Dur: trace.Durations{Avg: 50, Max: 40}},
	}}
	w, err := FromTrace(tr, trace.Equidistant, 1, ColdModel{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Func{{Size: MiB, Cold: time.Second}, {Size: 300 * MiB, Cold: 0}}
	if w.Funcs[0] != want[0] || w.Funcs[1] != want[1] || w.Total != 6 || w.Duration != 2*time.Minute {
		t.Fatalf("workload %+v total %d duration %v", w.Funcs, w.Total, w.Duration)
	}
	w, _ = FromTrace(tr, trace.Equidistant, 1, ColdModel{Fixed: 250 * time.Millisecond})
	if w.Funcs[1].Cold != 250*time.Millisecond {
		t.Fatalf("fixed cold cost: %v", w.Funcs[1].Cold)
	}
	tr.Functions[0].MemMB = -1
	if _, err := FromTrace(tr, trace.Equidistant, 1, ColdModel{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative memory: %v", err)
	}
}

func TestWriteAll(t *testing.T) {
	w, err := FromTrace(loadTrace(t, "extremes3-min540-689"), trace.Equidistant, 1, ColdModel{})
	if err != nil {
		t.Fatal(err)
	}
	kiss, _ := ParseSplit("80/20", []int64{DefaultThreshold})
	var cfgs []Config
	for _, name := range []string{"lru", "gd"} {
		for _, sp := range []Split{Unified(), kiss} {
			for _, gb := range []int64{1, 2} {
				cfgs = append(cfgs, Config{Policy: name, NewPolicy: mustPolicy(t, name, policy.Options{}), Memory: gb << 30, Split: sp})
			}
		}
	}
	rs, err := Sweep(context.Background(), w, cfgs, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths, err := WriteAll(dir, rs, PlotInfo{Trace: "extremes3", Threshold: "threshold 225 MB", Cold: "cold cost = max - avg duration"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"results.csv", "memory.csv", "coldstart.png", "coldstart-lru.png", "coldstart-gd.png"}
	if len(paths) != len(want) {
		t.Fatalf("wrote %v", paths)
	}
	for i, p := range paths {
		if filepath.Base(p) != want[i] {
			t.Fatalf("wrote %v, want %v", paths, want)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, ".png") && !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("%s is not a PNG", p)
		}
	}
	f, _ := os.Open(filepath.Join(dir, "results.csv"))
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(cfgs)+1 || rows[0][0] != "policy" || rows[1][0] != "lru" || rows[1][3] != "1024" {
		t.Fatalf("results.csv: %d rows, first %v %v", len(rows), rows[0][:4], rows[1][:4])
	}
	if _, err := Plot(dir, nil, PlotInfo{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Plot(nil) = %v", err)
	}
}

func benchRun(b *testing.B, dir, name string, mem int64) {
	w, err := FromTrace(loadTrace(b, dir), trace.Equidistant, 1, ColdModel{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{Policy: name, NewPolicy: mustPolicy(b, name, policy.Options{}), Memory: mem}
	b.ResetTimer()
	var n int64
	cpu0 := cpuTime(b)
	for b.Loop() {
		r, err := Run(context.Background(), w, cfg)
		if err != nil {
			b.Fatal(err)
		}
		n += int64(r.All.Invocations)
	}
	// Minv/s is per wall-clock second; Minv/cpu-s per second of CPU this
	// process used, which stays meaningful on a machine shared with other
	// work (run with -cpu 1 so that is one core).
	b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Minv/s")
	b.ReportMetric(float64(n)/(cpuTime(b)-cpu0).Seconds()/1e6, "Minv/cpu-s")
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRun measures one (policy, size) point on the 100-function
// excerpt; Minv/s is simulated invocations per second on one core.
func BenchmarkRun(b *testing.B) {
	for _, name := range policy.Names() {
		b.Run(name, func(b *testing.B) { benchRun(b, "sample100-min480-959", name, 4<<30) })
	}
}

// BenchmarkDay is the full-day 10-function trace (about 13 M invocations)
// at one point, 256 GiB, where hits, cold starts and evictions all occur
// (much smaller pools mostly drop, the cheap path); the target is <= 5 s
// per op on one core.
func BenchmarkDay(b *testing.B) {
	for _, name := range []string{"lru", "gd", "hist"} {
		b.Run(name, func(b *testing.B) { benchRun(b, "sample10-day", name, 256<<30) })
	}
}

// TestPausedSizeAndPerFunc checks that a container is charged its
// function's Paused size once its first invocation ends, as the live
// worker charges a paused sandbox its measured memory, and that PerFunc
// counts each function apart. Two 100 MiB functions in 150 MiB: charged
// 100 MiB throughout, the second evicts the first, which starts cold
// again; paused at 10 MiB, both stay.
func TestPausedSizeAndPerFunc(t *testing.T) {
	invs := []trace.Invocation{
		{Func: 0, At: 0, Exec: time.Second},
		{Func: 1, At: 2 * time.Second, Exec: time.Second},
		{Func: 0, At: 4 * time.Second, Exec: time.Second},
	}
	for _, tc := range []struct {
		paused       int64
		misses0, hit int
	}{{0, 2, 0}, {10 * MiB, 1, 1}} {
		funcs := []Func{{Size: 100 * MiB, Cold: time.Second, Paused: tc.paused}, {Size: 100 * MiB, Cold: time.Second, Paused: tc.paused}}
		r, err := runLRU(t, funcs, invs, Config{Memory: 150 * MiB, PerFunc: true, Check: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Funcs) != 2 {
			t.Fatalf("paused %d: %d per-function counts, want 2", tc.paused, len(r.Funcs))
		}
		f0, f1 := r.Funcs[0], r.Funcs[1]
		if f0.Invocations != 2 || f0.Misses != uint64(tc.misses0) || f0.Hits != uint64(tc.hit) || f1.Misses != 1 || f1.Invocations != 1 {
			t.Errorf("paused %d MiB: f0 %+v, f1 %+v; want f0 %d misses %d hits", tc.paused/MiB, f0, f1, tc.misses0, tc.hit)
		}
		if r.All.Misses != f0.Misses+f1.Misses || r.All.Hits != f0.Hits+f1.Hits {
			t.Errorf("per-function counts %+v %+v do not add up to %+v", f0, f1, r.All)
		}
	}
}

// TestQueue checks that with Config.Queue an invocation that finds no room
// waits for a release, as the live worker's requests do, and is a drop
// only if its wait ends first. f0 holds 100 of 150 MiB from 0 to 3 s; f1
// (100 MiB) arrives at 1 s, and f0 again at 6 s.
func TestQueue(t *testing.T) {
	invs := []trace.Invocation{
		{Func: 0, At: 0, Exec: 2 * time.Second},
		{Func: 1, At: time.Second, Exec: time.Second},
		{Func: 0, At: 6 * time.Second, Exec: time.Second},
	}
	funcs := []Func{{Size: 100 * MiB, Cold: time.Second}, {Size: 100 * MiB, Cold: time.Second}}
	for _, tc := range []struct {
		queue                time.Duration
		misses1, drops1, ms0 uint64
	}{
		{0, 0, 1, 1},               // dropped at once; f0 stays warm
		{time.Second, 0, 1, 1},     // gave up at 2 s, before the release at 3 s
		{5 * time.Second, 1, 0, 2}, // ran from 3 s, evicting f0, which starts cold again
	} {
		r, err := runLRU(t, funcs, invs, Config{Memory: 150 * MiB, PerFunc: true, Check: true, Queue: tc.queue})
		if err != nil {
			t.Fatalf("queue %v: %v", tc.queue, err)
		}
		f0, f1 := r.Funcs[0], r.Funcs[1]
		if f1.Misses != tc.misses1 || f1.Drops != tc.drops1 || f0.Misses != tc.ms0 || f1.Invocations != 1 || f0.Invocations != 2 {
			t.Errorf("queue %v: f0 %+v, f1 %+v; want f0 %d misses, f1 %d misses %d drops", tc.queue, f0, f1, tc.ms0, tc.misses1, tc.drops1)
		}
	}
}

// TestStartCharge checks that Func.Start is what a new container takes
// while busy once the function's first invocation has ended, as the live
// worker learns it: a second 100 MiB container does not fit in 150 MiB
// beside a busy first one when charged its size, and does when charged
// a measured 40 MiB; before the first invocation ends, the size counts.
func TestStartCharge(t *testing.T) {
	after := []trace.Invocation{
		{Func: 0, At: 0, Exec: time.Second / 2},
		{Func: 0, At: time.Second, Exec: time.Second},
		{Func: 0, At: time.Second, Exec: time.Second},
	}
	before := []trace.Invocation{
		{Func: 0, At: 0, Exec: 2 * time.Second},
		{Func: 0, At: time.Second, Exec: time.Second},
	}
	for _, tc := range []struct {
		name                string
		invs                []trace.Invocation
		start               int64
		misses, hits, drops uint64
	}{
		{"size", after, 0, 1, 1, 1},
		{"learned", after, 40 * MiB, 2, 1, 0},
		{"not yet learned", before, 40 * MiB, 1, 0, 1},
	} {
		r, err := runLRU(t, []Func{{Size: 100 * MiB, Cold: time.Millisecond, Start: tc.start}}, tc.invs, Config{Memory: 150 * MiB, Check: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.All.Misses != tc.misses || r.All.Hits != tc.hits || r.All.Drops != tc.drops {
			t.Errorf("%s: %d misses, %d hits, %d drops; want %d, %d, %d", tc.name, r.All.Misses, r.All.Hits, r.All.Drops, tc.misses, tc.hits, tc.drops)
		}
	}
	if _, err := runLRU(t, []Func{{Size: MiB, Start: -1}}, before, Config{Memory: 150 * MiB}); !errors.Is(err, ErrConfig) {
		t.Errorf("negative start charge: %v, want ErrConfig", err)
	}
}

// TestBusySize checks that a warm hit is charged its function's Busy
// size while it runs, evicting idle containers as the live worker's
// growth charge does, and its Paused size again when it ends. Three
// 60 MiB functions paused at 10 MiB in 100 MiB: f0 and f1 grown to
// 50 MiB at once evict f2; shrunk back after, f2's new container fits
// beside them, so f0's next call is warm. A call shorter than BusyAfter
// is not grown.
func TestBusySize(t *testing.T) {
	s := time.Second
	invs := []trace.Invocation{
		{Func: 0, At: 0, Exec: s}, {Func: 1, At: 2 * s, Exec: s}, {Func: 2, At: 4 * s, Exec: s},
		{Func: 0, At: 6 * s, Exec: s}, {Func: 1, At: 6*s + s/2, Exec: s},
		{Func: 2, At: 8 * s, Exec: s}, {Func: 0, At: 9*s + s/2, Exec: s},
	}
	for _, tc := range []struct {
		name                   string
		busy                   int64
		after                  time.Duration
		f0miss, f2miss, evicts uint64
		growths                uint64
	}{
		{"none", 0, 0, 1, 1, 0, 0},
		{"busy", 50 * MiB, 0, 1, 2, 1, 3}, // the three warm calls
		{"short calls", 50 * MiB, 2 * s, 1, 1, 0, 0},
	} {
		var funcs []Func
		for range 3 {
			funcs = append(funcs, Func{Size: 60 * MiB, Cold: time.Millisecond, Paused: 10 * MiB, Busy: tc.busy})
		}
		r, err := runLRU(t, funcs, invs, Config{Memory: 100 * MiB, PerFunc: true, Check: true, BusyAfter: tc.after})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		f0, f2 := r.Funcs[0], r.Funcs[2]
		if f0.Misses != tc.f0miss || f2.Misses != tc.f2miss || r.Evictions != tc.evicts || r.All.Drops != 0 || r.Growths != tc.growths {
			t.Errorf("%s: f0 %+v, f2 %+v, %d evictions, %d growths; want %d and %d misses, %d evictions, %d growths",
				tc.name, f0, f2, r.Evictions, r.Growths, tc.f0miss, tc.f2miss, tc.evicts, tc.growths)
		}
	}
	// A new container admitted at its function's learned Start grows
	// too: f0's second one, grown from 20 to 60 MiB beside the first
	// (grown from 10), evicts f1.
	grown := []trace.Invocation{
		{Func: 0, At: 0, Exec: s / 2}, {Func: 1, At: s, Exec: s / 2},
		{Func: 0, At: 2 * s, Exec: s}, {Func: 0, At: 2*s + s/10, Exec: s}, {Func: 1, At: 5 * s, Exec: s / 2},
	}
	r, err := runLRU(t, []Func{
		{Size: 100 * MiB, Cold: time.Millisecond, Paused: 10 * MiB, Start: 20 * MiB, Busy: 60 * MiB},
		{Size: 30 * MiB, Cold: time.Millisecond},
	}, grown, Config{Memory: 130 * MiB, PerFunc: true, Check: true})
	if err != nil {
		t.Fatal(err)
	}
	if f0, f1 := r.Funcs[0], r.Funcs[1]; f0.Misses != 2 || f1.Misses != 2 || r.Evictions != 1 {
		t.Errorf("a new container's growth: f0 %+v, f1 %+v, %d evictions; want 2 misses each, 1 eviction", f0, f1, r.Evictions)
	}

	if _, err := runLRU(t, []Func{{Size: MiB, Busy: -1}}, invs[:1], Config{Memory: 150 * MiB}); !errors.Is(err, ErrConfig) {
		t.Errorf("negative busy size: %v, want ErrConfig", err)
	}
}

// TestGrowAt checks Func.GrowAt: f0's call (from 20 ms, 200 ms long) is
// charged its 60 MiB Busy only 50 ms in, so f1's container, idle at 50
// MiB since 10 ms, is still there for f1's call at 60 ms, which then
// holds it past the growth (the pool runs over until f1's call ends).
// Charged from the start, the growth evicts it at 20 ms, and f1's call
// finds no room. A call shorter than GrowAt is not charged at all.
func TestGrowAt(t *testing.T) {
	ms := time.Millisecond
	invs := []trace.Invocation{
		{Func: 1, At: 0, Exec: 10 * ms}, {Func: 0, At: 20 * ms, Exec: 200 * ms},
		{Func: 1, At: 60 * ms, Exec: 100 * ms}, {Func: 0, At: 300 * ms, Exec: 30 * ms},
	}
	for _, tc := range []struct {
		name            string
		at              time.Duration
		f1miss, f1drop  uint64
		evicts, growths uint64
		growthAt        time.Duration // of f0's first
	}{
		{"late", 50 * ms, 1, 0, 0, 1, 70 * ms},
		// f1's second call finds no room beside f0's grown container.
		{"at once", 0, 1, 1, 1, 2, 20 * ms},
	} {
		var grewAt []time.Duration
		cfg := Config{Memory: 100 * MiB, PerFunc: true, Check: true, Observe: func(ev pool.Event) {
			if ev.Op == pool.OpResize && ev.Fn == 0 && ev.Size == 60*MiB {
				grewAt = append(grewAt, ev.At)
			}
		}}
		r, err := runLRU(t, []Func{
			{Size: 10 * MiB, Cold: 0, Paused: 5 * MiB, Busy: 60 * MiB, GrowAt: tc.at},
			{Size: 50 * MiB, Cold: 0},
		}, invs, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if f1 := r.Funcs[1]; f1.Misses != tc.f1miss || f1.Drops != tc.f1drop || r.Evictions != tc.evicts || r.Growths != tc.growths {
			t.Errorf("%s: f1 %+v, %d evictions, %d growths; want %d misses, %d drops, %d evictions, %d growths",
				tc.name, f1, r.Evictions, r.Growths, tc.f1miss, tc.f1drop, tc.evicts, tc.growths)
		}
		if len(grewAt) == 0 || grewAt[0] != tc.growthAt {
			t.Errorf("%s: f0 grew at %v, want first at %v", tc.name, grewAt, tc.growthAt)
		}
	}
}

// TestKinStartCharge checks that a function with no invocation of its
// own ended is charged, once one of its kin's has, its kin's Start: f1
// fits beside a busy f0 (100 of 150 MiB) at f0's 40 MiB, not at its
// 100 MiB size; another kin, or before f0's first call ends, it does
// not.
func TestKinStartCharge(t *testing.T) {
	s := time.Second
	after := []trace.Invocation{{Func: 0, At: 0, Exec: s / 2}, {Func: 0, At: s, Exec: 2 * s}, {Func: 1, At: s + s/2, Exec: s}}
	before := []trace.Invocation{{Func: 0, At: 0, Exec: 2 * s}, {Func: 1, At: s, Exec: s}}
	for _, tc := range []struct {
		name          string
		invs          []trace.Invocation
		kin0, kin1    int32
		misses, drops uint64
	}{
		{"kin", after, 1, 1, 1, 0},
		{"other kin", after, 1, 2, 0, 1},
		{"no kin", after, 0, 0, 0, 1},
		{"not yet learned", before, 1, 1, 0, 1},
	} {
		funcs := []Func{
			{Size: 100 * MiB, Cold: time.Millisecond, Start: 40 * MiB, Kin: tc.kin0},
			{Size: 100 * MiB, Cold: time.Millisecond, Start: 60 * MiB, Kin: tc.kin1}, // its own would not fit
		}
		r, err := runLRU(t, funcs, tc.invs, Config{Memory: 150 * MiB, PerFunc: true, Check: true})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if f1 := r.Funcs[1]; f1.Misses != tc.misses || f1.Drops != tc.drops {
			t.Errorf("%s: f1 %+v, want %d misses, %d drops", tc.name, f1, tc.misses, tc.drops)
		}
	}
}

// runLRU runs invs of funcs through an LRU pool with cfg's other fields.
func runLRU(t *testing.T, funcs []Func, invs []trace.Invocation, cfg Config) (Result, error) {
	t.Helper()
	w, err := FromInvocations(funcs, invs)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy, cfg.NewPolicy = "lru", mustPolicy(t, "lru", policy.Options{})
	return Run(context.Background(), w, cfg)
}

// TestPassLimit checks Config.PassLimit: a waiting invocation that does
// not fit holds the later ones in its partition back once it has waited
// that long. f3 (150 MiB) waits from 0.1 s and f4 (50 MiB) from 0.2 s in
// a pool full of busy f0-f2; f0's end at 1 s frees room for f4 only,
// and for f5 (50 MiB) at 1.2 s. All give up (Queue 1.5 s) before f1
// ends at 3 s if they wait.
func TestPassLimit(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	invs := []trace.Invocation{
		{Func: 0, At: 0, Exec: time.Second},
		{Func: 1, At: 0, Exec: 3 * time.Second},
		{Func: 2, At: 0, Exec: 5 * time.Second},
		{Func: 3, At: ms(100), Exec: time.Second},
		{Func: 4, At: ms(200), Exec: time.Second},
		{Func: 5, At: ms(1200), Exec: time.Second},
	}
	funcs := []Func{{Size: 100 * MiB}, {Size: 100 * MiB}, {Size: 100 * MiB}, {Size: 150 * MiB}, {Size: 50 * MiB}, {Size: 50 * MiB}}
	for _, tc := range []struct {
		limit, hold    time.Duration
		misses4, drops uint64 // of f4 and of f5 each
	}{
		{0, 0, 1, 0},                 // no bound: f4 takes the room at 1 s, f5 at 1.2 s
		{2 * time.Second, 0, 1, 0},   // f3 has waited 1.1 s of 2 at most: both pass it
		{ms(500), 0, 0, 1},           // f3 has waited past 0.5 s: both wait behind it
		{ms(500), time.Second, 0, 1}, // and holds them until 1.5 s
		{ms(500), ms(200), 1, 0},     // its hold ended at 0.8 s: both pass it
	} {
		r, err := runLRU(t, funcs, invs, Config{Memory: 300 * MiB, PerFunc: true, Check: true, Queue: ms(1500), PassLimit: tc.limit, PassHold: tc.hold})
		if err != nil {
			t.Fatalf("pass limit %v: %v", tc.limit, err)
		}
		f3, f4, f5 := r.Funcs[3], r.Funcs[4], r.Funcs[5]
		if f4.Misses != tc.misses4 || f4.Drops != tc.drops || f5.Misses != tc.misses4 || f5.Drops != tc.drops || f3.Drops != 1 {
			t.Errorf("pass limit %v hold %v: f3 %+v, f4 %+v, f5 %+v; want f4 and f5 %d misses %d drops, f3 dropped", tc.limit, tc.hold, f3, f4, f5, tc.misses4, tc.drops)
		}
	}
}
