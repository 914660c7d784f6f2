package packages

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Modules returns the top-level importable modules of the cached package
// p, for a zygote that pre-imports it: top_level.txt when the
// distribution has one, else the first path elements of the files its
// RECORD lists (Python packages and modules, not metadata, scripts or
// bytecode caches).
func (s *Store) Modules(p Package) ([]string, error) {
	if err := checkPackage(p); err != nil {
		return nil, err
	}
	if !s.has(p) {
		return nil, fmt.Errorf("%s: %w", p, ErrNotInstalled)
	}
	dir := s.path(p)
	infos, err := filepath.Glob(filepath.Join(dir, "*.dist-info"))
	if err != nil || len(infos) == 0 {
		return nil, fmt.Errorf("%s: no .dist-info in %s", p, dir)
	}
	seen := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(infos[0], "top_level.txt")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			seen[strings.ReplaceAll(l, "/", ".")] = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", p, err)
	} else {
		f, err := os.Open(filepath.Join(infos[0], "RECORD"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			path, _, _ := strings.Cut(sc.Text(), ",")
			first, rest, nested := strings.Cut(path, "/")
			switch {
			case strings.HasSuffix(first, ".dist-info"), strings.HasSuffix(first, ".data"),
				first == "__pycache__", first == "bin", first == "..", first == "":
			case nested && strings.HasSuffix(rest, ".py"):
				seen[first] = true
			case !nested && strings.HasSuffix(first, ".py"):
				seen[strings.TrimSuffix(first, ".py")] = true
			case !nested && strings.HasSuffix(first, ".so"):
				mod, _, _ := strings.Cut(first, ".")
				seen[mod] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: reading RECORD: %w", p, err)
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}
