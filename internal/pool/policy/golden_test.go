package policy

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
)

const mb = 1 << 20

// step is one event of a hand-computed trace. "run" is an arrival (Acquire,
// then Admit on a miss), "end" releases the container of an earlier run,
// "expire" calls Expire, "prewarm" calls Prewarm and Warm for each result.
type step struct {
	op   string
	at   time.Duration
	fn   int    // run, prewarm: function index
	run  int    // end: index of the run step (counting runs from 0)
	want string // run: "hit", "miss" or "drop"
	// evict lists, as run indexes of the container's first run (or
	// -1-k for the k-th prewarmed container), what this step must evict or
	// expire, in order.
	evict []int
}

type fnSpec struct {
	size int64
	cold time.Duration
}

func play(t *testing.T, e *pool.Engine, fns []fnSpec, steps []step) {
	t.Helper()
	var ids []pool.Fn
	for _, f := range fns {
		id, err := e.AddFunc(f.size, f.cold)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	owner := map[pool.ID]int{} // container -> run index that created it
	var runIDs []pool.ID       // run index -> container
	warmed := 0
	names := func(evicted []pool.ID) []int {
		var out []int
		for _, id := range evicted {
			out = append(out, owner[id])
		}
		return out
	}
	for i, s := range steps {
		var got []int
		switch s.op {
		case "run":
			id, ok := e.Acquire(ids[s.fn], s.at)
			outcome := "hit"
			if !ok {
				var ev []pool.ID
				var err error
				id, ev, err = e.Admit(ids[s.fn], s.at)
				got = names(ev)
				switch {
				case errors.Is(err, pool.ErrDrop):
					outcome, id = "drop", 0
				case err != nil:
					t.Fatalf("step %d: Admit: %v", i, err)
				default:
					outcome = "miss"
					owner[id] = len(runIDs)
				}
			}
			if outcome != s.want {
				t.Fatalf("step %d (%s fn %d at %v): %s, want %s", i, s.op, s.fn, s.at, outcome, s.want)
			}
			runIDs = append(runIDs, id)
		case "end":
			if err := e.Release(runIDs[s.run], s.at); err != nil {
				t.Fatalf("step %d: Release: %v", i, err)
			}
		case "expire":
			got = names(e.Expire(s.at))
		case "prewarm":
			fns := e.Prewarm(s.at)
			if !slices.Equal(fns, []pool.Fn{ids[s.fn]}) {
				t.Fatalf("step %d: Prewarm(%v) = %v, want [%d]", i, s.at, fns, s.fn)
			}
			id, err := e.Warm(ids[s.fn], s.at)
			if err != nil {
				t.Fatalf("step %d: Warm: %v", i, err)
			}
			warmed++
			owner[id] = -warmed
		default:
			t.Fatalf("step %d: bad op %q", i, s.op)
		}
		if !slices.Equal(got, s.evict) {
			t.Fatalf("step %d (%s at %v): evicted/expired %v, want %v", i, s.op, s.at, got, s.evict)
		}
		if err := e.Check(false); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func newEngine(t *testing.T, name string, o Options, parts []pool.Partition, borrow bool) *pool.Engine {
	t.Helper()
	c, err := New(name, o)
	if err != nil {
		t.Fatal(err)
	}
	e, err := pool.New(pool.Config{Partitions: parts, Borrow: borrow, NewPolicy: c})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const s = time.Second

func TestGoldenEvictionOrder(t *testing.T) {
	// Three functions, 1-2 MB each, in a 4 MB pool. Each runs once (A, B, C
	// admitted and released), then A runs again, then D (2 MB) and E (1 MB)
	// need room.
	//   fn  size cold  freq at eviction time
	//   A   1 MB 10 s  2
	//   B   2 MB 10 s  1
	//   C   1 MB  1 s  1
	fns := []fnSpec{{1 * mb, 10 * s}, {2 * mb, 10 * s}, {1 * mb, 1 * s}, {2 * mb, 4 * s}, {1 * mb, 1 * s}}
	prefix := []step{
		{op: "run", at: 0, fn: 0, want: "miss"}, // run 0: A
		{op: "end", at: 1 * s, run: 0},
		{op: "run", at: 2 * s, fn: 1, want: "miss"}, // run 1: B
		{op: "end", at: 3 * s, run: 1},
		{op: "run", at: 4 * s, fn: 2, want: "miss"}, // run 2: C
		{op: "end", at: 5 * s, run: 2},
		{op: "run", at: 6 * s, fn: 0, want: "hit"}, // run 3: A again (freq 2)
		{op: "end", at: 7 * s, run: 3},
	}
	tests := []struct {
		policy string
		d, e   []int // evictions when D, then E, are admitted
	}{
		// LRU: idle since B=3s, C=5s, A=7s. D (2 MB) evicts B; E (1 MB) then
		// evicts C.
		{"lru", []int{1}, []int{2}},
		// GD priorities (clock 0): A = 2×10/1 = 20, B = 1×10/2 = 5,
		// C = 1×1/1 = 1. D needs 2 MB: evicts C (1, clock 1) then B (5,
		// clock 5). Then D (busy, never released) and A use 3 MB; E fits.
		{"gd", []int{2, 1}, nil},
		// FREQ priorities: A = 2×10 = 20, B = 1×10 = 10, C = 1×1 = 1. Same
		// victims as GD here, in the same order.
		{"freq", []int{2, 1}, nil},
		// TTL orders like LRU when nothing has expired yet.
		{"ttl", []int{1}, []int{2}},
		// HIST with too little history falls back to a fixed keep-alive and
		// evicts in LRU order.
		{"hist", []int{1}, []int{2}},
	}
	for _, tc := range tests {
		t.Run(tc.policy, func(t *testing.T) {
			e := newEngine(t, tc.policy, Options{}, []pool.Partition{{Capacity: 4 * mb}}, false)
			steps := append(slices.Clone(prefix),
				step{op: "run", at: 8 * s, fn: 3, want: "miss", evict: tc.d},
				step{op: "run", at: 9 * s, fn: 4, want: "miss", evict: tc.e},
			)
			play(t, e, fns, steps)
		})
	}
}

func TestGoldenGDClockAging(t *testing.T) {
	// GD's clock makes an old favourite evictable: A is used 3 times (prio
	// 3×1/1 = 3), then B and C churn. Each eviction raises the clock, so the
	// later, once-used containers outrank A.
	fns := []fnSpec{{1 * mb, 1 * s}, {1 * mb, 2 * s}, {1 * mb, 2 * s}, {1 * mb, 2 * s}}
	steps := []step{
		{op: "run", at: 0, fn: 0, want: "miss"}, // run 0: A
		{op: "end", at: 1 * s, run: 0},
		{op: "run", at: 2 * s, fn: 0, want: "hit"}, // run 1
		{op: "end", at: 3 * s, run: 1},
		{op: "run", at: 4 * s, fn: 0, want: "hit"}, // run 2; A prio = 3
		{op: "end", at: 5 * s, run: 2},
		{op: "run", at: 6 * s, fn: 1, want: "miss"}, // run 3: B, prio 0+2 = 2
		{op: "end", at: 7 * s, run: 3},
		// C needs room in a 2 MB pool: B (2) < A (3) goes; clock = 2.
		{op: "run", at: 8 * s, fn: 2, want: "miss", evict: []int{3}}, // run 4: C
		{op: "end", at: 9 * s, run: 4},                               // C prio = 2 + 2 = 4
		// D: A (3) < C (4) goes; clock = 3.
		{op: "run", at: 10 * s, fn: 3, want: "miss", evict: []int{0}}, // run 5: D
		{op: "end", at: 11 * s, run: 5},                               // D prio = 3 + 2 = 5
		// A again: C (4) < D (5) goes.
		{op: "run", at: 12 * s, fn: 0, want: "miss", evict: []int{4}},
	}
	play(t, newEngine(t, "gd", Options{}, []pool.Partition{{Capacity: 2 * mb}}, false), fns, steps)
}

func TestGoldenTTLExpiry(t *testing.T) {
	fns := []fnSpec{{1 * mb, s}, {1 * mb, s}}
	steps := []step{
		{op: "run", at: 0, fn: 0, want: "miss"}, // run 0: A
		{op: "end", at: 1 * s, run: 0},          // A expires at 1s + 10 min
		{op: "run", at: 2 * s, fn: 1, want: "miss"},
		{op: "end", at: 3 * s, run: 1}, // B expires at 3s + 10 min
		{op: "expire", at: 10*time.Minute + 999*time.Millisecond},
		{op: "expire", at: 10*time.Minute + 1*s, evict: []int{0}},
		{op: "run", at: 10*time.Minute + 2*s, fn: 0, want: "miss"}, // run 2: A is cold again
		{op: "run", at: 10*time.Minute + 2*s, fn: 1, want: "hit"},  // run 3: B still warm
		{op: "end", at: 10*time.Minute + 4*s, run: 3},
		{op: "end", at: 10*time.Minute + 5*s, run: 2},
		{op: "expire", at: time.Hour, evict: []int{1, 2}}, // B (expires 20m4s) before A (20m5s)
	}
	e := newEngine(t, "ttl", Options{}, []pool.Partition{{Capacity: 10 * mb}}, false)
	play(t, e, fns, steps)
	if at, ok := e.NextExpiry(); ok {
		t.Fatalf("NextExpiry = %v after everything expired", at)
	}
	e2 := newEngine(t, "ttl", Options{TTL: time.Minute}, []pool.Partition{{Capacity: 10 * mb}}, false)
	fn, _ := e2.AddFunc(mb, s)
	id, _, _ := e2.Admit(fn, 0)
	e2.Release(id, 5*s)
	if at, ok := e2.NextExpiry(); !ok || at != time.Minute+5*s {
		t.Fatalf("NextExpiry with a 1 min TTL = %v, %v; want 1m5s", at, ok)
	}
}

func TestGoldenHist(t *testing.T) {
	// A function invoked every 30 minutes for 1 s: each idle time is 29m59s
	// (bin 29). After 10 such idle times the histogram is representative
	// (all counts in one of 240 bins: CV = sqrt(239) ≈ 15.5 >= 2). Head and
	// tail are both bin 29, so the pre-warm delay is 29 min × 0.9 = 26m6s
	// and the keep-alive ends at 30 min × 1.1 = 33 min after release.
	h := NewHist(HistOptions{})
	e, err := pool.New(pool.Config{Partitions: []pool.Partition{{Capacity: 10 * mb}}, NewPolicy: func() pool.Policy { return h }})
	if err != nil {
		t.Fatal(err)
	}
	fn, _ := e.AddFunc(mb, s)
	var last time.Duration
	for i := range 11 {
		now := time.Duration(i) * 30 * time.Minute
		e.Expire(now)
		if _, ok := e.Acquire(fn, now); ok {
			t.Fatalf("run %d: a 4 h fixed keep-alive should not matter: pool starts cold, but found warm?", i)
		}
		id, _, err := e.Admit(fn, now)
		if err != nil {
			t.Fatal(err)
		}
		last = now + s
		if err := e.Release(id, last); err != nil {
			t.Fatal(err)
		}
		rep, pre, keep := h.Windows(fn, last)
		if i < 10 {
			// Not yet representative: fixed keep-alive of 4 h.
			if rep {
				t.Fatalf("run %d: representative after %d idle times", i, i)
			}
			if at, ok := e.NextExpiry(); !ok || at != last+4*time.Hour {
				t.Fatalf("run %d: expiry %v, want %v", i, at, last+4*time.Hour)
			}
			// Remove it so every run is a cold start and idle times are
			// measured from the release.
			if err := e.Remove(id); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !rep || pre != 26*time.Minute+6*s || keep != 33*time.Minute {
			t.Fatalf("windows = %v, %v, %v; want true, 26m6s, 33m0s", rep, pre, keep)
		}
	}
	// Representative: unloaded right at release, pre-warmed 26m6s later
	// and kept until 33 min after the release.
	if got := e.Expire(last); len(got) != 1 {
		t.Fatalf("Expire at release = %v, want the container unloaded", got)
	}
	at, ok := e.NextPrewarm()
	if want := last + 26*time.Minute + 6*s; !ok || at != want {
		t.Fatalf("NextPrewarm = %v, %v; want %v", at, ok, want)
	}
	if fns := e.Prewarm(at - 1); len(fns) != 0 {
		t.Fatalf("Prewarm before due = %v", fns)
	}
	fns := e.Prewarm(at)
	if !slices.Equal(fns, []pool.Fn{fn}) {
		t.Fatalf("Prewarm = %v", fns)
	}
	id, err := e.Warm(fn, at)
	if err != nil {
		t.Fatal(err)
	}
	if x, ok := e.NextExpiry(); !ok || x != last+33*time.Minute {
		t.Fatalf("prewarmed container expires at %v, want %v", x, last+33*time.Minute)
	}
	if got, ok := e.Acquire(fn, last+30*time.Minute-s); !ok || got != id {
		t.Fatalf("arrival after prewarm: %v, %v; want warm hit on %v", got, ok, id)
	}
	if st := e.Stats(0); st.Prewarms != 1 || st.Hits != 1 || st.Misses != 11 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGoldenHistNotRepresentative(t *testing.T) {
	// Idle times spread evenly over 0..239 minutes: CV = 0, so the fixed
	// keep-alive (4 h) applies.
	h := NewHist(HistOptions{})
	for i := range 240 {
		h.Arrive(0, 0, time.Duration(i)*time.Minute+time.Second)
	}
	if rep, _, _ := h.Windows(0, time.Hour); rep {
		t.Fatal("uniform idle times are representative")
	}
	if k := h.KeepAlive(0, time.Hour); k != 4*time.Hour {
		t.Fatalf("keep-alive %v, want 4h", k)
	}
	// Mostly out of bounds (12 of 20 idle times over 4 h): not
	// representative although the 8 in bounds share one bin; the same
	// counts with 12 in bounds are.
	for _, tc := range []struct {
		in, oob int
		rep     bool
	}{{8, 12, false}, {12, 8, true}} {
		h2 := NewHist(HistOptions{})
		for range tc.in {
			h2.Arrive(0, 0, 5*time.Minute)
		}
		for range tc.oob {
			h2.Arrive(0, 0, 5*time.Hour)
		}
		if rep, _, _ := h2.Windows(0, 0); rep != tc.rep {
			t.Fatalf("%d in bounds, %d out: representative %v, want %v", tc.in, tc.oob, rep, tc.rep)
		}
	}
}

func TestGoldenPartitionRouting(t *testing.T) {
	// KiSS default split of 1000 MiB: 800 MiB for functions up to 225 MiB,
	// 200 MiB for larger ones.
	parts, err := pool.Split(1000*mb, []float64{0.8, 0.2}, []int64{225 * mb})
	if err != nil {
		t.Fatal(err)
	}
	if parts[0].Capacity != 800*mb || parts[1].Capacity != 200*mb {
		t.Fatalf("split = %+v", parts)
	}
	fns := []fnSpec{{100 * mb, s}, {225 * mb, s}, {150 * mb, s}, {226 * mb, s}}
	for _, borrow := range []bool{false, true} {
		e := newEngine(t, "lru", Options{}, parts, borrow)
		want := []int{0, 0, 0, 1}
		var ids []pool.Fn
		for i, f := range fns {
			fn, _ := e.AddFunc(f.size, f.cold)
			ids = append(ids, fn)
			if p, _ := e.Partition(fn); p != want[i] {
				t.Fatalf("function of %d MiB routed to %d, want %d", f.size/mb, p, want[i])
			}
		}
		// The large partition (200 MiB) cannot hold a 226 MiB function: a
		// drop, although the small partition is empty — unless borrowing.
		_, _, err := e.Admit(ids[3], 0)
		if !borrow {
			if !errors.Is(err, pool.ErrDrop) {
				t.Fatalf("226 MiB into a 200 MiB partition: %v, want ErrDrop", err)
			}
			if e.Stats(1).Drops != 1 || e.Stats(0).Drops != 0 {
				t.Fatal("drop counted in the wrong partition")
			}
		} else {
			if err != nil {
				t.Fatalf("with borrowing: %v", err)
			}
			s0, s1 := e.Stats(0), e.Stats(1)
			if s1.Borrowed != 26*mb || s0.Lent != 26*mb || s0.Used != 26*mb || s1.Used != 200*mb {
				t.Fatalf("borrow accounting: small %+v large %+v", s0, s1)
			}
		}
		// Three small functions fill the small partition up to 475 MiB of
		// 800 (minus any loan); they never touch the large one.
		for _, i := range []int{0, 1, 2} {
			if _, _, err := e.Admit(ids[i], s); err != nil {
				t.Fatal(err)
			}
		}
		if u := e.Stats(0).Used; u != 475*mb+e.Stats(0).Lent {
			t.Fatalf("small partition uses %d MiB", u/mb)
		}
		if err := e.Check(false); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		err  error
	}{
		{"LRU", Options{}, nil},
		{" gd ", Options{}, nil},
		{"hist", Options{Hist: HistOptions{Head: 0.5, Tail: 0.9}}, nil},
		{"arc", Options{}, ErrUnknown},
		{"", Options{}, ErrUnknown},
		{"ttl", Options{TTL: -time.Second}, pool.ErrConfig},
		{"hist", Options{Hist: HistOptions{Head: 0.99, Tail: 0.5}}, pool.ErrConfig},
		{"hist", Options{Hist: HistOptions{Margin: 1.5}}, pool.ErrConfig},
		{"hist", Options{Hist: HistOptions{SeriesMargin: 1.5}}, pool.ErrConfig},
		{"hist", Options{Hist: HistOptions{SeriesMin: -1}}, nil},
		{"hist", Options{Hist: HistOptions{Bin: time.Hour, Range: time.Minute}}, pool.ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.name, tc.o)
			if !errors.Is(err, tc.err) {
				t.Fatalf("New(%q) error %v, want %v", tc.name, err, tc.err)
			}
			if err == nil && c() == nil {
				t.Fatal("constructor returned nil")
			}
		})
	}
	if got := Names(); !slices.Equal(got, []string{"freq", "gd", "hist", "lru", "ttl"}) {
		t.Fatalf("Names() = %v", got)
	}
}

func TestGoldenHistSeries(t *testing.T) {
	// Idle times all over the 4 h range: after SeriesMin (3) of them the
	// next one is forecast. A steady 5 h forecasts 5 h: pre-warm at
	// 5h*0.85 = 4h15m, keep alive until 5h*1.15 = 5h45m.
	h := NewHist(HistOptions{})
	for i := range 3 {
		if k := h.KeepAlive(0, 0); i > 0 && k != 4*time.Hour {
			t.Fatalf("after %d out-of-bounds idle times: keep-alive %v, want the fixed 4h", i, k)
		}
		h.Arrive(0, 0, 5*time.Hour)
	}
	rep, pre, keep := h.Windows(0, time.Hour)
	if rep || pre != 4*time.Hour+15*time.Minute || keep != 5*time.Hour+45*time.Minute {
		t.Fatalf("windows = %v, %v, %v; want false, 4h15m, 5h45m", rep, pre, keep)
	}
	if k := h.KeepAlive(0, time.Hour); k != 0 {
		t.Fatalf("keep-alive %v, want 0 (unloaded, pre-warmed later)", k)
	}
	at, dur, ok := h.Prewarm(0, time.Hour)
	if !ok || at != time.Hour+pre || dur != keep-pre {
		t.Fatalf("Prewarm = %v, %v, %v; want %v, %v, true", at, dur, ok, time.Hour+pre, keep-pre)
	}

	// An alternating 5 h / 7 h series is forecast between the two.
	h2 := NewHist(HistOptions{})
	for i := range 8 {
		h2.Arrive(0, 0, time.Duration(5+2*(i%2))*time.Hour)
	}
	_, pre, keep = h2.Windows(0, 0)
	next := time.Duration(float64(pre) / 0.85)
	if next < 5*time.Hour || next > 7*time.Hour || keep <= pre {
		t.Fatalf("alternating 5h/7h: forecast %v (windows %v, %v), want within [5h, 7h]", next, pre, keep)
	}

	// Switched off, or outnumbered by idle times in bounds: no forecast.
	h3 := NewHist(HistOptions{SeriesMin: -1})
	h4 := NewHist(HistOptions{})
	for range 5 {
		h3.Arrive(0, 0, 5*time.Hour)
		h4.Arrive(0, 0, 5*time.Hour)
	}
	for range 6 {
		h4.Arrive(0, 0, 5*time.Minute)
	}
	if k := h3.KeepAlive(0, 0); k != 4*time.Hour {
		t.Fatalf("series off: keep-alive %v, want 4h", k)
	}
	// 6 in bounds, all in bin 5, outnumber the 5 out: the histogram
	// decides (pre-warm at 5 min less 10%).
	if rep, pre, _ := h4.Windows(0, 0); !rep || pre != 4*time.Minute+30*time.Second {
		t.Fatalf("mostly in bounds: windows %v, %v; want the histogram's (true, 4m30s)", rep, pre)
	}
}

func TestGoldenHistSeriesPrewarmsThroughTheEngine(t *testing.T) {
	// A function invoked every 5 h for 1 s: from the fourth call on, its
	// container is unloaded at release and pre-warmed 4h15m later, so the
	// next call is warm.
	h := NewHist(HistOptions{})
	e, err := pool.New(pool.Config{Partitions: []pool.Partition{{Capacity: 10 * mb}}, NewPolicy: func() pool.Policy { return h }})
	if err != nil {
		t.Fatal(err)
	}
	fn, _ := e.AddFunc(mb, s)
	period := 5 * time.Hour
	var warm int
	for i := range 8 {
		now := time.Duration(i) * period
		for {
			at, ok := e.NextPrewarm()
			if !ok || at > now {
				break
			}
			e.Expire(at) // containers unloaded at release go first
			for _, f := range e.Prewarm(at) {
				if _, err := e.Warm(f, at); err != nil {
					t.Fatal(err)
				}
			}
		}
		e.Expire(now)
		id, ok := e.Acquire(fn, now)
		if ok {
			warm++
		} else if id, _, err = e.Admit(fn, now); err != nil {
			t.Fatal(err)
		}
		if err := e.Release(id, now+s); err != nil {
			t.Fatal(err)
		}
	}
	// Calls 0-3 are cold (the first has no idle time; the fixed 4 h
	// keep-alive ends before each next call); 4-7 are pre-warmed.
	if warm != 4 {
		t.Fatalf("%d warm calls of 8, want 4", warm)
	}
}

// TestHistForget removes a function whose histogram is representative
// and whose pre-warm is pending: the pre-warm goes, and the function that
// gets its id starts with no history.
func TestHistForget(t *testing.T) {
	h := NewHist(HistOptions{})
	e, err := pool.New(pool.Config{Partitions: []pool.Partition{{Capacity: 10 * mb}}, NewPolicy: func() pool.Policy { return h }})
	if err != nil {
		t.Fatal(err)
	}
	fn, _ := e.AddFunc(mb, s)
	var last time.Duration
	for i := range 11 {
		now := time.Duration(i) * 30 * time.Minute
		e.Acquire(fn, now)
		id, _, err := e.Admit(fn, now)
		if err != nil {
			t.Fatal(err)
		}
		last = now + s
		if err := e.Release(id, last); err != nil {
			t.Fatal(err)
		}
		if err := e.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	if rep, _, _ := h.Windows(fn, last); !rep {
		t.Fatal("histogram not representative after 10 idle times")
	}
	if _, ok := e.NextPrewarm(); !ok {
		t.Fatal("no pre-warm pending")
	}
	if err := e.RemoveFunc(fn); err != nil {
		t.Fatal(err)
	}
	if at, ok := e.NextPrewarm(); ok {
		t.Errorf("pre-warm at %v still pending for a removed function", at)
	}
	again, _ := e.AddFunc(mb, s)
	if again != fn {
		t.Fatalf("id %d not reused (got %d)", fn, again)
	}
	if rep, _, _ := h.Windows(again, last); rep {
		t.Error("the new function inherited the removed one's histogram")
	}
}
