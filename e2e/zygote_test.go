package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/packages/wheeltest"
)

// modulesProbe reports which of the interesting packages are imported in
// the handler's process before the handler itself imports anything.
const modulesProbe = `
import sys
LOADED = sorted(m for m in ("numpy", "requests", "PIL") if m in sys.modules)
def f(e):
    return LOADED
`

// nodeOf returns the node of tree that holds package pkg (a name) alone.
func nodeOf(tree types.ZygoteTree, pkg string) (types.ZygoteNode, bool) {
	for _, n := range tree.Nodes {
		if len(n.Packages) == 1 && strings.HasPrefix(n.Packages[0], pkg+"==") {
			return n, true
		}
	}
	return types.ZygoteNode{}, false
}

// nodeFor returns the pids and hits of pkg's node (see nodeOf), if it
// has a ready zygote.
func nodeFor(tree types.ZygoteTree, pkg string) (pids []int, hits int64, ok bool) {
	if n, ok := nodeOf(tree, pkg); ok && n.Replicas > 0 {
		return n.Pids, n.Hits, true
	}
	return nil, 0, false
}

// waitZygote waits up to 30 s for pkg's node to have a ready zygote, and
// returns their pids.
func waitZygote(t *testing.T, w *worker, pkg string) []int {
	t.Helper()
	return waitZygoteBy(t, w, pkg, time.Now().Add(30*time.Second))
}

// waitZygoteBy is waitZygote, failing the test past deadline.
func waitZygoteBy(t *testing.T, w *worker, pkg string, deadline time.Time) []int {
	t.Helper()
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if pids, _, ok := nodeFor(tree, pkg); ok {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's node not ready: %+v", pkg, tree.Nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// promoteWorker starts a worker that promotes a package set to a node
// after two starts, with package pkg (version 1.0, whose __init__.py runs
// init and then sets VERSION) in its package index, and deploys function
// pkg, which imports it and returns its VERSION.
func promoteWorker(t *testing.T, pkg, init string) *worker {
	t.Helper()
	wheels := t.TempDir()
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: pkg, Version: "1.0",
		Files: map[string]string{pkg + "/__init__.py": init + "VERSION = '1.0'\n"}}); err != nil {
		t.Fatal(err)
	}
	// Not planted at deploy: these tests are about promotion.
	w := startWorker(t, "--no-index", "--find-links", wheels, "--no-warm-cache", noSnapshots, "--spares", "-1",
		"--plant-deployed", "-1", "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	w.deployDir(pkg, fn(t, "f.py", fmt.Sprintf("import %s\n\ndef f(e):\n    return %s.VERSION\n", pkg, pkg), "requirements.txt", pkg+"\n"))
	return w
}

func TestForkedFunctionSeesExactlyItsOwnPackages(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	w.deployDir("np", fn(t, "f.py", modulesProbe, "requirements.txt", "numpy\n"))
	w.deployDir("rq", fn(t, "f.py", modulesProbe, "requirements.txt", "requests\n"))
	w.deployDir("none", fn(t, "f.py", modulesProbe))
	// Two calls each promote numpy and requests to nodes of their own.
	for i := 0; i < 2; i++ {
		w.mustInvoke("np", "{}")
		w.mustInvoke("rq", "{}")
	}
	waitZygote(t, w, "numpy")
	waitZygote(t, w, "requests")
	for _, tc := range []struct{ name, want string }{
		{"np", `["numpy"]`}, {"rq", `["requests"]`}, {"none", `[]`},
	} {
		inv := w.mustInvoke(tc.name, "{}")
		if inv.Path != "fork" || strings.ReplaceAll(string(inv.Body), " ", "") != tc.want {
			t.Errorf("%s: %s via %s, want %s via fork; worker log:\n%s", tc.name, inv.Body, inv.Path, tc.want, w.out)
		}
	}
	tree, err := w.c.Zygotes(context.Background())
	if err != nil || !tree.Enabled {
		t.Fatalf("zygotes: %v %+v", err, tree)
	}
	if _, hits, _ := nodeFor(tree, "numpy"); hits < 1 {
		t.Errorf("numpy node has %d hits", hits)
	}
	if tree.Nodes[0].Forks < 1 || len(tree.Nodes[0].Packages) != 0 {
		t.Errorf("root node: %+v", tree.Nodes[0])
	}
}

func TestZygoteDeathFallsBackAndIsRebuilt(t *testing.T) {
	w := startWorker(t, "--no-warm-cache")
	w.deployDir("hello", "../examples/hello")
	if inv := w.mustInvoke("hello", "{}"); inv.Path != "fork" {
		t.Fatalf("path %s, want fork", inv.Path)
	}
	old := killRoot(t, w)
	// Right away: the call succeeds whatever the path.
	inv := w.mustInvoke("hello", `{"name":"after"}`)
	if !strings.Contains(string(inv.Body), "hello, after") {
		t.Errorf("after zygote death: %s via %s", inv.Body, inv.Path)
	}
	// Soon: a new root zygote serves forks again.
	tree := waitTree(t, w, "root zygote not rebuilt", func(tree types.ZygoteTree) bool { return newRoot(tree, old) })
	if inv := w.mustInvoke("hello", "{}"); inv.Path != "fork" {
		t.Errorf("after rebuild: path %s, want fork", inv.Path)
	}
	pid := tree.Nodes[0].Pids[0]
	w.stop()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("zygote %d survived shutdown", pid)
	}
}

// TestRootZygoteDeathSparesItsForks kills the root zygote while
// functions forked from it are paused in the warm pool, and a numpy node
// was forked from it: the functions' sandboxes live on in the dead
// root's pid namespace and serve the next calls warm; the numpy node's
// zygote, which would go on forking into that namespace, is replaced by
// one from the new root; and the dead root's sandbox (its init) goes
// once its last function is deleted.
func TestRootZygoteDeathSparesItsForks(t *testing.T) {
	w := startWorker(t, "--spares", "-1", "--config", writeConfig(t, "zygote:\n  promote: 1\n"))
	w.deployDir("hello", "../examples/hello")
	w.deployDir("np", fn(t, "f.py", modulesProbe, "requirements.txt", "numpy\n"))
	for _, name := range []string{"hello", "np"} {
		if inv := w.mustInvoke(name, "{}"); inv.Path != "fork" {
			t.Fatalf("%s: path %s, want fork", name, inv.Path)
		}
	}
	oldNumpy := waitZygote(t, w, "numpy")[0]
	var init int // the root sandbox's hearth-init
	old := killRoot(t, w, func(root int) { init = ppid(t, root) })
	waitTree(t, w, "root and numpy zygotes not rebuilt", func(tree types.ZygoteTree) bool {
		np, _, ok := nodeFor(tree, "numpy")
		return newRoot(tree, old) && ok && len(np) == 1 && np[0] != oldNumpy
	})
	if err := syscall.Kill(oldNumpy, 0); err != syscall.ESRCH {
		t.Errorf("the numpy zygote forked from the dead root is still there (kill 0: %v)", err)
	}
	inv := w.mustInvoke("hello", `{"name":"again"}`)
	if inv.Path != "warm" || !strings.Contains(string(inv.Body), "hello, again") {
		t.Errorf("after the root zygote died: %s via %s, want the paused sandbox (warm); worker log:\n%s", inv.Body, inv.Path, w.out)
	}
	if inv := w.mustInvoke("np", "{}"); inv.Path != "warm" {
		t.Errorf("np after the root zygote died: path %s, want warm", inv.Path)
	}
	if err := syscall.Kill(init, 0); err != nil {
		t.Fatalf("the dead root's sandbox went while functions forked from it were paused: %v", err)
	}
	if v := metricValue(t, w, "hearth_zygote_dead_root_sandboxes"); v != 1 {
		t.Errorf("hearth_zygote_dead_root_sandboxes %v, want 1", v)
	}
	for _, name := range []string{"hello", "np"} {
		if err := w.c.Delete(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(init, 0) == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the dead root's sandbox (init %d) outlived the last function forked from it", init)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, w, "hearth_zygote_dead_root_sandboxes") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("hearth_zygote_dead_root_sandboxes did not return to 0")
		}
	}
}

// killRoot kills the worker's one root zygote and returns its pid;
// before the kill, each of before gets that pid.
func killRoot(t *testing.T, w *worker, before ...func(root int)) int {
	t.Helper()
	tree, err := w.c.Zygotes(context.Background())
	if err != nil || len(tree.Nodes) == 0 || len(tree.Nodes[0].Pids) != 1 {
		t.Fatalf("zygotes: %v %+v", err, tree)
	}
	root := tree.Nodes[0].Pids[0]
	for _, f := range before {
		f(root)
	}
	if err := syscall.Kill(root, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return root
}

// newRoot reports whether tree has one root zygote, not old.
func newRoot(tree types.ZygoteTree, old int) bool {
	return len(tree.Nodes) > 0 && len(tree.Nodes[0].Pids) == 1 && tree.Nodes[0].Pids[0] != old
}

// waitTree polls the zygote tree for up to 30 s until ok holds, and
// fails with what otherwise.
func waitTree(t *testing.T, w *worker, what string, ok func(types.ZygoteTree) bool) types.ZygoteTree {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err == nil && ok(tree) {
			return tree
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %+v %v", what, tree, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ppid returns pid's parent.
func ppid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPlannedTreeAndMetrics(t *testing.T) {
	dir := t.TempDir()
	reqs := []string{"numpy\nrequests\n", "numpy\n", "requests>=2\nnumpy\n"}
	args := []string{"zygote", "plan", "--base", testBase}
	for i, r := range reqs {
		p := dir + "/" + string(rune('a'+i)) + ".txt"
		if err := os.WriteFile(p, []byte(r), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	cmd := exec.Command(filepath.Join(binDir, "hearth"), args...)
	plan, err := cmd.Output()
	if err != nil {
		t.Fatalf("zygote plan: %v", err)
	}
	if !strings.Contains(string(plan), "numpy==") || !strings.Contains(string(plan), "requests==") {
		t.Fatalf("plan: %s", plan)
	}
	planFile := filepath.Join(dir, "tree.json")
	os.WriteFile(planFile, plan, 0o644)

	w := startWorker(t, "--zygote-tree", planFile)
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Nodes) != 4 { // root, numpy, requests, numpy+requests
		t.Fatalf("tree has %d nodes, want 4: %+v", len(tree.Nodes), tree.Nodes)
	}
	for _, n := range tree.Nodes {
		if n.Replicas != 1 || (n.ID != 0 && !n.Static) {
			t.Errorf("node %v: %d replicas, static %v", n.Packages, n.Replicas, n.Static)
		}
	}
	// Planted nodes get spares before their first start, so it takes one.
	end := time.Now().Add(30 * time.Second)
	for nodeSpares(t, w, "numpy") < 2 {
		if time.Now().After(end) {
			t.Fatalf("planted numpy node holds %d spares before any start, want 2", nodeSpares(t, w, "numpy"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.deployDir("np", fn(t, "f.py", modulesProbe, "requirements.txt", "numpy\n"))
	if inv := w.mustInvoke("np", "{}"); inv.Path != "fork" || strings.ReplaceAll(string(inv.Body), " ", "") != `["numpy"]` {
		t.Errorf("first call: %s via %s, want [\"numpy\"] via fork", inv.Body, inv.Path)
	}
	if got := metricValue(t, w, "hearth_spare_starts_total"); got != 1 {
		t.Errorf("first call of a planted node: %v spare starts, want 1", got)
	}
	resp, err := w.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`hearth_zygote_forks_total{node="numpy==`, `hearth_invocations_total{path="fork",status="ok"} 1`,
		`hearth_invoke_duration_seconds_count{path="fork"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// nodeSpares returns how many spares pkg's node (see nodeOf) holds.
func nodeSpares(t *testing.T, w *worker, pkg string) int {
	t.Helper()
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n, ok := nodeOf(tree, pkg)
	if !ok {
		t.Fatalf("no node holds only %s: %+v", pkg, tree.Nodes)
	}
	return n.Spares
}

// rootSpares returns how many spares the root zygote node holds.
func rootSpares(t *testing.T, w *worker) int {
	t.Helper()
	tree, err := w.c.Zygotes(context.Background())
	if err != nil || len(tree.Nodes) == 0 {
		t.Fatalf("zygotes: %v %+v", err, tree)
	}
	return tree.Nodes[0].Spares
}

// waitRootSpares waits until the root node holds want spares.
func waitRootSpares(t *testing.T, w *worker, want int) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for rootSpares(t, w) != want {
		if time.Now().After(end) {
			t.Fatalf("root node holds %d spares, want %d", rootSpares(t, w), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSparesFollowBursts(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--no-snapshots", "--max-spares", "5")
	const n = 7
	// Loading takes a while, so the starts of a burst overlap.
	slow := fn(t, "f.py", "import time\ntime.sleep(0.3)\ndef f(e):\n    return 'hello, ' + e['name']\n")
	for i := range n {
		w.deployDir(fmt.Sprintf("h%d", i), slow)
	}
	burst := func() {
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				inv, err := w.invoke(fmt.Sprintf("h%d", i), `{"name":"b"}`)
				if err != nil || inv.Path != "fork" || !strings.Contains(string(inv.Body), "hello, b") {
					t.Errorf("burst call %d: %v %s via %s", i, err, inv.Body, inv.Path)
				}
			}()
		}
		wg.Wait()
	}
	// One start asks for the default two spares.
	w.mustInvoke("h0", `{"name":"a"}`)
	waitRootSpares(t, w, 2)
	before := metricValue(t, w, "hearth_spare_starts_total")
	// A burst of 7 overlapping starts: the node then keeps one spare per
	// start under way, bounded by --max-spares.
	burst()
	if got := metricValue(t, w, "hearth_spare_starts_total") - before; got < 2 {
		t.Errorf("burst took %v spares, want at least the 2 ready", got)
	}
	waitRootSpares(t, w, 5)
	before = metricValue(t, w, "hearth_spare_starts_total")
	burst()
	if got := metricValue(t, w, "hearth_spare_starts_total") - before; got != 5 {
		t.Errorf("second burst took %v spares, want all 5", got)
	}
	waitRootSpares(t, w, 5)
	// Shutdown removes every spare with its sandbox and cgroup.
	w.stop()
	w.assertClean()
}

// rootReplicas returns how many replicas the root zygote node has.
func rootReplicas(t *testing.T, w *worker) int {
	t.Helper()
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tree.Nodes {
		if len(n.Packages) == 0 {
			return n.Replicas
		}
	}
	t.Fatal("no root node")
	return 0
}

// TestReplicasFollowConcurrentForks checks that a node gets replicas when
// starts queue on its zygote, and only then: one start at a time, served
// by spares while the zygote makes more in the background, needs none.
func TestReplicasFollowConcurrentForks(t *testing.T) {
	t.Run("sequential", func(t *testing.T) {
		w := startWorker(t, "--no-warm-cache", "--no-snapshots", "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
		w.deployDir("np", fn(t, "f.py", modulesProbe, "requirements.txt", "numpy\n"))
		w.mustInvoke("np", "{}")
		w.mustInvoke("np", "{}")
		waitZygote(t, w, "numpy")
		// Starts 1-9 ms apart: the node makes spares between them.
		for i := range 100 {
			w.mustInvoke("np", "{}")
			time.Sleep(time.Duration(1+i%9) * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond) // a replica would have started by now
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if pids, _, _ := nodeFor(tree, "numpy"); len(pids) != 1 {
			t.Errorf("100 starts one at a time: numpy node has %d replicas, want 1", len(pids))
		}
		if metricValue(t, w, "hearth_spare_starts_total") < 50 {
			t.Errorf("fewer than 50 of 100 starts took a spare")
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		w := startWorker(t, "--no-warm-cache", "--no-snapshots", "--spares", "-1")
		w.deployDir("hello", "../examples/hello")
		w.mustInvoke("hello", "{}")
		deadline := time.Now().Add(30 * time.Second)
		for rootReplicas(t, w) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("bursts of 8 concurrent forks: root node still has %d replica", rootReplicas(t, w))
			}
			for _, c := range must(w.concurrently(8, "hello", "{}")) {
				if c != http.StatusOK {
					t.Fatalf("status %d", c)
				}
			}
		}
	})
}

func must(codes []int, _, _ []string) []int { return codes }

// TestZygoteBuildsAtLowWeight: a zygote being made (here a node
// promoted after two starts, whose package sleeps two seconds at import)
// has a tenth of a sandbox's CPU weight: no start forks from it yet.
// Once ready, starts fork from it, and it has a sandbox's weight.
func TestZygoteBuildsAtLowWeight(t *testing.T) {
	w := promoteWorker(t, "slowpkg", "import time\ntime.sleep(2)\n")
	w.mustInvoke("slowpkg", "{}")
	// The second start promotes slowpkg to a node, whose zygote imports
	// it while the call's own sandbox does: watched from the start, as on
	// a busy host the node can be ready before the call has answered.
	second := make(chan error, 1)
	go func() {
		_, err := w.invoke("slowpkg", "{}")
		second <- err
	}()
	defer func() {
		if err := <-second; err != nil {
			t.Errorf("second call: %v", err)
		}
	}()

	// A node's zygote groups are zygote-<node>-<n>; the root's zygote-root-<n>.
	v1 := filepath.Join("/sys/fs/cgroup/cpu", w.cgroup)
	pattern, file, building, ready := filepath.Join(v1, "zygote-[0-9]*"), "cpu.shares", "102", "1024"
	if _, err := os.Stat(v1); err != nil {
		pattern, file, building, ready = filepath.Join("/sys/fs/cgroup", w.cgroup, "zygote-[0-9]*"), "cpu.weight", "10", "100"
	}
	weight := func() (string, bool) {
		dirs, _ := filepath.Glob(pattern)
		if len(dirs) == 0 {
			return "", false
		}
		b, err := os.ReadFile(filepath.Join(dirs[0], file))
		if err != nil {
			return "", false
		}
		return strings.TrimSpace(string(b)), true
	}
	// The group's directory exists a moment before its limits are
	// written (the default is a ready zygote's weight): the import takes
	// two seconds, in which the building weight must show.
	deadline := time.Now().Add(10 * time.Second)
	got, _ := weight()
	for got != building {
		if time.Now().After(deadline) {
			t.Fatalf("the promoted node's zygote under %s never had %s %s while importing (last read %q)", pattern, file, building, got)
		}
		time.Sleep(5 * time.Millisecond)
		got, _ = weight()
	}
	waitZygoteBy(t, w, "slowpkg", deadline)
	if got, _ := weight(); got != ready {
		t.Errorf("the promoted node's ready zygote: %s %s, want %s", file, got, ready)
	}
}

// TestZygoteImportForksStayInItsGroup: a package that forks at import
// (a hostile one, say), made a node of the tree, leaves the process it
// forked in the new zygote's cgroup, within its limits and its teardown,
// not in the parent zygote's: the zygote imports only once the worker
// has moved it into its own group.
func TestZygoteImportForksStayInItsGroup(t *testing.T) {
	w := promoteWorker(t, "forker", "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\n")
	w.mustInvoke("forker", "{}")
	w.mustInvoke("forker", "{}") // the second start promotes forker to a node
	waitZygoteBy(t, w, "forker", time.Now().Add(20*time.Second))
	procs := func(pattern string) (dirs []string, pids []string) {
		dirs, _ = filepath.Glob(pattern)
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, strings.Fields(string(b))...)
		}
		return dirs, pids
	}
	dir := filepath.Join("/sys/fs/cgroup/pids", w.cgroup)
	if _, err := os.Stat(dir); err != nil {
		dir = filepath.Join("/sys/fs/cgroup", w.cgroup)
	}
	roots, rootPids := procs(filepath.Join(dir, "zygote-root-*"))
	nodes, nodePids := procs(filepath.Join(dir, "zygote-[0-9]*"))
	if len(roots) != 1 || len(rootPids) != 1 {
		t.Errorf("root zygote groups %v hold processes %v, want one group holding the root zygote alone", roots, rootPids)
	}
	if len(nodes) != 1 || len(nodePids) != 2 {
		t.Errorf("node zygote groups %v hold processes %v, want one group holding the zygote and the process its package forked", nodes, nodePids)
	}
}

// TestZygoteNodeBuildRetried: a node whose builds fail (here its package
// raises at import until a file appears beside it) is not left without a
// zygote: the tree shows the failures and when the next try comes, and a
// try after the package is fixed makes it ready. Left so, the node would
// keep its package set from being promoted again, and forks would go to
// its parent for good.
func TestZygoteNodeBuildRetried(t *testing.T) {
	w := promoteWorker(t, "flaky", "import os\n"+
		"if not os.path.exists(os.path.join(os.path.dirname(__file__), 'ok')):\n"+
		"    raise ImportError('flaky: not yet')\n")
	// Both starts fail at import, the second promotes flaky to a node,
	// whose build fails too.
	for range 2 {
		if inv, err := w.invoke("flaky", "{}"); err == nil {
			t.Fatalf("a start before the package imports: %s via %s, want an error", inv.Body, inv.Path)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n, ok := nodeOf(tree, "flaky")
		if ok && n.Replicas > 0 {
			t.Fatalf("flaky's node ready while its package cannot be imported: %+v", n)
		}
		if ok && n.Failures > 0 && n.RetryAt != "" {
			series := fmt.Sprintf(`hearth_zygote_failed_builds{node=%q}`, strings.Join(n.Packages, ","))
			if v := w.metric(series); v == "" || v == "0" {
				t.Errorf("%s is %q while the tree shows %d failures", series, v, n.Failures)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flaky's node shows no failed build: %+v", tree.Nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Fixed: the installed package (which sandboxes and zygotes see
	// through a live bind) gets its file.
	var fixed bool
	filepath.WalkDir(filepath.Join(w.dataDir, "packages"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) == "__init__.py" && filepath.Base(filepath.Dir(p)) == "flaky" {
			fixed = os.WriteFile(filepath.Join(filepath.Dir(p), "ok"), nil, 0o644) == nil
		}
		return nil
	})
	if !fixed {
		t.Fatalf("no installed flaky/__init__.py under %s", filepath.Join(w.dataDir, "packages"))
	}
	waitZygoteBy(t, w, "flaky", time.Now().Add(40*time.Second))
	if inv := w.mustInvoke("flaky", "{}"); string(inv.Body) != `"1.0"` || inv.Path != "fork" {
		t.Errorf("after the node's build: %s via %s, want \"1.0\" via fork", inv.Body, inv.Path)
	}
}

// TestZygoteDyingYoungBacksOff: a node whose zygote dies soon after it is
// made (its package ends the process a second after import) is rebuilt
// after a growing delay, as a failed build is, not at once in a loop.
func TestZygoteDyingYoungBacksOff(t *testing.T) {
	w := promoteWorker(t, "doomed", "import os, threading\nthreading.Timer(1.0, lambda: os._exit(3)).start()\n")
	w.invoke("doomed", "{}")
	w.invoke("doomed", "{}") // the second start promotes doomed to a node
	builds := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := nodeOf(tree, "doomed"); ok {
			for _, p := range n.Pids {
				builds[p] = true
			}
			if len(builds) > 0 && n.Failures > 0 && n.RetryAt != "" {
				return // its zygote died young: a retry is scheduled
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("doomed's node never waited for a retry after %d zygotes (pids %v): %+v", len(builds), builds, tree.Nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeployPlantsNode checks that a deployed function's package set gets
// a zygote node before the function's first call, again after a restart,
// and that the first call forks from it with the package imported.
func TestDeployPlantsNode(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", noSnapshots)
	w.deployDir("np", fn(t, "f.py", modulesProbe, "requirements.txt", "numpy\n"))
	planted := func(tree types.ZygoteTree) bool {
		n, ok := nodeOf(tree, "numpy")
		return ok && n.Replicas > 0 && n.Deployed && n.Hits == 0
	}
	waitTree(t, w, "numpy's node not planted at deploy", planted)
	inv := w.mustInvoke("np", "{}")
	if inv.Path != "fork" || strings.ReplaceAll(string(inv.Body), " ", "") != `["numpy"]` {
		t.Errorf("first call: %s via %s, want [\"numpy\"] via fork; worker log:\n%s", inv.Body, inv.Path, w.out)
	}
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := nodeOf(tree, "numpy"); n.Hits != 1 {
		t.Errorf("numpy's node has %d hits after the first call, want 1", n.Hits)
	}
	w.stop()
	w.start()
	waitTree(t, w, "numpy's node not planted again after a restart", planted)
}
