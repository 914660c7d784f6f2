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

// joinCgroup moves the calling thread into the v1 dirs and returns the
// v2 ones, which cmd must enter before it runs (enterStopped), and a func
// that moves the thread back. It must run on a locked thread.
//
// A v2 group is not entered by CLONE_INTO_CGROUP: kernels with the 2025
// fix of the race between fork and cgroup.kill (Linux 6.14, backported
// to stable ones; 6.18 here) compare the target group's kill count with
// the forking process's own group's, so a child cloned into a group that
// was ever emptied through cgroup.kill (every pooled group) is killed at
// birth. cmd is started traced instead, stops
// at its exec, and is moved by pid before it runs a single instruction
// of criu.
func joinCgroup(dirs []string, cmd *exec.Cmd) (func(), []string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, nil, err
	}
	tid := strconv.Itoa(unix.Gettid())
	mine, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, nil, fmt.Errorf("reading own cgroups: %w", err)
	}
	var undo []string // tasks files to write tid back to
	back := func() {
		for _, f := range undo {
			os.WriteFile(f, []byte(tid), 0)
		}
	}
	var v2 []string
	for _, d := range dirs {
		m, ok := mountOf(mounts, d)
		if !ok {
			back()
			return nil, nil, fmt.Errorf("no cgroup mount holds %s", d)
		}
		if m.v2 {
			v2 = append(v2, d)
			continue
		}
		cur, ok := ownPath(string(mine), m.controllers)
		if !ok {
			back()
			return nil, nil, fmt.Errorf("own cgroup for %s not found", m.point)
		}
		if err := os.WriteFile(filepath.Join(d, "tasks"), []byte(tid), 0); err != nil {
			back()
			return nil, nil, fmt.Errorf("joining cgroup %s: %w", d, err)
		}
		undo = append(undo, filepath.Join(m.point, cur, "tasks"))
	}
	if len(v2) > 0 {
		cmd.SysProcAttr.Ptrace = true // stops at exec: see enterStopped
	}
	return back, v2, nil
}

// enterStopped moves pid, a child of the calling thread started with
// Ptrace and so stopped at its exec, into the v2 dirs, then lets it run.
// It must run on the thread that started pid (its tracer).
func enterStopped(pid int, dirs []string) error {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for criu to stop at exec: %w", err)
		}
		break
	}
	if !ws.Stopped() {
		// Killed (its ctx) before the exec's stop: reaped here.
		return fmt.Errorf("criu ended before it ran: wait status %#x", uint32(ws))
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			// Killed while stopped: it must not run outside the group.
			unix.Kill(pid, unix.SIGKILL)
			return fmt.Errorf("moving criu into cgroup %s: %w", d, err)
		}
	}
	// Detached with no signal: the exec's SIGTRAP is dropped.
	if err := unix.PtraceDetach(pid); err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("letting criu run: %w", err)
	}
	return nil
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
