package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
func MountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	fh, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

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
