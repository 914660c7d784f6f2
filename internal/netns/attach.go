package netns

import (
	"context"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attach gives the network namespace target, made by someone else (a
// zygote child makes its own, in its own user namespace, which no
// pooled namespace could be joined from), what a pooled one has: it
// takes one from the pool (Get) and moves its end of the veth pair into
// target, where it gets the namespace's address and default route back
// (a moved link loses them). Making the veth pair, the slow part, stays
// off the start's path. Loopback is target's owner's to bring up.
//
// The NS returned stands for target's network from then on; it is never
// reused: Release and Destroy give its address back, and the veth pair
// goes with target. The caller still owns target.
func (p *Pool) Attach(ctx context.Context, target *os.File) (_ *NS, err error) {
	ns, err := p.Get(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ns.Destroy()
		}
	}()
	fd, err := unix.FcntlInt(target.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	file := os.NewFile(uintptr(fd), "netns-"+ns.veth)
	h, err := netlink.NewHandleAt(vnetns.NsHandle(fd))
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("netns: netlink in the namespace: %w", err)
	}
	if err := ns.h.LinkSetNsFd(ns.eth0, fd); err != nil {
		h.Close()
		file.Close()
		return nil, fmt.Errorf("netns: moving eth0 of %s: %w", ns.veth, err)
	}
	// From here ns is target's: the pooled namespace, now empty, goes.
	ns.h.Close()
	ns.file.Close()
	ns.h, ns.file, ns.attached = h, file, true
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.ino = st.Ino
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.eth0 = eth0
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(ns.addr)}); err != nil {
		return nil, fmt.Errorf("netns: address %s: %w", ns.addr, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return nil, fmt.Errorf("netns: eth0 up: %w", err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: ns.br.gw.AsSlice()}); err != nil {
		return nil, fmt.Errorf("netns: default route: %w", err)
	}
	return ns, nil
}
