package replay

import (
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
)

// importName maps the base image packages a synthetic function may use to
// the module its handler imports. Only these are known to be in the base
// image; anything else would need the install cache and a package index.
var importName = map[string]string{
	"numpy":    "numpy",
	"requests": "requests",
	"Pillow":   "PIL.Image",
}

// Packages returns the package names a popularity table may use.
func Packages() []string {
	return []string{"numpy", "requests", "Pillow"}
}

// Share is one row of a popularity table: a package set and its weight.
type Share struct {
	// Packages is the set, in canonical order; empty means no imports.
	Packages []string
	// Weight is relative to the table's total.
	Weight float64
}

// Label names the set as ParsePopularity accepts it: "numpy+requests",
// or "none".
func (s Share) Label() string { return label(s.Packages) }

func label(pkgs []string) string {
	if len(pkgs) == 0 {
		return "none"
	}
	return strings.Join(pkgs, "+")
}

// Popularity is a table of package sets and how often functions use them.
type Popularity []Share

// DefaultPopularity is the table used when none is given: a third of the
// functions import nothing beyond the standard library, numpy is the most
// popular package, and combinations are rarer than single packages.
const DefaultPopularity = "none=30,numpy=25,requests=15,numpy+requests=10,Pillow=5,numpy+Pillow=10,numpy+requests+Pillow=5"

// ParsePopularity parses a table like "none=30,numpy=25,numpy+Pillow=10".
// Package names are case-insensitive and a set's order does not matter.
func ParsePopularity(s string) (Popularity, error) {
	var p Popularity
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		set, w, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want set=weight: %w", item, ErrBadPopularity)
		}
		weight, err := strconv.ParseFloat(strings.TrimSpace(w), 64)
		if err != nil || weight < 0 || weight != weight {
			return nil, fmt.Errorf("%q: weight must be a non-negative number: %w", item, ErrBadPopularity)
		}
		pkgs, err := parseSet(set)
		if err != nil {
			return nil, err
		}
		if seen[label(pkgs)] {
			return nil, fmt.Errorf("set %s listed twice: %w", label(pkgs), ErrBadPopularity)
		}
		seen[label(pkgs)] = true
		p = append(p, Share{Packages: pkgs, Weight: weight})
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return p, nil
}

// parseSet parses "numpy+pillow" into canonical names in Packages order.
func parseSet(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") || s == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(s, "+") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(Packages(), func(p string) bool { return strings.EqualFold(p, name) })
		if i < 0 {
			return nil, fmt.Errorf("package %q is not in the base image (want %s): %w",
				name, strings.Join(Packages(), ", "), ErrBadPopularity)
		}
		if !slices.Contains(out, Packages()[i]) {
			out = append(out, Packages()[i])
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		return slices.Index(Packages(), a) - slices.Index(Packages(), b)
	})
	return out, nil
}

func (p Popularity) check() error {
	if len(p) == 0 {
		return fmt.Errorf("no package sets: %w", ErrBadPopularity)
	}
	total := 0.0
	for _, s := range p {
		if s.Weight < 0 {
			return fmt.Errorf("set %s has negative weight: %w", s.Label(), ErrBadPopularity)
		}
		for _, pkg := range s.Packages {
			if _, ok := importName[pkg]; !ok {
				return fmt.Errorf("package %q is not in the base image: %w", pkg, ErrBadPopularity)
			}
		}
		total += s.Weight
	}
	if total <= 0 {
		return fmt.Errorf("all weights are zero: %w", ErrBadPopularity)
	}
	return nil
}

// Assign draws a package set for each of n functions from p, independently
// and in proportion to the weights, using seed. The same table, n and seed
// always give the same assignment.
func (p Popularity) Assign(n int, seed int64) ([][]string, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("assigning %d functions: %w", n, ErrBadConfig)
	}
	total := 0.0
	for _, s := range p {
		total += s.Weight
	}
	r := rand.New(rand.NewSource(seed))
	out := make([][]string, n)
	for i := range out {
		x := r.Float64() * total
		k := 0
		for ; k < len(p)-1; k++ {
			if x < p[k].Weight {
				break
			}
			x -= p[k].Weight
		}
		// Rounding could leave x past the last positive weight; never
		// pick a zero-weight set.
		for p[k].Weight == 0 {
			k--
		}
		out[i] = slices.Clone(p[k].Packages)
	}
	return out, nil
}
