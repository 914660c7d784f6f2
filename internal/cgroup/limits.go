package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// SetLimits changes the limits of a live group, zero values as the
// defaults. Lowering the memory limit below the group's usage fails.
func (g *Group) SetLimits(lim Limits) error {
	if err := lim.validate(); err != nil {
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	if err := g.m.setLimits(g, lim); err != nil {
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	g.limit = lim.MemoryBytes
	return nil
}

// SetCPUWeight changes only the group's CPU weight (1-10000; 100 is the
// default share).
func (g *Group) SetCPUWeight(w uint64) error {
	if g.m.mode == V2 && !g.m.enabled["cpu"] {
		return fmt.Errorf("cgroup %s: cpu weight: %w", g.name, ErrNoController)
	}
	g.limMu.Lock()
	defer g.limMu.Unlock()
	if err := writeWeight(g.m.mode, g.dirs[g.m.cpu], w); err != nil {
		if !errors.Is(err, ErrBadLimits) { // refused before any write
			g.limKnown = false
		}
		return fmt.Errorf("cgroup %s: %w", g.name, err)
	}
	g.lim.CPUWeight = w
	return nil
}

// writeWeight writes CPU weight w (1..10000, 100 a default group's) to
// the group directory dir of the hierarchy holding cpu: v1's cpu.shares,
// v2's cpu.weight (absent when the parent does not enable cpu).
func writeWeight(mode Mode, dir string, w uint64) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("cpu weight %d: want 1..10000: %w", w, ErrBadLimits)
	}
	if mode == V1 {
		return writeFile(filepath.Join(dir, "cpu.shares"), strconv.FormatUint(v1Shares(w), 10))
	}
	err := writeFile(filepath.Join(dir, "cpu.weight"), strconv.FormatUint(w, 10))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cpu weight: %w", ErrNoController)
	}
	return err
}

// v1Shares is v1's cpu.shares for CPU weight w: 1024 is 100; 2 is v1's
// minimum.
func v1Shares(w uint64) uint64 { return max(w*1024/100, 2) }

// setLimits writes lim to an existing group, zero values as the defaults.
// A file that has the value already, as the group's last write left it,
// is not written again: a pooled group's limits are set when it is
// handed out (Pool.Get), reset when it is cleaned, and set again for its
// function (a spare's group). That assumes the manager is these files'
// only writer; a v2 parent that the host's init does not delegate could
// have them reset behind it.
func (m *Manager) setLimits(g *Group, lim Limits) error {
	g.limMu.Lock()
	defer g.limMu.Unlock()
	var cur *Limits
	if g.limKnown {
		c := g.lim
		cur = &c
	}
	var err error
	if m.mode == V1 {
		err = m.limitsV1(g, lim, cur)
	} else {
		err = m.limitsV2(g, lim, cur)
	}
	// A failed write leaves the files unknown: the next write writes all.
	g.lim, g.limKnown = lim, err == nil
	return err
}

// weight is l's CPU weight, 100 (a default group's) for zero.
func (l Limits) weight() uint64 {
	if l.CPUWeight == 0 {
		return 100
	}
	return l.CPUWeight
}

// limitsV2 writes a v2 group's limit files. A controller that is not
// enabled is skipped when its default is wanted and reported otherwise.
func (m *Manager) limitsV2(g *Group, lim Limits, cur *Limits) error {
	dir := g.dirs[0]
	type w struct {
		ctl, file, val string
		set, same      bool
	}
	if cur == nil {
		cur = &Limits{MemoryBytes: -1, Pids: -1, CPUs: -1} // no field matches
	}
	mem, swap, pids, wt := "max", "max", "max", "100"
	period := strconv.FormatInt(int64(CPUPeriod/time.Microsecond), 10)
	quota := "max " + period
	if lim.CPUs > 0 {
		quota = strconv.FormatInt(lim.cpuQuota(), 10) + " " + period
	}
	if lim.MemoryBytes > 0 {
		mem, swap = strconv.FormatInt(lim.MemoryBytes, 10), "0"
	}
	if lim.Pids > 0 {
		pids = strconv.FormatInt(lim.Pids, 10)
	}
	if lim.CPUWeight > 0 {
		wt = strconv.FormatUint(lim.CPUWeight, 10)
	}
	ws := []w{
		{"memory", "memory.max", mem, lim.MemoryBytes > 0, cur.MemoryBytes == lim.MemoryBytes},
		{"memory", "memory.swap.max", swap, lim.MemoryBytes > 0, cur.MemoryBytes == lim.MemoryBytes},
		{"pids", "pids.max", pids, lim.Pids > 0, cur.Pids == lim.Pids},
		{"cpu", "cpu.weight", wt, lim.CPUWeight > 0, cur.CPUs >= 0 && cur.weight() == lim.weight()},
		{"cpu", "cpu.max", quota, lim.CPUs > 0, cur.CPUs == lim.CPUs},
	}
	for _, x := range ws {
		if !m.enabled[x.ctl] {
			if x.set {
				return fmt.Errorf("%s: %w", x.file, ErrNoController)
			}
			continue
		}
		if x.file == "memory.swap.max" && !m.swap || x.same {
			continue
		}
		if err := writeFile(filepath.Join(dir, x.file), x.val); err != nil {
			return err
		}
	}
	return nil
}

// SetWeight sets the parent group's CPU weight (1..10000, 100 that of a
// default group): the share of a contended host that all the manager's
// groups together get against the host's other groups and sessions.
// Nice values do not reach across groups, so without it a niced busy
// loop in its own session (an autogroup) or service competes with all
// the sandboxes together as an equal.
func (m *Manager) SetWeight(w uint64) error {
	return writeWeight(m.mode, filepath.Join(m.hiers[m.cpu], m.parent), w)
}

// DefaultWeight is the parent weight a host of n CPUs gets by default:
// a default group's per CPU, as kubelet gives its pods' parent group, up
// to 1000 (ten default groups), so that on a big host tenants' code does
// not outweigh the host's own services a hundredfold.
func DefaultWeight(n int) uint64 {
	return uint64(min(max(n, 1)*100, 1000))
}
