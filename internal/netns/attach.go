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
	// Routing alone: all the NS of another's namespace does.
	if ns.h, err = netlink.NewHandleAt(vnetns.NsHandle(fd), unix.NETLINK_ROUTE); err != nil {
		return nil, fmt.Errorf("netns: netlink in the namespace: %w", err)
	}
	if err := p.plug(ns); err != nil {
		return nil, err
	}
	return ns, nil
}
