package criu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// joinCgroup moves the calling thread (v1) into dirs, or arranges for cmd
// to be cloned into the v2 group, and returns a func that undoes it. It
// must run on a locked thread.
func joinCgroup(dirs []string, cmd *exec.Cmd) (func(), error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	tid := strconv.Itoa(unix.Gettid())
	mine, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading own cgroups: %w", err)
	}
	var undo []string // tasks files to write tid back to
	back := func() {
		for _, f := range undo {
			os.WriteFile(f, []byte(tid), 0)
		}
	}
	for _, d := range dirs {
		m, ok := mountOf(mounts, d)
		if !ok {
			back()
			return nil, fmt.Errorf("no cgroup mount holds %s", d)
		}
		if m.v2 {
			f, err := os.Open(d)
			if err != nil {
				back()
				return nil, fmt.Errorf("opening cgroup %s: %w", d, err)
			}
			// The fd must outlive Start only; the caller's Start runs
			// before back.
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = int(f.Fd())
			prev := back
			back = func() { prev(); f.Close() }
			continue
		}
		cur, ok := ownPath(string(mine), m.controllers)
		if !ok {
			back()
			return nil, fmt.Errorf("own cgroup for %s not found", m.point)
		}
		if err := os.WriteFile(filepath.Join(d, "tasks"), []byte(tid), 0); err != nil {
			back()
			return nil, fmt.Errorf("joining cgroup %s: %w", d, err)
		}
		undo = append(undo, filepath.Join(m.point, cur, "tasks"))
	}
	return back, nil
}

type cgMount struct {
	point       string
	v2          bool
	controllers []string // v1: as in the mount options, e.g. memory, name=systemd
}

// cgroupMounts lists the cgroup file systems mounted in this namespace.
func cgroupMounts() ([]cgMount, error) {
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []cgMount
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) {
			continue
		}
		switch f[sep+1] {
		case "cgroup2":
			out = append(out, cgMount{point: f[4], v2: true})
		case "cgroup":
			var ctrls []string
			for _, o := range strings.Split(f[sep+3], ",") {
				switch o {
				case "rw", "ro", "nosuid", "nodev", "noexec", "relatime", "xattr", "clone_children", "noprefix":
				default:
					if !strings.Contains(o, "=") || strings.HasPrefix(o, "name=") {
						ctrls = append(ctrls, o)
					}
				}
			}
			out = append(out, cgMount{point: f[4], controllers: ctrls})
		}
	}
	return out, nil
}

func mountOf(mounts []cgMount, dir string) (cgMount, bool) {
	var best cgMount
	found := false
	for _, m := range mounts {
		if (dir == m.point || strings.HasPrefix(dir, m.point+"/")) && (!found || len(m.point) > len(best.point)) {
			best, found = m, true
		}
	}
	return best, found
}

// ownPath finds the path for a v1 hierarchy with the given controllers in
// a /proc/*/cgroup listing.
func ownPath(listing string, ctrls []string) (string, bool) {
	want := strings.Join(ctrls, ",")
	for _, line := range strings.Split(listing, "\n") {
		p := strings.SplitN(line, ":", 3)
		if len(p) == 3 && p[1] == want {
			return p[2], true
		}
	}
	return "", false
}
