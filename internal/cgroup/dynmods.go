package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// FavorDynMods turns on the kernel's favordynmods for cgroup migrations.
//
// Moving a process into a cgroup takes the global cgroup_threadgroup_rwsem
// for writing, and by default each such write waits for an RCU grace
// period: measured here, ~10 ms for the first cgroup.procs write of a
// sandbox's process, the largest single cost of a fork start. With
// favordynmods the lock stays in its slow-reader, fast-writer mode, which
// is what a FaaS worker that joins a cgroup on every start wants (the
// kernel documents it for exactly this). The switch is global, so turning
// it on through any cgroup2 mount, including the unified mount of a
// hybrid v1 host, helps v1 migrations too. It reports whether the option
// is on afterwards; a host without a cgroup2 mount returns an error.
func FavorDynMods() (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mountpoint ... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup2" {
			continue
		}
		target := pf[4]
		var opts []string
		for _, o := range strings.Split(qf[2], ",") {
			if o == "favordynmods" {
				return true, nil
			}
			// Remounting cgroup2 resets the options it is not given.
			switch o {
			case "nsdelegate", "memory_localevents", "memory_recursiveprot", "memory_hugetlb_accounting", "pids_localevents":
				opts = append(opts, o)
			}
		}
		opts = append(opts, "favordynmods")
		if err := unix.Mount("", target, "", unix.MS_REMOUNT, strings.Join(opts, ",")); err != nil {
			return false, fmt.Errorf("remounting %s with favordynmods: %w", target, err)
		}
		return true, nil
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, fmt.Errorf("no cgroup2 mount to set favordynmods on: %w", ErrNoCgroups)
}
