package zygote

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Plan is a static zygote tree: package sets that get nodes at start-up.
// Its JSON form is what `hearth zygote plan` prints and `hearth up
// --zygote-tree` reads.
type Plan struct {
	// Nodes are package sets ("name==version"), parents before children.
	Nodes []PlanNode `json:"nodes"`
}

// PlanNode is one planned node.
type PlanNode struct {
	Packages []string `json:"packages"`
	// Functions is how many of the input functions use every package of
	// the node (informational).
	Functions int `json:"functions"`
}

// MakePlan groups packages that co-occur: every package used by at least
// minCount functions becomes a node, and so does every exact package set
// shared by at least minCount functions. Each node hangs under the
// deepest planned subset, which the Manager works out when planting.
func MakePlan(sets [][]string, minCount int) Plan {
	if minCount < 1 {
		minCount = 1
	}
	count := map[string]int{}
	for _, s := range sets {
		s = normalize(s)
		for _, k := range candidates(s) {
			count[k]++
		}
	}
	var plan Plan
	for k, n := range count {
		if n >= minCount {
			plan.Nodes = append(plan.Nodes, PlanNode{Packages: splitKey(k), Functions: n})
		}
	}
	sort.Slice(plan.Nodes, func(i, j int) bool {
		a, b := plan.Nodes[i], plan.Nodes[j]
		if len(a.Packages) != len(b.Packages) {
			return len(a.Packages) < len(b.Packages)
		}
		if a.Functions != b.Functions {
			return a.Functions > b.Functions
		}
		return strings.Join(a.Packages, ",") < strings.Join(b.Packages, ",")
	})
	return plan
}

// ReadPlan reads a plan file and returns its package sets.
func ReadPlan(path string) ([][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("zygote tree: %w", err)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("zygote tree %s: %w", path, err)
	}
	var out [][]string
	for _, n := range p.Nodes {
		for _, pkg := range n.Packages {
			if !strings.Contains(pkg, "==") {
				return nil, fmt.Errorf("zygote tree %s: package %q: want name==version", path, pkg)
			}
		}
		out = append(out, n.Packages)
	}
	return out, nil
}
