package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var seq atomic.Int32

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
}

// testConfig gives each pool a prefix and a /20 subnet of its own, so
// tests and test binaries can run side by side.
func testConfig() Config {
	n := int(seq.Add(1))
	pid := os.Getpid()
	return Config{
		Prefix: fmt.Sprintf("t%s%d", strconv.FormatInt(int64(pid%46656), 36), n%100),
		// 10.100-127: e2e's workers take 10.128-227 (testSubnet there).
		Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + pid%28), byte(n % 16 * 16), 0}), 20),
	}
}

func newPool(t testing.TB, cfg Config) *Pool {
	t.Helper()
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := linksWithPrefix(t, cfg.Prefix); len(left) > 0 {
			t.Errorf("links left after Close: %v", left)
		}
	})
	return p
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func get(t testing.TB, p *Pool) *NS {
	t.Helper()
	ns, err := p.Get(ctxT(t))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	t.Cleanup(ns.Destroy)
	return ns
}

// inNS runs f on a thread in ns's network namespace.
func inNS(t testing.TB, f *os.File, fn func()) {
	t.Helper()
	if err := onThread(func() error {
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return err
		}
		fn()
		return nil
	}); err != nil {
		t.Fatalf("in namespace: %v", err)
	}
}

// onThread runs fn on a locked thread, which it then puts back in the
// host's network namespace (one that cannot go back stays locked and
// dies), and returns fn's error or that of going back.
func onThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer host.Close()
		ferr := fn()
		if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// linksWithPrefix lists the host's links whose names start with prefix.
func linksWithPrefix(t testing.TB, prefix string) []string {
	t.Helper()
	links, err := dump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// netnsFDs counts this process's descriptors that hold a network
// namespace.
func netnsFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "net:[") {
			n++
		}
	}
	return n
}

func rulesFor(t testing.TB, prefix string) int {
	t.Helper()
	rules, err := dump(func() ([]netlink.Rule, error) { return netlink.RuleList(unix.AF_INET) })
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules {
		if r.Priority == rulePriority && ours(prefix, "b", r.IifName) {
			n++
		}
	}
	return n
}

func TestConfigBadInput(t *testing.T) {
	requireRoot(t)
	good := testConfig()
	tests := []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"empty prefix", func(c *Config) { c.Prefix = "" }, ErrBadConfig},
		{"long prefix", func(c *Config) { c.Prefix = "abcdefghi" }, ErrBadConfig},
		{"upper-case prefix", func(c *Config) { c.Prefix = "Hx" }, ErrBadConfig},
		{"dash in prefix", func(c *Config) { c.Prefix = "h-x" }, ErrBadConfig},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }, ErrBadConfig},
		{"tiny subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.9.9.0/30") }, ErrBadConfig},
		{"unmasked subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.9.9.1/24") }, ErrBadConfig},
		{"too many ports", func(c *Config) { c.PortsPerBridge = 1024 }, ErrBadConfig},
		{"negative reserve", func(c *Config) { c.Reserve = -2 }, ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			p, err := New(context.Background(), c)
			if !errors.Is(err, tt.want) {
				if p != nil {
					p.Close(context.Background())
				}
				t.Fatalf("New(%+v) = %v, want %v", c, err, tt.want)
			}
		})
	}
}

func TestNamespaceSetup(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	p := newPool(t, cfg)
	ns := get(t, p)
	if !cfg.Subnet.Contains(ns.Addr().Addr()) || ns.Addr().Bits() != 22 {
		t.Errorf("Addr() = %s, want a /22 in %s", ns.Addr(), cfg.Subnet)
	}
	// The host end is an isolated port of the bridge.
	hl, err := netlink.LinkByName(ns.HostVeth())
	if err != nil {
		t.Fatalf("host veth: %v", err)
	}
	br, err := netlink.LinkByName(ns.Bridge())
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if hl.Attrs().MasterIndex != br.Attrs().Index || hl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("veth %s: master %d up %v, want master %d and up", ns.HostVeth(), hl.Attrs().MasterIndex, hl.Attrs().Flags&net.FlagUp != 0, br.Attrs().Index)
	}
	if pi, err := netlink.LinkGetProtinfo(hl); err != nil || !pi.Isolated {
		t.Errorf("veth %s protinfo %+v, %v; want isolated", ns.HostVeth(), pi, err)
	}
	var links []string
	var routes []netlink.Route
	var addrs []netlink.Addr
	inNS(t, ns.File(), func() {
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			links = append(links, fmt.Sprintf("%s:%v", l.Attrs().Name, l.Attrs().Flags&net.FlagUp != 0))
		}
		routes, _ = netlink.RouteList(nil, netlink.FAMILY_V4)
		addrs, _ = netlink.AddrList(nil, netlink.FAMILY_V4)
	})
	if strings.Join(links, " ") != "lo:true eth0:true" {
		t.Errorf("links in the namespace: %v, want lo and eth0, both up", links)
	}
	def := false
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			def = r.Gw.Equal(ns.Gateway().AsSlice())
		}
	}
	if !def {
		t.Errorf("routes %v: want a default route via %s", routes, ns.Gateway())
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if strings.Join(got, " ") != "127.0.0.1/8 "+ns.Addr().String() {
		t.Errorf("addresses %v, want 127.0.0.1/8 and %s", got, ns.Addr())
	}
	// The default route works: the host reaches a listener in the
	// namespace, and a connection from it to a listener on the gateway
	// is rejected by the host (an answer that comes back through the
	// route), not left to time out.
	ln := listenIn(t, ns)
	c, err := net.DialTimeout("tcp", ln.Addr().String(), mustDial)
	if err != nil {
		t.Fatalf("host to namespace: %v", err)
	}
	c.Close()
	l, err := net.Listen("tcp", netip.AddrPortFrom(ns.Gateway(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go acceptAll(l)
	inNS(t, ns.File(), func() {
		c, err := net.DialTimeout("tcp", l.Addr().String(), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("namespace reached a listener on its gateway")
		} else if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("namespace to gateway: %v, want EHOSTUNREACH (rejected by the host)", err)
		}
	})
}

func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// listenIn opens a TCP listener inside ns, on its address.
func listenIn(t testing.TB, ns *NS) net.Listener {
	t.Helper()
	var l net.Listener
	var err error
	inNS(t, ns.File(), func() {
		l, err = net.Listen("tcp", netip.AddrPortFrom(ns.Addr().Addr(), 0).String())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go acceptAll(l)
	return l
}

// mustDial bounds a connection that must work: seconds, as its first SYN
// can be lost while the kernel resolves the neighbour or loads the NAT
// modules, and TCP resends it after 1 s (a 1 s bound failed once, on a
// busy host, for the host's dial into a namespace).
const mustDial = 5 * time.Second

// dialFrom tries to connect from inside ns.
func dialFrom(t testing.TB, ns *NS, addr string) error {
	return dialFromWithin(t, ns, addr, 300*time.Millisecond)
}

// dialFromWithin is dialFrom with a timeout. A connection that must work
// gets seconds: its first SYN can be lost while the kernel loads the NAT
// modules or resolves the neighbour, and TCP resends it after 1 s.
func dialFromWithin(t testing.TB, ns *NS, addr string, timeout time.Duration) error {
	t.Helper()
	var err error
	inNS(t, ns.File(), func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
	})
	return err
}

func TestIsolation(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	cfg.PortsPerBridge = 2 // a and b share a bridge, c gets a second one
	cfg.Reserve = -1
	p := newPool(t, cfg)
	a, b, c := get(t, p), get(t, p), get(t, p)
	if a.Bridge() != b.Bridge() || c.Bridge() == a.Bridge() {
		t.Fatalf("bridges %s %s %s: want a and b together, c apart", a.Bridge(), b.Bridge(), c.Bridge())
	}
	if s := p.Stats(); s.Bridges != 2 {
		t.Errorf("stats %+v: want 2 bridges", s)
	}
	// A service on the host's loopback.
	hostLo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLo.Close()
	go acceptAll(hostLo)
	port := hostLo.Addr().(*net.TCPAddr).Port
	lb := listenIn(t, b)
	// Positive controls: the host reaches both listeners.
	for _, addr := range []string{hostLo.Addr().String(), lb.Addr().String()} {
		conn, err := net.DialTimeout("tcp", addr, mustDial)
		if err != nil {
			t.Fatalf("host cannot reach %s: %v", addr, err)
		}
		conn.Close()
	}
	for _, tt := range []struct {
		name string
		from *NS
		to   string
	}{
		{"host loopback", a, hostLo.Addr().String()},
		{"host loopback port on gateway", a, netip.AddrPortFrom(a.Gateway(), uint16(port)).String()},
		{"sandbox on same bridge", a, lb.Addr().String()},
		{"sandbox on other bridge", c, lb.Addr().String()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := dialFrom(t, tt.from, tt.to); err == nil {
				t.Errorf("%s reached %s", tt.from.Addr(), tt.to)
			}
		})
	}
}

func TestOffline(t *testing.T) {
	requireRoot(t)
	p := newPool(t, testConfig())
	off, err := p.GetOffline(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(off.Destroy)
	var links []netlink.Link
	var derr error
	inNS(t, off.File(), func() {
		links, _ = netlink.LinkList()
		var c net.Conn
		c, derr = net.DialTimeout("tcp", "127.0.0.1:22", 300*time.Millisecond)
		if derr == nil {
			c.Close()
		}
	})
	if len(links) != 1 || links[0].Attrs().Name != "lo" || links[0].Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("offline namespace links %v, want only lo, down", links)
	}
	if !errors.Is(derr, syscall.ENETUNREACH) {
		t.Errorf("dial 127.0.0.1 from the offline namespace: %v, want ENETUNREACH", derr)
	}
	// Each offline sandbox has its own: no abstract unix socket or
	// loopback is shared between two.
	other, err := p.GetOffline(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Destroy)
	if inode(t, other.File()) == inode(t, off.File()) {
		t.Errorf("two offline namespaces are one (inode %d)", inode(t, off.File()))
	}
	var lerr, derr2 error
	inNS(t, off.File(), func() {
		var l net.Listener
		if l, lerr = net.Listen("unix", "@hearth-offline-test"); lerr == nil {
			t.Cleanup(func() { l.Close() })
		}
	})
	inNS(t, other.File(), func() {
		var c net.Conn
		if c, derr2 = net.Dial("unix", "@hearth-offline-test"); derr2 == nil {
			c.Close()
		}
	})
	if lerr != nil {
		t.Fatalf("abstract listener in an offline namespace: %v", lerr)
	}
	if derr2 == nil {
		t.Errorf("an offline namespace reached another's abstract unix socket")
	}
	// They are not reused: one given back is destroyed.
	before := p.Stats().Destroyed
	p.Release(off)
	if s := p.Stats(); s.Destroyed != before+1 || s.Reused != 0 {
		t.Errorf("stats after releasing an offline namespace %+v: want it destroyed", s)
	}
}

func inode(t testing.TB, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestExhaustionFallsBack(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	cfg.Reserve = 1
	p := newPool(t, cfg)
	if err := p.Fill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	const n = 5
	seen := map[netip.Addr]bool{}
	for range n {
		ns := get(t, p)
		if seen[ns.Addr().Addr()] {
			t.Errorf("address %s handed out twice", ns.Addr())
		}
		seen[ns.Addr().Addr()] = true
	}
	s := p.Stats()
	t.Logf("%+v", s)
	if s.Hits+s.Misses != n || s.Hits < 1 || s.Misses < 1 {
		t.Errorf("stats %+v: want %d gets, both hits and misses", s, n)
	}
}

// igmpGroups lists the IPv4 multicast groups dev is in, as
// /proc/net/igmp writes them (hex, host byte order). The kernel hands the
// file out a page at a time and finds where to resume by counting
// devices from the start: one that other tests (other packages run
// alongside) remove before dev in the meantime shifts dev back past that
// point, and dev is skipped (it was, once, in CI). So a dev missing is
// looked for again, a few times.
func igmpGroups(t *testing.T, dev string) []string {
	t.Helper()
	for try := 0; ; try++ {
		groups, found := igmpRead(t, dev)
		if found {
			return groups
		}
		if try == 4 {
			t.Fatalf("%s not in /proc/net/igmp", dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func igmpRead(t *testing.T, dev string) ([]string, bool) {
	t.Helper()
	b, err := os.ReadFile("/proc/net/igmp")
	if err != nil {
		t.Fatal(err)
	}
	var groups []string
	found, in := false, false
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case !strings.HasPrefix(line, "\t"):
			in = len(f) > 1 && f[1] == dev
			found = found || in
		case in:
			groups = append(groups, f[0])
		}
	}
	return groups, found
}

func TestPutScrubs(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	cfg := testConfig()
	cfg.Reserve = -1
	cfg.MaxIdle = 4
	p := newPool(t, cfg)
	ns := get(t, p)
	// The host's links send nothing of their own (IPv6) into the sandbox,
	// or the counters would not stay at zero after the scrub below.
	for _, l := range []string{ns.veth, cfg.Prefix + "b0"} {
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + l + "/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) != "1" {
			t.Errorf("IPv6 is on on the host's link %s", l)
		}
	}
	// Nor IGMP: the bridge may be in no multicast group but all-hosts,
	// which is never reported.
	if gs := igmpGroups(t, cfg.Prefix+"b0"); len(gs) != 1 || gs[0] != "010000E0" {
		t.Errorf("bridge's IPv4 multicast groups %v, want only all-hosts (010000E0)", gs)
	}
	// What a privileged sandbox could leave: an extra address, an extra
	// route, a neighbour entry, traffic on the counters.
	extra := netip.MustParsePrefix("192.0.2.7/32")
	inNS(t, ns.File(), func() {
		lo, _ := netlink.LinkByName("lo")
		eth0, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: ipNet(extra)}); err != nil {
			t.Errorf("adding address: %v", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("198.51.100.0/24")), Gw: ns.Gateway().AsSlice()}); err != nil {
			t.Errorf("adding route: %v", err)
		}
		// Refused (the guard's reset): the dial returns once the answer
		// is in, so no packet is still on its way when Put scrubs.
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ns.Gateway(), 9).String(), 10*time.Second)
		if err == nil {
			c.Close()
		}
	})
	if c, err := ns.Counters(); err != nil || c.TxPackets == 0 {
		t.Fatalf("Counters() = %+v, %v; want traffic", c, err)
	}
	if err := p.Put(ctx, ns); err != nil {
		t.Fatalf("Put: %v", err)
	}
	again := get(t, p)
	if again != ns {
		t.Fatalf("Get after Put returned %s, want the returned %s", again.Addr(), ns.Addr())
	}
	var addrs []string
	var routes []string
	var neigh []netlink.Neigh
	inNS(t, ns.File(), func() {
		as, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		rs, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			routes = append(routes, r.String())
		}
		eth0, _ := netlink.LinkByName("eth0")
		neigh, _ = netlink.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
	})
	if strings.Join(addrs, " ") != "127.0.0.1/8 "+ns.Addr().String() {
		t.Errorf("addresses after Put: %v", addrs)
	}
	if len(routes) != 2 {
		t.Errorf("routes after Put: %v, want the default and the block's", routes)
	}
	if len(neigh) != 0 {
		t.Errorf("neighbours after Put: %v", neigh)
	}
	if c, err := ns.Counters(); err != nil || c != (Counters{}) {
		t.Errorf("Counters() after Put = %+v, %v; want zero", c, err)
	}
	t.Run("process left", func(t *testing.T) {
		ns := get(t, p)
		cmd := helper(t, "sleep", ns.File())
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err := p.Put(sctx, ns)
		if !errors.Is(err, ErrInUse) {
			t.Errorf("Put with a process inside = %v, want ErrInUse", err)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	t.Run("thread left", func(t *testing.T) {
		ns := get(t, p)
		cmd := helper(t, "thread", ns.File())
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if err := p.Put(sctx, ns); !errors.Is(err, ErrInUse) {
			t.Errorf("Put with a thread of another process inside = %v, want ErrInUse", err)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	t.Run("socket left", func(t *testing.T) {
		ns := get(t, p)
		var fd int
		inNS(t, ns.File(), func() {
			var err error
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrInet4{Port: 5353})
			}
			if err != nil {
				t.Errorf("socket: %v", err)
			}
		})
		defer unix.Close(fd)
		if err := p.Put(ctx, ns); !errors.Is(err, ErrInUse) {
			t.Errorf("Put with a socket inside = %v, want ErrInUse", err)
		}
	})
	s := p.Stats()
	if s.Discarded != 3 || s.Reused != 1 {
		t.Errorf("stats %+v: want 3 discarded, 1 reused", s)
	}
}

// helper starts this test binary as a process that enters f's network
// namespace and then does what is asked.
func helper(t testing.TB, what string, f *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "NETNS_HELPER="+what)
	if f != nil {
		cmd.ExtraFiles = []*os.File{f}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("helper %s: %q, %v", what, line, err)
	}
	return cmd
}

// TestHelperProcess is not a test: helper runs it in a child process.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv("NETNS_HELPER") {
	case "":
		return
	case "sleep":
		runtime.LockOSThread()
		if err := unix.Setns(3, unix.CLONE_NEWNET); err != nil {
			fmt.Println("setns:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		time.Sleep(time.Minute)
	case "thread":
		// Only a thread other than the leader enters the namespace: the
		// leader's /proc/PID/ns/net stays the host's. A goroutine that
		// lands on the leader keeps it, locked, and another is started.
		res := make(chan error)
		leader := errors.New("on the leader")
		for {
			go func() {
				runtime.LockOSThread() // never unlocked: the thread stays as set
				if unix.Gettid() == unix.Getpid() {
					res <- leader
				} else {
					res <- unix.Setns(3, unix.CLONE_NEWNET)
				}
				select {}
			}()
			if err := <-res; err != leader {
				if err != nil {
					fmt.Println("setns:", err)
					os.Exit(1)
				}
				break
			}
		}
		fmt.Println("ready")
		time.Sleep(time.Minute)
	case "pool":
		// A worker that gets killed: a pool with namespaces out.
		var cfg Config
		cfg.Prefix = os.Getenv("NETNS_PREFIX")
		cfg.Subnet = netip.MustParsePrefix(os.Getenv("NETNS_SUBNET"))
		cfg.Reserve = 3
		p, err := New(context.Background(), cfg)
		if err == nil {
			err = p.Fill(context.Background())
		}
		if err == nil {
			_, err = p.Get(context.Background())
		}
		if err != nil {
			fmt.Println("pool:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		time.Sleep(time.Minute)
	}
	os.Exit(0)
}

func TestSweepAfterCrash(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	// A neighbour worker whose objects the sweep must not touch.
	other := newPool(t, testConfig())
	keep := get(t, other)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "NETNS_HELPER=pool", "NETNS_PREFIX="+cfg.Prefix, "NETNS_SUBNET="+cfg.Subnet.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "ready") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q", line)
	}
	if left := linksWithPrefix(t, cfg.Prefix); len(left) < 2 {
		t.Fatalf("links of the helper's pool: %v, want its bridge and veths", left)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The namespaces died with the process and took their veths; the
	// bridge and its rule stay until swept.
	n, err := Sweep(cfg.Prefix)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if n < 2 {
		t.Errorf("Sweep removed %d objects, want at least the bridge and its rule", n)
	}
	if left := linksWithPrefix(t, cfg.Prefix); len(left) > 0 {
		t.Errorf("links left after Sweep: %v", left)
	}
	if r := rulesFor(t, cfg.Prefix); r != 0 {
		t.Errorf("%d rules left after Sweep", r)
	}
	if _, err := netlink.LinkByName(keep.HostVeth()); err != nil {
		t.Errorf("Sweep removed another pool's veth %s: %v", keep.HostVeth(), err)
	}
	if n, err := Sweep(cfg.Prefix); err != nil || n != 0 {
		t.Errorf("second Sweep = %d, %v; want 0", n, err)
	}
}

func TestNoLeaks(t *testing.T) {
	requireRoot(t)
	// A leak test, not a speed one: a thousand namespaces take a few
	// seconds when idle and many more on a busy host.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := testConfig()
	cfg.Reserve = 4
	fds, mounts := netnsFDs(t), mountCount(t)
	p, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const cycles = 1000
	t0 := time.Now()
	for i := range cycles {
		ns, err := p.Get(ctx)
		if err != nil {
			t.Fatalf("cycle %d: Get: %v", i, err)
		}
		if i%2 == 0 {
			if err := p.Put(ctx, ns); err != nil {
				t.Fatalf("cycle %d: Put: %v", i, err)
			}
		} else {
			ns.Destroy()
		}
	}
	t.Logf("%d cycles in %v: %+v", cycles, time.Since(t0), p.Stats())
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s := p.Stats(); s.Live != 0 {
		t.Errorf("stats after Close %+v: want nothing live", s)
	}
	if left := linksWithPrefix(t, cfg.Prefix); len(left) > 0 {
		t.Errorf("links left: %v", left)
	}
	if r := rulesFor(t, cfg.Prefix); r != 0 {
		t.Errorf("%d rules left", r)
	}
	if n := netnsFDs(t); n != fds {
		t.Errorf("namespace descriptors: %d after, %d before", n, fds)
	}
	if n := mountCount(t); n != mounts {
		t.Errorf("mounts: %d after, %d before", n, mounts)
	}
}

// mountCount counts the namespace-file mounts this process sees (a
// namespace held open by a bind mount, as `ip netns add` makes, shows up
// as nsfs). Other mounts come and go with other tests on the host.
func mountCount(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " - nsfs ")
}

func TestReleaseScrubsInBackground(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	cfg := testConfig()
	cfg.Reserve = 2
	p := newPool(t, cfg)
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	clean, busy := get(t, p), get(t, p)
	var fd int
	inNS(t, busy.File(), func() {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
			err = unix.Bind(fd, &unix.SockaddrInet4{Port: 5354})
		}
		if err != nil {
			t.Errorf("socket: %v", err)
		}
	})
	defer unix.Close(fd)
	p.Release(clean)
	p.Release(busy)
	end := time.Now().Add(10 * time.Second)
	for s := p.Stats(); s.Reused+s.Discarded < 2; s = p.Stats() {
		if time.Now().After(end) {
			t.Fatalf("released namespaces not scrubbed: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := p.Stats(); s.Reused != 1 || s.Discarded != 1 {
		t.Errorf("stats %+v: want the clean one reused and the one with a socket discarded", s)
	}
}

// outside makes a namespace standing for the world beyond the host: a
// veth pair from the host (hostAddr) to it (its address), with a route
// back to the pool's subnet through the host.
// outsideAddrs are the host's and the outside's addresses of outside()'s
// link number n: a /30 of 198.18.0.0/16 (RFC 2544's benchmarking block;
// e2e's outside host takes 198.19.0.0/16) that depends on the process.
func outsideAddrs(n int32) (host, out netip.Prefix) {
	b := byte(os.Getpid() % 251)
	c := byte(n%63) * 4
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, b, c + 1}), 30),
		netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, b, c + 2}), 30)
}

func outside(t *testing.T, name string, hostAddr, addr netip.Prefix, back netip.Prefix) *os.File {
	t.Helper()
	// A pool only to borrow its namespace maker; nothing else is made.
	p, err := New(context.Background(), Config{Prefix: "o" + strconv.FormatInt(int64(os.Getpid()%46656), 36), Subnet: netip.MustParsePrefix("10.255.255.0/29"), Reserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	fd, h, err := p.unshare(true)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "outside")
	t.Cleanup(func() { h.Close(); f.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: net.FlagUp}, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(veth) })
	if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(hostAddr)}); err != nil {
		t.Fatal(err)
	}
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: ipNet(back), Gw: hostAddr.Addr().AsSlice()}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNAT(t *testing.T) {
	requireRoot(t)
	old, err := os.ReadFile(ipForward)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(ipForward, old, 0) })
	cfg := testConfig()
	cfg.NAT = true
	cfg.Reserve = -1
	p := newPool(t, cfg)
	ns := get(t, p)
	n := seq.Add(1)
	hostAddr, outAddr := outsideAddrs(n)
	world := outside(t, cfg.Prefix+"o", hostAddr, outAddr, cfg.Subnet)

	// A server out there records who connects.
	var l net.Listener
	inNS(t, world, func() { l, err = net.Listen("tcp", netip.AddrPortFrom(outAddr.Addr(), 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peers := make(chan string, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	if err := dialFromWithin(t, ns, l.Addr().String(), 5*time.Second); err != nil {
		t.Fatalf("sandbox cannot reach the outside through NAT: %v", err)
	}
	if r, err := ListRules(cfg.Prefix); err != nil || !r.Masquerade || r.Chains["forward"] != 1 {
		t.Errorf("rules %+v, %v: want masquerade and no egress rule", r, err)
	}
	if got := <-peers; got != hostAddr.Addr().String() {
		t.Errorf("the outside saw %s, want the host's %s (masqueraded)", got, hostAddr.Addr())
	}
	// Forwarding is on, yet nobody outside opens a connection to a
	// sandbox: the pool's forward chain drops it.
	ls := listenIn(t, ns)
	var derr error
	inNS(t, world, func() {
		var c net.Conn
		if c, derr = net.DialTimeout("tcp", ls.Addr().String(), 300*time.Millisecond); derr == nil {
			c.Close()
		}
	})
	if derr == nil {
		t.Errorf("the outside opened a connection to sandbox %s", ls.Addr())
	}
	// The host itself still can (not forwarded).
	c, err := net.DialTimeout("tcp", ls.Addr().String(), mustDial)
	if err != nil {
		t.Fatalf("host cannot reach the sandbox: %v", err)
	}
	c.Close()
}

// TestRefillKeepsMaxIdle hands a namespace back while the refiller is
// making one for the reserve it had just taken from: the namespace the
// refiller finishes after Put filled the reserve must be destroyed, not
// kept above MaxIdle. With bridges of one port the refiller's make needs
// a new bridge; holding brMu (bridges are made one at a time) keeps it
// waiting in alloc until the Put is done, as a slow make on a busy host
// does.
func TestRefillKeepsMaxIdle(t *testing.T) {
	requireRoot(t)
	ctx := ctxT(t)
	cfg := testConfig()
	cfg.Reserve, cfg.MaxIdle, cfg.PortsPerBridge, cfg.RefillDelay = 1, 1, 1, -1
	p := newPool(t, cfg)
	if err := p.Fill(ctx); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	p.brMu.Lock()
	ns, err := p.Get(ctx) // the refiller starts making one, and waits for brMu
	if err != nil {
		p.brMu.Unlock()
		t.Fatalf("Get: %v", err)
	}
	if !waitStack(t, "netns.(*Pool).alloc(") {
		p.brMu.Unlock()
		t.Fatal("the refiller did not start making a namespace")
	}
	err = p.Put(ctx, ns)
	p.brMu.Unlock()
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	// Wait for the refiller's namespace (made, then kept or destroyed).
	s := p.Stats()
	for end := time.Now().Add(10 * time.Second); s.Created == before.Created || s.Live != s.Ready+s.Offline; s = p.Stats() {
		if time.Now().After(end) {
			t.Fatalf("refiller made nothing: %+v", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if s.Ready > cfg.MaxIdle || s.Live != s.Ready+s.Offline {
		t.Errorf("%+v: want at most MaxIdle=%d ready and nothing else live", s, cfg.MaxIdle)
	}
}

// waitStack waits up to 10 s for a goroutine whose stack holds fn.
func waitStack(t testing.TB, fn string) bool {
	t.Helper()
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn) {
			return true
		}
	}
	return false
}

// TestBridgeAddressStays: the gateway's link address does not follow the
// bridge's ports. A bridge without an address of its own takes its
// lowest port's and changes it when that port goes, and sandboxes that
// cached the old one lose their way out for about 30 s.
func TestBridgeAddressStays(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	cfg.Reserve = -1
	p := newPool(t, cfg)
	var nss []*NS
	for range 3 {
		ns, err := p.Create(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		nss = append(nss, ns)
	}
	addr := func() string {
		t.Helper()
		br, err := netlink.LinkByName(nss[0].Bridge())
		if err != nil {
			t.Fatal(err)
		}
		return br.Attrs().HardwareAddr.String()
	}
	first := addr()
	if first == "00:00:00:00:00:00" {
		t.Fatalf("bridge address %s", first)
	}
	for _, ns := range nss {
		ns.Destroy()
	}
	// The veths go in the background.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		br, err := netlink.LinkByName(nss[0].Bridge())
		if err != nil {
			t.Fatal(err)
		}
		ports := 0
		ls, _ := netlink.LinkList()
		for _, l := range ls {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				ports++
			}
		}
		if ports == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ports left on the bridge", ports)
		}
	}
	if got := addr(); got != first {
		t.Errorf("bridge address %s after its ports went, %s before", got, first)
	}
}

// newTarget makes a network namespace the pool did not make, as a zygote
// child does, with loopback down.
func newTarget(t *testing.T) *os.File {
	t.Helper()
	var f *os.File
	if err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		f, err = os.Open("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatalf("new namespace: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Attach gives a namespace made elsewhere a veth pair made in place (the
// pool's reserve is not touched), an address and a default route that
// reaches the bridge, leaves its loopback alone, and refuses the Put of
// the result; Destroy gives the address back.
func TestAttach(t *testing.T) {
	requireRoot(t)
	cfg := testConfig()
	cfg.Reserve = 2
	cfg.OfflineReserve = -1
	p := newPool(t, cfg)
	if err := p.Fill(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	target := newTarget(t)
	ns, err := p.Attach(ctxT(t), target)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if ns.ino != inode(t, target) {
		t.Errorf("NS stands for namespace %d, want the target's %d", ns.ino, inode(t, target))
	}
	after := p.Stats()
	if after.Hits != before.Hits || after.Misses != before.Misses || after.Ready != before.Ready || after.Created != before.Created+1 {
		t.Errorf("stats %+v after Attach, %+v before: want one namespace's pair made, the reserve untouched", after, before)
	}
	var addrs, routes []string
	var loUp bool
	inNS(t, target, func() {
		as, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
		for _, a := range as {
			addrs = append(addrs, a.IPNet.String())
		}
		rs, _ := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range rs {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				routes = append(routes, r.Gw.String())
			}
		}
		lo, _ := netlink.LinkByName("lo")
		loUp = lo.Attrs().Flags&net.FlagUp != 0
		// The gateway answers (the pool's table rejects the port, which
		// is an answer from the bridge too).
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(ns.Gateway(), 9).String(), 10*time.Second)
		if err == nil {
			c.Close()
		} else if !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.EHOSTUNREACH) {
			t.Errorf("dialing the gateway: %v", err)
		}
	})
	if strings.Join(addrs, " ") != ns.Addr().String() {
		t.Errorf("addresses in the target %v, want %s alone (loopback is down)", addrs, ns.Addr())
	}
	if len(routes) != 1 || routes[0] != ns.Gateway().String() {
		t.Errorf("default routes in the target %v, want via %s", routes, ns.Gateway())
	}
	if loUp {
		t.Errorf("Attach brought the target's loopback up: its owner's to do")
	}
	if c, err := ns.Counters(); err != nil || c.TxPackets == 0 {
		t.Errorf("Counters() = %+v, %v; want the dial's packets", c, err)
	}
	if err := p.Put(ctxT(t), ns); err == nil {
		t.Errorf("Put of an attached namespace succeeded")
	}
	ns.Destroy()
	if s := p.Stats(); s.Live != before.Live || s.Destroyed != before.Destroyed+1 {
		t.Errorf("stats %+v after Destroy, %+v before Attach: want it gone", s, before)
	}

	// A target that cannot take the pair's default route (it has one of
	// its own): the error, after the pair is made, leaves no host end
	// behind and counts nothing.
	before = p.Stats()
	links := linksWithPrefix(t, cfg.Prefix+"v")
	taken := newTarget(t)
	inNS(t, taken, func() {
		x := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "x0"}, PeerName: "x1"}
		if err := netlink.LinkAdd(x); err != nil {
			t.Errorf("a link of its own: %v", err)
		}
		for _, name := range []string{"x0", "x1"} {
			if l, err := netlink.LinkByName(name); err == nil {
				netlink.LinkSetUp(l)
			}
		}
		x0, err := netlink.LinkByName("x0")
		if err != nil {
			t.Fatalf("x0: %v", err)
		}
		if err := netlink.AddrAdd(x0, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.1/24"))}); err != nil {
			t.Errorf("an address of its own: %v", err)
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: x0.Attrs().Index, Gw: net.ParseIP("192.0.2.254")}); err != nil {
			t.Errorf("a default route of its own: %v", err)
		}
	})
	if ns, err := p.Attach(ctxT(t), taken); err == nil {
		ns.Destroy()
		t.Fatalf("Attach to a namespace with a default route of its own succeeded")
	}
	if s := p.Stats(); s.Live != before.Live || s.Created != before.Created || s.Destroyed != before.Destroyed {
		t.Errorf("stats %+v after a failed Attach, %+v before: want nothing counted", s, before)
	}
	if left := linksWithPrefix(t, cfg.Prefix+"v"); !slices.Equal(left, links) {
		t.Errorf("host ends %v after a failed Attach, %v before", left, links)
	}
}
