package zygote

import (
	"sort"
	"strings"
	"time"
)

// Node is a node of the zygote tree: the packages its zygotes hold. A
// child holds its parent's packages and more. The root holds none.
type Node struct {
	ID int
	// Packages are "name==version", sorted, including the parent's.
	Packages []string
	Parent   *Node
	Children []*Node

	// Guarded by the Manager's mutex.

	// Modules are what this node's last build imported, or tried to, on
	// top of its parent (nil before the first), and Path the sys.path
	// entries those imports needed.
	Modules  []string
	Path     []string
	err      error // why the last build failed
	replicas []*Process
	pending  int // replicas being created
	hits     int64
	lastUse  time.Time
	static   bool // from a planned tree: never evicted for idleness
	deployed bool // planted for deployed functions (Manager.Deployed)
	// failures counts the node's failed builds (and last zygotes that
	// died young, see stableFor) since its last zygote that lived; while
	// the node has none, the janitor tries again at retryAt (see
	// retryLocked). builtAt is when its last build succeeded.
	failures int
	retryAt  time.Time
	builtAt  time.Time
}

// extraLocked returns the packages n holds and its parent does not.
func (n *Node) extraLocked() []string {
	have := map[string]bool{}
	for _, p := range n.Parent.Packages {
		have[p] = true
	}
	var extra []string
	for _, p := range n.Packages {
		if !have[p] {
			extra = append(extra, p)
		}
	}
	return extra
}

// Key is the node's package set as one string.
func (n *Node) Key() string { return strings.Join(n.Packages, ",") }

// depth is how many packages the node holds.
func (n *Node) depth() int { return len(n.Packages) }

// subset reports whether every element of a (sorted) is in b (sorted).
func subset(a, b []string) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j == len(b) || b[j] != x {
			return false
		}
		j++
	}
	return true
}

// normalize sorts and dedups a package set.
func normalize(pkgs []string) []string {
	out := append([]string(nil), pkgs...)
	sort.Strings(out)
	w := 0
	for i, p := range out {
		if p == "" || (i > 0 && p == out[i-1]) {
			continue
		}
		out[w] = p
		w++
	}
	return out[:w]
}

// walk calls f for every node under n, n included.
func walk(n *Node, f func(*Node)) {
	f(n)
	for _, c := range n.Children {
		walk(c, f)
	}
}

// lookup returns the deepest node holding only packages in s (sorted),
// among those for which usable reports true. Ties go to the node whose
// least-loaded replica has the least load. It never returns a node with a
// package outside s. The root (no packages) qualifies for every s.
func lookup(root *Node, s []string, usable func(*Node) bool) *Node {
	var best *Node
	bestLoad := 0
	var visit func(n *Node)
	visit = func(n *Node) {
		if !subset(n.Packages, s) {
			return // nor can any descendant: they hold n's packages too
		}
		if usable(n) {
			l := n.load()
			if best == nil || n.depth() > best.depth() || (n.depth() == best.depth() && l < bestLoad) {
				best, bestLoad = n, l
			}
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(root)
	return best
}

// load is the in-flight requests of the node's least-loaded replica.
func (n *Node) load() int {
	min := -1
	for _, r := range n.replicas {
		if l := r.Inflight(); min < 0 || l < min {
			min = l
		}
	}
	if min < 0 {
		return 1 << 30
	}
	return min
}

// pick returns the node's least-loaded live replica, or nil.
func (n *Node) pick() *Process {
	var best *Process
	for _, r := range n.replicas {
		if !r.alive() {
			continue
		}
		if best == nil || r.Inflight() < best.Inflight() {
			best = r
		}
	}
	return best
}

// window counts package sets over the last N invocations: each
// invocation counts its whole set and each of its packages, so both a
// popular combination and a package shared by many functions can become
// nodes.
type window struct {
	size   int
	ring   [][]string
	next   int
	counts map[string]int
}

func newWindow(size int) *window {
	return &window{size: size, ring: make([][]string, size), counts: map[string]int{}}
}

func candidates(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	// Single packages first: when both cross the threshold together, the
	// set then hangs under a single-package node and imports only the rest.
	if len(s) == 1 {
		return []string{s[0]}
	}
	return append(append([]string{}, s...), strings.Join(s, ","))
}

// add records an invocation's package set and returns the sets counted.
func (w *window) add(s []string) []string {
	if old := w.ring[w.next]; old != nil {
		for _, k := range candidates(old) {
			if w.counts[k]--; w.counts[k] <= 0 {
				delete(w.counts, k)
			}
		}
	}
	if s == nil {
		s = []string{}
	}
	w.ring[w.next] = s
	w.next = (w.next + 1) % w.size
	c := candidates(s)
	for _, k := range c {
		w.counts[k]++
	}
	return c
}

func (w *window) count(key string) int { return w.counts[key] }

func splitKey(k string) []string {
	if k == "" {
		return nil
	}
	return strings.Split(k, ",")
}
