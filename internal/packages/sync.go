package packages

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes everything written to the file system holding dir durable:
// one syncfs instead of an fsync per file.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
