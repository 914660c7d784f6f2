package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/pool"
	"github.com/hearth-run/hearth/internal/registry"
)

// These tests drive the cache's bookkeeping with instances that have no
// sandbox: they are never frozen (thaw is a no-op) and never tracked as
// live, so destroy leaves them alone. Real sandboxes are covered by the
// e2e tests (e2e/pool_test.go).

const mib = 1 << 20

func newTestCache(t testing.TB, budget int64, pc PoolConfig) *warmCache {
	t.Helper()
	w := &Worker{
		cfg:     Config{WarmBudget: budget, Pool: pc},
		log:     slog.New(slog.DiscardHandler),
		metrics: newMetrics(),
		state:   map[string]*fnState{},
		live:    map[*instance]struct{}{},
	}
	c, err := newWarmCache(w)
	if err != nil {
		t.Fatal(err)
	}
	w.cache = c
	t.Cleanup(c.close)
	return c
}

func testFn(name string, mb int) registry.Function {
	return registry.Function{Name: name, Revision: "r1", Spec: function.Spec{MemoryMB: mb}}
}

// fakeStart plays a cold start: take must reserve, and the new instance is
// bound to the reservation.
func fakeStart(t testing.TB, c *warmCache, fn registry.Function) *instance {
	t.Helper()
	inst, id, err := c.take(context.Background(), fn)
	if err != nil || inst != nil || id == 0 {
		t.Fatalf("take %s: inst %v id %v err %v, want a reservation", fn.Name, inst, id, err)
	}
	inst = &instance{id: fn.Name, fn: fn.Name, rev: fn.Revision, declared: int64(fn.Spec.MemoryMB) * mib}
	c.bind(id, inst, 50*time.Millisecond)
	return inst
}

func fakePark(t testing.TB, c *warmCache, inst *instance, size int64) []*instance {
	t.Helper()
	inst.markIdle()
	if v := c.put(inst, 0, 0); len(v) != 0 {
		t.Fatalf("put %s: victims %v", inst.id, v)
	}
	return c.resize(inst, size)
}

func TestCacheWarmHitAndLRUEviction(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{})
	a, b, x := testFn("a", 128), testFn("b", 128), testFn("x", 128)
	ia := fakeStart(t, c, a)
	fakePark(t, c, ia, 70*mib)
	ib := fakeStart(t, c, b)
	fakePark(t, c, ib, 70*mib)
	got, id, err := c.take(context.Background(), a)
	if err != nil || got != ia || id != 0 {
		t.Fatalf("warm take: %v %v %v, want a's instance", got, id, err)
	}
	fakePark(t, c, ia, 70*mib) // a is now more recent than b
	ix := fakeStart(t, c, x)   // 140 + 128 fits
	if v := fakePark(t, c, ix, 100*mib); len(v) != 0 {
		t.Fatalf("resize evicted %v", v)
	}
	// 240 MB paused: a new 128 MB start must evict b (LRU), then it fits.
	inst, id, err := c.take(context.Background(), testFn("y", 128))
	if err != nil || inst != nil || id == 0 {
		t.Fatalf("take y: %v %v %v", inst, id, err)
	}
	st := c.stats()[0]
	if st.Name != "unified" || st.Evictions != 1 || st.Hits != 1 || st.Misses != 4 || st.Used != (70+100+128)*mib {
		t.Errorf("stats %+v", st)
	}
	if _, ok := c.ids[ib]; ok {
		t.Errorf("b still cached after eviction")
	}
	c.abort(id)
	if got := c.stats()[0].Used; got != (70+100)*mib {
		t.Errorf("used after abort = %d MB", got/mib)
	}
}

func TestCacheDrops(t *testing.T) {
	tests := []struct {
		name string
		pc   PoolConfig
		fn   registry.Function
		want string
	}{
		{"busy", PoolConfig{OnDrop: DropReject}, testFn("c", 128), "no room for a sandbox charged 128 MB (memory_mb 128) in the unified pool"},
		{"too big beside a busy one", PoolConfig{Fractions: []float64{0.8, 0.2}, OnDrop: DropReject}, testFn("big", 256), "no room for a sandbox charged 256 MB (memory_mb 256) in the small pool"},
		{"queue timeout", PoolConfig{OnDrop: DropQueue, DropQueue: 1, DropWait: 50 * time.Millisecond}, testFn("c", 128), "waited 50ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, 300*mib, tc.pc)
			fakeStart(t, c, testFn("a", 128))
			if len(tc.pc.Fractions) < 2 {
				fakeStart(t, c, testFn("b", 128))
			}
			t0 := time.Now()
			_, _, err := c.take(context.Background(), tc.fn)
			if !errors.Is(err, ErrDrop) || !contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrDrop saying %q", err, tc.want)
			}
			if tc.pc.OnDrop == DropQueue && time.Since(t0) < tc.pc.DropWait {
				t.Errorf("returned after %s, before the %s wait", time.Since(t0), tc.pc.DropWait)
			}
			var drops uint64
			for _, p := range c.stats() {
				drops += p.Drops
			}
			if drops != 1 {
				t.Errorf("drops = %d, want 1", drops)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestCacheQueueGetsReleasedSandbox(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropQueue: 1, DropWait: 5 * time.Second})
	f := testFn("a", 128)
	i1 := fakeStart(t, c, f)
	fakeStart(t, c, f)
	type res struct {
		inst *instance
		id   pool.ID
		err  error
	}
	// A canceled request does not wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := c.take(ctx, f); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled take: %v", err)
	}
	done := make(chan res, 1)
	go func() {
		inst, id, err := c.take(context.Background(), f)
		done <- res{inst, id, err}
	}()
	// The third request waits; releasing i1 hands it over warm.
	waitQueued(t, c, 1)
	// The queue holds one request: the next is dropped at once.
	if _, _, err := c.take(context.Background(), f); !errors.Is(err, ErrDrop) {
		t.Errorf("take with a full queue: %v, want ErrDrop", err)
	}
	fakePark(t, c, i1, 10*mib)
	select {
	case r := <-done:
		if r.err != nil || r.inst != i1 {
			t.Fatalf("queued take: %+v, want i1 warm", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("queued request not woken by the release")
	}
}

// TestCacheReleaseChargesMeasured checks that a sandbox released in a
// burst is charged what it holds before a waiting request looks: the
// request then fits beside it and evicts nothing. Charged its start
// charge until its pause, as before, it was the first one evicted.
func TestCacheReleaseChargesMeasured(t *testing.T) {
	c := newTestCache(t, 210*mib, PoolConfig{OnDrop: DropQueue, DropWait: 5 * time.Second})
	a := fakeStart(t, c, testFn("a", 100))
	fakeStart(t, c, testFn("b", 100))
	done := make(chan error, 1)
	go func() {
		inst, id, err := c.take(context.Background(), testFn("c", 100))
		if err == nil && (inst != nil || id == 0) {
			err = fmt.Errorf("take c: %v %v, want a reservation", inst, id)
		}
		done <- err
	}()
	waitQueued(t, c, 1)
	a.markIdle()
	if v := c.put(a, 5*mib, 0); len(v) != 0 {
		t.Fatalf("put a: victims %v", v)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("c not admitted after a's release")
	}
	st := c.stats()[0]
	if _, ok := c.ids[a]; !ok || st.Evictions != 0 || st.Used != (5+100+100)*mib {
		t.Errorf("a cached: %v; stats %+v, want no eviction and 205 MB used", ok, st)
	}
}

func TestCacheRetireAndForget(t *testing.T) {
	c := newTestCache(t, 1000*mib, PoolConfig{})
	f := testFn("a", 128)
	old := fakeStart(t, c, f)
	fakePark(t, c, old, 5*mib)
	f2 := f
	f2.Revision = "r2"
	busy := fakeStart(t, c, f2)
	if got := c.drop("a", "r2"); len(got) != 1 || got[0] != old {
		t.Fatalf("drop: %v, want the idle old-revision sandbox only", got)
	}
	c.forget(busy)
	if st := c.stats()[0]; st.Sandboxes != 0 || st.Used != 0 {
		t.Errorf("after retire and forget: %+v", st)
	}
	// A sandbox unknown to the pool comes back from put to be destroyed.
	if v := c.put(busy, 0, 0); len(v) != 1 || v[0] != busy {
		t.Errorf("put of a forgotten sandbox: %v", v)
	}
}

func TestCacheTTLExpiresEagerly(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{Policy: "ttl", TTL: 100 * time.Millisecond})
	inst := fakeStart(t, c, testFn("a", 128))
	fakePark(t, c, inst, 5*mib)
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := c.stats()[0]
		if st.Expirations == 1 && st.Sandboxes == 0 && st.Used == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not expired: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewWarmCacheBadConfig(t *testing.T) {
	tests := []struct {
		name string
		pc   PoolConfig
	}{
		{"policy", PoolConfig{Policy: "mru"}},
		{"on_drop", PoolConfig{OnDrop: "wait"}},
		{"fractions", PoolConfig{Fractions: []float64{0.5, 0.4}}},
		{"thresholds", PoolConfig{Fractions: []float64{0.5, 0.3, 0.2}}},
		{"ttl", PoolConfig{Policy: "ttl", TTL: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &Worker{cfg: Config{WarmBudget: 300 * mib, Pool: tc.pc}, metrics: newMetrics()}
			if _, err := newWarmCache(w); err == nil {
				t.Errorf("config %+v accepted", tc.pc)
			}
		})
	}
}

func TestParseSplit(t *testing.T) {
	tests := []struct {
		in   string
		want []float64
		bad  bool
	}{
		{in: "", want: []float64{1}},
		{in: "unified", want: []float64{1}},
		{in: "100", want: []float64{1}},
		{in: "80/20", want: []float64{0.8, 0.2}},
		{in: " 50 / 30 / 20 ", want: []float64{0.5, 0.3, 0.2}},
		{in: "80/30", bad: true},
		{in: "80/x", bad: true},
		{in: "100/0", bad: true},
		{in: "-20/120", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSplit(tc.in)
			if tc.bad {
				if !errors.Is(err, pool.ErrConfig) {
					t.Fatalf("ParseSplit(%q) = %v, %v; want ErrConfig", tc.in, got, err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("ParseSplit(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			for i := range got {
				if d := got[i] - tc.want[i]; d > 1e-9 || d < -1e-9 {
					t.Errorf("ParseSplit(%q)[%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
				}
			}
		})
	}
}

// BenchmarkCacheWarmCycle measures the pool's share of a warm invocation:
// take (Acquire) and put (Release), with 1,000 functions cached.
func BenchmarkCacheWarmCycle(b *testing.B) {
	c := newTestCache(b, 1<<40, PoolConfig{Policy: "gd"})
	fns := make([]registry.Function, 1000)
	for i := range fns {
		fns[i] = testFn(fmt.Sprint("f", i), 128)
		inst := fakeStart(b, c, fns[i])
		fakePark(b, c, inst, 8*mib)
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		inst, _, err := c.take(ctx, fns[i%len(fns)])
		if err != nil || inst == nil {
			b.Fatalf("take: %v %v", inst, err)
		}
		inst.markIdle()
		c.put(inst, 0, 0)
	}
}

// A function larger than its pool's share of the budget runs (in the
// pool with the most memory, borrowing the rest); only one larger than
// the whole budget is refused, at once, as never able to run.
func TestCacheOversizeFunctions(t *testing.T) {
	kiss := PoolConfig{Fractions: []float64{0.8, 0.2}}
	c := newTestCache(t, 2048*mib, kiss)
	for _, mb := range []int{409, 512, 1024, 1638, 2048} {
		f := testFn(fmt.Sprint("f", mb), mb)
		inst := fakeStart(t, c, f)
		var used int64
		for _, p := range c.stats() {
			used += p.Used
		}
		if used != int64(mb)*mib {
			t.Errorf("%d MB: pools charge %d MB", mb, used/mib)
		}
		c.forget(inst)
	}
	// A small paused sandbox in each pool is evicted for the whole
	// budget.
	small := fakeStart(t, c, testFn("small", 128))
	fakePark(t, c, small, 20*mib)
	large := fakeStart(t, c, testFn("large", 300))
	fakePark(t, c, large, 30*mib)
	fakeStart(t, c, testFn("all", 2048))
	if _, ok := c.ids[small]; ok {
		t.Error("the small pool's paused sandbox was not evicted")
	}
	if _, ok := c.ids[large]; ok {
		t.Error("the large pool's paused sandbox was not evicted")
	}

	_, _, err := c.take(context.Background(), testFn("huge", 2049))
	if !errors.Is(err, ErrMemoryTooLarge) || !contains(err.Error(), "whole warm budget of 2048 MB") {
		t.Fatalf("2049 MB: %v, want ErrMemoryTooLarge naming the budget", err)
	}
	for _, tc := range []struct {
		pc   PoolConfig
		mb   int
		want string
	}{
		{kiss, 2048, ""},
		{kiss, 2049, "whole warm budget of 2048 MB"},
		{PoolConfig{}, 2048, ""},
		{PoolConfig{Fractions: []float64{0.5, 0.3, 0.2}, Thresholds: []int64{100 * mib, 200 * mib}}, 1639, "the 1638 MB of its 2048 MB"},
		{PoolConfig{Fractions: []float64{0.5, 0.3, 0.2}, Thresholds: []int64{100 * mib, 200 * mib}}, 1638, ""},
	} {
		err := CheckMemory(2048*mib, tc.pc, tc.mb)
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, ErrMemoryTooLarge) || !contains(err.Error(), tc.want)) {
			t.Errorf("CheckMemory(%v, %d MB) = %v, want %q", tc.pc.Fractions, tc.mb, err, tc.want)
		}
	}
}

func TestDefaultWarmBudget(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) string {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	meminfo := write("meminfo", "MemTotal:       24684000 kB\nMemFree:        1000 kB\n")
	root := filepath.Join(dir, "cg")
	// v1: the limit of an ancestor counts; "no limit" does not.
	write("cg/memory/a/memory.limit_in_bytes", "8589934592\n")
	write("cg/memory/a/b/memory.limit_in_bytes", "9223372036854771712\n")
	v1 := write("self-v1", "9:name=systemd:/\n4:memory:/a/b\n0::/\n")
	// v2: memory.max of the group itself.
	write("cg/w/memory.max", "6442450944\n")
	write("cg/memory.max", "max\n")
	v2 := write("self-v2", "0::/w\n")
	unlimited := write("self-none", "4:memory:/\n")
	for _, tc := range []struct {
		name, meminfo, self string
		want                int64
	}{
		{"machine", meminfo, unlimited, 24684000 << 10 / 2},
		{"v1 ancestor limit", meminfo, v1, 4 << 30},
		{"v2 limit", meminfo, v2, 3 << 30},
		{"no meminfo", filepath.Join(dir, "missing"), v2, 3 << 30},
		{"nothing readable", filepath.Join(dir, "missing"), filepath.Join(dir, "missing"), 2 << 30},
	} {
		if got := warmBudget(tc.meminfo, tc.self, root); got != tc.want {
			t.Errorf("%s: %d MB, want %d MB", tc.name, got>>20, tc.want>>20)
		}
	}
	if b := DefaultWarmBudget(); b <= 0 {
		t.Errorf("DefaultWarmBudget() = %d", b)
	}
}

// waitQueued waits until n requests wait for memory.
func waitQueued(t *testing.T, c *warmCache, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := c.waiting
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type takeResult struct {
	inst *instance
	id   pool.ID
	err  error
}

func takeAsync(c *warmCache, fn registry.Function) <-chan takeResult {
	ch := make(chan takeResult, 1)
	go func() {
		inst, id, err := c.take(context.Background(), fn)
		ch <- takeResult{inst, id, err}
	}()
	return ch
}

// A function whose busy sandboxes fill the pool does not take back the
// memory it releases while another function waits for room: its requests
// queue behind, and the other's gets the paused sandboxes evicted for it.
func TestCacheFairShare(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second})
	greedy, other := testFn("greedy", 80), testFn("other", 150)
	g1, g2, g3 := fakeStart(t, c, greedy), fakeStart(t, c, greedy), fakeStart(t, c, greedy)
	// 240 of 300 MB busy: the other function waits.
	otherRes := takeAsync(c, other)
	waitQueued(t, c, 1)
	// One greedy call ends. Its paused sandbox is not enough for the
	// other (60 + 80 < 150), and greedy still holds 160 MB busy, whose
	// share is 150: its next request waits instead of taking it back.
	fakePark(t, c, g1, 80*mib)
	greedyRes := takeAsync(c, greedy)
	waitQueued(t, c, 2)
	select {
	case r := <-greedyRes:
		t.Fatalf("greedy request served while the other waits: %+v", r)
	case r := <-otherRes:
		t.Fatalf("other served with 140 MB free: %+v", r)
	default:
	}
	// A second greedy call ends: both paused sandboxes go for the other,
	// though greedy, 80 MB busy, may have one more only past its share.
	fakePark(t, c, g2, 80*mib)
	select {
	case r := <-otherRes:
		if r.err != nil || r.inst != nil || r.id == 0 {
			t.Fatalf("other: %+v, want a reservation", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("other still waiting after greedy released 160 MB")
	}
	if _, ok := c.ids[g1]; ok {
		t.Error("greedy's paused sandbox g1 was not evicted")
	}
	// Greedy's request gets the next sandbox that comes free.
	waitQueued(t, c, 1)
	fakePark(t, c, g3, 80*mib)
	select {
	case r := <-greedyRes:
		if r.err != nil || r.inst != g3 {
			t.Fatalf("greedy: %+v, want g3 warm", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("greedy still waiting")
	}
}

// The worker keeps one registry lease per revision while calls and
// sandboxes use its code, and gives it back with the last of them.
func TestCodeHolds(t *testing.T) {
	w := &Worker{code: map[fnKey]*codeHold{}}
	released := map[string]int{}
	lease := func(fn registry.Function) func() {
		return func() { released[fn.Revision]++ }
	}
	r1, r2 := testFn("a", 128), testFn("a", 128)
	r2.Revision = "r2"
	k1 := w.holdCode(r1, lease(r1)) // a call
	k2 := w.holdCode(r1, lease(r1)) // another call of the same revision
	if released["r1"] != 1 {
		t.Fatalf("second lease of r1 kept: released %v", released)
	}
	if !w.retainCode(k1) { // its sandbox
		t.Fatal("retainCode of a held revision failed")
	}
	if w.retainCode(fnKey{"a", "r2"}) {
		t.Fatal("retainCode of an unheld revision succeeded")
	}
	k3 := w.holdCode(r2, lease(r2))
	w.dropCode(k1)
	w.dropCode(k2)
	if released["r1"] != 1 {
		t.Fatalf("r1 released while its sandbox lives: %v", released)
	}
	w.dropCode(k1) // the sandbox is destroyed
	w.dropCode(k3)
	if released["r1"] != 2 || released["r2"] != 1 || len(w.code) != 0 {
		t.Fatalf("released %v, holds %v", released, w.code)
	}
}

func TestStartChargeRule(t *testing.T) {
	for _, tc := range []struct{ peak, declared, want int64 }{
		{1 * mib, 128 * mib, 9 * mib},     // at least 8 MiB of margin
		{64 * mib, 128 * mib, 80 * mib},   // a quarter
		{120 * mib, 128 * mib, 128 * mib}, // never above memory_mb
	} {
		if got := startCharge(tc.peak, tc.declared); got != tc.want {
			t.Errorf("startCharge(%d MiB, %d MiB) = %d MiB, want %d", tc.peak/mib, tc.declared/mib, got/mib, tc.want/mib)
		}
	}
}

// TestPeakWindowPerSandbox: a function's start charge covers the peaks
// of its last peakWindow sandboxes, each once however many calls it
// served, and a new sandbox is admitted at it.
func TestPeakWindowPerSandbox(t *testing.T) {
	c := newTestCache(t, 1024*mib, PoolConfig{OnDrop: DropReject})
	fn := testFn("f", 128)
	chargeOf := func() StartCharge {
		t.Helper()
		for _, sc := range c.charges() {
			if sc.Function == "f" {
				return sc
			}
		}
		t.Fatalf("no start charge for f in %+v", c.charges())
		return StartCharge{}
	}
	cold := fakeStart(t, c, fn)
	if sc := chargeOf(); sc.Start != 128*mib || sc.Peak != 0 {
		t.Fatalf("before a measure: %+v, want memory_mb", sc)
	}
	c.notePeak(cold, 40*mib) // a cold start's peak
	if sc := chargeOf(); sc.Start != 50*mib || sc.Peak != 40*mib {
		t.Fatalf("after a 40 MiB peak: %+v, want 50 MiB", sc)
	}
	// One forked sandbox serving many calls holds one slot: the cold
	// peak stays.
	fork := fakeStart(t, c, fn)
	if u, _ := c.e.Usage(c.fns[fnKey{"f", "r1"}]); u.BusySize != 128*mib+50*mib {
		t.Fatalf("busy %d MiB, want 128 + 50: the second admitted at the start charge", u.BusySize/mib)
	}
	for range 3 * peakWindow {
		c.notePeak(fork, 2*mib)
	}
	if sc := chargeOf(); sc.Start != 50*mib {
		t.Fatalf("after one sandbox's many calls: %+v, want the cold peak kept", sc)
	}
	// peakWindow-1 more sandboxes push it out.
	for i := range peakWindow - 1 {
		var slot uint64
		c.mu.Lock()
		fi := &c.info[c.fns[fnKey{"f", "r1"}]]
		fi.note(&slot, 2*mib)
		c.mu.Unlock()
		if sc := chargeOf(); i < peakWindow-2 && sc.Start != 50*mib {
			t.Fatalf("%d sandboxes after the cold one: %+v, want its peak kept", i+2, sc)
		}
	}
	c.notePeak(fork, 3*mib) // its own slot, still in the window
	if sc := chargeOf(); sc.Start != 11*mib || sc.Peak != 3*mib {
		t.Fatalf("after %d sandboxes of 2-3 MiB: %+v, want 3 + 8 MiB", peakWindow, sc)
	}
}

// Under ChargeDeclared a peak is noted, for the status, but a new
// sandbox is still charged its limit.
func TestDeclaredChargeNotesPeaksOnly(t *testing.T) {
	c := newTestCache(t, 1024*mib, PoolConfig{OnDrop: DropReject, Charge: ChargeDeclared})
	inst := fakeStart(t, c, testFn("f", 128))
	c.notePeak(inst, 40*mib)
	for _, sc := range c.charges() {
		// A call grown to the peak is charged it and an eighth.
		if sc.Start != 128*mib || sc.Peak != 40*mib || sc.Grown != 45*mib {
			t.Errorf("declared charge: %+v, want start 128 MiB, peak 40 MiB, grown 45 MiB", sc)
		}
	}
	fakePark(t, c, inst, 10*mib)
	if _, id, err := c.take(context.Background(), testFn("g", 128)); err != nil || id == 0 {
		t.Fatalf("take: %v", err)
	}
	if _, _, err := c.take(context.Background(), testFn("f", 128)); err != nil {
		t.Fatal(err)
	}
	// A second sandbox of f (the first is busy again) is admitted at
	// its limit, not at the peak's charge.
	_, id, err := c.take(context.Background(), testFn("f", 128))
	if err != nil || id == 0 {
		t.Fatalf("take: %v", err)
	}
	if size, err := c.e.Size(id); err != nil || size != 128*mib {
		t.Errorf("new sandbox charged %d MiB (%v), want 128", size>>20, err)
	}
}

// A sandbox that grows in a call past a slack (an eighth, at least
// 4 MiB) is charged its usage plus that slack, capped at its limit, and
// paused sandboxes are evicted for it; a measurement taken at a pause
// that raced its thaw does not take the charge back while it is busy.
func TestCacheGrowChargesBusySandbox(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{Fractions: []float64{1}})
	a, b, g := testFn("a", 128), testFn("b", 128), testFn("g", 256)
	ig := fakeStart(t, c, g)
	fakePark(t, c, ig, 20*mib)
	ia := fakeStart(t, c, a)
	fakePark(t, c, ia, 60*mib)
	ib := fakeStart(t, c, b)
	fakePark(t, c, ib, 60*mib) // 140 MB used
	got, _, err := c.take(context.Background(), g)
	if err != nil || got != ig {
		t.Fatalf("warm take of g: %v %v", got, err)
	}
	used := func() int64 { return c.stats()[0].Used / mib }
	for _, usage := range []int64{20 * mib, 20*mib + 4096, 24 * mib} {
		if v, charge, grown := c.grow(ig, usage); grown || len(v) != 0 || charge != 20*mib {
			t.Errorf("grow to %d KiB, within the slack: grown %v, charge %d, victims %v", usage>>10, grown, charge, v)
		}
	}
	// 100 MB: charged 112.5; 232.5 MB in all fits.
	if v, charge, grown := c.grow(ig, 100*mib); !grown || len(v) != 0 || charge != 100*mib+100*mib/8 {
		t.Errorf("grow to 100 MB: grown %v, charge %d, victims %v; want charged 112.5 MB, none evicted", grown, charge, v)
	}
	if v, _, grown := c.grow(ig, 110*mib); grown || len(v) != 0 {
		t.Errorf("grow within the slack of the new charge: grown %v, victims %v", grown, v)
	}
	// 250 MB: charged its limit, 256; a (least recently used) and b must
	// go to make room.
	v, charge, grown := c.grow(ig, 250*mib)
	if !grown || len(v) != 2 || charge != 256*mib {
		t.Fatalf("grow to 250 MB: grown %v, charge %d, victims %v; want its limit charged, a and b evicted", grown, charge, v)
	}
	if u := used(); u != 256 {
		t.Errorf("used after growing to 250 MB: %d MB, want 256", u)
	}
	if _, _, grown := c.grow(ig, 300*mib); grown {
		t.Errorf("grow past the limit charged more than the limit")
	}
	// A pause's measurement that lost the race with the thaw.
	if v := c.resize(ig, 30*mib); len(v) != 0 || used() != 256 {
		t.Errorf("resize of the busy sandbox to less: victims %v, used %d MB; want its charge kept", v, used())
	}
	// Paused, it is charged what it holds again.
	fakePark(t, c, ig, 30*mib)
	if u := used(); u != 30 {
		t.Errorf("used after the pause: %d MB, want 30", u)
	}
	if _, _, grown := c.grow(ia, 500*mib); grown {
		t.Errorf("grow of an evicted sandbox charged it")
	}
}

// Memory that comes free goes to the requests waiting for it in the
// order they came, as in the simulator (internal/sim): five requests of
// five functions queue behind a pool full of busy sandboxes, and each
// sandbox that ends lets the oldest of them in.
func TestCacheQueueFirstComeFirstServed(t *testing.T) {
	longDeferral(t)
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second})
	var busy []*instance
	for i := range 3 {
		busy = append(busy, fakeStart(t, c, testFn(fmt.Sprintf("busy%d", i), 100)))
	}
	type served struct {
		i int
		takeResult
	}
	got := make(chan served, 5)
	for i := range 5 {
		go func() {
			inst, id, err := c.take(context.Background(), testFn(fmt.Sprintf("w%d", i), 100))
			got <- served{i, takeResult{inst, id, err}}
		}()
		waitQueued(t, c, i+1)
	}
	var ids []pool.ID
	for i := range 5 {
		if i < 3 {
			fakePark(t, c, busy[i], 100*mib) // evicted for the next in line
		} else {
			c.abort(ids[i-3]) // a start that failed gives its room back
		}
		select {
		case r := <-got:
			if r.i != i {
				t.Fatalf("w%d got the room that came free before w%d, which came first", r.i, i)
			}
			if r.err != nil || r.inst != nil || r.id == 0 {
				t.Fatalf("w%d: %+v, want a reservation", i, r)
			}
			ids = append(ids, r.id)
		case <-time.After(5 * time.Second):
			t.Fatalf("w%d still waiting", i)
		}
		if i < 4 {
			waitQueued(t, c, 4-i)
		}
	}
}

// longDeferral makes a request let older ones go first for as long as
// they stay queued, so that the order a test checks does not depend on
// how soon the older ones run (see deferPoll).
func longDeferral(t *testing.T) {
	old := deferPoll
	deferPoll = time.Minute
	t.Cleanup(func() { deferPoll = old })
}

// The order of the queue gives way to the fair share: an older request
// of a function past its share of the pool does not hold back a younger
// one of a function below it, and the younger one gets the room at once
// (with no deferPoll to wait out).
func TestCacheQueueOrderYieldsToFairShare(t *testing.T) {
	longDeferral(t)
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second})
	greedy, other := testFn("greedy", 80), testFn("other", 150)
	g1, g2, g3 := fakeStart(t, c, greedy), fakeStart(t, c, greedy), fakeStart(t, c, greedy)
	_ = g3
	// 240 of 300 MB busy: greedy's next request waits, then other's.
	greedyRes := takeAsync(c, greedy)
	waitQueued(t, c, 1)
	otherRes := takeAsync(c, other)
	waitQueued(t, c, 2)
	// Two greedy calls end: 160 MB paused, 80 busy. Greedy, older, would
	// fit, but one more sandbox takes it past its share (150) while
	// other, below its share, waits: other gets the room.
	fakePark(t, c, g1, 80*mib)
	fakePark(t, c, g2, 80*mib)
	select {
	case r := <-otherRes:
		if r.err != nil || r.inst != nil || r.id == 0 {
			t.Fatalf("other: %+v, want a reservation", r)
		}
	case r := <-greedyRes:
		t.Fatalf("greedy served first: %+v", r)
	case <-time.After(5 * time.Second):
		t.Fatal("other still waiting with room for it: it let greedy, past its share, go first")
	}
}

// A function with no measured sandbox of its own is charged like the
// functions with its packages (its kin), one sandbox at a time, so a
// deploy of many functions does not wait for room each charged its full
// limit; its own first peak then replaces its kin's. Another kin, a
// second sandbox while the first is unmeasured, one after a sandbox went
// unmeasured, or ChargeDeclared, keeps the limit.
func TestNewFunctionChargedLikeKin(t *testing.T) {
	fn := func(name string, mb int, reqs ...string) registry.Function {
		f := testFn(name, mb)
		f.Spec.Requirements = reqs
		return f
	}
	c := newTestCache(t, 4096*mib, PoolConfig{})
	admit := func(f registry.Function) (*instance, pool.ID, int64) {
		t.Helper()
		inst, id, err := c.take(context.Background(), f)
		if err != nil || inst != nil || id == 0 {
			t.Fatalf("take %s: %v %v %v, want a reservation", f.Name, inst, id, err)
		}
		size, err := c.e.Size(id)
		if err != nil {
			t.Fatal(err)
		}
		inst = &instance{id: f.Name, fn: f.Name, rev: f.Revision, declared: int64(f.Spec.MemoryMB) * mib}
		c.bind(id, inst, time.Millisecond)
		return inst, id, size >> 20
	}
	a, _, size := admit(fn("a", 192, "numpy", "Pillow"))
	if size != 192 {
		t.Fatalf("first of its kin charged %d MiB, want its limit 192", size)
	}
	c.notePeak(a, 40*mib)
	b, _, size := admit(fn("b", 160, "Pillow", "numpy"))
	if size != 50 {
		t.Errorf("b, a's kin, charged %d MiB, want a's start charge 50 (peak 40 + 8)", size)
	}
	if _, _, size := admit(fn("b", 160, "Pillow", "numpy")); size != 160 {
		t.Errorf("b's second sandbox, the first unmeasured, charged %d MiB, want its limit", size)
	}
	if _, _, size := admit(fn("c", 160)); size != 160 {
		t.Errorf("c, no requirements, charged %d MiB, want its limit", size)
	}
	if _, _, size := admit(fn("d", 160, "numpy")); size != 160 {
		t.Errorf("d, numpy alone, charged %d MiB, want its limit", size)
	}

	// a's peak rises: so does its kin's charge.
	c.notePeak(a, 150*mib)
	if _, _, size := admit(fn("e", 256, "numpy", "Pillow")); size != 187 {
		t.Errorf("e after a's peak of 150 MiB charged %d MiB, want 187 (and a quarter)", size)
	}
	// A trial that fails unmeasured: its function pays its limit.
	_, fid, _ := admit(fn("f", 256, "numpy", "Pillow"))
	c.abort(fid)
	if _, _, size := admit(fn("f", 256, "numpy", "Pillow")); size != 256 {
		t.Errorf("f after its first start failed charged %d MiB, want its limit", size)
	}
	// Measured, b is charged its own peak.
	c.notePeak(b, 10*mib)
	if _, _, size := admit(fn("b", 160, "Pillow", "numpy")); size != 18 {
		t.Errorf("b after its own peak of 10 MiB charged %d MiB, want 18", size)
	}
	// A function first seen by a pre-warm learns its kin at its first call.
	h := &instance{id: "h", fn: "h", rev: "r1", declared: 256 * mib}
	if !c.warm(h, time.Millisecond) {
		t.Fatal("pre-warm refused")
	}
	if got, _, err := c.take(context.Background(), fn("h", 256, "numpy", "Pillow")); err != nil || got != h {
		t.Fatalf("take h: %v %v", got, err)
	}
	hStart := func() int64 {
		for _, sc := range c.charges() {
			if sc.Function == "h" {
				return sc.Start >> 20
			}
		}
		return -1
	}
	if got := hStart(); got != 187 {
		t.Errorf("h, pre-warmed, then called: start charge %d MiB, want its kin's 187", got)
	}
	// a retired and gone: its kin's highest peak is b's.
	c.retire("a", "r1")
	c.forget(a)
	if got := hStart(); got != 18 {
		t.Errorf("h after a went: start charge %d MiB, want b's 18", got)
	}
	if _, _, size := admit(fn("g", 160, "numpy", "Pillow")); size != 18 {
		t.Errorf("g after a went charged %d MiB, want b's 18", size)
	}

	dc := newTestCache(t, 2048*mib, PoolConfig{Charge: ChargeDeclared})
	da := fakeStart(t, dc, fn("a", 192, "numpy"))
	dc.notePeak(da, 40*mib)
	_, id, err := dc.take(context.Background(), fn("b", 160, "numpy"))
	if err != nil || id == 0 {
		t.Fatal(err)
	}
	if size, _ := dc.e.Size(id); size != 160*mib {
		t.Errorf("declared charge: a's kin charged %d MiB, want its limit", size>>20)
	}
}

// A request that does not fit lets younger ones that do pass it, for
// PoolConfig.PassLimit: past it they wait behind it, so that memory
// freed piecemeal does not go to small requests for as long as they come
// while a larger one waits. With no bound (0) the younger one
// passes whenever it fits.
func TestCachePassLimit(t *testing.T) {
	for _, limit := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second, PassLimit: limit})
			var busy []*instance
			for i := range 3 {
				busy = append(busy, fakeStart(t, c, testFn(fmt.Sprintf("busy%d", i), 100)))
			}
			bigRes := takeAsync(c, testFn("big", 150))
			waitQueued(t, c, 1)
			smallRes := takeAsync(c, testFn("small", 50))
			waitQueued(t, c, 2)
			time.Sleep(2 * max(limit, 0)) // big has waited past the limit
			// 100 MB come free: room for small, not for big.
			fakePark(t, c, busy[0], 100*mib)
			if limit == 0 {
				select {
				case r := <-smallRes:
					if r.err != nil || r.id == 0 {
						t.Fatalf("small: %+v, want a reservation", r)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("small still waiting with room for it and no pass limit")
				}
				return
			}
			select {
			case r := <-smallRes:
				t.Fatalf("small passed big, which had waited past the pass limit: %+v", r)
			case r := <-bigRes:
				t.Fatalf("big served with 100 MB free: %+v", r)
			case <-time.After(300 * time.Millisecond):
			}
			// 200 MB: big first, then small in what is left.
			fakePark(t, c, busy[1], 100*mib)
			for _, ch := range []<-chan takeResult{bigRes, smallRes} {
				select {
				case r := <-ch:
					if r.err != nil || r.id == 0 {
						t.Fatalf("%+v, want a reservation", r)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("still waiting with room")
				}
			}
		})
	}
}

// A request held back by a passed one looks again on its own: what holds
// it can end without a signal. Here the passed request, of a function
// that was the only one waiting, holds the new one back; once that one
// waits too, the passed one's function is over its share and yields, and
// the new one takes the room that was free all along.
func TestCacheHeldLooksAgain(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second, PassLimit: 50 * time.Millisecond})
	f, h := testFn("f", 150), testFn("h", 100)
	fakeStart(t, c, f)
	fakeStart(t, c, h) // 250 of 300 MB busy
	fRes := takeAsync(c, f)
	waitQueued(t, c, 1)
	time.Sleep(100 * time.Millisecond) // f's request is past the pass limit
	gRes := takeAsync(c, testFn("g", 50))
	select {
	case r := <-gRes:
		if r.err != nil || r.id == 0 {
			t.Fatalf("g: %+v, want a reservation", r)
		}
	case r := <-fRes:
		t.Fatalf("f served with 50 MB free: %+v", r)
	case <-time.After(2 * time.Second):
		t.Fatal("g still waiting with room for it, held by a request that yields")
	}
}

// A passed request holds the younger ones back for PassHold only: one
// still short of room then waits for memory that does not come free
// soon, and the others pass it again.
func TestCachePassHoldEnds(t *testing.T) {
	c := newTestCache(t, 300*mib, PoolConfig{OnDrop: DropQueue, DropWait: 10 * time.Second, PassLimit: 50 * time.Millisecond})
	for i := range 2 {
		fakeStart(t, c, testFn(fmt.Sprintf("busy%d", i), 100))
	}
	long := fakeStart(t, c, testFn("long", 100)) // 300 of 300 MB busy
	bigRes := takeAsync(c, testFn("big", 250))
	waitQueued(t, c, 1)
	c.mu.Lock()
	var since time.Time // big's, from which its pass limit and hold run
	for _, q := range c.queue {
		since = q.since
	}
	c.mu.Unlock()
	time.Sleep(100 * time.Millisecond) // big is past the pass limit
	fakePark(t, c, long, 100*mib)      // 100 MB come free: not enough for big
	smallRes := takeAsync(c, testFn("small", 50))
	// Measured from big's own queueing, not from small's request, so
	// that a test thread slowed on a busy host does not eat into the
	// hold it checks.
	holdEnd := 50*time.Millisecond + passHold
	select {
	case r := <-smallRes:
		if r.err != nil || r.id == 0 {
			t.Fatalf("small: %+v, want a reservation", r)
		}
		if d := time.Since(since); d < holdEnd {
			t.Errorf("small took the room %v after big queued, while big held it (until %v)", d, holdEnd)
		}
	case r := <-bigRes:
		t.Fatalf("big served with 100 MB free: %+v", r)
	case <-time.After(passHold + 4*time.Second):
		t.Fatal("small still waiting after big's hold ended")
	}
}

// A passed request charged more than its pool holds waits for memory it
// must borrow from another pool, which the younger requests of its own
// do not hold: it holds none of them back.
func TestCacheBorrowerHoldsNoOne(t *testing.T) {
	c := newTestCache(t, 1000*mib, PoolConfig{Fractions: []float64{0.8, 0.2}, OnDrop: DropQueue,
		DropWait: 10 * time.Second, PassLimit: 50 * time.Millisecond})
	fakeStart(t, c, testFn("large", 200)) // the 200 MB pool is full
	hugeRes := takeAsync(c, testFn("huge", 900))
	waitQueued(t, c, 1)
	time.Sleep(100 * time.Millisecond) // huge is past the pass limit
	res := takeAsync(c, testFn("small", 100))
	select {
	case r := <-res:
		if r.err != nil || r.id == 0 {
			t.Fatalf("small: %+v, want a reservation", r)
		}
	case r := <-hugeRes:
		t.Fatalf("huge served with the large pool busy: %+v", r)
	case <-time.After(500 * time.Millisecond):
		t.Fatal("small held back by a request that waits for another pool's memory")
	}
}
