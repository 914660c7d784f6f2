package sim

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/hearth-run/hearth/internal/trace"
)

// TestFaasCacheGolden asserts the compat mode's counts on
// sample100-min480-959 against the figures FaasCache's own simulator
// (github.com/aFuerst/faascache-sim at 25110b6, LambdaScheduler.py run by
// Debian's python3 3.11 with pandas 1.5.3) produced on the same trace. The
// trace was fed to FaasCache through a converter that applies FaasCache's
// trace_split_funcs.py rules to the sample (87 of the 100 functions are
// invoked at least twice; 339,644 invocations), with the minute columns
// 480..959 as minute indices 0..479 and functions in invocations.csv
// order. Memory is in MB as FaasCache counts it (8 GB = 8192).
//
// Every figure matches exactly: hits, misses, drops and evictions
// (FaasCache's evdict, which also counts the ttl policy's purges), for LRU
// and GD at 1, 8 and 32 GB and for TTL and FREQ at 8 GB (LRU and GD at 2 GB
// matched too: 270352/35663/33629/35609 and 268845/35925/34874/35868), so
// no difference is left to explain. The test does not run FaasCache.
func TestFaasCacheGolden(t *testing.T) {
	tr, err := trace.LoadAzure2019(sample100)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := trace.LoadAppMemory2019(sample100)
	if err != nil {
		t.Fatal(err)
	}
	ft, err := NewFaasCacheTrace(tr, mem)
	if err != nil {
		t.Fatal(err)
	}
	if len(ft.Funcs) != 87 || ft.Skipped != 13 || ft.Total != 339644 {
		t.Fatalf("converted trace: %d functions, %d skipped, %d invocations; FaasCache has 87, 13, 339644",
			len(ft.Funcs), ft.Skipped, ft.Total)
	}
	tests := []struct {
		policy                         string
		mb                             int64
		hits, misses, drops, evictions uint64
	}{
		// Figures from FaasCache.
		{"lru", 1024, 217908, 36094, 85642, 36058},
		{"gd", 1024, 218680, 36396, 84568, 36349},
		{"lru", 8192, 337472, 2172, 0, 1757},
		{"lru", 32768, 338646, 998, 0, 0},
		{"gd", 8192, 335690, 3954, 0, 3316},
		{"gd", 32768, 338646, 998, 0, 0},
		// FaasCache's evdict counts TTL purges with evictions: 389 + 1428.
		{"ttl", 8192, 337663, 1981, 0, 1817},
		{"freq", 8192, 335502, 4142, 0, 3509},
	}
	for _, tc := range tests {
		t.Run(tc.policy+"-"+strconv.FormatInt(tc.mb, 10), func(t *testing.T) {
			t.Parallel()
			r, err := RunFaasCache(context.Background(), ft, FaasCacheConfig{Policy: tc.policy, Memory: tc.mb * MiB, SampleEvery: -1})
			if err != nil {
				t.Fatal(err)
			}
			a := r.All
			ev := r.Evictions + r.Expirations
			if a.Hits != tc.hits || a.Misses != tc.misses || a.Drops != tc.drops || ev != tc.evictions {
				t.Errorf("hits %d misses %d drops %d evictions %d; FaasCache: %d %d %d %d",
					a.Hits, a.Misses, a.Drops, ev, tc.hits, tc.misses, tc.drops, tc.evictions)
			}
			if a.Invocations != uint64(ft.Total) {
				t.Errorf("%d invocations, want %d", a.Invocations, ft.Total)
			}
		})
	}
}

// fcPoint is one point FaasCache simulated, with its counts.
type fcPoint struct {
	policy                         string
	mb                             int64
	hits, misses, drops, evictions uint64
}

func (p fcPoint) name() string { return p.policy + "-" + strconv.FormatInt(p.mb, 10) }

// runPoint runs p's policy and memory on ft and returns the counts in p's
// shape.
func runPoint(t *testing.T, ft *FaasCacheTrace, p fcPoint) fcPoint {
	t.Helper()
	r, err := RunFaasCache(context.Background(), ft, FaasCacheConfig{Policy: p.policy, Memory: p.mb * MiB, SampleEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	if r.All.Invocations != uint64(ft.Total) {
		t.Errorf("%d invocations, want %d", r.All.Invocations, ft.Total)
	}
	return fcPoint{p.policy, p.mb, r.All.Hits, r.All.Misses, r.All.Drops, r.Evictions + r.Expirations}
}

// TestFaasCacheGoldenApps asserts the compat mode's counts on two small
// traces made to exercise the two rules sample100 cannot show, against
// the figures FaasCache's own simulator produced on them (LambdaScheduler.py
// of github.com/aFuerst/faascache-sim at 25110b6, Debian's python3 3.11,
// pandas 1.5.3). The trace was built by the steps of FaasCache's
// gen/trace_split_funcs.py (its pandas joins and memory division, run on
// these files with only paths and minute column names changed), and the
// per-function traces were concatenated in the joined table's row order and
// stably sorted by time, as its gen_representative_trace.py combines them.
// Every figure matches.
//
// Both traces (testdata/faascache, synthetic, written by a seeded
// generator) have 11 functions of 4 apps, listed interleaved (fA1, fB1, fA2,
// fC1, ...) over 40 minutes, with many equal arrival times: every
// function's first arrival of a minute, and counts like 2, 4 and 12 that
// share instants. fB3 is invoked once and left out, but still takes a share
// of appB's memory; fA9 and fC9 appear in durations.csv only, and take
// shares too. apps-perfunc has an in-vitro style memory.csv (per function,
// with different values within an app: FaasCache takes the app's first
// row); apps-perapp has the raw trace's per-app memory.csv.
//
// The test also runs each trace the way the compat mode did before:
// memory undivided (each function's own row, or per-app memory divided only
// over the functions that have invocations), and same-instant arrivals in
// invocations.csv order rather than grouped by app. Each of those changes
// the counts at most points, so these traces do tell the rules apart.
func TestFaasCacheGoldenApps(t *testing.T) {
	traces := []struct {
		dir string
		// FaasCache's memory per function, in its joined order.
		mem    []int64
		points []fcPoint
	}{
		{"apps-perfunc", []int64{52, 52, 52, 52, 86, 86, 57, 57, 51, 51}, []fcPoint{
			// Figures from FaasCache.
			{"lru", 400, 275, 248, 175, 241}, {"gd", 400, 266, 260, 172, 253},
			{"freq", 400, 268, 258, 172, 251}, {"ttl", 400, 274, 251, 173, 244},
			{"lru", 900, 502, 178, 18, 164}, {"gd", 900, 549, 134, 15, 119},
			{"freq", 900, 544, 146, 8, 131}, {"ttl", 900, 504, 176, 18, 162},
			{"lru", 1500, 631, 67, 0, 44}, {"gd", 1500, 550, 148, 0, 126},
			{"freq", 1500, 549, 149, 0, 127}, {"ttl", 1500, 642, 56, 0, 39},
		}},
		{"apps-perapp", []int64{205, 205, 205, 205, 342, 342, 101, 101, 261, 261}, []fcPoint{
			// Figures from FaasCache.
			{"lru", 400, 66, 134, 582, 132}, {"gd", 400, 67, 134, 581, 132},
			{"freq", 400, 67, 133, 582, 131}, {"ttl", 400, 66, 134, 582, 132},
			{"lru", 900, 187, 215, 380, 211}, {"gd", 900, 169, 221, 392, 217},
			{"freq", 900, 167, 220, 395, 216}, {"ttl", 900, 188, 214, 380, 210},
			{"lru", 1500, 287, 277, 218, 271}, {"gd", 1500, 306, 274, 202, 268},
			{"freq", 1500, 310, 269, 203, 263}, {"ttl", 1500, 272, 281, 229, 275},
		}},
	}
	wantOrder := []string{"fA1", "fA2", "fA3", "fA4", "fB1", "fB2", "fC1", "fC2", "fD1", "fD2"}
	for _, tc := range traces {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", "faascache", tc.dir)
			tr, err := trace.LoadAzure2019(dir)
			if err != nil {
				t.Fatal(err)
			}
			mem, err := trace.LoadAppMemory2019(dir)
			if err != nil {
				t.Fatal(err)
			}
			ft, err := NewFaasCacheTrace(tr, mem)
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			var mbs []int64
			for _, f := range ft.Funcs {
				order = append(order, f.Hash)
				mbs = append(mbs, f.MemMB)
			}
			if !slices.Equal(order, wantOrder) || !slices.Equal(mbs, tc.mem) || ft.Skipped != 1 {
				t.Fatalf("functions %v, MB %v, %d left out; FaasCache: %v, %v, 1", order, mbs, ft.Skipped, wantOrder, tc.mem)
			}

			// The rules as the compat mode had them before: each
			// function's MemMB as loaded, and invocations.csv order.
			undivided, err := NewFaasCacheTrace(tr, nil)
			if err != nil {
				t.Fatal(err)
			}
			fileOrder := *ft
			fileOrder.Funcs = slices.Clone(ft.Funcs)
			pos := map[string]int{}
			for i, f := range tr.Functions {
				pos[f.Hash] = i
			}
			slices.SortFunc(fileOrder.Funcs, func(a, b FaasCacheFunc) int { return pos[a.Hash] - pos[b.Hash] })

			differ := map[string]int{}
			for _, p := range tc.points {
				if got := runPoint(t, ft, p); got != p {
					t.Errorf("%s: hits %d misses %d drops %d evictions %d; FaasCache: %d %d %d %d",
						p.name(), got.hits, got.misses, got.drops, got.evictions, p.hits, p.misses, p.drops, p.evictions)
				}
				for name, other := range map[string]*FaasCacheTrace{"undivided memory": undivided, "invocations.csv order": &fileOrder} {
					if runPoint(t, other, p) != p {
						differ[name]++
					}
				}
			}
			for _, name := range []string{"undivided memory", "invocations.csv order"} {
				t.Logf("%s changes %d of %d points", name, differ[name], len(tc.points))
				if differ[name] < len(tc.points)/2 {
					t.Errorf("%s changes only %d of %d points: the trace does not exercise the rule", name, differ[name], len(tc.points))
				}
			}
		})
	}
}

// sample100 is the 8-hour, 100-function excerpt of the 2019 trace.
const sample100 = "/work/shared/data/azure2019/sample100-min480-959"

// counts builds a per-minute count slice with the given minutes set.
func counts(minutes int, at map[int]int32) []int32 {
	c := make([]int32, minutes)
	for m, n := range at {
		c[m] = n
	}
	return c
}

// TestFaasCacheRules checks each rule on tiny hand-computed traces.
func TestFaasCacheRules(t *testing.T) {
	// Three functions in a 101 MB pool. f2 is "large" (SmallMax 50 MiB).
	// GD priorities (uses × cost / MB): f0 20 per use, f1 10, f2 5000/51.
	// minute 0: f0 miss, f0 hit (t=30 s), f1 miss. Pool full.
	// minute 1: f0 hit (busy for 10 ms), f2 miss: evicts f1 (lowest under
	// both), still 1 MB short, pops busy f0 and keeps it. GD clock = 10.
	// f0 hit again at 90 s (GD prio 10 + 4×20 = 90).
	// minute 2: f1 miss: GD evicts f0 (90 < 108.04), LRU evicts f2 (60 s <
	// 90 s).
	// minute 3: f0 then f2. GD: f0 miss evicts f1 (100 < 108.04), f2 hit.
	// LRU: f0 hit, f2 miss evicts f1, pops busy f0.
	three := &FaasCacheTrace{Minutes: 4, Total: 9, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 50, ColdMs: 1010, WarmMs: 10, Counts: counts(4, map[int]int32{0: 2, 1: 2, 3: 1})},
		{Hash: "f1", MemMB: 50, ColdMs: 510, WarmMs: 10, Counts: counts(4, map[int]int32{0: 1, 2: 1})},
		{Hash: "f2", MemMB: 51, ColdMs: 5010, WarmMs: 10, Counts: counts(4, map[int]int32{1: 1, 3: 1})},
	}}
	// Eviction frees the new container's full size, not the shortfall:
	// f2 (50 MB, 20 MB short) evicts both f0 (lru 0) and f1 (lru 30 s).
	// Then f0 fits again at minute 2, and f1 must evict f2.
	full := &FaasCacheTrace{Minutes: 3, Total: 6, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 40, ColdMs: 1000, WarmMs: 500, Counts: counts(3, map[int]int32{0: 1, 2: 1})},
		{Hash: "f1", MemMB: 40, ColdMs: 1000, WarmMs: 500, Counts: counts(3, map[int]int32{0: 2, 2: 1})},
		{Hash: "f2", MemMB: 50, ColdMs: 1000, WarmMs: 500, Counts: counts(3, map[int]int32{1: 1})},
	}}
	// A drop keeps its evictions: f2 (60 MB) finds f0 busy for minutes,
	// evicts idle f1 and still does not fit; f1 then misses at minute 2.
	drop := &FaasCacheTrace{Minutes: 3, Total: 5, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 50, ColdMs: 200000, WarmMs: 10, Counts: counts(3, map[int]int32{0: 1})},
		{Hash: "f1", MemMB: 30, ColdMs: 10, WarmMs: 10, Counts: counts(3, map[int]int32{0: 2, 2: 1})},
		{Hash: "f2", MemMB: 60, ColdMs: 10, WarmMs: 10, Counts: counts(3, map[int]int32{1: 1})},
	}}
	// Everything busy: no eviction at all, a drop.
	busy := &FaasCacheTrace{Minutes: 2, Total: 2, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 60, ColdMs: 120000, WarmMs: 10, Counts: counts(2, map[int]int32{0: 1})},
		{Hash: "f1", MemMB: 60, ColdMs: 10, WarmMs: 10, Counts: counts(2, map[int]int32{1: 1})},
	}}
	// TTL purges lazily on request, only when last start + 10 min is
	// strictly before now: a hit at exactly 10 minutes, a purge and a
	// miss 11 minutes after that.
	ttl := &FaasCacheTrace{Minutes: 22, Total: 3, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 10, ColdMs: 100, WarmMs: 10, Counts: counts(22, map[int]int32{0: 1, 10: 1, 21: 1})},
	}}
	// A busy container serves nobody: f1's second invocation (30 s) finds
	// its only container busy until 40 s and starts another; f0's is free.
	concurrent := &FaasCacheTrace{Minutes: 1, Total: 4, Funcs: []FaasCacheFunc{
		{Hash: "f0", MemMB: 10, ColdMs: 0, WarmMs: 0, Counts: counts(1, map[int]int32{0: 2})},
		{Hash: "f1", MemMB: 10, ColdMs: 40000, WarmMs: 40000, Counts: counts(1, map[int]int32{0: 2})},
	}}
	type want struct {
		small, large           Class // only Hits, Misses, Drops compared
		evictions, expirations uint64
	}
	tests := []struct {
		name   string
		ft     *FaasCacheTrace
		policy string
		mb     int64
		want   want
	}{
		{"gd clock and frequency", three, "gd", 101, want{small: Class{Hits: 3, Misses: 4}, large: Class{Hits: 1, Misses: 1}, evictions: 3}},
		{"lru order", three, "lru", 101, want{small: Class{Hits: 4, Misses: 3}, large: Class{Misses: 2}, evictions: 3}},
		{"evict full size", full, "lru", 100, want{small: Class{Hits: 1, Misses: 5}, evictions: 3}},
		{"drop keeps evictions", drop, "lru", 100, want{small: Class{Hits: 1, Misses: 3}, large: Class{Drops: 1}, evictions: 1}},
		{"all busy", busy, "gd", 100, want{large: Class{Misses: 1, Drops: 1}}},
		{"ttl lazy purge", ttl, "ttl", 100, want{small: Class{Hits: 1, Misses: 2}, expirations: 1}},
		{"busy container not reused", concurrent, "lru", 100, want{small: Class{Hits: 1, Misses: 3}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := RunFaasCache(context.Background(), tc.ft, FaasCacheConfig{Policy: tc.policy, Memory: tc.mb * MiB, SmallMax: 50 * MiB})
			if err != nil {
				t.Fatal(err)
			}
			got := want{
				small:       Class{Hits: r.Small.Hits, Misses: r.Small.Misses, Drops: r.Small.Drops},
				large:       Class{Hits: r.Large.Hits, Misses: r.Large.Misses, Drops: r.Large.Drops},
				evictions:   r.Evictions,
				expirations: r.Expirations,
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if r.PeakUsed > tc.mb*MiB {
				t.Errorf("peak %d MiB over %d", r.PeakUsed/MiB, tc.mb)
			}
			if len(r.Samples) != tc.ft.Minutes+1 {
				t.Errorf("%d memory samples for %d minutes", len(r.Samples), tc.ft.Minutes)
			}
		})
	}
}

func TestNewFaasCacheTrace(t *testing.T) {
	tr := &trace.Trace{Minutes: 2, Functions: []trace.Function{
		{Hash: "a", Counts: []int32{3, 1}, MemMB: 10.2, Dur: trace.Durations{Avg: 7.9, Max: 20.7}},
		{Hash: "once", Counts: []int32{0, 1}, MemMB: 10, Dur: trace.Durations{Avg: 1, Max: 2}},
		{Hash: "c", Counts: []int32{6, 0}, MemMB: 0.5, Dur: trace.Durations{Avg: 0, Max: 3}},
	}}
	ft, err := NewFaasCacheTrace(tr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ft.Skipped != 1 || ft.Total != 10 || len(ft.Funcs) != 2 {
		t.Fatalf("skipped %d total %d funcs %d", ft.Skipped, ft.Total, len(ft.Funcs))
	}
	if f := ft.Funcs[0]; f.Hash != "a" || f.MemMB != 11 || f.ColdMs != 20 || f.WarmMs != 7 {
		t.Errorf("a: %+v", f)
	}
	if f := ft.Funcs[1]; f.Hash != "c" || f.MemMB != 1 || f.ColdMs != 3 || f.WarmMs != 0 {
		t.Errorf("c: %+v", f)
	}
	// Equidistant float-ms arrivals; equal times go to the earlier
	// function.
	want := []fcArrival{{0, 0}, {0, 1}, {10000, 1}, {20000, 0}, {20000, 1}, {30000, 1}, {40000, 0}, {40000, 1}, {50000, 1}, {60000, 0}}
	var got []fcArrival
	src := &fcSource{ft: ft}
	var a fcArrival
	for src.next(&a) {
		got = append(got, a)
	}
	if !slices.Equal(got, want) {
		t.Errorf("arrivals %v, want %v", got, want)
	}

	bad := []struct {
		name string
		t    *trace.Trace
	}{
		{"nil", nil},
		{"no function twice", &trace.Trace{Minutes: 1, Functions: []trace.Function{{Hash: "x", Counts: []int32{1}, MemMB: 1}}}},
		{"zero memory", &trace.Trace{Minutes: 1, Functions: []trace.Function{{Hash: "x", Counts: []int32{2}, MemMB: 0}}}},
		{"NaN memory", &trace.Trace{Minutes: 1, Functions: []trace.Function{{Hash: "x", Counts: []int32{2}, MemMB: math.NaN()}}}},
		{"negative duration", &trace.Trace{Minutes: 1, Functions: []trace.Function{{Hash: "x", Counts: []int32{2}, MemMB: 1, Dur: trace.Durations{Max: -1}}}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewFaasCacheTrace(tc.t, nil); !errors.Is(err, ErrConfig) {
				t.Errorf("err %v, want ErrConfig", err)
			}
		})
	}
}

func TestRunFaasCacheErrors(t *testing.T) {
	ft := &FaasCacheTrace{Minutes: 1, Total: 2, Funcs: []FaasCacheFunc{{Hash: "x", MemMB: 1, Counts: []int32{2}}}}
	tests := []struct {
		name string
		ft   *FaasCacheTrace
		cfg  FaasCacheConfig
	}{
		{"nil trace", nil, FaasCacheConfig{Policy: "lru", Memory: MiB}},
		{"unknown policy", ft, FaasCacheConfig{Policy: "hist", Memory: MiB}},
		{"no memory", ft, FaasCacheConfig{Policy: "lru", Memory: MiB - 1}},
		{"negative ttl", ft, FaasCacheConfig{Policy: "ttl", Memory: MiB, TTL: -1}},
		{"zero-MB function", &FaasCacheTrace{Minutes: 1, Total: 2, Funcs: []FaasCacheFunc{{Hash: "x", Counts: []int32{2}}}}, FaasCacheConfig{Policy: "gd", Memory: MiB}},
		{"wrong total", &FaasCacheTrace{Minutes: 1, Total: 3, Funcs: ft.Funcs}, FaasCacheConfig{Policy: "lru", Memory: MiB}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := RunFaasCache(context.Background(), tc.ft, tc.cfg); !errors.Is(err, ErrConfig) {
				t.Errorf("err %v, want ErrConfig", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := SweepFaasCache(ctx, ft, []FaasCacheConfig{{Policy: "lru", Memory: MiB}}, 1, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled sweep: %v", err)
	}
	if _, err := SweepFaasCache(context.Background(), ft, []FaasCacheConfig{{Policy: "lru", Memory: MiB}, {Policy: "nope", Memory: MiB}}, 2, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("sweep with a bad point: %v", err)
	}
}

// refHeap is CPython's heapq algorithm written out literally (bottom-up
// _siftup that always descends to a leaf), as the reference for
// fcEngine's shortcut version.
type refHeap []fcSlot

func (h refHeap) siftDown(start, pos int) {
	x := h[pos]
	for pos > start {
		p := (pos - 1) >> 1
		if x.prio < h[p].prio {
			h[pos] = h[p]
			pos = p
			continue
		}
		break
	}
	h[pos] = x
}

func (h refHeap) siftUp(pos int) {
	end, start, x := len(h), pos, h[pos]
	c := 2*pos + 1
	for c < end {
		if r := c + 1; r < end && !(h[c].prio < h[r].prio) {
			c = r
		}
		h[pos] = h[c]
		pos = c
		c = 2*pos + 1
	}
	h[pos] = x
	h.siftDown(start, pos)
}

func (h refHeap) heapify() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.siftUp(i)
	}
}

// TestFaasCacheHeap checks that the heap operations move equal elements
// exactly as heapq does, on random arrays full of ties.
func TestFaasCacheHeap(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	for round := range 2000 {
		n := r.Intn(60)
		h := make([]fcSlot, n)
		for i := range h {
			h[i] = fcSlot{prio: float64(r.Intn(1 + round%6)), c: int32(i)}
		}
		e := &fcEngine{heap: slices.Clone(h)}
		ref := refHeap(slices.Clone(h))
		e.heapify()
		ref.heapify()
		for step := 0; step < 20 && len(ref) > 0; step++ {
			if !slices.Equal(e.heap, []fcSlot(ref)) {
				t.Fatalf("round %d step %d: heap %v, heapq %v", round, step, e.heap, ref)
			}
			switch r.Intn(4) {
			case 0: // heappop
				got := e.pop()
				last := ref[len(ref)-1]
				ref = ref[:len(ref)-1]
				want := last
				if len(ref) > 0 {
					want, ref[0] = ref[0], last
					ref.siftUp(0)
				}
				if got != want {
					t.Fatalf("round %d: popped %v, heapq %v", round, got, want)
				}
			case 1: // heappush
				s := fcSlot{prio: float64(r.Intn(4)), c: int32(1000 + step)}
				e.push(s)
				ref = append(ref, s)
				ref.siftDown(0, len(ref)-1)
			case 2: // re-prioritise one element, then heapify
				i, p := r.Intn(len(ref)), float64(r.Intn(4))
				e.heap[i].prio, ref[i].prio = p, p
				e.heapify()
				ref.heapify()
			default: // heapify an already valid heap: ties still move
				e.heapify()
				ref.heapify()
			}
		}
	}
	// The smallest case of a tie moving under heapify.
	e := &fcEngine{heap: []fcSlot{{prio: 5, c: 0}, {prio: 5, c: 1}, {prio: 7, c: 2}}}
	e.heapify()
	if e.heap[0].c != 1 || e.heap[1].c != 0 {
		t.Errorf("heapify([5a 5b 7]) = %v, heapq gives [5b 5a 7]", e.heap)
	}
}

// BenchmarkFaasCache measures the compat mode on the 100-function excerpt;
// Minv/cpu-s is simulated invocations per CPU second. FaasCache's own
// simulator does about 0.004 M/s (LRU) and 0.003 M/s (GD) on the same
// points.
func BenchmarkFaasCache(b *testing.B) {
	tr, err := trace.LoadAzure2019(sample100)
	if err != nil {
		b.Fatal(err)
	}
	ft, err := NewFaasCacheTrace(tr, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{"lru", "gd"} {
		b.Run(p+"-8192", func(b *testing.B) {
			cpu0 := cpuTime(b)
			var n int64
			for b.Loop() {
				if _, err := RunFaasCache(context.Background(), ft, FaasCacheConfig{Policy: p, Memory: 8192 * MiB, SampleEvery: -1}); err != nil {
					b.Fatal(err)
				}
				n += ft.Total
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds()/1e6, "Minv/s")
			b.ReportMetric(float64(n)/(cpuTime(b)-cpu0).Seconds()/1e6, "Minv/cpu-s")
		})
	}
}
