package zygote

import (
	"context"
	"errors"
	"log/slog"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// tree builds nodes from package sets, each under the deepest subset, the
// way the Manager does.
func tree(sets ...string) (*Node, map[string]*Node) {
	root := &Node{}
	all := map[string]*Node{"": root}
	for i, s := range sets {
		pkgs := normalize(strings.Split(s, ","))
		parent := lookup(root, pkgs, func(*Node) bool { return true })
		n := &Node{ID: i + 1, Packages: pkgs, Parent: parent}
		parent.Children = append(parent.Children, n)
		all[n.Key()] = n
	}
	return root, all
}

func anyNode(*Node) bool { return true }

func TestLookupPicksDeepestSubset(t *testing.T) {
	root, _ := tree("numpy", "requests", "numpy,pandas", "numpy,pandas,scipy", "numpy,requests")
	cases := []struct{ fn, want string }{
		{"", ""},
		{"flask", ""},
		{"numpy", "numpy"},
		{"numpy,flask", "numpy"},
		{"numpy,pandas", "numpy,pandas"},
		{"numpy,pandas,requests", "numpy,pandas"}, // depth 2 ties with numpy,requests; both valid
		{"numpy,pandas,scipy,torch", "numpy,pandas,scipy"},
		{"pandas", ""}, // numpy,pandas holds numpy, which pandas alone did not ask for
		{"requests", "requests"},
		{"requests,scipy", "requests"},
	}
	for _, tc := range cases {
		t.Run(tc.fn, func(t *testing.T) {
			var s []string
			if tc.fn != "" {
				s = normalize(strings.Split(tc.fn, ","))
			}
			got := lookup(root, s, anyNode)
			if tc.fn == "numpy,pandas,requests" {
				if k := got.Key(); k != "numpy,pandas" && k != "numpy,requests" {
					t.Errorf("got %q", k)
				}
				return
			}
			if got.Key() != tc.want {
				t.Errorf("lookup(%s) = %q, want %q", tc.fn, got.Key(), tc.want)
			}
		})
	}
}

func TestLookupSkipsUnusableNodes(t *testing.T) {
	root, all := tree("numpy", "numpy,pandas")
	dead := all["numpy,pandas"]
	got := lookup(root, []string{"numpy", "pandas"}, func(n *Node) bool { return n != dead })
	if got.Key() != "numpy" {
		t.Errorf("got %q, want numpy (the deeper node has no zygote)", got.Key())
	}
}

// TestNeverForksFromAForeignPackage is the property: whatever the tree and
// the function's packages, the chosen node holds only requested packages,
// and no usable node holding only requested packages is deeper.
func TestNeverForksFromAForeignPackage(t *testing.T) {
	universe := []string{"a==1", "a==2", "b==1", "c==1", "d==1", "e==1", "f==1"}
	rng := rand.New(rand.NewSource(1))
	randSet := func() []string {
		var s []string
		for _, p := range universe {
			if rng.Intn(3) == 0 {
				s = append(s, p)
			}
		}
		return normalize(s)
	}
	for iter := 0; iter < 2000; iter++ {
		var sets []string
		for i := 0; i < 1+rng.Intn(12); i++ {
			if s := randSet(); len(s) > 0 {
				sets = append(sets, strings.Join(s, ","))
			}
		}
		root, all := tree(sets...)
		usable := map[*Node]bool{root: true}
		for _, n := range all {
			usable[n] = usable[n] || rng.Intn(4) != 0
		}
		s := randSet()
		got := lookup(root, s, func(n *Node) bool { return usable[n] })
		if got == nil {
			t.Fatalf("no node for %v (the root always fits)", s)
		}
		if !subset(got.Packages, s) {
			t.Fatalf("tree %v, function %v: chose %v, which holds a package the function did not ask for", sets, s, got.Packages)
		}
		for _, n := range all {
			if usable[n] && subset(n.Packages, s) && len(n.Packages) > len(got.Packages) {
				t.Fatalf("tree %v, function %v: chose %v but %v is deeper", sets, s, got.Packages, n.Packages)
			}
		}
	}
}

func TestWindowPromotesFrequentSetsAndForgetsOldOnes(t *testing.T) {
	w := newWindow(4)
	w.add([]string{"numpy==1", "requests==2"})
	w.add([]string{"numpy==1"})
	w.add([]string{"numpy==1", "pil==9"})
	if got := w.count("numpy==1"); got != 3 {
		t.Errorf("numpy counted %d, want 3 (alone and inside two sets)", got)
	}
	if got := w.count("numpy==1,requests==2"); got != 1 {
		t.Errorf("set counted %d, want 1", got)
	}
	w.add(nil)
	w.add(nil) // pushes out the first invocation
	if got := w.count("numpy==1,requests==2"); got != 0 {
		t.Errorf("old set still counted %d", got)
	}
	if got := w.count("numpy==1"); got != 2 {
		t.Errorf("numpy counted %d after the window moved, want 2", got)
	}
}

func TestLearnPromotesAtThresholdUnderClosestNode(t *testing.T) {
	m := &Manager{cfg: Config{Promote: 2, MaxZygotes: 100, Modules: func(p []string) ([]string, error) { return p, nil }},
		nodes: map[string]*Node{}, win: newWindow(10), log: slog.New(slog.DiscardHandler)}
	m.root = &Node{static: true}
	m.nodes[""] = m.root
	m.ctx, m.cancel = contextWithCancel()
	defer m.cancel()
	m.mu.Lock()
	m.learnLocked([]string{"numpy==1", "pandas==2"})
	if len(m.nodes) != 1 {
		t.Fatalf("promoted after one use: %v", keys(m.nodes))
	}
	m.learnLocked([]string{"numpy==1", "pandas==2"})
	// The set is frequent; numpy and pandas alone come only with it, so
	// nodes of their own would serve no start.
	want := []string{"", "numpy==1,pandas==2"}
	if got := keys(m.nodes); !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	// A second frequent set with numpy makes numpy their common parent.
	m.learnLocked([]string{"numpy==1", "scipy==3"})
	m.learnLocked([]string{"numpy==1", "scipy==3"})
	want = []string{"", "numpy==1", "numpy==1,pandas==2", "numpy==1,scipy==3"}
	if got := keys(m.nodes); !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	for _, k := range []string{"numpy==1,pandas==2", "numpy==1,scipy==3"} {
		if p := m.nodes[k].Parent.Key(); p != "numpy==1" {
			t.Errorf("%s hangs under %q, want numpy==1", k, p)
		}
	}
	if extra := m.nodes["numpy==1,scipy==3"].extraLocked(); len(extra) != 1 {
		t.Errorf("numpy,scipy imports %v, want only what its parent lacks", extra)
	}
	// A package used alone, often enough, gets its node.
	for range 2 {
		m.learnLocked([]string{"requests==2"})
	}
	m.mu.Unlock()
	if _, ok := m.nodes["requests==2"]; !ok {
		t.Errorf("requests used alone twice has no node: %v", keys(m.nodes))
	}
}

func TestEvictIdleLeavesOnly(t *testing.T) {
	m := &Manager{cfg: Config{IdleTimeout: time.Minute, MemoryBudget: 1 << 40}, nodes: map[string]*Node{}}
	root, all := tree("numpy==1", "numpy==1,pandas==2", "requests==1")
	m.root = root
	for k, n := range all {
		m.nodes[k] = n
	}
	now := time.Now()
	all["numpy==1"].lastUse = now.Add(-time.Hour)           // idle, but has a child
	all["numpy==1,pandas==2"].lastUse = now.Add(-time.Hour) // idle leaf: goes
	all["requests==1"].lastUse = now                        // fresh: stays
	all["requests==1"].static = false
	m.evict(now)
	got := keys(m.nodes)
	// numpy==1 became a leaf when its child went, and is idle too: it goes
	// in the same pass.
	if want := []string{"", "requests==1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after evict: %v, want %v", got, want)
	}
}

func TestMakePlanGroupsCoOccurringPackages(t *testing.T) {
	plan := MakePlan([][]string{
		{"numpy==1", "pandas==2"}, {"numpy==1", "pandas==2"}, {"numpy==1"}, {"requests==3"},
	}, 2)
	var got []string
	for _, n := range plan.Nodes {
		got = append(got, strings.Join(n.Packages, ","))
	}
	want := []string{"numpy==1", "pandas==2", "numpy==1,pandas==2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}

func TestEvictKeepsMinimumZygotes(t *testing.T) {
	m := &Manager{cfg: Config{IdleTimeout: time.Minute, MemoryBudget: 1 << 40, MinZygotes: 3}, nodes: map[string]*Node{}}
	root, all := tree("a==1", "b==1")
	m.root = root
	for k, n := range all {
		m.nodes[k] = n
	}
	m.procs = 3 // root, a, b: each pretends to have a zygote
	for _, n := range all {
		n.lastUse = time.Now().Add(-time.Hour)
	}
	m.evict(time.Now())
	if len(m.nodes) != 3 {
		t.Errorf("evicted below the minimum: %v", keys(m.nodes))
	}
}

func TestRetryDelay(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {8, 2 * time.Minute}, {1000, 2 * time.Minute}} {
		if got := retryDelay(c.failures); got != c.want {
			t.Errorf("retryDelay(%d) = %v, want %v", c.failures, got, c.want)
		}
	}
}

// testManager is a Manager without processes: its nodes' builds fail
// (the root has no zygote), which leaves the tree as planned.
func testManager(cfg Config) *Manager {
	cfg.Modules = func(p []string) ([]string, error) { return p, nil }
	cfg.MemoryBudget = 1 << 40
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.setDefaults()
	m := &Manager{cfg: cfg, nodes: map[string]*Node{}, win: newWindow(cfg.Window),
		deployed: map[string]string{}, log: cfg.Logger}
	m.root = &Node{static: true}
	m.nodes[""] = m.root
	m.ctx, m.cancel = contextWithCancel()
	return m
}

func TestDeployedPlantsSetsAndSharedParents(t *testing.T) {
	m := testManager(Config{MaxZygotes: 100})
	defer m.bg.Wait()
	defer m.cancel()
	m.Deployed(map[string][]string{"a": {"pandas==2", "numpy==1"}, "none": {}})
	// numpy alone comes with one deployed set only: no node of its own.
	if got, want := keys(m.nodes), []string{"", "numpy==1,pandas==2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	if n := m.nodes["numpy==1,pandas==2"]; !n.deployed || n.static {
		t.Errorf("planted node: deployed %v static %v, want deployed and not static", n.deployed, n.static)
	}
	// A second set with numpy makes numpy their common parent.
	m.Deployed(map[string][]string{"b": {"numpy==1", "scipy==3"}})
	want := []string{"", "numpy==1", "numpy==1,pandas==2", "numpy==1,scipy==3"}
	if got := keys(m.nodes); !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	for _, k := range want[2:] {
		if p := m.nodes[k].Parent.Key(); p != "numpy==1" {
			t.Errorf("%s hangs under %q, want numpy==1", k, p)
		}
	}
	if mods := m.nodes["numpy==1,scipy==3"].extraLocked(); !reflect.DeepEqual(mods, []string{"scipy==3"}) {
		t.Errorf("numpy,scipy imports %v, want only what its parent lacks", mods)
	}
	// A set that already has a node (here learned) is not planted again.
	m.mu.Lock()
	learned := m.addNodeLocked([]string{"requests==1"}, false)
	m.mu.Unlock()
	m.Deployed(map[string][]string{"c": {"requests==1"}})
	if m.nodes["requests==1"] != learned || learned.deployed {
		t.Errorf("a learned node was replaced or marked planted")
	}
	m.Deployed(map[string][]string{"a": nil})
	if _, ok := m.deployed["a"]; ok {
		t.Errorf("deleted function still counted: %v", m.deployed)
	}
}

func TestDeployedBound(t *testing.T) {
	m := testManager(Config{MaxZygotes: 100, PlantDeployed: 2})
	defer m.bg.Wait()
	defer m.cancel()
	// Three sets, one used by two functions: it goes first, and only two
	// nodes are planted.
	m.Deployed(map[string][]string{
		"a": {"pandas==2"}, "b": {"scipy==3"}, "c": {"scipy==3"}, "d": {"torch==1"},
	})
	got := keys(m.nodes)
	if len(got) != 3 || m.nodes["scipy==3"] == nil {
		t.Fatalf("nodes %v, want the root, scipy and one more", got)
	}
	m.Deployed(map[string][]string{"e": {"jax==1"}})
	if len(m.nodes) != 3 {
		t.Errorf("planted past the bound: %v", keys(m.nodes))
	}
	// The zygote bound holds too.
	m = testManager(Config{MaxZygotes: 1})
	defer m.bg.Wait()
	defer m.cancel()
	m.procs = 1 // the root
	m.Deployed(map[string][]string{"a": {"pandas==2"}})
	if len(m.nodes) != 1 {
		t.Errorf("planted past max zygotes: %v", keys(m.nodes))
	}
	// And none at all when switched off.
	m = testManager(Config{MaxZygotes: 100, PlantDeployed: -1})
	defer m.bg.Wait()
	defer m.cancel()
	m.Deployed(map[string][]string{"a": {"pandas==2"}})
	if len(m.nodes) != 1 {
		t.Errorf("planted with plant_deployed -1: %v", keys(m.nodes))
	}
}

// TestDeployedPicksSetsOfMoreFunctions checks that under the bound the
// sets of more functions are planted first, whatever their size.
func TestDeployedPicksSetsOfMoreFunctions(t *testing.T) {
	m := testManager(Config{MaxZygotes: 100, PlantDeployed: 1})
	defer m.bg.Wait()
	defer m.cancel()
	m.Deployed(map[string][]string{
		"x": {"a==1"}, "y": {"b==1"},
		"p": {"c==1", "d==1"}, "q": {"c==1", "d==1"}, "r": {"c==1", "d==1"},
	})
	if got, want := keys(m.nodes), []string{"", "c==1,d==1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nodes %v, want %v", got, want)
	}
}

// TestPlantedGiveWay checks that a planted node no call has used gives
// way to a node calls ask for when the zygotes are at their bound, and
// one a call has used does not.
func TestPlantedGiveWay(t *testing.T) {
	m := testManager(Config{MaxZygotes: 10, Promote: 2})
	defer m.bg.Wait()
	defer m.cancel()
	m.Deployed(map[string][]string{"x": {"a==1"}, "y": {"b==1"}})
	m.bg.Wait() // their builds fail: no root zygote here
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes["a==1"].hits = 1 // used
	m.procs = m.cfg.MaxZygotes
	m.learnLocked([]string{"c==1"})
	m.learnLocked([]string{"c==1"})
	if got, want := keys(m.nodes), []string{"", "a==1", "c==1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes %v, want %v: the unused planted b==1 gone for c==1", got, want)
	}
	m.learnLocked([]string{"d==1"})
	m.learnLocked([]string{"d==1"})
	if _, ok := m.nodes["d==1"]; ok || m.nodes["a==1"] == nil {
		t.Errorf("a used planted node gave way: %v", keys(m.nodes))
	}
}

// TestUnresolvedNodeDropped: a node's modules are resolved at its build,
// against the parent it forks from. A node whose modules cannot be
// resolved (a package no longer installed) is dropped at its first
// build, and the larger node put under it goes back under its parent,
// instead of holding its place and failing for good; Plant says why.
func TestUnresolvedNodeDropped(t *testing.T) {
	m := testManager(Config{MaxZygotes: 100})
	defer m.bg.Wait()
	defer m.cancel()
	var mu sync.Mutex
	var asked [][]string
	m.cfg.Modules = func(p []string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, slices.Clone(p))
		if slices.Contains(p, "gone==1") {
			return nil, errors.New("gone==1: not installed")
		}
		return p, nil
	}
	// The root has a zygote (never forked from here: the builds below
	// stop at their modules), and a node built before gone==1 went.
	m.mu.Lock()
	m.root.replicas = []*Process{{dead: make(chan struct{})}}
	big := &Node{ID: 99, Packages: []string{"gone==1", "numpy==1"}, Parent: m.root,
		replicas: []*Process{{dead: make(chan struct{})}}, builtAt: time.Now()}
	m.root.Children = append(m.root.Children, big)
	m.nodes[big.Key()] = big
	gone := m.addNodeLocked([]string{"gone==1"}, false)
	if big.Parent != gone {
		t.Fatalf("the larger node hangs under %q, want gone==1", big.Parent.Key())
	}
	m.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; {
		m.mu.Lock()
		_, ok := m.nodes["gone==1"]
		parent := big.Parent
		m.mu.Unlock()
		if !ok {
			if parent != m.root || !slices.Contains(m.root.Children, big) {
				t.Fatalf("gone==1 dropped; the larger node hangs under %q", parent.Key())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a node whose modules cannot be resolved was not dropped")
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	if !reflect.DeepEqual(asked, [][]string{{"gone==1"}}) {
		t.Errorf("modules asked for %v, want [[gone==1]]: what the node holds beyond its parent", asked)
	}
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Plant(ctx, [][]string{{"gone==1"}}); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("Plant of a node that cannot be resolved: %v, want its cause", err)
	}
}
