package worker

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-run/hearth/internal/pool"
)

// ParseSplit parses a pool split in percent, smallest sizes first: "80/20"
// is the KiSS default of two pools, "unified" (or "100" or "") one pool.
// The percentages must be positive and sum to 100.
func ParseSplit(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "unified") {
		return []float64{1}, nil
	}
	f, err := pool.ParsePercents(s)
	if err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	return f, nil
}

// fallbackWarmBudget is the warm budget when the machine's memory cannot
// be read.
const fallbackWarmBudget int64 = 2 << 30

// DefaultWarmBudget is the warm budget when none is set: half of the
// memory the worker may use, which is the smaller of the machine's
// MemTotal (/proc/meminfo) and the memory limit of the worker's own
// cgroup and its ancestors (v1 memory.limit_in_bytes, v2 memory.max).
// The other half is left to the zygotes, the page cache and the worker
// itself. When neither can be read it is 2 GiB.
func DefaultWarmBudget() int64 {
	return warmBudget("/proc/meminfo", "/proc/self/cgroup", "/sys/fs/cgroup")
}

// warmBudget is DefaultWarmBudget reading the given files and cgroup
// root, so a test can hand it its own.
func warmBudget(meminfo, selfCgroup, cgroupRoot string) int64 {
	mem := memTotal(meminfo)
	if lim := cgroupMemoryLimit(selfCgroup, cgroupRoot); lim > 0 && (mem <= 0 || lim < mem) {
		mem = lim
	}
	if mem <= 0 {
		return fallbackWarmBudget
	}
	return mem / 2
}

// memTotal returns MemTotal in bytes from a meminfo file, or 0.
func memTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil || kb <= 0 {
			return 0
		}
		return kb << 10
	}
	return 0
}

// unlimited is the smallest limit read as none: v1 writes "no limit" as
// the largest page-aligned int64.
const unlimited int64 = 1 << 62

// cgroupMemoryLimit returns the smallest memory limit on the path from
// the cgroup named in selfCgroup (a /proc/<pid>/cgroup file) up to the
// root of its hierarchy under cgroupRoot, or 0 if there is none. The v1
// memory hierarchy wins over the v2 one on a hybrid host, since that is
// the one that limits.
func cgroupMemoryLimit(selfCgroup, cgroupRoot string) int64 {
	b, err := os.ReadFile(selfCgroup)
	if err != nil {
		return 0
	}
	var dir, root, file string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			root, file = filepath.Join(cgroupRoot, "memory"), "memory.limit_in_bytes"
			dir = filepath.Join(root, parts[2])
		case parts[0] == "0" && parts[1] == "" && file == "":
			root, file = cgroupRoot, "memory.max"
			dir = filepath.Join(root, parts[2])
		}
	}
	if file == "" {
		return 0
	}
	var lim int64
	for {
		if v, err := os.ReadFile(filepath.Join(dir, file)); err == nil {
			n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
			if err == nil && n > 0 && n < unlimited && (lim == 0 || n < lim) {
				lim = n
			}
		}
		if dir == root || !strings.HasPrefix(dir, root) {
			return lim
		}
		dir = filepath.Dir(dir)
	}
}

// CheckMemory reports an error matching ErrMemoryTooLarge if a function
// of memoryMB could never get a sandbox in a warm pool of budget bytes
// split as pc says. A function larger than its pool uses the pool with
// the most memory, and borrows from the largest other one what that
// lacks; so with one or two pools (the default) only memory_mb above the
// whole budget can never run.
func CheckMemory(budget int64, pc PoolConfig, memoryMB int) error {
	pc.setDefaults()
	parts, err := pool.Split(budget, pc.Fractions, pc.Thresholds)
	if err != nil {
		return fmt.Errorf("pool partitions: %w", err)
	}
	if !(pool.Config{Partitions: parts, Borrow: pc.Borrow, Oversize: true}).Fits(int64(memoryMB) << 20) {
		return memoryErr(memoryMB, budget, parts)
	}
	return nil
}

// memoryErr explains that memory_mb mb can never fit a sandbox under
// budget split into parts.
func memoryErr(mb int, budget int64, parts []pool.Partition) error {
	caps := make([]int64, len(parts))
	for i, p := range parts {
		caps[i] = p.Capacity
	}
	slices.Sort(caps)
	most := caps[len(caps)-1]
	if len(caps) > 1 {
		most += caps[len(caps)-2]
	}
	if most >= budget {
		return fmt.Errorf("memory_mb %d is more than the worker's whole warm budget of %d MB, so the function could never run: %w",
			mb, budget>>20, ErrMemoryTooLarge)
	}
	return fmt.Errorf("memory_mb %d is more than the %d MB of its %d MB warm budget that the worker's pools can give one sandbox, so the function could never run: %w",
		mb, most>>20, budget>>20, ErrMemoryTooLarge)
}
