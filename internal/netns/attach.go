package netns

import (
	"context"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Attach gives the network namespace target, made by someone else (a
// zygote child makes its own, in its own user namespace, which no
// pooled namespace could be joined from), what a pooled one has: a veth
// pair to a bridge, its end eth0 made right inside target, an address and
// a default route. Loopback is target's owner's to bring up.
//
// The pair is made for target, not moved from a pooled namespace: moving
// a link between namespaces waits for RCU grace periods, 13-22 ms on a
// host of 2 CPUs with lazy RCU, against about 1 ms to make the pair in
// place, and the emptied pooled namespace would then have to go too.
//
// The NS returned stands for target's network from then on; it is never
// reused: Release and Destroy give its address back, and the veth pair
// goes with target. The caller still owns target.
func (p *Pool) Attach(ctx context.Context, target *os.File) (_ *NS, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ns, err := p.newNS()
	if err != nil {
		return nil, err
	}
	ns.attached = true
	defer func() {
		if err != nil {
			// Target lives on (its owner kills it, or may retry): the
			// pair, if made, would stay with it, with the address
			// that goes back to the pool.
			p.nl.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ns.veth}})
			ns.Destroy()
		}
	}()
	fd, err := unix.FcntlInt(target.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.file = os.NewFile(uintptr(fd), "netns-"+ns.veth)
	if ns.h, err = p.enter(fd); err != nil {
		return nil, err
	}
	if err := p.plug(ns); err != nil {
		return nil, err
	}
	return ns, nil
}

// enter makes a netlink handle inside the namespace fd (routing alone:
// all the NS of another's namespace does) and turns IPv6 off for the
// links made there from then on, eth0 among them, as a pooled namespace
// does (see unshare): without it eth0 took a link-local address, with
// duplicate address detection, router solicitations and multicast
// reports, the kernel's work for every forked sandbox. It does so on a
// thread away from the host namespace (see away).
func (p *Pool) enter(fd int) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := p.away(fd, func() error {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netns: netlink in the namespace: %w", err)
		}
		if err := writeSysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"); err != nil {
			return fmt.Errorf("netns: turning IPv6 off in the namespace: %w", err)
		}
		return nil
	})
	if err != nil {
		if h != nil {
			h.Close()
		}
		return nil, err
	}
	return h, nil
}
