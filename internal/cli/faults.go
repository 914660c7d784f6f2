package cli

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// faultCosts is what this host charges for the page faults forked
// sandboxes take: a first touch of an anonymous page (zero-filled), and a
// write to a page mapped read-only from a shared one (copied: the fault a
// forked child takes on each page it writes of its zygote's).
type faultCosts struct {
	Zero, Copy time.Duration // per page
	// ZeroFaults and CopyFaults are the minor faults each probe took,
	// as the kernel counted them: about faultPages each.
	ZeroFaults, CopyFaults int64
}

// faultPages is how many pages each probe touches: 16 MiB, tens of
// milliseconds on the slowest hosts seen.
const faultPages = 4096

// measureFaults times faultPages faults of each kind.
func measureFaults() (faultCosts, error) {
	var c faultCosts
	// One thread, so that its fault count is the probe's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	page := unix.Getpagesize()
	size := faultPages * page
	anon, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return c, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(anon)
	// Huge pages would fault once per 2 MiB and hide the per-page cost.
	unix.Madvise(anon, unix.MADV_NOHUGEPAGE)
	f0 := minorFaults()
	t0 := time.Now()
	for i := 0; i < size; i += page {
		anon[i] = 1
	}
	c.Zero, c.ZeroFaults = time.Since(t0)/faultPages, minorFaults()-f0

	fd, err := unix.MemfdCreate("hearth-fault-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return c, fmt.Errorf("memfd: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return c, fmt.Errorf("memfd: %w", err)
	}
	shared, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return c, fmt.Errorf("mmap: %w", err)
	}
	for i := 0; i < size; i += page {
		shared[i] = 1 // the file's pages exist
	}
	unix.Munmap(shared)
	// Mapped read-only and populated, then made writable: each write
	// finds the file's page mapped and copies it. (Populating a writable
	// private mapping would copy every page at mmap.)
	priv, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		return c, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(priv)
	if err := unix.Mprotect(priv, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		return c, fmt.Errorf("mprotect: %w", err)
	}
	f0 = minorFaults()
	t0 = time.Now()
	for i := 0; i < size; i += page {
		priv[i] = 2
	}
	c.Copy, c.CopyFaults = time.Since(t0)/faultPages, minorFaults()-f0
	return c, nil
}

// minorFaults is the calling thread's count of minor page faults.
func minorFaults() int64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return ru.Minflt
}

// slowCopy is a copy-on-write fault above which doctor calls the host
// slow for forks: bare-metal hosts and hardware-assisted VMs take 1-3 us.
const slowCopy = 5 * time.Microsecond
