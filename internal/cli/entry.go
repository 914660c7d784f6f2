package cli

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// entryBatches of entryBatch system calls make the kernel-entry probe: a
// tenth of a second where one costs a microsecond. The fastest batch
// counts, so that a busy host's preemptions do not pass for slow entries.
const (
	entryBatches = 20
	entryBatch   = 5000
)

// forkEntries is about how often a fork start enters the kernel: about
// 500 system calls (worker, zygote and child: strace over 50 starts) and
// about as many page faults.
const forkEntries = 1000

// slowEntry is a system call above which doctor calls the host slow for
// starts: a bare call typically takes 0.05-0.3 us, with page-table
// isolation and PCID at the top of that.
const slowEntry = 500 * time.Nanosecond

// measureEntry times a bare system call (getppid, which does no work),
// the cost of entering and leaving the kernel.
func measureEntry() time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := time.Duration(1<<63 - 1)
	for range entryBatches {
		t0 := time.Now()
		for range entryBatch {
			// Raw: the Go scheduler's hand-off around a blocking call
			// would be timed too.
			unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		best = min(best, time.Since(t0)/entryBatch)
	}
	return best
}

// entryCause names Meltdown's mitigation, page-table isolation, where the
// kernel has it on: each entry and exit switches page tables, and on a
// CPU whose address space identifiers (PCID) the kernel does not use it
// also empties the TLB. It says whether the kernel's command line has
// pti=on. Empty if isolation is off, or the kernel does not say (arm64's
// isolation has no flag in cpuinfo).
func entryCause(vulnDir, cpuinfo, cmdline string) string {
	var how string
	if m, err := os.ReadFile(filepath.Join(vulnDir, "meltdown")); err == nil && strings.Contains(string(m), "PTI") {
		how = strings.TrimSpace(string(m))
	}
	// The kernel drops pcid from the flags when it cannot use it; pti is
	// there whenever isolation is on, also where pti=on turned it on for
	// a CPU the sysfs file calls not affected.
	var flags []string
	info, infoErr := os.ReadFile(cpuinfo)
	for line := range strings.Lines(string(info)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			flags = strings.Fields(v)
			break
		}
	}
	if how == "" && slices.Contains(flags, "pti") {
		how = "pti in the CPU flags"
	}
	if how == "" {
		return ""
	}
	if c, err := os.ReadFile(cmdline); err == nil && slices.Contains(strings.Fields(string(c)), "pti=on") {
		how += ", with pti=on on the kernel command line"
	}
	switch {
	case infoErr != nil || flags == nil:
		return "page-table isolation on (" + how + ")"
	case slices.Contains(flags, "pcid"):
		return "page-table isolation on (" + how + "), with PCID"
	default:
		return "page-table isolation on (" + how + ") without PCID: each entry and exit also empties the TLB"
	}
}
