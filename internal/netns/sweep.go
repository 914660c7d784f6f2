package netns

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Sweep removes the bridges, veths, forwarding rules and NAT table that a
// pool with this prefix left behind, for example when its worker was killed. The
// namespaces themselves died with that worker's descriptors. It touches
// nothing whose name does not start with prefix+"b" or prefix+"v" followed
// by a number, and returns how many objects it removed.
func Sweep(prefix string) (int, error) {
	c := Config{Prefix: prefix}
	if err := c.setDefaults(); err != nil {
		return 0, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("netns: sweep: %w", err)
	}
	defer h.Close()
	n := 0
	// A host without nf_tables has no table to sweep either.
	if had, err := delTable(prefix); err == nil && had {
		n++
	} else if err != nil && !errors.Is(err, unix.EPROTONOSUPPORT) && !errors.Is(err, unix.EAFNOSUPPORT) {
		return 0, err
	}
	rules, err := dump(func() ([]netlink.Rule, error) { return h.RuleList(unix.AF_INET) })
	if err != nil {
		return 0, fmt.Errorf("netns: sweep: listing rules: %w", err)
	}
	for i := range rules {
		r := &rules[i]
		if r.Priority != rulePriority || !ours(prefix, "b", r.IifName) {
			continue
		}
		if err := h.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			return n, fmt.Errorf("netns: sweep: rule %s: %w", r, err)
		}
		n++
	}
	links, err := dump(h.LinkList)
	if err != nil {
		return n, fmt.Errorf("netns: sweep: listing links: %w", err)
	}
	// Veths first: a bridge's deletion would take its ports with it and
	// the count would be off.
	for _, kind := range []string{"v", "b"} {
		for _, l := range links {
			if !ours(prefix, kind, l.Attrs().Name) {
				continue
			}
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
				return n, fmt.Errorf("netns: sweep: %s: %w", l.Attrs().Name, err)
			}
			n++
		}
	}
	return n, nil
}

// ours reports whether name is prefix, kind and a decimal number.
func ours(prefix, kind, name string) bool {
	rest, ok := strings.CutPrefix(name, prefix+kind)
	if !ok || rest == "" {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
