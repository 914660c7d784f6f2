package cli

import (
	"bytes"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// entryCalls is how many system calls the kernel-entry probe makes: a
// tenth of a second where one costs a microsecond.
const entryCalls = 100000

// slowEntry is a system call above which doctor calls the host slow for
// starts: a bare call typically takes 0.05-0.3 us, with page-table
// isolation and PCID at the top of that. A fork start makes about 500
// (worker, zygote and child: strace over 50 starts) and takes about as
// many page faults, which pay the same entry and exit.
const slowEntry = 500 * time.Nanosecond

// measureEntry times a bare system call (getppid, which does no work),
// the cost of entering and leaving the kernel.
func measureEntry() time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := time.Now()
	for i := 0; i < entryCalls; i++ {
		// Raw: the Go scheduler's hand-off around a blocking call would
		// be timed too.
		unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
	}
	return time.Since(t0) / entryCalls
}

// entryCause says why kernel entries are slow where the kernel says so:
// Meltdown's mitigation (page-table isolation) on a CPU whose address
// space identifiers (PCID) the kernel does not see, so every entry and
// exit also empties the TLB. It says whether the kernel's command line
// forced the mitigation on. Empty if there is no page-table isolation.
func entryCause(vulnDir, cpuinfo, cmdline string) string {
	m, err := os.ReadFile(vulnDir + "/meltdown")
	if err != nil || !bytes.Contains(m, []byte("PTI")) {
		return ""
	}
	how := strings.TrimSpace(string(m))
	if c, err := os.ReadFile(cmdline); err == nil && slices.Contains(strings.Fields(string(c)), "pti=on") {
		how += ", forced by pti=on on the kernel command line"
	}
	info, err := os.ReadFile(cpuinfo)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(info), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "pcid" {
				return "page-table isolation on (" + how + "), with PCID"
			}
		}
		return "page-table isolation on (" + how + ") without PCID: each entry and exit also empties the TLB"
	}
	return ""
}
