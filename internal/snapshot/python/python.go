// Package python holds hearth_snapshot, the Python side of snapshot
// restores: a SIGUSR2 handler that reseeds random generators and runs the
// hooks a handler registered with hearth_snapshot.after_restore.
//
// The runtime must import it and call install() before it loads the
// handler, with the module on sys.path (for example next to the runtime's
// own files); Install writes it into a directory.
package python

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed hearth_snapshot.py
var files embed.FS

// Module is the module's file name.
const Module = "hearth_snapshot.py"

// Source returns the module's source.
func Source() []byte {
	b, err := files.ReadFile(Module)
	if err != nil {
		return nil // embedded: cannot happen
	}
	return b
}

// Install writes the module into dir (mode 0644).
func Install(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, Module), Source(), 0o644); err != nil {
		return fmt.Errorf("installing %s: %w", Module, err)
	}
	return nil
}
