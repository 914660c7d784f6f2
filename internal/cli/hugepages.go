package cli

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

// probeHugePages checks what a zygote needs to move its code onto huge
// pages (zygote.py's huge_code): anonymous transparent huge pages, given
// to a 2 MiB-aligned mapping that asks for them (MADV_HUGEPAGE) or, if
// the fault gave none, made by MADV_COLLAPSE. It returns the kernel's
// setting.
func probeHugePages() (string, error) {
	b, err := os.ReadFile(thpEnabled)
	if err != nil {
		return "", fmt.Errorf("no transparent huge pages: %w", err)
	}
	mode := selected(string(b))
	if mode == "never" {
		return mode, fmt.Errorf("transparent huge pages are off (%s: never)", thpEnabled)
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); err == nil && v != 0 {
		return mode, errors.New("this process and all it starts have huge pages disabled (PR_SET_THP_DISABLE, inherited from its parent)")
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
	unix.Madvise(p, unix.MADV_HUGEPAGE)
	for i := 0; i < len(p); i += 4096 {
		p[i] = 1
	}
	start := addr + uintptr(off)
	got, err := anonHuge(start)
	if err == nil && got < huge {
		unix.Madvise(p, unix.MADV_COLLAPSE)
		got, err = anonHuge(start)
	}
	if err != nil {
		return mode, err
	}
	if got < huge {
		return mode, fmt.Errorf("the kernel gave no huge page to 2 MiB that asked for one, nor collapsed it (memory too fragmented?)")
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
		if f := bytes.Fields(line); len(f) > 0 && bytes.IndexByte(f[0], '-') > 0 && !bytes.HasSuffix(f[0], []byte(":")) {
			in = bytes.HasPrefix(line, prefix)
		} else if in && bytes.HasPrefix(line, []byte("AnonHugePages:")) {
			kb, err := strconv.ParseInt(string(bytes.Fields(line)[1]), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("smaps has no mapping at %#x", addr)
}
