// Package wheeltest writes small pure-Python wheels for tests, since PyPI
// is out of reach: a wheel is a zip with the module and a .dist-info, as
// PEP 427 lays it out.
package wheeltest

import (
	"archive/zip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Wheel describes a small pure-Python distribution. Its module's
// __init__.py sets VERSION.
type Wheel struct {
	Name, Version string
	Requires      []string            // Requires-Dist lines
	Extras        map[string][]string // extra -> requirements
	Files         map[string]string   // extra files, path -> content
}

// Module is the wheel's top-level module name.
func (w Wheel) Module() string {
	return strings.ToLower(strings.NewReplacer("-", "_", ".", "_").Replace(w.Name))
}

// Write writes w as dir/<name>-<version>-py3-none-any.whl.
func (w Wheel) Write(dir string) error {
	mod := w.Module()
	dist := fmt.Sprintf("%s-%s", mod, w.Version)
	f, err := os.Create(filepath.Join(dir, dist+"-py3-none-any.whl"))
	if err != nil {
		return err
	}
	defer f.Close()
	z := zip.NewWriter(f)
	var meta strings.Builder
	fmt.Fprintf(&meta, "Metadata-Version: 2.1\nName: %s\nVersion: %s\n", w.Name, w.Version)
	for _, r := range w.Requires {
		fmt.Fprintf(&meta, "Requires-Dist: %s\n", r)
	}
	for e, rs := range w.Extras {
		fmt.Fprintf(&meta, "Provides-Extra: %s\n", e)
		for _, r := range rs {
			fmt.Fprintf(&meta, "Requires-Dist: %s ; extra == %q\n", r, e)
		}
	}
	files := map[string]string{
		mod + "/__init__.py":         fmt.Sprintf("VERSION = %q\n", w.Version),
		dist + ".dist-info/METADATA": meta.String(),
		dist + ".dist-info/WHEEL":    "Wheel-Version: 1.0\nGenerator: hearth-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
		dist + ".dist-info/RECORD":   "",
	}
	for p, c := range w.Files {
		files[p] = c
	}
	for p, c := range files {
		fw, err := z.Create(p)
		if err != nil {
			return err
		}
		if _, err := fw.Write([]byte(c)); err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return err
	}
	return f.Close()
}

// House writes every wheel into dir.
func House(dir string, wheels ...Wheel) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, w := range wheels {
		if err := w.Write(dir); err != nil {
			return fmt.Errorf("%s %s: %w", w.Name, w.Version, err)
		}
	}
	return nil
}
