package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

// slowInit is a handler with numpy and a 1 s init. It leaves a file in
// /tmp at import; its answer shows whether the init ran in this process
// (t0, the import time), the state the init built, a counter, random draws
// that restored copies must not share, and the after-restore hooks run.
const slowInit = `import time, random, os
import numpy
import hearth_snapshot
T0 = time.time()
time.sleep(1.0)
DATA = numpy.arange(1000000, dtype=numpy.int64)
with open("/tmp/init.txt", "w") as fh:
    fh.write(repr(T0))
N = 0
HOOKS = []

@hearth_snapshot.after_restore
def _hook():
    HOOKS.append(hearth_snapshot.restores)

def f(event, ctx):
    global N
    N += 1
    with open("/tmp/init.txt") as fh:
        t0_file = float(fh.read())
    return {"n": N, "sum": int(DATA.sum()), "t0": T0, "t0_file": t0_file,
            "r": random.random(), "np": float(numpy.random.random()), "hooks": HOOKS,
            "procfs": sorted(os.listdir("/proc/fs")),
            "disks": [open("/proc/" + n).read() for n in ("diskstats", "partitions")]}
`

type slowAnswer struct {
	N      int      `json:"n"`
	Sum    int64    `json:"sum"`
	T0     float64  `json:"t0"`
	T0File float64  `json:"t0_file"`
	R      float64  `json:"r"`
	NP     float64  `json:"np"`
	Hooks  []int    `json:"hooks"`
	ProcFS []string `json:"procfs"`
	Disks  []string `json:"disks"`
}

type snapshotList struct {
	Enabled   bool   `json:"enabled"`
	Off       string `json:"off"`
	Snapshots []struct {
		Key      string    `json:"key"`
		Function string    `json:"function"`
		Revision string    `json:"revision"`
		Bytes    int64     `json:"bytes"`
		Created  time.Time `json:"created"`
		LastUse  time.Time `json:"last_use"`
		Local    bool      `json:"local"`
	} `json:"snapshots"`
}

func (w *worker) snapshots() snapshotList {
	w.t.Helper()
	resp, err := w.get("/v1/snapshots")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l snapshotList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || resp.StatusCode != http.StatusOK {
		w.t.Fatalf("GET /v1/snapshots: %d %v", resp.StatusCode, err)
	}
	return l
}

// needSnapshots skips the test, naming the reason, when the worker's CRIU
// probe found that this host cannot snapshot (a host limit), and fails it
// when snapshots are off for any other reason.
func (w *worker) needSnapshots() {
	w.t.Helper()
	l := w.snapshots()
	if l.Enabled {
		return
	}
	if strings.Contains(l.Off, criu.ErrSelfTest.Error()) || strings.Contains(l.Off, criu.ErrCheck.Error()) {
		w.t.Skipf("host limit: the worker's CRIU probe failed: %s", l.Off)
	}
	w.t.Fatalf("snapshots off: %s", l.Off)
}

// waitSnapshot waits until function name has a snapshot created after
// since, and returns its key.
func (w *worker) waitSnapshot(name string, since time.Time) string {
	w.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range w.snapshots().Snapshots {
			if s.Function == name && s.Created.After(since) && s.Bytes > 0 && s.Local {
				return s.Key
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("no snapshot of %s after %s; log:\n%s", name, since, tail(w.out.String(), 30))
	return ""
}

func (w *worker) del(path string) int {
	w.t.Helper()
	resp, err := w.do(http.MethodDelete, path, "", nil)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (w *worker) metric(name string) string {
	w.t.Helper()
	resp, err := w.get("/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return strings.TrimPrefix(l, name+" ")
		}
	}
	return ""
}

func decodeSlow(t *testing.T, body []byte) slowAnswer {
	t.Helper()
	var a slowAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if a.Sum != 499999500000 || a.T0File != a.T0 {
		t.Errorf("init state lost: %s", body)
	}
	return a
}

// TestSnapshotLifecycle: a slow-init function is snapshotted after its
// first call; later starts restore it with its state and without
// re-running the init, two concurrent restores draw different numbers, a
// corrupt snapshot falls back and is deleted, a restart keeps the cache,
// and `hearth snapshot create` snapshots on demand.
// hostNet puts a function in the host's network namespace, which the
// worker must allow: its snapshots carry no network namespace, those of
// the default network (isolated) restore into a fresh one.
const hostNet = "network: host\n"

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSnapshotLifecycle(t *testing.T) {
	// Budget for two 256 MB sandboxes at once in the large pool.
	w := startWorker(t, "--no-warm-cache", "--warm-budget-mb", "4096", "--allow-host-network")
	w.needSnapshots()
	if l := w.snapshots(); !l.Enabled || len(l.Snapshots) != 0 {
		t.Fatalf("fresh worker: %+v, want enabled and empty", l)
	}
	w.deployDir("slow", fn(t, "f.py", slowInit, "requirements.txt", "numpy\n",
		"function.yaml", "memory_mb: 256\nsnapshot: always\n"))
	t0 := time.Now()
	first := w.mustInvoke("slow", "{}")
	if first.Path == "snapshot" || first.InitMs < 1000 {
		t.Fatalf("first call: path %s init %.1f ms, want a fresh start with the 1 s init", first.Path, first.InitMs)
	}
	a0 := decodeSlow(t, first.Body)
	key := w.waitSnapshot("slow", t0)

	// Two restores at once: the same init, not re-run, different draws.
	var wg sync.WaitGroup
	invs := make([]slowAnswer, 2)
	paths := make([]string, 2)
	inits := make([]float64, 2)
	for i := range invs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := w.invoke("slow", "{}")
			if err != nil {
				t.Errorf("invoke: %v", err)
				return
			}
			invs[i], paths[i], inits[i] = decodeSlow(t, inv.Body), inv.Path, inv.InitMs
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, a := range invs {
		// That the init did not run again is checked below (its T0); the
		// time only has to beat the fresh start's in the same run, since
		// a busy host slows restores too.
		if paths[i] != "snapshot" || inits[i] >= first.InitMs {
			t.Errorf("restore %d: path %s init %.1f ms, want a snapshot faster than the fresh start's %.1f ms", i, paths[i], inits[i], first.InitMs)
		}
		if a.N != 1 || a.T0 == a0.T0 || a.T0 != invs[0].T0 || len(a.Hooks) != 1 || a.Hooks[0] != 1 {
			t.Errorf("restore %d: %+v; want n 1, the snapshot's init time (not %v, same in both), hooks [1]", i, a, a0.T0)
		}
		// The mask over /proc/fs (the host's file systems' state) comes
		// back with the restored mounts.
		if a.ProcFS == nil || len(a.ProcFS) != 0 {
			t.Errorf("restore %d: /proc/fs shows %v, want it empty", i, a.ProcFS)
		}
		if len(a.Disks) != 2 || a.Disks[0] != "" || a.Disks[1] != "" {
			t.Errorf("restore %d: /proc/diskstats and /proc/partitions show %q, want both empty", i, a.Disks)
		}
	}
	if invs[0].R == invs[1].R || invs[0].NP == invs[1].NP {
		t.Errorf("two restores share PRNG state: %+v %+v", invs[0], invs[1])
	}

	// `hearth snapshot create` snapshots a function on demand; never
	// means never.
	w.deployDir("hello", fn(t, "f.py", readFile(t, "../examples/hello/f.py"), "function.yaml", hostNet))
	if out, err := w.hearth("snapshot", "create", "hello"); err != nil || !strings.Contains(out, "snapshot hello-") {
		t.Fatalf("snapshot create hello: %v\n%s", err, out)
	}
	if inv := w.mustInvoke("hello", `{"name":"x"}`); inv.Path != "snapshot" {
		t.Errorf("hello after snapshot create: path %s, want snapshot", inv.Path)
	}
	// DELETE drops it: the next start is fresh (and hello's short init
	// makes no new one).
	var helloKey string
	for _, s := range w.snapshots().Snapshots {
		if s.Function == "hello" {
			helloKey = s.Key
		}
	}
	if code := w.del("/v1/snapshots/" + helloKey); code != http.StatusNoContent {
		t.Errorf("DELETE snapshot %q: %d", helloKey, code)
	}
	if code := w.del("/v1/snapshots/" + helloKey); code != http.StatusNotFound {
		t.Errorf("second DELETE snapshot %q: %d, want 404", helloKey, code)
	}
	if inv := w.mustInvoke("hello", `{"name":"x"}`); inv.Path == "snapshot" {
		t.Errorf("hello restored a deleted snapshot")
	}
	w.deployDir("never", fn(t, "f.py", "def f(e):\n    return 1\n", "function.yaml", "snapshot: never\n"))
	if out, err := w.hearth("snapshot", "create", "never"); err == nil || !strings.Contains(out, "NotSnapshottable") {
		t.Errorf("snapshot create of a snapshot: never function: %v\n%s", err, out)
	}
	if out, err := w.hearth("snapshot", "create", "nosuch"); err == nil || !strings.Contains(out, "404") && !strings.Contains(out, "NotFound") {
		t.Errorf("snapshot create of a missing function: %v\n%s", err, out)
	}

	// A restart keeps the cache: the first call restores.
	w.stop()
	w.start()
	if inv := w.mustInvoke("slow", "{}"); inv.Path != "snapshot" {
		t.Errorf("after restart: path %s, want snapshot", inv.Path)
	}

	// Corrupt a memory image: the next start falls back, the snapshot is
	// deleted (then made again, as the function says always).
	imgs, _ := filepath.Glob(filepath.Join(w.dataDir, "snapshots", key, "images", "pages-*.img"))
	if len(imgs) == 0 {
		t.Fatalf("no page images in snapshot %s", key)
	}
	f, err := os.OpenFile(imgs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupt!"), 4096)
	f.Close()
	t1 := time.Now()
	inv := w.mustInvoke("slow", "{}")
	if inv.Path == "snapshot" {
		t.Errorf("corrupt snapshot restored")
	}
	if a := decodeSlow(t, inv.Body); a.N != 1 {
		t.Errorf("fallback answer %+v", a)
	}
	if got := w.metric("hearth_snapshot_corrupt_total"); got != "1" {
		t.Errorf("hearth_snapshot_corrupt_total %q, want 1", got)
	}
	w.waitSnapshot("slow", t1) // a new one replaced it
	if inv := w.mustInvoke("slow", "{}"); inv.Path != "snapshot" {
		t.Errorf("after re-creation: path %s, want snapshot", inv.Path)
	}

	// A new revision never restores the old one, whose snapshot goes.
	w.deployDir("slow", fn(t, "f.py", slowInit+"\n# v2\n", "requirements.txt", "numpy\n",
		"function.yaml", "memory_mb: 256\nsnapshot: always\n"))
	if inv := w.mustInvoke("slow", "{}"); inv.Path == "snapshot" {
		t.Errorf("new revision restored the old revision's snapshot")
	}
	for _, s := range w.snapshots().Snapshots {
		if s.Key == key {
			t.Errorf("old revision's snapshot %s kept after the deploy", key)
		}
	}
}

// The sandbox a snapshot is dumped from starts at the lowest CPU weight,
// as a spare does: its whole cold start is background work, no call's.
func TestSnapshotSourceYields(t *testing.T) {
	w := startWorker(t, "--no-warm-cache")
	w.needSnapshots()
	w.deployDir("slow", fn(t, "f.py", slowInit, "requirements.txt", "numpy\n",
		"function.yaml", "memory_mb: 256\nsnapshot: always\n"))
	t0 := time.Now()
	w.mustInvoke("slow", "{}")
	// The source's init sleeps a second: long enough to be seen.
	var share string
	for deadline := time.Now().Add(20 * time.Second); share == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, s := range w.status().Sandboxes {
			if s.Function != "slow" || s.State != "snapshotting" || len(s.Pids) == 0 {
				continue
			}
			share = cpuShare(t, s.Pids[0])
		}
	}
	// v1 cpu.shares of weight 1 (1024 per 100, at least 2), or v2 cpu.weight.
	if share != "10" && share != "1" {
		t.Errorf("the snapshot source's CPU weight %q, want the lowest (cpu.shares 10 or cpu.weight 1)", share)
	}
	w.waitSnapshot("slow", t0)
}

// cpuShare reads the CPU weight of pid's cgroup: cpu.shares on v1,
// cpu.weight on v2 ("" if pid is gone).
func cpuShare(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	// The v1 cpu controller's line, else (v2) the unified one.
	path := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case slices.Contains(strings.Split(f[1], ","), "cpu"):
			path = f[2]
		case f[1] == "" && path == "":
			path = f[2]
		}
	}
	if path == "" {
		return ""
	}
	dir := cpuDir(t, path)
	for _, name := range []string{"cpu.shares", "cpu.weight"} {
		if v, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}

// TestNoSnapshots: with --no-snapshots nothing is snapshotted or
// restored, and the status says so.
func TestNoSnapshots(t *testing.T) {
	w := startWorker(t, "--no-snapshots", "--no-warm-cache")
	st, err := w.c.Status(context.Background())
	if err != nil || st.Tiers.Snapshots {
		t.Fatalf("status tiers %+v (%v), want snapshots off", st.Tiers, err)
	}
	w.deployDir("quick", fn(t, "f.py", "import time\ntime.sleep(0.2)\ndef f(e):\n    return 1\n",
		"function.yaml", "snapshot: always\n"))
	for i := 0; i < 3; i++ {
		if inv := w.mustInvoke("quick", "{}"); inv.Path == "snapshot" {
			t.Errorf("call %d restored a snapshot with --no-snapshots", i)
		}
	}
	if l := w.snapshots(); l.Enabled || len(l.Snapshots) != 0 {
		t.Errorf("/v1/snapshots %+v, want disabled and empty", l)
	}
	if out, err := w.hearth("snapshot", "create", "quick"); err == nil || !strings.Contains(out, "SnapshotsOff") {
		t.Errorf("snapshot create with snapshots off: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(w.dataDir, "snapshots")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(w.dataDir, "snapshots"))
		if len(entries) > 0 {
			t.Errorf("snapshot files made with --no-snapshots: %v", entries)
		}
	}
}

// TestSnapshotRemoteRoundTrip: worker A snapshots a function into a
// shared S3 store; worker B, with its own data dir, restores it on its
// first call without ever running the init, and caches it.
func TestSnapshotRemoteRoundTrip(t *testing.T) {
	srv := snaptest.StartS3(t)
	cfg := writeConfig(t, fmt.Sprintf("snapshot:\n  s3:\n    endpoint: %q\n    bucket: e2e\n    access_key: %q\n    secret_key: %q\n",
		srv.Endpoint, srv.Access, srv.Secret))
	files := []string{"f.py", slowInit, "requirements.txt", "numpy\n", "function.yaml", "memory_mb: 256\nsnapshot: always\n"}
	a := startWorker(t, "--no-warm-cache", "--config", cfg)
	a.needSnapshots()
	a.deployDir("slow", fn(t, files...))
	// Synchronous: stored and uploaded when it answers.
	if out, err := a.hearth("snapshot", "create", "slow"); err != nil {
		t.Fatalf("snapshot create: %v\n%s", err, out)
	}
	ra := decodeSlow(t, a.mustInvoke("slow", "{}").Body)

	b := startWorker(t, "--no-warm-cache", "--config", cfg)
	b.deployDir("slow", fn(t, files...))
	for i := 0; i < 2; i++ { // a download, then the cached copy
		inv := b.mustInvoke("slow", "{}")
		if inv.Path != "snapshot" || inv.InitMs > 1000 {
			t.Errorf("worker B call %d: path %s init %.1f ms, want a snapshot restore", i, inv.Path, inv.InitMs)
		}
		if rb := decodeSlow(t, inv.Body); rb.T0 != ra.T0 || rb.N != 1 {
			t.Errorf("worker B call %d: %+v, want the init of A's snapshot (t0 %v)", i, rb, ra.T0)
		}
	}
	if got := b.metric(`hearth_snapshot_hits_total{where="remote"}`); got != "1" {
		t.Errorf("worker B remote hits %q, want 1", got)
	}
	if l := b.snapshots(); len(l.Snapshots) != 1 || !l.Snapshots[0].Local {
		t.Errorf("worker B cache %+v, want the fetched snapshot", l)
	}
}
