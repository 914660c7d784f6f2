package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// initV2 creates the parent and enables the memory, pids and cpu
// controllers for its children where the host offers them.
func (m *Manager) initV2() error {
	if !isFS(m.root, unix.CGROUP2_SUPER_MAGIC) {
		return fmt.Errorf("%w: %s is not a cgroup2 mount", ErrNoCgroups, m.root)
	}
	m.hiers = []string{m.root}
	var err error
	m.v2, err = cgroup2.NewManager(m.root, "/"+m.parent, &cgroup2.Resources{})
	if err != nil {
		return fmt.Errorf("creating parent: %w", err)
	}
	avail, err := readFile(filepath.Join(m.root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	var want []string
	for _, c := range v2Controllers {
		if hasWord(string(avail), c) {
			want = append(want, c)
		}
	}
	m.enabled = make(map[string]bool)
	if len(want) == 0 {
		return nil // e.g. a hybrid host's empty cgroup2: freeze and kill still work
	}
	// The library enables controllers in the ancestors' subtree_control;
	// the parent's own subtree_control is what its children need.
	if err := m.v2.ToggleControllers(want, cgroup2.Enable); err != nil {
		return err
	}
	dir := filepath.Join(m.root, m.parent)
	var add string
	for _, c := range want {
		add += " +" + c
	}
	if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), add[1:]); err != nil {
		// EBUSY: the parent holds processes (the no-internal-processes rule).
		return fmt.Errorf("enabling controllers: %w", err)
	}
	on, err := readFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	for _, c := range want {
		m.enabled[c] = hasWord(string(on), c)
	}
	_, err = os.Stat(filepath.Join(dir, "memory.swap.max"))
	m.swap = err == nil
	return nil
}

// createV2 makes the group through the library and writes its limits.
func (m *Manager) createV2(g *Group, lim Limits) error {
	res := &cgroup2.Resources{}
	if lim.MemoryBytes > 0 {
		if !m.enabled["memory"] {
			return fmt.Errorf("memory limit: %w", ErrNoController)
		}
		v := lim.MemoryBytes
		res.Memory = &cgroup2.Memory{Max: &v}
		if m.swap {
			zero := int64(0)
			res.Memory.Swap = &zero
		}
	}
	if lim.Pids > 0 {
		if !m.enabled["pids"] {
			return fmt.Errorf("pids limit: %w", ErrNoController)
		}
		res.Pids = &cgroup2.Pids{Max: lim.Pids}
	}
	if lim.CPUWeight > 0 || lim.CPUs > 0 {
		if !m.enabled["cpu"] {
			return fmt.Errorf("cpu weight or quota: %w", ErrNoController)
		}
		res.CPU = &cgroup2.CPU{}
		if lim.CPUWeight > 0 {
			w := lim.CPUWeight
			res.CPU.Weight = &w
		}
		if lim.CPUs > 0 {
			quota, period := lim.cpuQuota(), uint64(CPUPeriod/time.Microsecond)
			res.CPU.Max = cgroup2.NewCPUMax(&quota, &period)
		}
	}
	// No resources for NewChild: it would rewrite every ancestor's
	// subtree_control on each create; the parent already enabled them.
	c, err := m.v2.NewChild(g.name, nil)
	if err != nil {
		return err
	}
	g.c2 = c
	return c.Update(res)
}

// hasWord reports whether the space-separated list s contains w.
func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}
