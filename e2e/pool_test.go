package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
	hw "github.com/hearth-run/hearth/internal/worker"
)

// holder keeps about 60 MB resident for the sandbox's life, so its
// measured (frozen) size is well known: above 300/5 MB and below 300/3.5.
const holder = `
X = b"x" * (60 << 20)

def f(e):
    return len(X)
`

const sleeper = `
import time

def f(e):
    time.sleep(e.get("s", 0))
    return "slept"
`

func (w *worker) status() hw.Status {
	w.t.Helper()
	st, err := w.c.Status(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return st
}

func poolNamed(t *testing.T, st hw.Status, name string) hw.PoolStatus {
	t.Helper()
	for _, p := range st.Pools {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pool %q in status: %+v", name, st.Pools)
	return hw.PoolStatus{}
}

// waitPaused waits until every live sandbox is paused and charged at its
// measured size, so the pool's figures are settled.
func (w *worker) waitPaused() hw.Status {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := w.status()
		ok := true
		for _, s := range st.Sandboxes {
			ok = ok && s.State == "paused"
		}
		var idle, used int64
		for _, p := range st.Pools {
			idle += int64(p.IdleSandboxes)
			used += int64(p.Sandboxes)
		}
		if ok && int64(len(st.Sandboxes)) == used && idle == used {
			return st
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("sandboxes did not settle paused: %+v %+v", st.Sandboxes, st.Pools)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *worker) metrics() string {
	w.t.Helper()
	resp, err := w.get("/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func sandboxesOf(st hw.Status, fn string) int {
	n := 0
	for _, s := range st.Sandboxes {
		if s.Function == fn {
			n++
		}
	}
	return n
}

func TestWarmPoolEvictsLRUAndReports(t *testing.T) {
	// Charged memory_mb until paused, so that a new sandbox's charge does
	// not depend on what its function's last sandboxes were measured to
	// take (TestWarmPoolStartChargeIsMeasuredPeak).
	events := filepath.Join(t.TempDir(), "pool.csv")
	w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 300\npools: unified\npolicy: lru\npool_charge: declared\npool_events: "+events+"\n"))
	for _, n := range []string{"a", "b", "c", "d"} {
		// No snapshots: whether a restore beats a fresh start depends on
		// the machine's load, and this test wants the fresh starts.
		w.deployDir(n, fn(t, "f.py", holder, "function.yaml", "memory_mb: 128\nsnapshot: never\n"))
	}
	// Three paused holders (~3 × 70 MB) fit; the fourth cold start needs
	// its declared 128 MB and so evicts the least recently used, a.
	for _, n := range []string{"a", "b", "c", "d"} {
		if inv := w.mustInvoke(n, "{}"); !fresh(inv.Path) {
			t.Fatalf("first call of %s: path %s", n, inv.Path)
		}
		w.waitPaused()
	}
	st := w.waitPaused()
	p := poolNamed(t, st, "unified")
	if p.Evictions != 1 || sandboxesOf(st, "a") != 0 || sandboxesOf(st, "b") != 1 {
		t.Fatalf("after 4 cold starts: evictions %d, sandboxes %+v, want a evicted", p.Evictions, st.Sandboxes)
	}
	if p.Capacity != 300<<20 || p.Used > p.Capacity || p.Used < 3*60<<20 {
		t.Errorf("pool used %d of %d, want three measured holders", p.Used, p.Capacity)
	}
	// b is warm; a starts again and evicts c, now the least recently used.
	if inv := w.mustInvoke("b", "{}"); inv.Path != "warm" {
		t.Errorf("b: path %s, want warm", inv.Path)
	}
	if inv := w.mustInvoke("a", "{}"); !fresh(inv.Path) {
		t.Errorf("a after eviction: path %s, want a fresh start", inv.Path)
	}
	st = w.waitPaused()
	p = poolNamed(t, st, "unified")
	if p.Evictions != 2 || sandboxesOf(st, "c") != 0 || sandboxesOf(st, "b")+sandboxesOf(st, "d")+sandboxesOf(st, "a") != 3 {
		t.Errorf("second eviction: evictions %d, sandboxes %+v, want c evicted", p.Evictions, st.Sandboxes)
	}
	if p.Hits != 1 || p.Misses != 5 || p.Drops != 0 {
		t.Errorf("hits %d misses %d drops %d, want 1 5 0", p.Hits, p.Misses, p.Drops)
	}
	m := w.metrics()
	for _, want := range []string{
		`hearth_pool_evictions_total{pool="unified"} 2`,
		`hearth_pool_hits_total{pool="unified"} 1`,
		`hearth_pool_misses_total{pool="unified"} 5`,
		`hearth_pool_capacity_bytes{pool="unified"} 3.145728e+08`,
		fmt.Sprintf(`hearth_pool_used_bytes{pool="unified"} %g`, float64(p.Used)),
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The pool's event log, complete once the worker stops: the same
	// story, and each release followed by the sandbox's measured charge.
	w.stop()
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 0 || lines[0] != strings.TrimSpace(pool.EventHeader) {
		t.Fatalf("pool events: header %q", lines[:min(1, len(lines))])
	}
	var story []string
	last := map[string]string{} // sandbox id -> its last op
	for i, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) != 7 {
			t.Fatalf("pool events line %d: %q", i+2, l)
		}
		op, name, id := f[1], f[2], f[4]
		switch op {
		case "admit", "hit", "evict":
			story = append(story, op+" "+name)
		}
		if last[id] == "release" && op != "resize" {
			t.Errorf("line %d: %s released without its measured charge, then %s", i+2, name, op)
		}
		last[id] = op
	}
	want := "admit a,admit b,admit c,evict a,admit d,hit b,evict c,admit a"
	if got := strings.Join(story, ","); got != want {
		t.Errorf("pool events: %s, want %s", got, want)
	}
}

// invokeRaw calls a function over plain HTTP, to see the headers.
func (w *worker) invokeRaw(name, event string) (*http.Response, string) {
	w.t.Helper()
	resp, err := w.post("/v1/functions/"+name+"/invoke", "application/json", strings.NewReader(event))
	if err != nil {
		w.t.Error(err)
		return nil, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// concurrently makes n calls at once and returns their status codes and
// Retry-After headers, in completion order.
func (w *worker) concurrently(n int, name, event string) (codes []int, retry []string, bodies []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := w.invokeRaw(name, event)
			if resp == nil {
				return
			}
			mu.Lock()
			codes = append(codes, resp.StatusCode)
			retry = append(retry, resp.Header.Get("Retry-After"))
			bodies = append(bodies, body)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return codes, retry, bodies
}

func count(xs []int, x int) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

// TestWarmPoolStartChargeIsMeasuredPeak: once a function's sandbox has
// been measured, a new one is charged that peak (with its margin), not
// memory_mb, so four concurrent calls fit where two 128 MB sandboxes
// would fill the pool; charged memory_mb (the control), one is refused.
// So do the first calls of functions with the same requirements (its
// kin), never measured themselves.
func TestWarmPoolStartChargeIsMeasuredPeak(t *testing.T) {
	for _, charge := range []string{"peak", "declared"} {
		t.Run(charge, func(t *testing.T) {
			w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 300\npools: unified\non_drop: reject\npool_charge: "+charge+"\n"))
			w.deployDir("slow", fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 128\nmax_concurrency: 8\n"))
			st := w.status()
			if st.Charge != charge {
				t.Errorf("status charge %q, want %q", st.Charge, charge)
			}
			w.mustInvoke("slow", "{}")
			st = w.waitPaused()
			var sc hw.StartCharge
			for _, c := range st.Charges {
				if c.Function == "slow" {
					sc = c
				}
			}
			if sc.Declared != 128<<20 {
				t.Fatalf("charges %+v: slow's declared %d, want 128 MiB", st.Charges, sc.Declared)
			}
			if charge == "peak" {
				want := min(sc.Declared, sc.Peak+max(sc.Peak/4, 8<<20))
				t.Logf("start charge %+v", sc)
				if sc.Peak <= 0 || sc.Start != want || sc.Start > 64<<20 {
					t.Fatalf("start charge %+v, want the measured peak plus its margin, at most 64 MiB", sc)
				}
			} else if sc.Start != sc.Declared || sc.Peak <= 0 {
				t.Fatalf("start charge %+v, want memory_mb, and the peak noted", sc)
			}
			codes, _, bodies := w.concurrently(4, "slow", `{"s": 1}`)
			switch refused := count(codes, 503); {
			case count(codes, 200)+refused != 4:
				t.Fatalf("codes %v, want 200 or 503; %q", codes, bodies)
			case charge == "peak" && refused != 0:
				t.Errorf("charged the peak (%d MiB), %d of 4 concurrent calls refused: %q", sc.Start>>20, refused, bodies)
			case charge == "declared" && refused == 0:
				t.Errorf("charged memory_mb, all 4 concurrent calls fit in 300 MB: %v", codes)
			}
			st = w.waitPaused()
			if p := poolNamed(t, st, "unified"); p.Used > p.Capacity {
				t.Errorf("pool %+v over its capacity once paused", p)
			}

			// Functions never called, with slow's requirements (none), are
			// charged like slow under peak, one sandbox each at a time:
			// the first calls of three of them fit.
			var mu sync.Mutex
			var wg sync.WaitGroup
			codes = nil
			for _, name := range []string{"kin1", "kin2", "kin3"} {
				w.deployDir(name, fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 128\n"))
			}
			for _, name := range []string{"kin1", "kin2", "kin3"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if resp, _ := w.invokeRaw(name, `{"s": 1}`); resp != nil {
						mu.Lock()
						codes = append(codes, resp.StatusCode)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			switch refused := count(codes, 503); {
			case count(codes, 200)+refused != 3:
				t.Fatalf("kin: codes %v, want 200 or 503", codes)
			case charge == "peak" && refused != 0:
				t.Errorf("kin: charged like slow, %d of 3 first calls refused", refused)
			case charge == "declared" && refused == 0:
				t.Errorf("kin: charged memory_mb, all 3 first calls fit in 300 MB: %v", codes)
			}
			w.waitPaused()
		})
	}
}

// TestWarmPoolReleaseChargesMeasured: a request waiting for memory in a
// pool full of busy sandboxes, each charged memory_mb, gets the room of
// the first to finish without evicting it. Released, that sandbox is
// charged what it holds (a sleeper: a few MiB) before the waiting
// request looks; charged its 128 MB until its pause measured it, it was
// evicted for room it did not take.
func TestWarmPoolReleaseChargesMeasured(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 300\npools: unified\npolicy: lru\npool_charge: declared\n"))
	for _, n := range []string{"a", "b", "c"} {
		w.deployDir(n, fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 128\nsnapshot: never\n"))
	}
	var wg sync.WaitGroup
	call := func(name, event string) {
		defer wg.Done()
		if _, err := w.invoke(name, event); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	wg.Add(2)
	go call("a", `{"s": 1}`)
	go call("b", `{"s": 4}`)
	// c comes once a and b are both charged: it waits for a to end.
	deadline := time.Now().Add(3 * time.Second)
	for poolNamed(t, w.status(), "unified").Used < 256<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("a and b not both admitted: %+v", poolNamed(t, w.status(), "unified"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if inv, err := w.invoke("c", "{}"); err != nil {
		t.Fatalf("c: %v", err)
	} else if inv.Path == "warm" {
		t.Fatalf("c: path warm, want a start")
	}
	st := w.status()
	if p := poolNamed(t, st, "unified"); p.Evictions != 0 || sandboxesOf(st, "a") != 1 {
		t.Errorf("after c: %d evictions, %d sandboxes of a; want a kept (pool %+v)", p.Evictions, sandboxesOf(st, "a"), p)
	}
	wg.Wait()
}

func TestWarmPoolDropIs503WithRetryAfter(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 300\npools: unified\non_drop: reject\n"))
	w.deployDir("slow", fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 128\nmax_concurrency: 4\n"))
	// Two busy 128 MB sandboxes fill the pool: the third call is dropped.
	codes, retry, bodies := w.concurrently(3, "slow", `{"s": 1}`)
	if count(codes, 200) != 2 || count(codes, 503) != 1 {
		t.Fatalf("codes %v, want two 200 and one 503; bodies %q", codes, bodies)
	}
	for i, c := range codes {
		if c == 503 && (retry[i] == "" || !strings.Contains(bodies[i], "PoolFull") || !strings.Contains(bodies[i], "unified pool")) {
			t.Errorf("503 without Retry-After or a clear error: %q %q", retry[i], bodies[i])
		}
	}
	p := poolNamed(t, w.waitPaused(), "unified")
	if p.Drops != 1 || p.Misses != 2 {
		t.Errorf("drops %d misses %d, want 1 2", p.Drops, p.Misses)
	}
	if m := w.metrics(); !strings.Contains(m, `hearth_pool_drops_total{pool="unified"} 1`) {
		t.Errorf("/metrics lacks the drop")
	}
	// The pool is not stuck: a later call is served warm.
	if inv := w.mustInvoke("slow", "{}"); inv.Path != "warm" {
		t.Errorf("after the drop: path %s, want warm", inv.Path)
	}
}

func TestWarmPoolQueueWaitsBounded(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t,
		"warm_budget_mb: 300\npools: unified\non_drop: queue\ndrop_wait: 600ms\n"))
	w.deployDir("slow", fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 128\nmax_concurrency: 4\n"))
	w.deployDir("quick", fn(t, "f.py", sleeper, "function.yaml", "memory_mb: 160\nmax_concurrency: 4\n"))
	// Long calls: the third waits for memory, boundedly, and gets a 503.
	t0 := time.Now()
	codes, retry, bodies := w.concurrently(3, "slow", `{"s": 1.5}`)
	if count(codes, 200) != 2 || count(codes, 503) != 1 {
		t.Fatalf("bounded: codes %v, want two 200 and one 503; %q", codes, bodies)
	}
	for i, c := range codes {
		if c == 503 && (retry[i] == "" || !strings.Contains(bodies[i], "waited 600ms")) {
			t.Errorf("queued drop: Retry-After %q body %q", retry[i], bodies[i])
		}
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("calls took %s", d)
	}
	w.waitPaused()
	// Short calls of another function: two new sandboxes fill the pool
	// again (the paused ones are charged at their few measured MB): the
	// first charged like its kin slow (at most 64 MiB), the second its
	// 160 MB while the first is unmeasured; the third (160 MB) waits for
	// one to come free and runs on it, warm.
	codes, _, bodies = w.concurrently(3, "quick", `{"s": 0.3}`)
	if count(codes, 200) != 3 {
		t.Fatalf("queued: codes %v, want three 200; %q", codes, bodies)
	}
	if p := poolNamed(t, w.waitPaused(), "unified"); p.Drops != 1 || p.Misses != 4 || p.Hits != 1 {
		t.Errorf("hits %d misses %d drops %d, want 1 4 1", p.Hits, p.Misses, p.Drops)
	}
}

func TestWarmPoolPartitionsAndMeasuredMemory(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 1000\npools: 60/40\npool_threshold_mb: 225\n"))
	w.deployDir("tiny", fn(t, "f.py", "def f(e):\n    return 1\n", "function.yaml", "memory_mb: 128\n"))
	w.deployDir("big", fn(t, "f.py", "def f(e):\n    return 2\n", "function.yaml", "memory_mb: 256\n"))
	w.deployDir("huge", fn(t, "f.py", "def f(e):\n    return 3\n", "function.yaml", "memory_mb: 512\n"))
	w.mustInvoke("tiny", "{}")
	w.mustInvoke("big", "{}")
	// Larger than the large pool: it runs in the pool with the most
	// memory.
	if inv := w.mustInvoke("huge", "{}"); string(inv.Body) != "3" {
		t.Errorf("huge: body %s", inv.Body)
	}
	st := w.waitPaused()
	small, large := poolNamed(t, st, "small"), poolNamed(t, st, "large")
	if small.Capacity != 600<<20 || small.MaxSize != 225<<20 || large.Capacity != 400<<20 {
		t.Errorf("capacities %d/%d, small max %d", small.Capacity, large.Capacity, small.MaxSize)
	}
	if small.Misses != 2 || small.Sandboxes != 2 || large.Misses != 1 || large.Sandboxes != 1 || large.Drops != 0 {
		t.Errorf("routing: small %+v large %+v", small, large)
	}
	// Charged at the measured cgroup usage of frozen tiny handlers, not
	// the declared limits.
	for _, p := range []hw.PoolStatus{small, large} {
		if p.Used <= 0 || p.Used > int64(p.Sandboxes)*48<<20 {
			t.Errorf("pool %s charges %d bytes for %d tiny paused sandboxes, want measured (0, 48 MB] each", p.Name, p.Used, p.Sandboxes)
		}
	}
	t.Logf("measured: small %.1f MB, large %.1f MB", float64(small.Used)/(1<<20), float64(large.Used)/(1<<20))
	// Status shows each sandbox's private memory beside its charge: a
	// forked handler maps some pages alone, far fewer than a whole
	// interpreter (~30 MB for a fresh one).
	for _, sb := range st.Sandboxes {
		if sb.Private <= 0 || sb.Private > 16<<20 {
			t.Errorf("sandbox %s of %s: private %d bytes, want (0, 16 MB]", sb.ID, sb.Function, sb.Private)
		}
	}
}

func TestWarmPoolTTLExpiresEagerly(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "policy: ttl\nttl: 1s\n"))
	w.deployDir("brief", fn(t, "f.py", "def f(e):\n    return 1\n"))
	w.mustInvoke("brief", "{}")
	if st := w.waitPaused(); sandboxesOf(st, "brief") != 1 || st.Policy != "ttl" {
		t.Fatalf("after the call: %+v policy %s", st.Sandboxes, st.Policy)
	}
	// No other call comes: the sandbox must go by itself.
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := w.status()
		p := poolNamed(t, st, "small")
		if sandboxesOf(st, "brief") == 0 && p.Used == 0 && p.Expirations == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not expired 3s after a 1s ttl: %+v %+v", st.Sandboxes, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if inv := w.mustInvoke("brief", "{}"); !fresh(inv.Path) {
		t.Errorf("after expiry: path %s, want a fresh start", inv.Path)
	}
}

func TestWarmPoolHistPrewarms(t *testing.T) {
	// Short bins so the histogram fills in seconds: idle times of ~400 ms
	// fall in one 50 ms bin, the histogram is representative after four,
	// and a 50% margin pre-warms ~200 ms after each release.
	w := startWorker(t, "--config", writeConfig(t,
		"policy: hist\nhist:\n  bin: 50ms\n  range: 2s\n  min_samples: 4\n  margin: 0.5\n  fixed: 10s\n"))
	w.deployDir("periodic", fn(t, "f.py", "def f(e):\n    return 1\n"))
	var paths []string
	for range 8 {
		paths = append(paths, w.mustInvoke("periodic", "{}").Path)
		time.Sleep(400 * time.Millisecond)
	}
	p := poolNamed(t, w.status(), "small")
	// Once representative, every release unloads the sandbox at once and
	// a pre-warmed one takes the next call: without pre-warming those
	// calls would all start fresh.
	warm := 0
	for _, path := range paths[5:] {
		if path == "warm" {
			warm++
		}
	}
	t.Logf("paths %v; prewarms %d, expirations %d", paths, p.Prewarms, p.Expirations)
	if p.Prewarms < 2 || p.Expirations < 2 || warm < 2 {
		t.Errorf("paths %v, pool %+v: want pre-warmed warm calls after the 5th", paths, p)
	}
}
