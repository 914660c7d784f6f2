package netns

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/reserve"
)

// DefaultSubnet is the private IPv4 subnet sandboxes get addresses from.
var DefaultSubnet = netip.MustParsePrefix("10.200.0.0/16")

// MaxPrefix is the longest name prefix: bridge and veth names add up to
// six characters and Linux allows fifteen.
const MaxPrefix = 8

// maxPorts is the most ports one Linux bridge takes (BR_MAX_PORTS) less
// one: port numbers are 10 bits and 0 is not used.
const maxPorts = 1023

// maxVeth bounds veth numbers so that names fit in fifteen characters.
const maxVeth = 999999

// rulePriority orders the pool's forwarding rules among the host's
// policy rules: after local (0), before main (32766).
const rulePriority = 10900

// Config configures a Pool.
type Config struct {
	// Prefix starts the name of every bridge and veth the pool makes: 1 to
	// MaxPrefix lower-case letters and digits, unique per worker. Sweep
	// removes exactly the objects with this prefix.
	Prefix string
	// Subnet is the IPv4 subnet addresses come from (default
	// DefaultSubnet). Each bridge takes one block of it: a /22 for the
	// default 1000 ports per bridge.
	Subnet netip.Prefix
	// Reserve is how many ready namespaces the background refiller keeps
	// (default 8; -1 keeps none, for an unpooled baseline).
	Reserve int
	// MaxIdle caps ready namespaces: Put keeps a scrubbed namespace while
	// fewer are ready and destroys it otherwise (default 2*Reserve).
	MaxIdle int
	// PortsPerBridge is how many namespaces share a bridge (default 1000,
	// at most 1023).
	PortsPerBridge int
	// RefillDelay is how long the refiller waits after the last Get
	// before it scrubs or creates namespaces, unless fewer than a quarter
	// of the reserve is ready (default 5 ms; negative: no wait).
	RefillDelay time.Duration
	// NAT masquerades sandbox traffic that leaves through the host's
	// other interfaces and turns on the host's IPv4 forwarding. Without
	// it the pool's table rejects everything sandboxes send beyond their
	// bridge: no egress.
	NAT bool
	// Guard are the host uids whose sockets, in the host's network
	// namespace, may send nothing to the host's own addresses or into
	// the pool's bridges (the ids of sandboxes, installers and zygotes).
	Guard []UIDRange
	// OfflineReserve is how many empty namespaces (for network: offline)
	// the refiller keeps ready (default 4; -1 keeps none). They are
	// never reused: one that comes back is destroyed.
	OfflineReserve int
}

func (c *Config) setDefaults() error {
	if c.Prefix == "" || len(c.Prefix) > MaxPrefix {
		return fmt.Errorf("%w: prefix %q must have 1 to %d characters", ErrBadConfig, c.Prefix, MaxPrefix)
	}
	for _, r := range c.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("%w: prefix %q: only a-z and 0-9", ErrBadConfig, c.Prefix)
		}
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 29 || c.Subnet.Masked() != c.Subnet {
		return fmt.Errorf("%w: subnet %s must be a masked IPv4 prefix of /29 or shorter", ErrBadConfig, c.Subnet)
	}
	if c.PortsPerBridge == 0 {
		c.PortsPerBridge = 1000
	}
	if c.PortsPerBridge < 1 || c.PortsPerBridge > maxPorts {
		return fmt.Errorf("%w: %d ports per bridge (1..%d)", ErrBadConfig, c.PortsPerBridge, maxPorts)
	}
	switch {
	case c.Reserve == 0:
		c.Reserve = 8
	case c.Reserve == -1:
		c.Reserve = 0
	case c.Reserve < -1:
		return fmt.Errorf("%w: reserve %d", ErrBadConfig, c.Reserve)
	}
	switch {
	case c.OfflineReserve == 0:
		c.OfflineReserve = 4
	case c.OfflineReserve == -1:
		c.OfflineReserve = 0
	case c.OfflineReserve < -1:
		return fmt.Errorf("%w: offline reserve %d", ErrBadConfig, c.OfflineReserve)
	}
	for _, g := range c.Guard {
		if g.First > g.Last {
			return fmt.Errorf("%w: guard uids %d-%d", ErrBadConfig, g.First, g.Last)
		}
	}
	if c.MaxIdle < c.Reserve {
		if c.MaxIdle == 0 {
			c.MaxIdle = 2 * c.Reserve
		} else {
			c.MaxIdle = c.Reserve
		}
	}
	if c.RefillDelay == 0 {
		c.RefillDelay = 5 * time.Millisecond
	}
	return nil
}

// Stats counts a pool's work since it was made.
type Stats struct {
	Ready     int   `json:"ready"`     // scrubbed namespaces waiting
	Offline   int   `json:"offline"`   // empty namespaces waiting
	Live      int   `json:"live"`      // namespaces ready or out, others' plumbed by Attach included
	Bridges   int   `json:"bridges"`   // bridges made
	Hits      int64 `json:"hits"`      // Gets served from the reserve
	Misses    int64 `json:"misses"`    // Gets that created a namespace on demand
	Created   int64 `json:"created"`   // namespaces made (background and on demand) or plumbed (Attach)
	Reused    int64 `json:"reused"`    // Puts that returned a namespace to the reserve
	Removed   int64 `json:"removed"`   // Puts that destroyed a clean namespace (MaxIdle ready)
	Destroyed int64 `json:"destroyed"` // namespaces destroyed
	// Discarded counts Puts that found something of the old sandbox
	// still there (a process, a socket, a foreign link): the namespace
	// was destroyed, never handed out again.
	Discarded int64 `json:"discarded"`
}

// Pool makes and keeps network namespaces. See the package doc.
type Pool struct {
	cfg       Config
	nl        *netlink.Handle    // in the host namespace
	host      netns.NsHandle     // the host namespace, to return threads to; see hostMu
	blockBits int                // host bits of one bridge's block
	blocks    int                // blocks in the subnet
	offRes    *reserve.Pool[*NS] // empty namespaces (offline), never reused
	res       *reserve.Pool[*NS]

	mu      sync.Mutex
	bridges []*bridge       // guarded by mu; by block
	vseq    int             // guarded by mu; number of the last veth made
	live    map[string]bool // guarded by mu; veths of namespaces not destroyed
	st      Stats           // guarded by mu; Bridges, Created, Destroyed, Discarded
	closed  bool            // guarded by mu; the bridges are gone or going
	brMu    sync.Mutex
	// hostMu is held (read) by a thread away from the host namespace
	// until it is back, and by Close to close host: a descriptor number
	// closed and reused meanwhile would send the thread elsewhere.
	hostMu     sync.RWMutex
	hostClosed bool // guarded by hostMu
}

// away runs f on a thread locked to the network namespace ns (ns < 0:
// a new one, unshared) and brings the thread back to the host namespace
// after it; a thread that cannot come back stays locked and dies with
// its goroutine. It fails without running f once the pool is closed.
func (p *Pool) away(ns int, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		p.hostMu.RLock()
		defer p.hostMu.RUnlock()
		if p.hostClosed {
			ch <- ErrClosed
			return
		}
		runtime.LockOSThread()
		var err error
		if ns < 0 {
			err = unix.Unshare(unix.CLONE_NEWNET)
		} else {
			err = unix.Setns(ns, unix.CLONE_NEWNET)
		}
		if err != nil {
			// Nothing changed: the thread is still in the host namespace.
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netns: leaving the host namespace: %w", err)
			return
		}
		err = f()
		if serr := netns.Set(p.host); serr != nil {
			// Leave the thread locked: the runtime discards it.
			ch <- errors.Join(err, fmt.Errorf("netns: returning to the host namespace: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		ch <- err
	}()
	return <-ch
}

type bridge struct {
	idx   int
	name  string
	index int // ifindex
	gw    netip.Addr
	base  netip.Addr // first address of the block
	free  []int      // freed host numbers, oldest first; guarded by Pool.mu
	next  int        // next never-used host number; guarded by Pool.mu
	ports int        // taken ports; guarded by Pool.mu
}

// New sweeps what a crashed pool with the same prefix left, installs the
// pool's nftables table (without nf_tables there is no pool: the table is
// what keeps sandboxes off the host) and starts filling the reserves in
// the background. The caller must Close the pool.
func New(ctx context.Context, cfg Config) (_ *Pool, err error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if _, err := Sweep(cfg.Prefix); err != nil {
		return nil, err
	}
	p := &Pool{cfg: cfg, live: map[string]bool{}}
	hostBits := 32 - cfg.Subnet.Bits()
	p.blockBits = min(bits.Len(uint(cfg.PortsPerBridge+2)), hostBits)
	if 1<<p.blockBits < cfg.PortsPerBridge+3 {
		// The subnet is smaller than one block: fewer ports.
		p.cfg.PortsPerBridge = 1<<p.blockBits - 3
	}
	p.blocks = 1 << (hostBits - p.blockBits)
	p.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netns: netlink: %w", err)
	}
	defer func() {
		if err != nil {
			p.nl.Close()
			p.host.Close()
		}
	}()
	p.host, err = netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("netns: host namespace: %w", err)
	}
	if err := addTable(tableSpec{prefix: cfg.Prefix, subnet: cfg.Subnet, nat: cfg.NAT, guard: cfg.Guard}); err != nil {
		return nil, err
	}
	// The refiller holds back while Gets keep coming (a burst: its CPU
	// and the kernel's network lock are the burst's), unless the reserve
	// runs low.
	p.res = reserve.New(reserve.Config[*NS]{
		Reserve:      p.cfg.Reserve,
		MaxIdle:      p.cfg.MaxIdle,
		RefillDelay:  p.cfg.RefillDelay,
		CleanTimeout: 5 * time.Second,
		Make:         p.Create, // on failure, Get falls back to Create meanwhile and reports the error
		Clean:        func(ctx context.Context, ns *NS) error { return ns.scrub(ctx) },
		Destroy:      func(_ context.Context, ns *NS) error { ns.Destroy(); return nil },
		Discard: func(ns *NS, _ error) {
			p.mu.Lock()
			p.st.Discarded++
			p.mu.Unlock()
			ns.Destroy()
		},
		Closed: ErrClosed,
	})
	p.offRes = reserve.New(reserve.Config[*NS]{
		Reserve:     p.cfg.OfflineReserve,
		RefillDelay: p.cfg.RefillDelay,
		Make:        p.CreateOffline,
		Destroy:     func(_ context.Context, ns *NS) error { ns.Destroy(); return nil },
		Closed:      ErrClosed,
	})
	return p, nil
}

// GetOffline returns an empty namespace (only loopback, and that down)
// of its own for a sandbox that needs no network: a ready one, or one
// made now. The caller owns it and must Release or Destroy it; it is
// never reused.
func (p *Pool) GetOffline(ctx context.Context) (*NS, error) {
	ns, ok, err := p.offRes.Take()
	if err != nil || ok {
		return ns, err
	}
	return p.CreateOffline(ctx)
}

// CreateOffline makes an empty namespace now, bypassing the reserve.
func (p *Pool) CreateOffline(ctx context.Context) (*NS, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, h, err := p.unshare(false)
	if err != nil {
		return nil, fmt.Errorf("netns: offline namespace: %w", err)
	}
	h.Close()
	p.mu.Lock()
	p.st.Created++
	p.mu.Unlock()
	return &NS{p: p, file: os.NewFile(uintptr(fd), "netns-offline")}, nil
}

// Offline reports whether ns is an empty namespace (network: offline).
func (ns *NS) Offline() bool { return ns.br == nil }

// Prefix returns the name prefix of the pool's bridges and veths.
func (p *Pool) Prefix() string { return p.cfg.Prefix }

// Get returns a ready namespace, or makes one on the spot when none is
// ready (counted as a miss). The caller owns it and must Put or Destroy
// it.
func (p *Pool) Get(ctx context.Context) (*NS, error) {
	ns, ok, err := p.res.Take()
	if err != nil || ok {
		return ns, err
	}
	return p.Create(ctx)
}

// Create makes a namespace now, bypassing the reserve: the unpooled path.
// The caller owns it and must Put or Destroy it.
func (p *Pool) Create(ctx context.Context) (_ *NS, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ns, err := p.newNS()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ns.teardown()
		}
	}()
	fd, h, err := p.unshare(true)
	if err != nil {
		return nil, fmt.Errorf("netns: new namespace: %w", err)
	}
	ns.file, ns.h = os.NewFile(uintptr(fd), "netns-"+ns.veth), h
	if err := p.plug(ns); err != nil {
		return nil, err
	}
	return ns, nil
}

// newNS allocates an address on a bridge and a veth name for a
// namespace.
func (p *Pool) newNS() (*NS, error) {
	br, host, err := p.alloc()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.vseq = p.vseq%maxVeth + 1
	ns := &NS{p: p, br: br, host: host, veth: p.cfg.Prefix + "v" + strconv.Itoa(p.vseq)}
	p.mu.Unlock()
	ns.addr = netip.PrefixFrom(addN(br.base, host), 32-p.blockBits)
	return ns, nil
}

// plug makes ns's veth pair, its end eth0 made inside ns's namespace
// (ns.file, with ns.h a netlink handle there), the other on ns's bridge,
// and gives eth0 ns's address and default route.
func (p *Pool) plug(ns *NS) error {
	fd := int(ns.file.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	ns.ino = st.Ino
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ns.veth, MasterIndex: ns.br.index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(fd),
	}
	if err := p.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("netns: veth %s: %w", ns.veth, err)
	}
	ns.hostLink = veth
	if err := noIPv6(veth.Name); err != nil {
		return fmt.Errorf("netns: veth %s: %w", ns.veth, err)
	}
	if err := p.nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("netns: veth %s up: %w", ns.veth, err)
	}
	if err := p.nl.LinkSetIsolated(veth, true); err != nil {
		return fmt.Errorf("netns: isolating %s: %w", ns.veth, err)
	}
	eth0, err := ns.h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	ns.eth0 = eth0
	if err := ns.h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(ns.addr)}); err != nil {
		return fmt.Errorf("netns: address %s: %w", ns.addr, err)
	}
	if err := ns.h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("netns: eth0 up: %w", err)
	}
	if err := ns.h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: ns.br.gw.AsSlice()}); err != nil {
		return fmt.Errorf("netns: default route: %w", err)
	}
	p.mu.Lock()
	p.st.Created++
	p.live[ns.veth] = true
	p.mu.Unlock()
	return nil
}

// unshare makes a network namespace and a netlink handle inside it, on a
// thread away from the host namespace (see away). With up, loopback is
// brought up.
func (p *Pool) unshare(up bool) (fd int, h *netlink.Handle, err error) {
	fd = -1
	err = p.away(-1, func() error {
		ns, err := netns.Get() // this thread's, the new one
		if err != nil {
			return err
		}
		fd = int(ns)
		// Netlink sockets belong to the namespace they are made in: route
		// for configuration, sock_diag to look for sockets on release.
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_INET_DIAG); err != nil {
			return err
		}
		if !up {
			return nil
		}
		// IPv4 only on eth0 (made later; it takes the defaults): no
		// link-local address, router solicitations or v6 routes to
		// scrub. Loopback keeps ::1.
		if err := writeSysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"); err != nil {
			return err
		}
		// Loopback is always link 1 of a new namespace.
		return h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}})
	})
	if err != nil {
		if h != nil {
			h.Close()
		}
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, nil, err
	}
	return fd, h, nil
}

// alloc takes a free address, adding a bridge when all are full.
func (p *Pool) alloc() (*bridge, int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, 0, ErrClosed
	}
	if br, host, ok := p.allocLocked(); ok {
		p.mu.Unlock()
		return br, host, nil
	}
	p.mu.Unlock()
	// Make bridges one at a time, outside mu: it takes milliseconds.
	p.brMu.Lock()
	defer p.brMu.Unlock()
	p.mu.Lock()
	if br, host, ok := p.allocLocked(); ok {
		p.mu.Unlock()
		return br, host, nil
	}
	idx := len(p.bridges)
	p.mu.Unlock()
	if idx >= p.blocks {
		return nil, 0, fmt.Errorf("%w: %d bridges of %d ports in %s", ErrExhausted, idx, p.cfg.PortsPerBridge, p.cfg.Subnet)
	}
	br, err := p.newBridge(idx)
	if err != nil {
		return nil, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bridges = append(p.bridges, br)
	p.st.Bridges++
	br2, host, _ := p.allocLocked()
	return br2, host, nil
}

func (p *Pool) allocLocked() (*bridge, int, bool) {
	for _, br := range p.bridges {
		if br.ports >= p.cfg.PortsPerBridge {
			continue
		}
		br.ports++
		// Fresh addresses first, then the longest-free one: a destroyed
		// namespace's veth lingers until the kernel has torn it down,
		// and its address must not be reused meanwhile.
		if br.next <= p.cfg.PortsPerBridge {
			br.next++
			return br, br.next, true
		}
		h := br.free[0]
		br.free = br.free[1:]
		return br, h, true
	}
	return nil, 0, false
}

func (p *Pool) release(br *bridge, host int) {
	p.mu.Lock()
	br.free = append(br.free, host)
	br.ports--
	p.mu.Unlock()
}

// newBridge makes bridge idx with the first address of its block (the
// gateway) and a rule that refuses to forward from it into the subnet.
func (p *Pool) newBridge(idx int) (*bridge, error) {
	base := addN(p.cfg.Subnet.Addr(), idx<<p.blockBits)
	br := &bridge{idx: idx, name: p.cfg.Prefix + "b" + strconv.Itoa(idx), base: base, gw: addN(base, 1), next: 1}
	// A bridge without an address of its own takes the lowest of its
	// ports' and changes it when that port goes: sandboxes that cached
	// the gateway's old address then lose their way out until their
	// neighbour entry expires, about 30 s. So it gets a fixed one, random
	// and locally administered.
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("netns: bridge %s: address: %w", br.name, err)
	}
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	// Without snooping the bridge joins no multicast group of its own
	// (224.0.0.106, the snoopers'), so the host sends sandboxes no IGMP
	// report they did not ask for: one reached a scrubbed namespace's
	// counters tens of milliseconds after its bridge came up.
	snoop := false
	link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br.name, HardwareAddr: mac}, MulticastSnooping: &snoop}
	if err := p.nl.LinkAdd(link); err != nil {
		return nil, fmt.Errorf("netns: bridge %s: %w", br.name, err)
	}
	br.index = link.Index
	fail := func(err error) (*bridge, error) {
		p.nl.LinkDel(link)
		return nil, fmt.Errorf("netns: bridge %s: %w", br.name, err)
	}
	if err := noIPv6(br.name); err != nil {
		return fail(err)
	}
	if err := p.nl.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(br.gw, 32-p.blockBits))}); err != nil {
		return fail(err)
	}
	if err := p.nl.LinkSetUp(link); err != nil {
		return fail(err)
	}
	if err := p.nl.RuleAdd(p.rule(br.name)); err != nil {
		return fail(fmt.Errorf("forwarding rule: %w", err))
	}
	return br, nil
}

// rule refuses to route packets that come in on bridge into the subnet,
// in case the host forwards: sandboxes on different bridges must not
// reach each other through it. Local delivery (the gateway) is decided by
// the local table first.
func (p *Pool) rule(bridge string) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = rulePriority
	r.IifName = bridge
	r.Dst = ipNet(p.cfg.Subnet)
	r.Type = unix.RTN_PROHIBIT
	return r
}

// Put scrubs ns and keeps it for reuse, or destroys it when MaxIdle are
// ready or something of the old sandbox is still there (see the package
// doc; the latter is counted as Discarded and reported with ErrInUse).
// Put may wait for the kernel to finish tearing down the old sandbox's
// processes, up to ctx's deadline; call it off the critical path.
func (p *Pool) Put(ctx context.Context, ns *NS) error {
	if ns == nil || ns.p != p {
		return fmt.Errorf("%w: namespace from another pool", ErrBadConfig)
	}
	if ns.attached {
		ns.Destroy()
		return fmt.Errorf("%w: netns %s is another's namespace (Attach), never reused", ErrBadConfig, ns.veth)
	}
	if ns.Offline() {
		p.dropOffline(ns)
		return nil
	}
	if err := p.res.Put(ctx, ns); err != nil {
		return fmt.Errorf("netns %s: discarded: %w", ns.veth, err)
	}
	return nil
}

// Release hands ns back without waiting: the refiller scrubs it (as Put
// does) once Gets have quietened down. Use it on the path that tears a
// sandbox down, so that scrubbing does not compete with a burst of starts.
func (p *Pool) Release(ns *NS) {
	if ns == nil {
		return
	}
	if ns.p != p || ns.attached {
		ns.Destroy()
		return
	}
	if ns.Offline() {
		p.dropOffline(ns)
		return
	}
	p.res.Release(ns)
}

// dropOffline destroys an empty namespace given back: never reused.
func (p *Pool) dropOffline(ns *NS) {
	p.mu.Lock()
	p.st.Removed++
	p.mu.Unlock()
	ns.Destroy()
}

// Fill blocks until both reserves are full or ctx ends.
func (p *Pool) Fill(ctx context.Context) error {
	if err := p.res.Fill(ctx); err != nil {
		return err
	}
	return p.offRes.Fill(ctx)
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	r, o := p.res.Stats(), p.offRes.Stats()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.st
	s.Ready, s.Hits, s.Misses, s.Reused, s.Removed = r.Ready, r.Hits+o.Hits, r.Misses+o.Misses, r.Reused, r.Removed+o.Removed+p.st.Removed
	s.Offline = o.Ready
	s.Live = int(s.Created - s.Destroyed)
	return s
}

// Close stops the refillers and destroys the ready namespaces, isolated
// and offline, the bridges and the nftables table. Namespaces still out should be Destroyed
// first: their veths go with the bridges, but their descriptors stay
// open until their owners close them.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.res.Close(ctx) // stops the refiller, destroys the ready and released namespaces
	p.offRes.Close(ctx)
	var errs []error
	if err := p.waitVeths(ctx); err != nil {
		errs = append(errs, err)
	}
	p.mu.Lock()
	brs := p.bridges
	p.bridges = nil
	p.mu.Unlock()
	for _, br := range brs {
		if err := p.nl.RuleDel(p.rule(br.name)); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("netns: rule of %s: %w", br.name, err))
		}
		if err := p.nl.LinkDel(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: br.index, Name: br.name}}); err != nil {
			errs = append(errs, fmt.Errorf("netns: bridge %s: %w", br.name, err))
		}
	}
	if _, err := delTable(p.cfg.Prefix); err != nil {
		errs = append(errs, err)
	}
	p.nl.Close()
	p.hostMu.Lock()
	p.hostClosed = true
	p.host.Close()
	p.hostMu.Unlock()
	return errors.Join(errs...)
}

func addN(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// waitVeths waits until the kernel has removed the veths of destroyed
// namespaces, so that Close leaves nothing behind. Veths of namespaces
// still out stay; their owners must Destroy them first.
func (p *Pool) waitVeths(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		links, err := dump(p.nl.LinkList)
		if err != nil {
			return fmt.Errorf("netns: listing links: %w", err)
		}
		var left []string
		p.mu.Lock()
		for _, l := range links {
			if n := l.Attrs().Name; ours(p.cfg.Prefix, "v", n) && !p.live[n] {
				left = append(left, n)
			}
		}
		p.mu.Unlock()
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("netns: veths %v not gone: %w", left, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// noIPv6 turns IPv6 off on a host link of the pool before it is up.
// Sandboxes speak IPv4 only (their eth0 has IPv6 off); with it on, the
// bridge and the veths would send their own router solicitations and
// multicast reports into every sandbox as soon as they came up.
func noIPv6(link string) error {
	if err := writeSysctl("/proc/sys/net/ipv6/conf/"+link+"/disable_ipv6", "1"); err != nil {
		return fmt.Errorf("turning IPv6 off: %w", err)
	}
	return nil
}

// writeSysctl writes a /proc/sys file of the calling thread's namespaces;
// a kernel without the setting (no IPv6) is no error.
func writeSysctl(path, value string) error {
	f, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(f)
	if _, err := unix.Write(f, []byte(value)); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
