package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NS is one network namespace of the pool's, or another's it plumbed
// (Attach): a veth pair to a bridge, an address and a default route. It is owned by whoever got it from the pool until
// it goes back with Put or Destroy.
type NS struct {
	p        *Pool
	br       *bridge
	host     int // host number in the bridge's block
	veth     string
	addr     netip.Prefix
	file     *os.File
	h        *netlink.Handle // inside the namespace
	ino      uint64
	hostLink netlink.Link
	eth0     netlink.Link

	base     netlink.LinkStatistics // counters at the last scrub
	attached bool                   // another's namespace (Attach): never reused
	destroy  sync.Once
}

// File returns the namespace's descriptor, for setns or a child process
// (sandbox.Config.NetNS). The NS owns it; it is closed by Destroy.
func (ns *NS) File() *os.File { return ns.file }

// Addr returns the namespace's address and the prefix length of its
// bridge's block.
func (ns *NS) Addr() netip.Prefix { return ns.addr }

// Gateway returns the address of the namespace's bridge, its default
// route.
func (ns *NS) Gateway() netip.Addr { return ns.br.gw }

// HostVeth returns the name of the host end of the veth pair.
func (ns *NS) HostVeth() string { return ns.veth }

// Bridge returns the name of the namespace's bridge.
func (ns *NS) Bridge() string { return ns.br.name }

// Counters are eth0's traffic since the namespace was made or last
// scrubbed.
type Counters struct {
	RxBytes, TxBytes, RxPackets, TxPackets uint64
}

// Counters returns eth0's traffic since the namespace was handed out.
func (ns *NS) Counters() (Counters, error) {
	s, err := ns.stats()
	if err != nil {
		return Counters{}, err
	}
	return Counters{
		RxBytes: s.RxBytes - ns.base.RxBytes, TxBytes: s.TxBytes - ns.base.TxBytes,
		RxPackets: s.RxPackets - ns.base.RxPackets, TxPackets: s.TxPackets - ns.base.TxPackets,
	}, nil
}

func (ns *NS) stats() (netlink.LinkStatistics, error) {
	l, err := ns.h.LinkByIndex(ns.eth0.Attrs().Index)
	if err != nil {
		return netlink.LinkStatistics{}, fmt.Errorf("netns %s: eth0: %w", ns.veth, err)
	}
	if l.Attrs().Statistics == nil {
		return netlink.LinkStatistics{}, fmt.Errorf("netns %s: eth0 has no statistics", ns.veth)
	}
	return *l.Attrs().Statistics, nil
}

// Destroy closes the namespace and gives its address back. The kernel
// frees the namespace, and with it the veth pair, in the background once
// no process is left in it. Destroying twice is harmless.
func (ns *NS) Destroy() {
	ns.destroy.Do(func() {
		if ns.Offline() {
			ns.file.Close()
			ns.p.mu.Lock()
			ns.p.st.Destroyed++
			ns.p.mu.Unlock()
			return
		}
		ns.teardown()
		// Counted as destroyed only if it was counted as made: one that
		// failed half way through plug was not.
		ns.p.mu.Lock()
		if ns.p.live[ns.veth] {
			ns.p.st.Destroyed++
			delete(ns.p.live, ns.veth)
		}
		ns.p.mu.Unlock()
	})
}

// teardown undoes whatever Create managed to do. The veth pair is not
// deleted here: deleting a link waits for an RCU grace period (about 28 ms
// here), while the kernel tears down a closed namespace, its end of the
// pair and thus the pair, in batches in the background. Veth names are
// never reused while a pool lives, so a pair still going away collides
// with nothing.
func (ns *NS) teardown() {
	if ns.hostLink != nil && ns.file == nil {
		// The peer was made but no namespace holds it: cannot happen, as
		// the namespace comes first; delete it anyway.
		ns.p.nl.LinkDel(ns.hostLink)
	}
	if ns.h != nil {
		ns.h.Close()
	}
	if ns.file != nil {
		ns.file.Close()
	}
	ns.p.release(ns.br, ns.host)
}

// scrub checks that nothing of the last sandbox is left, removes foreign
// routes, addresses and neighbours, and restarts the counters.
func (ns *NS) scrub(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	// Processes die with the sandbox, but their exit (and the release of
	// the namespace) can trail the kill a little.
	delay := 100 * time.Microsecond
	for {
		pids, err := procsIn(ns.ino)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v: %w", pids, ErrInUse)
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
	if err := ns.noSockets(); err != nil {
		return err
	}
	links, err := dump(ns.h.LinkList)
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != "eth0" {
			return fmt.Errorf("link %s: %w", n, ErrInUse)
		}
	}
	if err := ns.scrubAddrs(); err != nil {
		return err
	}
	if err := ns.scrubRoutes(); err != nil {
		return err
	}
	neigh, err := ns.h.NeighList(ns.eth0.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing neighbours: %w", err)
	}
	for i := range neigh {
		if err := ns.h.NeighDel(&neigh[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("flushing neighbour %s: %w", neigh[i].IP, err)
		}
	}
	return ns.resetCounters()
}

// noSockets fails if any bound or connected TCP, UDP or unix socket
// (abstract unix names are per network namespace) is left, TIME_WAIT
// included. An unbound socket is invisible to sock_diag; it can only
// outlive the sandbox if its descriptor was passed out, which the worker
// never accepts.
func (ns *NS) noSockets() error {
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		tcp, err := ns.h.SocketDiagTCP(fam)
		if err != nil {
			return fmt.Errorf("listing tcp sockets: %w", err)
		}
		udp, err := ns.h.SocketDiagUDP(fam)
		if err != nil {
			return fmt.Errorf("listing udp sockets: %w", err)
		}
		if n := len(tcp) + len(udp); n > 0 {
			return fmt.Errorf("%d tcp/udp sockets left: %w", n, ErrInUse)
		}
	}
	us, err := ns.h.UnixSocketDiag()
	if err != nil {
		return fmt.Errorf("listing unix sockets: %w", err)
	}
	if len(us) > 0 {
		return fmt.Errorf("%d unix sockets left: %w", len(us), ErrInUse)
	}
	return nil
}

// scrubAddrs removes every address but eth0's own and loopback's.
func (ns *NS) scrubAddrs() error {
	addrs, err := dump(func() ([]netlink.Addr, error) { return ns.h.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	own := false
	for i := range addrs {
		a := &addrs[i]
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		bits, _ := a.Mask.Size()
		switch {
		case a.LinkIndex == ns.eth0.Attrs().Index && netip.PrefixFrom(ip, bits) == ns.addr:
			own = true
			continue
		case ip.IsLoopback() || ip.Is6() && ip.IsLinkLocalUnicast():
			continue
		}
		link := netlink.Link(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: a.LinkIndex}})
		if err := ns.h.AddrDel(link, a); err != nil {
			return fmt.Errorf("removing address %s: %w", a.IPNet, err)
		}
	}
	if !own {
		return fmt.Errorf("own address %s gone: %w", ns.addr, ErrInUse)
	}
	return nil
}

// scrubRoutes removes every main-table route but the block's and the
// default one, and puts the default route back if it is gone.
func (ns *NS) scrubRoutes() error {
	routes, err := dump(func() ([]netlink.Route, error) { return ns.h.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	def := false
	for i := range routes {
		r := &routes[i]
		switch {
		case r.Dst == nil || r.Dst.IP.IsUnspecified():
			if r.Gw.Equal(ns.br.gw.AsSlice()) && r.LinkIndex == ns.eth0.Attrs().Index {
				def = true
				continue
			}
		case r.Dst.String() == ns.addr.Masked().String() && r.LinkIndex == ns.eth0.Attrs().Index:
			continue
		}
		if err := ns.h.RouteDel(r); err != nil {
			return fmt.Errorf("removing route %s: %w", r, err)
		}
	}
	if !def {
		if err := ns.h.RouteAdd(&netlink.Route{LinkIndex: ns.eth0.Attrs().Index, Gw: ns.br.gw.AsSlice()}); err != nil {
			return fmt.Errorf("restoring default route: %w", err)
		}
	}
	return nil
}

func (ns *NS) resetCounters() error {
	s, err := ns.stats()
	if err != nil {
		return err
	}
	ns.base = s
	return nil
}

// procsIn lists the processes with a thread in the network namespace of
// inode ino. /proc/PID/ns/net is the leader thread's alone: a process
// whose other thread entered the namespace (setns on a locked thread)
// holds it too.
func procsIn(ino uint64) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing /proc: %w", err)
	}
	var pids []int
	var st unix.Stat_t
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if unix.Stat("/proc/"+n+"/ns/net", &st) == nil && st.Ino == ino || threadIn("/proc/"+n+"/task", n, ino) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// threadIn reports whether a thread other than leader, of the process
// whose task directory is dir, is in the network namespace of inode ino.
func threadIn(dir, leader string, ino uint64) bool {
	d, err := os.Open(dir)
	if err != nil {
		return false // gone
	}
	defer d.Close()
	tids, _ := d.Readdirnames(-1)
	var st unix.Stat_t
	for _, t := range tids {
		if t != leader && unix.Stat(dir+"/"+t+"/ns/net", &st) == nil && st.Ino == ino {
			return true
		}
	}
	return false
}
