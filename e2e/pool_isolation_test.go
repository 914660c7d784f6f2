package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hearth-run/hearth/internal/netns"
)

// netProbe is a handler that reports its network: its interfaces and
// address, whether it reaches each target, and (with listen) keeps a TCP
// listener open on all its addresses for other sandboxes to try.
const netProbe = `
import socket, threading

_lis = None

def reach(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return "ok"
    except OSError as e:
        return type(e).__name__ + ": " + str(e)

def addr():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent; picks the source address
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()

def f(e):
    global _lis
    if e.get("listen") and _lis is None:
        _lis = socket.socket()
        _lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _lis.bind(("0.0.0.0", e["listen"]))
        _lis.listen(16)
        # The kernel completes handshakes even while the sandbox is paused.
    self_ok = None
    if e.get("self"):
        l = socket.socket()
        l.bind(("127.0.0.1", 0))
        l.listen(1)
        self_ok = reach("127.0.0.1:%d" % l.getsockname()[1])
        l.close()
    return {
        "ifaces": sorted(n for _, n in socket.if_nameindex()),
        "addr": addr(),
        "reach": {t: reach(t) for t in e.get("targets", [])},
        "self": self_ok,
    }
`

// netPrefix is the worker's bridge and veth name prefix for a cgroup
// parent, as the worker derives it.
func netPrefix(cgroupParent string) string {
	h := fnv.New32a()
	h.Write([]byte(cgroupParent))
	return "h" + strconv.FormatUint(uint64(h.Sum32()), 36)
}

// testSubnet is a /16 of 10.0.0.0/8 for this test process, so concurrent
// runs do not share bridges' addresses.
func testSubnet() string {
	return fmt.Sprintf("10.%d.0.0/16", 128+(os.Getpid()+int(seq.Add(1)))%100)
}

func linksWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	// A dump the kernel interrupted (links come and go on a busy host:
	// other tests' workers) is taken again.
	links, err := netlink.LinkList()
	for i := 0; errors.Is(err, netlink.ErrDumpInterrupted) && i < 50; i++ {
		time.Sleep(10 * time.Millisecond)
		links, err = netlink.LinkList()
	}
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

// waitNoLinks waits for the kernel to finish removing a stopped worker's
// links (namespaces are torn down in the background).
func waitNoLinks(t *testing.T, prefix string) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for {
		left := linksWithPrefix(t, prefix)
		if len(left) == 0 {
			return
		}
		if time.Now().After(end) {
			t.Errorf("links left by the worker: %v", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type netReport struct {
	Ifaces []string          `json:"ifaces"`
	Addr   string            `json:"addr"`
	Reach  map[string]string `json:"reach"`
	Self   *string           `json:"self"`
}

func probeNet(t *testing.T, w *worker, name string, event any) netReport {
	t.Helper()
	b, _ := json.Marshal(event)
	inv := w.mustInvoke(name, string(b))
	var r netReport
	if err := json.Unmarshal(inv.Body, &r); err != nil {
		t.Fatalf("%s: %v: %s", name, err, inv.Body)
	}
	return r
}

func TestIsolatedNetwork(t *testing.T) {
	// Without spares, so that every start below takes its namespace
	// from the pool (TestIsolatedSpare covers spares).
	w := startWorker(t, "--netns-subnet", testSubnet(), "--netns-pool", "2", "--spares", "-1", "--allow-host-network")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop() // clean-ups run after this; the links must go with the worker
		waitNoLinks(t, prefix)
	}()
	for _, n := range []string{"srv", "cli"} {
		w.deployDir(n, fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
	}
	w.deployDir("host", fn(t, "f.py", netProbe, "function.yaml", "network: host\n"))
	w.deployDir("off", fn(t, "f.py", netProbe, "function.yaml", "network: offline\n"))

	// A service on the host's loopback.
	hostLo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLo.Close()
	go func() {
		for {
			c, err := hostLo.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hostPort := hostLo.Addr().(*net.TCPAddr).Port

	srv := probeNet(t, w, "srv", map[string]any{"listen": 8080})
	if strings.Join(srv.Ifaces, ",") != "eth0,lo" || srv.Addr == "" {
		t.Fatalf("isolated sandbox: interfaces %v, address %q; want eth0 and lo with an address", srv.Ifaces, srv.Addr)
	}
	srvAddr := net.JoinHostPort(srv.Addr, "8080")
	// Positive control: the host reaches the sandbox's listener.
	c, err := net.DialTimeout("tcp", srvAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("host cannot reach the isolated sandbox's listener %s: %v", srvAddr, err)
	}
	c.Close()
	// A host-network sandbox sees the host's interfaces, but neither the
	// host's loopback service nor the isolated sandbox.
	hostLoAddr := hostLo.Addr().String()
	r := probeNet(t, w, "host", map[string]any{"targets": []string{hostLoAddr, srvAddr}})
	if !slices.Contains(r.Ifaces, prefix+"b0") {
		t.Errorf("host-network sandbox: interfaces %v, want the host's (with bridge %sb0)", r.Ifaces, prefix)
	}
	for tgt, res := range r.Reach {
		if res == "ok" {
			t.Errorf("host-network sandbox reached %s", tgt)
		}
	}

	// The gateway (first address of the sandbox's /22) is the host too:
	// its loopback-only service must not answer there either.
	block := netip.PrefixFrom(netip.MustParseAddr(srv.Addr), 22).Masked().Addr()
	gwAddr := net.JoinHostPort(block.Next().String(), strconv.Itoa(hostPort))
	targets := []string{hostLoAddr, srvAddr, gwAddr}
	cli := probeNet(t, w, "cli", map[string]any{"targets": targets, "self": true})
	if cli.Addr == "" || cli.Addr == srv.Addr {
		t.Fatalf("second isolated sandbox has address %q (first: %q)", cli.Addr, srv.Addr)
	}
	if cli.Self == nil || *cli.Self != "ok" {
		t.Errorf("isolated sandbox cannot reach its own loopback: %v", cli.Self)
	}
	for _, tgt := range targets {
		if cli.Reach[tgt] == "ok" {
			t.Errorf("isolated sandbox %s reached %s", cli.Addr, tgt)
		}
	}
	off := probeNet(t, w, "off", map[string]any{"targets": []string{hostLoAddr, srvAddr}, "self": true})
	if strings.Join(off.Ifaces, ",") != "lo" || off.Addr != "" {
		t.Errorf("offline sandbox: interfaces %v, address %q; want only lo and no address", off.Ifaces, off.Addr)
	}
	for tgt, res := range off.Reach {
		if res == "ok" {
			t.Errorf("offline sandbox reached %s", tgt)
		}
	}
	if len(linksWithPrefix(t, prefix)) == 0 {
		t.Errorf("no links with the worker's prefix %q: isolated sandboxes did not use its pool", prefix)
	}
	// Once the reserve has refilled, an isolated start takes a pre-made
	// namespace: from the pool, or through a pre-made sandbox (a holder)
	// whose namespace came from it and that the pool then replaces. No
	// namespace is made on the critical path.
	waitMetric(t, w, `hearth_resource_pool_ready{pool="netns"}`, 2)
	hits := metricValue(t, w, `hearth_resource_pool_gets_total{pool="netns",result="hit"}`)
	misses := metricValue(t, w, `hearth_resource_pool_gets_total{pool="netns",result="miss"}`)
	w.deployDir("late", fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
	probeNet(t, w, "late", map[string]any{}) // a new sandbox: the others are warm
	if got := metricValue(t, w, `hearth_resource_pool_gets_total{pool="netns",result="hit"}`); got < hits+1 {
		t.Errorf("netns pool hits went from %v to %v, want at least one more", hits, got)
	}
	if got := metricValue(t, w, `hearth_resource_pool_gets_total{pool="netns",result="miss"}`); got != misses {
		t.Errorf("netns pool misses went from %v to %v: a namespace was made on demand", misses, got)
	}
}

// metricValue reads one sample from the worker's /metrics (-1 if absent).
func metricValue(t *testing.T, w *worker, series string) float64 {
	t.Helper()
	resp, err := w.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	return -1
}

func waitMetric(t *testing.T, w *worker, series string, want float64) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for metricValue(t, w, series) < want {
		if time.Now().After(end) {
			t.Fatalf("%s stayed below %v", series, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPoolExhaustionFallsBack(t *testing.T) {
	w := startWorker(t, "--netns-subnet", testSubnet(), "--netns-pool", "1", "--cgroup-pool", "1", "--no-warm-cache")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop()
		waitNoLinks(t, prefix)
	}()
	const n = 6
	for i := range n {
		w.deployDir(fmt.Sprintf("x%d", i), fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
	}
	// A burst of distinct isolated functions, far beyond both reserves:
	// every call succeeds, and the on-demand creations are counted.
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := w.invoke(fmt.Sprintf("x%d", i), "{}")
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("invoke during exhaustion: %v", err)
		}
	}
	// Every start got both resources, through the pools. A namespace takes
	// ~2 ms to make, so the burst outruns its one-deep reserve and some
	// gets must be counted as misses. A cgroup is refilled in ~0.1 ms,
	// faster than zygote forks arrive, so whether this burst exhausts it
	// is timing; internal/cgroup's pool tests cover its fallback.
	for _, pool := range []string{"cgroup", "netns"} {
		hit := metricValue(t, w, `hearth_resource_pool_gets_total{pool="`+pool+`",result="hit"}`)
		miss := metricValue(t, w, `hearth_resource_pool_gets_total{pool="`+pool+`",result="miss"}`)
		t.Logf("%s pool: %v hits, %v misses", pool, hit, miss)
		if hit+miss < n || (pool == "netns" && miss < 1) {
			t.Errorf("%s pool: %v hits, %v misses; want at least %d gets (netns: some misses)", pool, hit, miss, n)
		}
	}
}

func TestPoolsCrashLeavesNothing(t *testing.T) {
	for _, mode := range []string{"pooled", "unpooled"} {
		t.Run(mode, func(t *testing.T) {
			extra := []string{"--netns-subnet", testSubnet(), "--no-warm-cache"}
			if mode == "unpooled" {
				extra = append(extra, "--no-pools")
			}
			w := startWorker(t, extra...)
			prefix := netPrefix(w.cgroup)
			defer func() {
				w.stop()
				waitNoLinks(t, prefix)
			}()
			w.deployDir("iso", fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
			w.deployDir("plain", fn(t, "f.py", netProbe))
			for range 3 {
				if r := probeNet(t, w, "iso", map[string]any{}); r.Addr == "" {
					t.Fatalf("isolated sandbox without an address: %+v", r)
				}
				probeNet(t, w, "plain", map[string]any{})
			}
			if len(linksWithPrefix(t, prefix)) == 0 {
				t.Fatalf("no bridge or veth with prefix %q before the crash", prefix)
			}
			w.crash()
			// The worker's reaper sweeps the bridges and cgroups (the
			// namespaces died with the old process) without waiting for
			// a restart, and the restarted worker says so. Stopping it
			// cleanly must then leave nothing (checked by startWorker's
			// clean-up and waitNoLinks).
			w.waitReaped(15 * time.Second)
			waitNoLinks(t, prefix)
			if ok, err := netns.HasTable(prefix); err != nil || ok {
				t.Errorf("nftables table of the crashed worker after its reaper: %v, %v", ok, err)
			}
			w.start()
			if !strings.Contains(w.out.String(), "its reaper swept") {
				t.Errorf("the restarted worker did not report the reaper's sweep:\n%s", tail(w.out.String(), 20))
			}
			if r := probeNet(t, w, "iso", map[string]any{}); r.Addr == "" {
				t.Fatalf("isolated sandbox after restart without an address: %+v", r)
			}
		})
	}
}

// waitRootSpare waits until w's root zygote node holds a spare.
func waitRootSpare(t *testing.T, w *worker) {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if tree.Nodes[0].Spares > 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatal("no isolated spare was made")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIsolatedSpare: an isolated function started from a spare (forked
// ahead of need, waiting in its own pooled namespace) is as isolated as
// one started on demand.
func TestIsolatedSpare(t *testing.T) {
	w := startWorker(t, "--netns-subnet", testSubnet(), "--netns-pool", "2")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop()
		waitNoLinks(t, prefix)
	}()
	hostLo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostLo.Close()
	w.deployDir("first", fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
	first := probeNet(t, w, "first", map[string]any{"listen": 8080})
	// The first isolated start asks for isolated spares.
	waitRootSpare(t, w)
	before := metricValue(t, w, "hearth_spare_starts_total")
	w.deployDir("second", fn(t, "f.py", netProbe, "function.yaml", "network: isolated\n"))
	targets := []string{hostLo.Addr().String(), net.JoinHostPort(first.Addr, "8080")}
	r := probeNet(t, w, "second", map[string]any{"targets": targets, "self": true})
	if got := metricValue(t, w, "hearth_spare_starts_total"); got != before+1 {
		t.Fatalf("spare starts went from %v to %v: the start did not take a spare", before, got)
	}
	if strings.Join(r.Ifaces, ",") != "eth0,lo" || r.Addr == "" || r.Addr == first.Addr {
		t.Errorf("spare-started isolated sandbox: interfaces %v, address %q (first: %q)", r.Ifaces, r.Addr, first.Addr)
	}
	if r.Self == nil || *r.Self != "ok" {
		t.Errorf("cannot reach its own loopback: %v", r.Self)
	}
	for _, tgt := range targets {
		if r.Reach[tgt] == "ok" {
			t.Errorf("spare-started isolated sandbox reached %s", tgt)
		}
	}
}

// lazyProbe reports a sandbox's interfaces from /proc/net/dev, which
// takes no socket, before and after it fetches "url" (if given) from a
// process of its own: the network is the sandbox's, whichever of its
// processes first asks for it.
const lazyProbe = `
import subprocess, sys

def ifaces():
    with open("/proc/net/dev") as f:
        return sorted(l.split(":")[0].strip() for l in f.readlines()[2:])

FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"

def filters():
    with open("/proc/self/status") as f:
        for l in f:
            if l.startswith("Seccomp_filters:"):
                return int(l.split()[1])
    return -1

def f(e):
    before = ifaces()
    got = None
    if e.get("url"):
        p = subprocess.run([sys.executable, "-c", FETCH, e["url"]], capture_output=True, text=True, timeout=30)
        got = p.stdout if p.returncode == 0 else "failed: " + p.stderr[-300:]
    return {"before": before, "after": ifaces(), "got": got, "filters": filters()}
`

type lazyReport struct {
	Before  []string `json:"before"`
	After   []string `json:"after"`
	Got     *string  `json:"got"`
	Filters int      `json:"filters"` // seccomp filters on the process (Linux 5.9)
}

func deref(s *string) string {
	if s == nil {
		return "<nothing>"
	}
	return *s
}

func probeLazy(t *testing.T, w *worker, name, url string) lazyReport {
	t.Helper()
	ev := "{}"
	if url != "" {
		ev = `{"url": "` + url + `"}`
	}
	inv := w.mustInvoke(name, ev)
	var r lazyReport
	if err := json.Unmarshal(inv.Body, &r); err != nil {
		t.Fatalf("%s: %v: %s", name, err, inv.Body)
	}
	return r
}

// TestNetworkAtFirstSocket: a forked sandbox of network: isolated gets
// its veth pair only when one of its processes first makes an internet
// or netlink socket; until then it has loopback alone, and a function
// that never makes one costs none. Then it reaches a server beyond the
// host's NAT, as one with its network from the start does. Once a
// function has used the network, its next sandboxes get it at start.
// Forked on demand and from a spare alike; offline sandboxes never get
// one; and with --eager-network the network is there from the start.
func TestNetworkAtFirstSocket(t *testing.T) {
	ln := newOutsideHost(t).listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, "hello from outside")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"
	const attached = `hearth_network_first_socket_total{result="attached"}`
	fetched := func(r lazyReport) bool { return r.Got != nil && *r.Got == "hello from outside" }

	// A new sandbox for every call, forked on demand.
	w := startWorker(t, "--netns-subnet", testSubnet(), "--no-warm-cache", "--spares", "-1")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop()
		waitNoLinks(t, prefix)
	}()
	w.deployDir("lazy", fn(t, "f.py", lazyProbe))
	w.deployDir("off", fn(t, "f.py", lazyProbe, "function.yaml", "network: offline\n"))

	r := probeLazy(t, w, "lazy", "")
	if strings.Join(r.Before, ",") != "lo" || strings.Join(r.After, ",") != "lo" {
		t.Fatalf("forked sandbox that made no socket: interfaces %v then %v, want lo alone", r.Before, r.After)
	}
	if got := metricValue(t, w, attached); got > 0 {
		t.Errorf("%s = %v before any sandbox made a socket", attached, got)
	}
	r = probeLazy(t, w, "lazy", url)
	if !fetched(r) {
		t.Fatalf("forked sandbox at its first socket: fetched %q, want the outside server's answer", deref(r.Got))
	}
	if strings.Join(r.Before, ",") != "lo" || strings.Join(r.After, ",") != "eth0,lo" {
		t.Errorf("forked sandbox: interfaces %v before its first socket and %v after, want lo, then eth0 and lo", r.Before, r.After)
	}
	if got := metricValue(t, w, attached); got != 1 {
		t.Errorf("%s = %v, want 1", attached, got)
	}
	// The function has used the network: its next sandbox has it at
	// once, and no network filter.
	watched := r.Filters
	r = probeLazy(t, w, "lazy", "")
	if strings.Join(r.Before, ",") != "eth0,lo" || (watched >= 0 && r.Filters != watched-1) {
		t.Errorf("sandbox of a function that used the network: interfaces %v before any socket, %d seccomp filters; want eth0 and lo, %d", r.Before, r.Filters, watched-1)
	}
	if got := metricValue(t, w, attached); got != 1 {
		t.Errorf("%s = %v after a start with the network made at start, want still 1", attached, got)
	}

	// The offline sandbox's socket is let go without a network.
	r = probeLazy(t, w, "off", url)
	if r.Got == nil || !strings.HasPrefix(*r.Got, "failed") || strings.Join(r.After, ",") != "lo" {
		t.Errorf("offline sandbox: fetched %q, interfaces %v; want a failure and lo alone", deref(r.Got), r.After)
	}
	if got := metricValue(t, w, attached); got != 1 {
		t.Errorf("%s = %v after the offline sandbox's socket, want still 1", attached, got)
	}

	// From a spare: the first isolated start asks for isolated spares.
	// A new sandbox for every call, and no snapshot to restore from.
	s := startWorker(t, "--netns-subnet", testSubnet(), "--no-warm-cache", "--no-snapshots")
	sprefix := netPrefix(s.cgroup)
	defer func() {
		s.stop()
		waitNoLinks(t, sprefix)
	}()
	s.deployDir("first", fn(t, "f.py", lazyProbe))
	probeLazy(t, s, "first", "")
	waitRootSpare(t, s)
	before := metricValue(t, s, "hearth_spare_starts_total")
	s.deployDir("spare", fn(t, "f.py", lazyProbe))
	r = probeLazy(t, s, "spare", url)
	if got := metricValue(t, s, "hearth_spare_starts_total"); got != before+1 {
		t.Fatalf("spare starts went from %v to %v: the start did not take a spare", before, got)
	}
	if !fetched(r) || strings.Join(r.Before, ",") != "lo" || strings.Join(r.After, ",") != "eth0,lo" {
		t.Errorf("spare-started sandbox: fetched %q, interfaces %v then %v; want the answer, lo, then eth0 and lo", deref(r.Got), r.Before, r.After)
	}
	watched = r.Filters
	if watched < 0 {
		t.Log("no Seccomp_filters in /proc/PID/status (Linux before 5.9): the filters are not counted")
	}
	unfiltered := func(r lazyReport) bool { return watched < 0 || r.Filters == watched-1 }
	// The function has used the network: spares of its kind, network in
	// place and filter-free, are made at once, and its next start takes
	// one.
	waitRootSpares(t, s, 4) // two of each kind
	before = metricValue(t, s, "hearth_spare_starts_total")
	r = probeLazy(t, s, "spare", url)
	if got := metricValue(t, s, "hearth_spare_starts_total"); got != before+1 {
		t.Fatalf("spare starts went from %v to %v: the start did not take a spare", before, got)
	}
	if !fetched(r) || strings.Join(r.Before, ",") != "eth0,lo" || !unfiltered(r) {
		t.Errorf("spare-started sandbox of a function that used the network: fetched %q, interfaces %v, %d seccomp filters; want the answer, eth0 and lo, %d (no network filter)", deref(r.Got), r.Before, r.Filters, watched-1)
	}
	if got := metricValue(t, s, attached); got != 1 {
		t.Errorf("%s = %v after starts with the network in place, want 1", attached, got)
	}

	// Eager: the network is there before any socket.
	e := startWorker(t, "--netns-subnet", testSubnet(), "--eager-network")
	eprefix := netPrefix(e.cgroup)
	defer func() {
		e.stop()
		waitNoLinks(t, eprefix)
	}()
	e.deployDir("eager", fn(t, "f.py", lazyProbe))
	r = probeLazy(t, e, "eager", "")
	if strings.Join(r.Before, ",") != "eth0,lo" {
		t.Errorf("--eager-network: interfaces %v before any socket, want eth0 and lo", r.Before)
	}
	if got := metricValue(t, e, attached); got > 0 {
		t.Errorf("--eager-network: %s = %v", attached, got)
	}
}

// socketsN makes "n" internet sockets and says how many seccomp filters
// its process has.
const socketsN = `
import socket

def f(e):
    for _ in range(e["n"]):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    with open("/proc/self/status") as f:
        for l in f:
            if l.startswith("Seccomp_filters:"):
                return {"filters": int(l.split()[1])}
    return {"filters": -1}
`

// TestFilteredSandboxRetired: a warm sandbox under the network filter
// whose sockets, once its network came, cost more in round trips to the
// worker (30 us each, counted) than a start of its function is not kept
// warm after its call. Its function's next sandbox has its network from
// the start and no filter, and is kept. One of a function slow to start
// (half a second), whose sockets cost less, stays warm, filter and all.
func TestFilteredSandboxRetired(t *testing.T) {
	w := startWorker(t, "--netns-subnet", testSubnet(), "--spares", "-1", "--no-snapshots")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop()
		waitNoLinks(t, prefix)
	}()
	w.deployDir("busy", fn(t, "f.py", socketsN))
	w.deployDir("slow", fn(t, "f.py", "import time\ntime.sleep(0.5)\n"+socketsN))
	call := func(name string, n int) (string, int) {
		t.Helper()
		inv := w.mustInvoke(name, fmt.Sprintf(`{"n": %d}`, n))
		var r struct{ Filters int }
		if err := json.Unmarshal(inv.Body, &r); err != nil {
			t.Fatalf("%s: %v: %s", name, err, inv.Body)
		}
		return inv.Path, r.Filters
	}
	// 1000 sockets count for 30 ms, less than a start of slow: calls one
	// after the other reuse its warm sandbox, with the filter.
	path, filtered := call("slow", 1000)
	if path != "fork" {
		t.Fatalf("slow's first call took path %s, want fork", path)
	}
	if path, f := call("slow", 1000); path != "warm" || f != filtered {
		t.Errorf("slow's second call: path %s, %d filters; want the same sandbox, warm, %d", path, f, filtered)
	}
	// 10000 sockets (5 s at the worker's bound) count for 300 ms: more
	// than a fork start, even on a busy host.
	if path, f := call("busy", 10000); path != "fork" || f != filtered {
		t.Fatalf("busy's first call: path %s, %d filters; want fork, %d", path, f, filtered)
	}
	path, f := call("busy", 1)
	if path != "fork" {
		t.Errorf("busy's second call took path %s: the sandbox that made 10000 sockets under the filter was kept", path)
	}
	if filtered >= 0 && f != filtered-1 {
		t.Errorf("busy's second sandbox has %d seccomp filters, want %d (no network filter)", f, filtered-1)
	}
	if path, _ := call("busy", 10000); path != "warm" {
		t.Errorf("busy's third call took path %s, want warm: a sandbox without the filter is kept", path)
	}
	if got := metricValue(t, w, "hearth_network_filter_retired_total"); got != 1 {
		t.Errorf("hearth_network_filter_retired_total = %v, want 1", got)
	}
}

// socketFlood makes internet sockets for a second, after its first, and
// says how many.
const socketFlood = `
import socket, time

def f(e):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    n, end = 0, time.monotonic() + 1.0
    while time.monotonic() < end:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        n += 1
    return {"n": n}
`

// TestSocketFloodBounded: every socket a sandbox under the network
// filter makes is a round trip to the worker, which no cgroup pays for;
// the worker answers a sandbox at most 2000 a second, so one that floods
// slows itself (without the bound, this loop makes 10-25 thousand).
func TestSocketFloodBounded(t *testing.T) {
	w := startWorker(t, "--netns-subnet", testSubnet(), "--spares", "-1")
	w.deployDir("flood", fn(t, "f.py", socketFlood, "function.yaml", "timeout_s: 30\n"))
	inv := w.mustInvoke("flood", "{}")
	var r struct{ N int }
	if err := json.Unmarshal(inv.Body, &r); err != nil {
		t.Fatalf("%v: %s", err, inv.Body)
	}
	t.Logf("%d sockets in a second", r.N)
	// 200 in each window of 100 ms; a second spans 11 of them, and
	// more on a busy host that stretches the loop's last call.
	if r.N <= 0 || r.N > 2600 {
		t.Errorf("a flooding sandbox made %d sockets in a second, want (0, 2600]", r.N)
	}
}
