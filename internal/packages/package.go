package packages

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/hearth-run/hearth/internal/function"
)

// Package is one resolved distribution of a function (defined with the
// function, which lists its packages).
type Package = function.Package

var (
	normNameRE = regexp.MustCompile(`^[a-z0-9]+(?:-[a-z0-9]+)*$`)
	// Versions as pip reports them; anything that could escape a path
	// element is rejected.
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+!_-]*$`)
)

// checkPackage checks that p can name a cache directory.
func checkPackage(p Package) error {
	if !normNameRE.MatchString(p.Name) {
		return fmt.Errorf("package name %q is not a normalised project name: %w", p.Name, ErrInvalid)
	}
	if !versionRE.MatchString(p.Version) || len(p.Version) > 128 {
		return fmt.Errorf("package %s: bad version %q: %w", p.Name, p.Version, ErrInvalid)
	}
	return nil
}

// pkgDir is the package's directory name below the cache: the name and
// version joined by "-" with "-" inside each escaped to "_", as in wheel
// file names, so it splits unambiguously.
func pkgDir(p Package) string {
	return strings.ReplaceAll(p.Name, "-", "_") + "-" + strings.ReplaceAll(p.Version, "-", "_")
}

// ParsePackage parses "name==version"; the name is normalised.
func ParsePackage(s string) (Package, error) {
	name, ver, ok := strings.Cut(s, "==")
	if !ok {
		return Package{}, fmt.Errorf("package %q: want name==version: %w", s, ErrInvalid)
	}
	p := Package{Name: function.NormalizeName(name), Version: strings.TrimSpace(ver)}
	if err := checkPackage(p); err != nil {
		return Package{}, err
	}
	return p, nil
}

// Cached returns the packages of set that live in the cache (not in the
// base image), sorted by name and version, without duplicates.
func Cached(set []Package) []Package {
	var out []Package
	seen := map[string]bool{}
	for _, p := range set {
		if p.Base || seen[p.String()] {
			continue
		}
		seen[p.String()] = true
		out = append(out, p)
	}
	sortPackages(out)
	return out
}

func sortPackages(ps []Package) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Name != ps[j].Name {
			return ps[i].Name < ps[j].Name
		}
		return ps[i].Version < ps[j].Version
	})
}

// setHash names a set of cached packages (sorted, deduplicated).
func setHash(cached []Package) string {
	h := sha256.New()
	for _, p := range cached {
		fmt.Fprintf(h, "%s\n", p)
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}
