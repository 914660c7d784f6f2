package zygote

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

const thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

// ProbeHugeCode checks, in this process, what a zygote does to move its
// code onto huge pages (zygote.py's huge_code): an anonymous 2 MiB-aligned
// mapping given a transparent huge page when it asks for one
// (MADV_HUGEPAGE) or, if its first touch got none, collapsed into one
// (MADV_COLLAPSE, Linux 6.1, whatever the kernel's setting), then made
// executable. It returns the kernel's setting. Zygotes inherit what
// limits their worker (PR_SET_THP_DISABLE, a memory-execute policy),
// which this process may not share: they say why in /v1/zygotes.
func ProbeHugeCode() (mode string, err error) {
	mode = "unknown"
	if b, err := os.ReadFile(thpEnabled); err == nil {
		mode = selected(string(b))
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err == nil && v != 0 {
		return mode, errors.New("huge pages are disabled for this process and all it starts (PR_SET_THP_DISABLE, inherited)")
	}
	const huge = 2 << 20
	m, err := unix.Mmap(-1, 0, 2*huge, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return mode, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(m)
	addr := uintptr(unsafe.Pointer(&m[0]))
	off := int((huge - addr%huge) % huge)
	p := m[off : off+huge]
	start := addr + uintptr(off)
	var why []string
	if err := unix.Madvise(p, unix.MADV_HUGEPAGE); err != nil {
		why = append(why, "MADV_HUGEPAGE: "+err.Error())
	}
	for i := 0; i < len(p); i += os.Getpagesize() {
		p[i] = 1
	}
	got, err := anonHuge(start)
	if err == nil && got < huge {
		if err := unix.Madvise(p, unix.MADV_COLLAPSE); err != nil {
			why = append(why, "MADV_COLLAPSE: "+err.Error())
		}
		got, err = anonHuge(start)
	}
	switch {
	case err != nil:
		return mode, err
	case got < huge && len(why) > 0:
		return mode, fmt.Errorf("no huge page for 2 MiB that asked for one (%s)", strings.Join(why, "; "))
	case got < huge:
		return mode, errors.New("no huge page for 2 MiB that asked for one, nor a collapse into one (memory too fragmented?)")
	}
	if err := unix.Mprotect(p, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return mode, fmt.Errorf("making a copy of code executable: mprotect: %w", err)
	}
	return mode, nil
}

// selected is the bracketed choice of a sysfs setting ("always
// [madvise] never").
func selected(s string) string {
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return strings.TrimSpace(s)
}

// anonHuge is AnonHugePages, in bytes, of this process's mapping that
// starts at addr.
func anonHuge(addr uintptr) (int64, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	prefix := []byte(strconv.FormatUint(uint64(addr), 16) + "-")
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if f := bytes.Fields(line); len(f) >= 5 && bytes.IndexByte(f[0], '-') > 0 && !bytes.HasSuffix(f[0], []byte(":")) {
			in = bytes.HasPrefix(line, prefix)
		} else if in && bytes.HasPrefix(line, []byte("AnonHugePages:")) && len(f) >= 2 {
			kb, err := strconv.ParseInt(string(f[1]), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("smaps has no mapping at %#x", addr)
}
