package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Attach gives the network namespace target, made by someone else (a
// zygote child makes its own, in its own user namespace, which no
// pooled namespace could be joined from), what a pooled one has: a veth
// pair to a bridge, an address and a default route. Loopback is the
// owner's to bring up. The caller owns the NS (Destroy gives the address
// back; the veth pair goes with the namespace) and still owns target.
func (p *Pool) Attach(ctx context.Context, target *os.File) (_ *NS, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	br, host, err := p.alloc()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.vseq = p.vseq%maxVeth + 1
	ns := &NS{p: p, br: br, host: host, veth: p.cfg.Prefix + "v" + strconv.Itoa(p.vseq)}
	p.mu.Unlock()
	ns.addr = netip.PrefixFrom(addN(br.base, host), 32-p.blockBits)
	defer func() {
		if err != nil {
			ns.teardown()
		}
	}()
	fd, err := unix.FcntlInt(target.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.file = os.NewFile(uintptr(fd), "netns-"+ns.veth)
	if ns.h, err = netlink.NewHandleAt(vnetns.NsHandle(fd)); err != nil {
		return nil, fmt.Errorf("netns: netlink in the namespace: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.ino = st.Ino
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ns.veth, Flags: net.FlagUp, MasterIndex: br.index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := p.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netns: veth %s: %w", ns.veth, err)
	}
	ns.hostLink = veth
	if err := p.nl.LinkSetIsolated(veth, true); err != nil {
		return nil, fmt.Errorf("netns: isolating %s: %w", ns.veth, err)
	}
	eth0, err := ns.h.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ns.eth0 = eth0
	if err := ns.h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(ns.addr)}); err != nil {
		return nil, fmt.Errorf("netns: address %s: %w", ns.addr, err)
	}
	if err := ns.h.LinkSetUp(eth0); err != nil {
		return nil, fmt.Errorf("netns: eth0 up: %w", err)
	}
	if err := ns.h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: br.gw.AsSlice()}); err != nil {
		return nil, fmt.Errorf("netns: default route: %w", err)
	}
	p.mu.Lock()
	p.st.Created++
	p.live[ns.veth] = true
	p.mu.Unlock()
	return ns, nil
}
