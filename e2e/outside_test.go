package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// outsideHost is a simulated host beyond the worker's NAT, the way a
// sandbox's real egress goes: a network namespace of its own, joined to
// the host's by a veth, with an address from 198.18.0.0/15 (RFC 2544's
// benchmarking range, routed nowhere) that is not one of the host's. An
// isolated sandbox reaches it through its bridge and the masquerade, as
// it would reach a server on the internet; a service on the host's own
// addresses (loopback included) it does not reach at all (README,
// "Network"). Modelled on internal/netns's TestNoEgress.
type outsideHost struct {
	ns   netns.NsHandle
	addr netip.Addr
}

// newOutsideHost makes an outside host; t's cleanup removes its veth (and
// with it the host's address and route to it) and its namespace.
func newOutsideHost(t *testing.T) *outsideHost {
	t.Helper()
	hostAddr, outAddr, err := freeOutsidePair()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer host.Close()
		ns, err := netns.New() // unshare: this thread is in ns now
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		if err := netns.Set(host); err != nil {
			// Left locked: the runtime discards the thread.
			ns.Close()
			ch <- result{err: fmt.Errorf("returning to the host namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("outside host: new network namespace: %v", r.err)
	}
	o := &outsideHost{ns: r.ns, addr: outAddr.Addr()}
	t.Cleanup(func() { o.ns.Close() })

	h, err := netlink.NewHandleAt(o.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	name := fmt.Sprintf("xo%s%d", strconv.FormatInt(int64(os.Getpid()), 36), seq.Add(1))
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: net.FlagUp}, PeerName: "eth0", PeerNamespace: netlink.NsFd(o.ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("outside host: veth %s: %v", name, err)
	}
	// Deleting the host's end deletes the peer, the host's address on it
	// and the route to the outside address that came with that address.
	t.Cleanup(func() {
		if err := netlink.LinkDel(veth); err != nil && !errors.Is(err, unix.ENODEV) {
			t.Errorf("outside host: removing veth %s: %v", name, err)
		}
	})
	if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: prefixNet(hostAddr)}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"lo", "eth0"} {
		link, err := h.LinkByName(l)
		if err != nil {
			t.Fatal(err)
		}
		if l == "eth0" {
			if err := h.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(outAddr)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	// Answers go back through the host, whatever the source: masqueraded
	// (the host's end of the veth) or not.
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: hostAddr.Addr().AsSlice()}); err != nil {
		t.Fatalf("outside host: default route: %v", err)
	}
	return o
}

// listen opens a TCP listener on the outside host's address; t's cleanup
// closes it.
func (o *outsideHost) listen(t *testing.T) net.Listener {
	t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		host, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer host.Close()
		if err := netns.Set(o.ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		// A socket stays in the namespace it was made in.
		l, lerr := net.Listen("tcp", netip.AddrPortFrom(o.addr, 0).String())
		if err := netns.Set(host); err != nil {
			// Left locked: the runtime discards the thread.
			if l != nil {
				l.Close()
			}
			ch <- result{err: fmt.Errorf("returning to the host namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{l, lerr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("outside host: listening: %v", r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l
}

// freeOutsidePair picks a /30 of 198.19.0.0/16 that no address of the
// host's is in (other tests, internal/netns's among them, take theirs
// from 198.18.0.0/16), starting at one that depends on the process, so
// that concurrent test processes rarely try the same: the host's end and
// the outside host's.
func freeOutsidePair() (host, out netip.Prefix, err error) {
	addrs, err := netlink.AddrList(nil, unix.AF_INET)
	for i := 0; errors.Is(err, netlink.ErrDumpInterrupted) && i < 50; i++ {
		time.Sleep(10 * time.Millisecond) // addresses come and go: other tests
		addrs, err = netlink.AddrList(nil, unix.AF_INET)
	}
	if err != nil {
		return host, out, fmt.Errorf("listing the host's addresses: %w", err)
	}
	start := (os.Getpid()*7 + int(seq.Add(1))) % 16384
	for i := range 16384 {
		n := (start + i) % 16384
		block := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(n >> 6), byte(n&63) << 2}), 30)
		used := false
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && block.Contains(ip) {
				used = true
				break
			}
		}
		if !used {
			b := block.Addr().As4()
			b[3]++
			host = netip.PrefixFrom(netip.AddrFrom4(b), 30)
			b[3]++
			out = netip.PrefixFrom(netip.AddrFrom4(b), 30)
			return host, out, nil
		}
	}
	return host, out, errors.New("no free /30 in 198.19.0.0/16")
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
