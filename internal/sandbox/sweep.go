package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

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

// SweepDisks removes what a Disks over dir left: its image files (a
// crashed worker's, and the templates) and the loop devices still backed
// by a file in dir. A device nobody uses is detached at once; one still
// mounted (a sandbox that outlived its worker) goes when its last user
// does. The file systems themselves need no sweep: a crashed worker's
// descriptors closed with it, and a sandbox's mount namespace dies with
// the sandbox. It returns how many loop devices it released.
func SweepDisks(dir string) (int, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0, fmt.Errorf("sweep disks: %w", err)
	}
	n := 0
	for _, dev := range LoopDevicesUnder(abs) {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // gone meanwhile
		}
		// On a device in use this only sets autoclear.
		if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err == nil {
			n++
		}
		unix.Close(fd)
	}
	if err := os.RemoveAll(abs); err != nil {
		return n, fmt.Errorf("sweep disks: %w", err)
	}
	return n, nil
}

// LoopDevicesUnder lists the loop devices (/dev/loopN) whose backing file
// is, or was before it was unlinked, below dir.
func LoopDevicesUnder(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, bf := range files {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue
		}
		p := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(bf))))
		}
	}
	return out
}
