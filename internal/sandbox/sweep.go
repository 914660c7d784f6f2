package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hearth-run/hearth/internal/mountinfo"

	"golang.org/x/sys/unix"
)

// Sweep removes what a crashed worker left under f.Dir: it unmounts every
// mount below it (deepest first) and deletes the sandbox directories. It
// returns how many mounts it removed. Processes are not its job: they died
// with the worker (Pdeathsig) or are killed with their cgroups.
func (f *Factory) Sweep() (int, error) {
	mounts, err := MountsUnder(f.Dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return n, fmt.Errorf("sweep: unmount %s: %w", m, err)
		}
		n++
	}
	entries, err := os.ReadDir(f.Dir)
	if err != nil && !os.IsNotExist(err) {
		return n, fmt.Errorf("sweep: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(f.Dir, e.Name())); err != nil {
			return n, fmt.Errorf("sweep: %w", err)
		}
	}
	return n, nil
}

// MountsUnder lists the mount points at or below dir in this mount
// namespace, deepest first.
func MountsUnder(dir string) ([]string, error) { return mountinfo.Under(dir) }

// Prepare sweeps f.Dir and mounts a small tmpfs on it: sandbox dirs are
// ephemeral, and creating them on a disk costs about a millisecond on the
// critical path. Sweep (or a crashed worker's successor) unmounts it.
func (f *Factory) Prepare() error {
	if _, err := f.Sweep(); err != nil {
		return err
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("sandbox dir: %w", err)
	}
	if err := unix.Mount("tmpfs", f.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=16m,mode=700"); err != nil {
		return fmt.Errorf("sandbox dir: mount tmpfs: %w", err)
	}
	return nil
}
