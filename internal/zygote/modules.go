package zygote

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/hearth-run/hearth/internal/function"
)

// BaseResolver maps requirements to the base image's installed
// distributions ("name==version") and distributions to the modules a
// zygote imports for them.
type BaseResolver struct {
	Base string

	once  sync.Once
	dists map[string][]function.Dist
	err   error
}

func (r *BaseResolver) load() {
	r.once.Do(func() { r.dists, r.err = function.InstalledDists(r.Base) })
}

// PackageSet returns the base-image distributions that satisfy reqs, as
// sorted "name==version". Requirements the base does not have are left
// out: they are not importable by a zygote built from the base.
func (r *BaseResolver) PackageSet(reqs []string) ([]string, error) {
	r.load()
	if r.err != nil {
		return nil, r.err
	}
	var out []string
	for _, line := range reqs {
		req, err := function.ParseRequirement(line)
		if err != nil {
			return nil, err
		}
		for _, d := range r.dists[req.Name] {
			if req.Satisfied(d.Version) {
				out = append(out, d.Name+"=="+d.Version)
				break
			}
		}
	}
	return normalize(out), nil
}

// Modules returns the top-level modules of the given distributions.
func (r *BaseResolver) Modules(pkgs []string) ([]string, error) {
	r.load()
	if r.err != nil {
		return nil, r.err
	}
	var out []string
	for _, p := range pkgs {
		name, version, ok := strings.Cut(p, "==")
		if !ok {
			return nil, fmt.Errorf("package %q: want name==version", p)
		}
		var dist *function.Dist
		for i, d := range r.dists[function.NormalizeName(name)] {
			if d.Version == version {
				dist = &r.dists[function.NormalizeName(name)][i]
			}
		}
		if dist == nil {
			return nil, fmt.Errorf("package %s is not in the base image", p)
		}
		out = append(out, topLevel(dist.Path, name)...)
	}
	sort.Strings(out)
	return out, nil
}

// topLevel reads a distribution's top_level.txt, falling back to its name.
func topLevel(distPath, name string) []string {
	b, err := os.ReadFile(filepath.Join(distPath, "top_level.txt"))
	if err == nil {
		var mods []string
		for _, l := range strings.Fields(string(b)) {
			// Private and test modules are not what a handler imports.
			if !strings.HasPrefix(l, "_") && !strings.Contains(l, "/") {
				mods = append(mods, l)
			}
		}
		if len(mods) > 0 {
			return mods
		}
	}
	return []string{strings.ReplaceAll(function.NormalizeName(name), "-", "_")}
}
