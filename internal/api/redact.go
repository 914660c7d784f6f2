package api

import (
	"path/filepath"
	"slices"
	"strings"
)

// hostPath is what a redacted host path reads as.
const hostPath = "[worker path]"

// redactor replaces host paths in text sent to clients: the worker's
// errors wrap system errors, and those name files (a sandbox's socket, a
// cgroup's control file) under the data dir and other host roots. The full
// text goes to the worker's log.
type redactor struct {
	roots []string // cleaned absolute paths, longest first
}

func newRedactor(roots []string) redactor {
	var r redactor
	for _, p := range roots {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if p = filepath.Clean(p); p != "/" && !slices.Contains(r.roots, p) {
			r.roots = append(r.roots, p)
		}
	}
	// The longest first: a root inside another is replaced whole.
	slices.SortFunc(r.roots, func(a, b string) int { return len(b) - len(a) })
	return r
}

// redact returns s with every path under a root, the root included,
// replaced by hostPath. A path ends at white space, a quote, a colon or
// a bracket, as paths do in error messages; a root only starts a path
// that goes on with "/" or ends there (the data dir /srv/h is not in
// /srv/hearth).
func (r redactor) redact(s string) string {
	if len(r.roots) == 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		root := r.rootAt(s, i)
		if root == "" {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i + len(root)
		for j < len(s) && !pathEnd(s[j]) {
			j++
		}
		b.WriteString(hostPath)
		i = j
	}
	return b.String()
}

// rootAt returns the root that starts a path at s[i:], or "".
func (r redactor) rootAt(s string, i int) string {
	if s[i] != '/' {
		return ""
	}
	for _, root := range r.roots {
		if strings.HasPrefix(s[i:], root) {
			if k := i + len(root); k == len(s) || s[k] == '/' || pathEnd(s[k]) {
				return root
			}
		}
	}
	return ""
}

func pathEnd(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', ':', ',', ';', '(', ')', '[', ']', '{', '}', '<', '>':
		return true
	}
	return false
}
