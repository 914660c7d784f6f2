// Package fsutil holds small file-system helpers shared by the caches.
package fsutil

import (
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DiskUsage sums the blocks allocated to everything under dir, in bytes:
// what a cache really costs on disk, sparse files and small-file slack
// included, unlike the apparent size.
func DiskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n += st.Blocks * 512
		return nil
	})
	return n, err
}
