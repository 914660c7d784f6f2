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
	// as the kernel counted them: about one per page it touched
	// (ZeroPages, CopyPages).
	ZeroFaults, CopyFaults int64
	ZeroPages, CopyPages   int
}

// faultPages is how many pages each probe touches at most: 16 MiB, tens
// of milliseconds on most hosts. Each probe stops after faultTime, as on
// a VM host whose first touch of memory the guest had reported free
// waits for the host (1.4-6.8 ms per page seen): the mean is over the
// pages touched.
const (
	faultPages = 4096
	faultTime  = 2 * time.Second
)

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
	c.ZeroPages = touch(anon, page, 1, t0)
	c.Zero, c.ZeroFaults = time.Since(t0)/time.Duration(c.ZeroPages), minorFaults()-f0

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
	c.CopyPages = touch(priv, page, 2, t0)
	c.Copy, c.CopyFaults = time.Since(t0)/time.Duration(c.CopyPages), minorFaults()-f0
	return c, nil
}

// touch writes v to each page of b until faultTime has passed since t0,
// and returns how many pages it wrote.
func touch(b []byte, page int, v byte, t0 time.Time) int {
	n := 0
	for i := 0; i < len(b); i += page {
		b[i] = v
		n++
		// The clock every 64 pages: reading it is not free either.
		if n%64 == 0 && time.Since(t0) > faultTime {
			break
		}
	}
	return n
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
