package netns

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostServices are TCP and UDP services on the host, each on the
// loopback, the wildcard and the given address; UDP ones echo.
type hostServices struct {
	tcp, udp map[string]string // where -> address to dial
}

func startHostServices(t *testing.T, bridgeAddr netip.Addr) hostServices {
	t.Helper()
	hs := hostServices{tcp: map[string]string{}, udp: map[string]string{}}
	for where, bind := range map[string]string{"loopback": "127.0.0.1", "wildcard": "0.0.0.0", "bridge": bridgeAddr.String()} {
		l, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go acceptAll(l)
		u, err := net.ListenPacket("udp", net.JoinHostPort(bind, "0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				n, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				u.WriteTo(buf[:n], from)
			}
		}()
		tp := l.Addr().(*net.TCPAddr).Port
		up := u.LocalAddr().(*net.UDPAddr).Port
		dial := bind
		if bind == "0.0.0.0" {
			// A wildcard service answers on every address: the
			// sandbox's way in is its gateway, a host process's
			// loopback.
			dial = bridgeAddr.String()
			hs.tcp[where+" via loopback"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(tp))
			hs.udp[where+" via loopback"] = net.JoinHostPort("127.0.0.1", strconv.Itoa(up))
		}
		hs.tcp[where] = net.JoinHostPort(dial, strconv.Itoa(tp))
		hs.udp[where] = net.JoinHostPort(dial, strconv.Itoa(up))
	}
	return hs
}

// tryTCP connects to addr within timeout.
// reachable tries a positive control until it succeeds or 10 s have
// passed: on a busy host a first SYN or datagram sent while a new link is
// still coming up is lost, and a retransmission comes only after a
// second. A failure must still say the service is not there.
func reachable(try func(string, time.Duration) error, addr string) error {
	end := time.Now().Add(10 * time.Second)
	for {
		err := try(addr, time.Second)
		if err == nil || time.Now().After(end) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tryTCP(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err == nil {
		c.Close()
	}
	return err
}

// tryUDP sends a datagram to an echo service at addr and waits for the
// echo: nil means the service answered.
func tryUDP(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("udp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 8)
	_, err = c.Read(buf)
	return err
}

// asUID runs fn on a thread whose effective (and file system) uid is
// uid, in the host's network namespace: sockets it makes belong to uid.
// The thread is never given back to the runtime (it exits with its
// goroutine), so its credentials reach nothing else.
func asUID(t *testing.T, uid int, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Raw: Go's Setresuid would change every thread.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, uintptr(uid), 0); e != 0 {
			done <- e
			return
		}
		fn()
		done <- nil
		// Returning while locked ends the thread.
	}()
	if err := <-done; err != nil {
		t.Fatalf("thread as uid %d: %v", uid, err)
	}
}

// TestHostUnreachable: neither an isolated sandbox nor a process of a
// guarded uid in the host's namespace (network: host) reaches the host's
// services, on its loopback, on all its addresses or on the bridge's,
// by TCP or UDP, nor another sandbox; the host itself and other uids
// still do (the positive controls).
func TestHostUnreachable(t *testing.T) {
	requireRoot(t)
	const guardUID, otherUID = 1_000_123, 1_100_000
	cfg := testConfig()
	cfg.Reserve = -1
	cfg.Guard = []UIDRange{{First: 1_000_000, Last: 1_065_535}}
	p := newPool(t, cfg)
	a, b := get(t, p), get(t, p)
	hs := startHostServices(t, a.Gateway())
	lb := listenIn(t, b)
	ub := udpEchoIn(t, b)

	const quick = 2 * time.Second // a refusal must come well within it
	for where, addr := range hs.tcp {
		if err := reachable(tryTCP, addr); err != nil {
			t.Fatalf("positive control: host cannot reach its own %s TCP service %s: %v", where, addr, err)
		}
	}
	for where, addr := range hs.udp {
		if err := reachable(tryUDP, addr); err != nil {
			t.Fatalf("positive control: host cannot reach its own %s UDP service %s: %v", where, addr, err)
		}
	}
	if err := reachable(tryTCP, lb.Addr().String()); err != nil {
		t.Fatalf("positive control: host cannot reach sandbox b's listener: %v", err)
	}
	if err := reachable(tryUDP, ub); err != nil {
		t.Fatalf("positive control: host cannot reach sandbox b's UDP echo: %v", err)
	}

	t.Run("isolated", func(t *testing.T) {
		inNS(t, a.File(), func() {
			for where, addr := range hs.tcp {
				t0 := time.Now()
				err := tryTCP(addr, quick)
				if err == nil {
					t.Errorf("isolated sandbox reached the host's %s TCP service %s", where, addr)
				} else if where != "loopback" && where != "wildcard via loopback" && !errors.Is(err, syscall.EHOSTUNREACH) {
					// The host rejects; loopback addresses are the
					// sandbox's own (nothing listens: refused).
					t.Errorf("%s TCP %s: %v after %v, want a quick rejection", where, addr, err, time.Since(t0))
				}
			}
			for where, addr := range hs.udp {
				if err := tryUDP(addr, 500*time.Millisecond); err == nil {
					t.Errorf("isolated sandbox got an answer from the host's %s UDP service %s", where, addr)
				}
			}
			if err := tryTCP(lb.Addr().String(), 500*time.Millisecond); err == nil {
				t.Errorf("isolated sandbox reached sandbox b's TCP listener")
			}
			if err := tryUDP(ub, 500*time.Millisecond); err == nil {
				t.Errorf("isolated sandbox got an answer from sandbox b's UDP echo")
			}
		})
	})
	t.Run("host network, guarded uid", func(t *testing.T) {
		asUID(t, guardUID, func() {
			for where, addr := range hs.tcp {
				err := tryTCP(addr, quick)
				if err == nil {
					t.Errorf("uid %d reached the host's %s TCP service %s", guardUID, where, addr)
				} else if !errors.Is(err, syscall.EHOSTUNREACH) {
					t.Errorf("%s TCP %s: %v, want EHOSTUNREACH at once (rejected)", where, addr, err)
				}
			}
			for where, addr := range hs.udp {
				if err := tryUDP(addr, 500*time.Millisecond); err == nil {
					t.Errorf("uid %d got an answer from the host's %s UDP service %s", guardUID, where, addr)
				}
			}
			if err := tryTCP(lb.Addr().String(), quick); err == nil {
				t.Errorf("uid %d reached sandbox b's TCP listener", guardUID)
			}
			if err := tryUDP(ub, 500*time.Millisecond); err == nil {
				t.Errorf("uid %d got an answer from sandbox b's UDP echo", guardUID)
			}
		})
	})
	t.Run("host network, other uid", func(t *testing.T) {
		// Positive control: the rule is about the guarded uids only.
		asUID(t, otherUID, func() {
			if err := tryTCP(hs.tcp["loopback"], time.Second); err != nil {
				t.Errorf("uid %d outside the guard cannot reach the loopback service: %v", otherUID, err)
			}
			if err := tryUDP(hs.udp["loopback"], time.Second); err != nil {
				t.Errorf("uid %d outside the guard cannot reach the loopback UDP service: %v", otherUID, err)
			}
		})
	})
}

// udpEchoIn runs a UDP echo service in ns on its address.
func udpEchoIn(t *testing.T, ns *NS) string {
	t.Helper()
	var u net.PacketConn
	var err error
	inNS(t, ns.File(), func() {
		u, err = net.ListenPacket("udp", netip.AddrPortFrom(ns.Addr().Addr(), 0).String())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			u.WriteTo(buf[:n], from)
		}
	}()
	return u.LocalAddr().String()
}

// TestNoEgress: without NAT, a sandbox reaches nothing beyond its bridge
// even when the host forwards; with NAT (TestNAT) it does.
func TestNoEgress(t *testing.T) {
	requireRoot(t)
	old, err := os.ReadFile(ipForward)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(ipForward, old, 0) })
	if err := os.WriteFile(ipForward, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Reserve = -1
	p := newPool(t, cfg)
	ns := get(t, p)
	n := seq.Add(1)
	hostAddr, outAddr := outsideAddrs(n)
	world := outside(t, cfg.Prefix+"o", hostAddr, outAddr, cfg.Subnet)
	var l net.Listener
	inNS(t, world, func() { l, err = net.Listen("tcp", netip.AddrPortFrom(outAddr.Addr(), 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go acceptAll(l)
	if err := reachable(tryTCP, l.Addr().String()); err != nil {
		t.Fatalf("positive control: the host cannot reach the outside server: %v", err)
	}
	if err := dialFromWithin(t, ns, l.Addr().String(), time.Second); err == nil {
		t.Errorf("sandbox reached the outside without NAT")
	}
	r, err := ListRules(cfg.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if r.Masquerade || r.Chains["postrouting"] != 0 || r.Chains["forward"] != 2 || r.Chains["input"] != 1 {
		t.Errorf("rules %+v: want input and forward (with the no-egress rule), no masquerade", r)
	}
}
