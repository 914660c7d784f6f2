package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// initV1 finds the hierarchies and creates the parent in each; with
// unified, also in a hybrid host's cgroup2 mount, if its groups can be
// killed there (see Manager.uni).
func (m *Manager) initV1(unified bool) error {
	var subs []cgroup1.Subsystem
	seen := map[string]int{}
	m.acct = -1
	if u := filepath.Join(m.root, "unified"); unified && isFS(u, unix.CGROUP2_SUPER_MAGIC) && canMake(u, m.parent) {
		if _, err := os.Stat(filepath.Join(u, m.parent, "cgroup.kill")); err == nil {
			m.uni = 0
			m.hiers = append(m.hiers, u)
		} else {
			unix.Rmdir(filepath.Join(u, m.parent)) // made for the look only, or another's in use
		}
	}
	for _, n := range v1Controllers {
		dir := filepath.Join(m.root, string(n))
		if !isFS(dir, unix.CGROUP_SUPER_MAGIC) {
			if n == cgroup1.Cpuacct {
				continue // optional: the CPU count only
			}
			return fmt.Errorf("%w: %s is not a cgroup v1 mount", ErrNoController, dir)
		}
		if n == cgroup1.Cpuacct && !canMake(dir, m.parent) {
			continue
		}
		// Co-mounted controllers (cpu,cpuacct or custom setups) share one
		// hierarchy; attach, kill and rmdir once per hierarchy.
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return err
		}
		i, ok := seen[real]
		if !ok {
			i = len(m.hiers)
			seen[real] = i
			m.hiers = append(m.hiers, dir)
		}
		switch n {
		case cgroup1.Memory:
			m.mem = i
			subs = append(subs, cgroup1.NewMemory(m.root))
		case cgroup1.Cpu:
			m.cpu = i
			subs = append(subs, cgroup1.NewCpu(m.root))
		case cgroup1.Cpuacct:
			m.acct = i
			subs = append(subs, cgroup1.NewCpuacct(m.root))
		case cgroup1.Pids:
			m.pids = i
			subs = append(subs, cgroup1.NewPids(m.root))
		case cgroup1.Freezer:
			m.frz = i
			subs = append(subs, cgroup1.NewFreezer(m.root))
		}
	}
	// cpu,cpuacct mounted as cpu alone, with no cpuacct link beside it.
	if _, err := os.Stat(filepath.Join(m.hiers[m.cpu], "cpuacct.usage")); m.acct < 0 && err == nil {
		m.acct = m.cpu
	}
	// Only these hierarchies: the library default would create the group
	// in every mounted one (ten here), at twice the cost.
	m.v1 = func() ([]cgroup1.Subsystem, error) { return subs, nil }
	if _, err := cgroup1.New(cgroup1.StaticPath("/"+m.parent), &specs.LinuxResources{}, cgroup1.WithHierarchy(m.v1)); err != nil {
		// Not the parents made before the failing one (empty ones only:
		// a crashed worker's groups stay for the next one to sweep).
		for _, h := range m.hiers {
			unix.Rmdir(filepath.Join(h, m.parent))
		}
		return fmt.Errorf("creating parent: %w", err)
	}
	_, err := os.Stat(filepath.Join(m.hiers[m.mem], m.parent, "memory.memsw.limit_in_bytes"))
	m.swap = err == nil
	return nil
}

// canMake says whether the parent exists in hierarchy dir or can be made
// there (not so in a read-only or undelegated one).
func canMake(dir, parent string) bool {
	return os.MkdirAll(filepath.Join(dir, parent), 0o755) == nil
}

// pinName is the freezer group pinFreezer keeps frozen. Group names
// cannot start with a dot, so no sandbox's group can take it.
const pinName = ".frozen-pin"

// pinFreezer keeps one empty freezer group frozen for the manager's life.
// The v1 freezer switches a kernel static key on when the first group
// freezes and off when the last thaws; each switch rewrites kernel text
// with an interrupt to every CPU, which costs milliseconds on a busy or
// virtualized host. Without a pin every Kill (freeze, kill, thaw) and
// every pause of the only paused sandbox switches it twice. A host
// without the pin works the same, only slower, so a failure is ignored.
// A manager without the option (the reaper's) sweeps a pin left behind
// like any other group: empty, it goes frozen or not.
func (m *Manager) pinFreezer() {
	dir := filepath.Join(m.hiers[m.frz], m.parent, pinName)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	if writeFile(filepath.Join(dir, "freezer.state"), "FROZEN") != nil {
		unix.Rmdir(dir)
		return
	}
	m.pin = dir
}

// createV1 makes the group in each hierarchy and writes its limits.
// Written directly: cgroup1.New stats every directory before creating it
// and opens every file with O_CREAT|O_TRUNC, about 70 us more (a quarter of
// the whole create+delete) for the same writes. The library still creates
// the parent.
func (m *Manager) createV1(g *Group, lim Limits) error {
	for _, d := range g.dirs[1:] {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	return m.limitsV1(g, lim, &Limits{})
}

// limitsV1 writes a group's limits; zero values write the kernel's
// defaults, so a pooled group can be re-limited or reset. Where cur (the
// group's limits as last written, nil if not known; a new group's are
// the defaults) has a file's value already, it is not written. The swap
// limit must stay at or above the memory limit: it is raised first and
// lowered last.
func (m *Manager) limitsV1(g *Group, lim Limits, cur *Limits) error {
	if cur == nil || cur.MemoryBytes != lim.MemoryBytes {
		mem, memsw := filepath.Join(g.dirs[m.mem], "memory.limit_in_bytes"), filepath.Join(g.dirs[m.mem], "memory.memsw.limit_in_bytes")
		v := "-1"
		if lim.MemoryBytes > 0 {
			v = strconv.FormatInt(lim.MemoryBytes, 10)
		}
		prev := g.limit
		if cur != nil {
			prev = cur.MemoryBytes
		}
		order := []string{mem, memsw}
		if lim.MemoryBytes <= 0 || lim.MemoryBytes > prev && prev > 0 {
			order = []string{memsw, mem}
		}
		for _, f := range order {
			if f == memsw && !m.swap {
				continue
			}
			if err := writeFile(f, v); err != nil {
				return err
			}
		}
	}
	if cur == nil || cur.Pids != lim.Pids {
		p := "max"
		if lim.Pids > 0 {
			p = strconv.FormatInt(lim.Pids, 10)
		}
		if err := writeFile(filepath.Join(g.dirs[m.pids], "pids.max"), p); err != nil {
			return err
		}
	}
	if cur == nil || v1Shares(cur.weight()) != v1Shares(lim.weight()) {
		if err := writeFile(filepath.Join(g.dirs[m.cpu], "cpu.shares"), strconv.FormatUint(v1Shares(lim.weight()), 10)); err != nil {
			return err
		}
	}
	if cur == nil {
		// The period first: the quota is checked against it. It is the
		// default, and the only value ever written, so a known group
		// has it already.
		if err := writeFile(filepath.Join(g.dirs[m.cpu], "cpu.cfs_period_us"), strconv.FormatInt(int64(CPUPeriod/time.Microsecond), 10)); err != nil {
			return err
		}
	}
	if cur == nil || cur.cpuQuota() != lim.cpuQuota() {
		return writeFile(filepath.Join(g.dirs[m.cpu], "cpu.cfs_quota_us"), strconv.FormatInt(lim.cpuQuota(), 10))
	}
	return nil
}

// addV1 writes pid to cgroup.procs of every hierarchy. Written directly
// because the library needs the cgroup1.Cgroup that createV1 skips.
func addV1(dirs []string, pid int) error {
	s := strconv.Itoa(pid)
	for _, d := range dirs {
		var err error
		for try := 0; try < 5; try++ {
			// EINVAL: the task is still being created (TASK_NEW); runc
			// and containerd retry too.
			if err = writeFile(filepath.Join(d, "cgroup.procs"), s); !errors.Is(err, unix.EINVAL) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
