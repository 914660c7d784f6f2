package e2e

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/packages/wheeltest"
)

// escapeProbe is the attacker's (and the victim's) module: see its header.
//
//go:embed testdata/escape_probe.py
var escapeProbe string

// escapeHandler dispatches an event to the probe's roles.
const escapeHandler = `
import escape_probe

def f(e):
    role = e["role"]
    if role == "attack":
        return escape_probe.run(e["cfg"])
    if role == "setup":
        return escape_probe.victim_setup(e["cfg"])
    if role == "check":
        return escape_probe.victim_check(e["cfg"])
    if role == "release":
        return escape_probe.release()
    raise ValueError(role)
`

// importHandler is a function that requires hearthprobe: forked from the
// node that imported it, it returns the report the package's import code
// made inside the zygote (and, given a config, runs the probe itself).
const importHandler = `
import sys
NODE = "hearthprobe" in sys.modules
import hearthprobe

def f(e):
    out = {"node": NODE, "zygote": hearthprobe.REPORT}
    if e.get("cfg"):
        out["child"] = hearthprobe.run(e["cfg"])
    return out
`

// importWrapper follows the probe in hearthprobe/__init__.py: its import
// runs the probe, with the config the test baked in, unless a function is
// importing it (a cold start or a fork before the node exists).
const importWrapper = `
import base64 as _b64
CONFIG = json.loads(_b64.b64decode(%q))
REPORT = None
if "HEARTH_FUNCTION" not in os.environ:
    REPORT = run(CONFIG)
    # The node's processes are capped by its own cgroup (REPORT shows
    # where it stopped); held, they would only stop the node's own forks.
    release_children()
`

// escapeSyscalls are the system calls the probe makes by number.
var escapeSyscalls = []string{"io_uring_setup", "userfaultfd", "keyctl", "add_key", "bpf",
	"perf_event_open", "kexec_load", "init_module", "ptrace", "socket", "unshare", "setns"}

// seccompChecks are the probe's seccomp checks (SECCOMP_CALLS).
var seccompChecks = []string{"io_uring_setup", "userfaultfd", "keyctl", "bpf", "perf_event_open",
	"kexec_load", "init_module", "ptrace_attach", "socket_vsock", "unshare_newuser"}

type escTarget struct {
	Label string `json:"label"`
	Proto string `json:"proto"` // tcp, udp or unix (abstract)
	Host  string `json:"host,omitempty"`
	Port  int    `json:"port,omitempty"`
	Name  string `json:"name,omitempty"` // abstract socket name
	HTTP  bool   `json:"http,omitempty"`
}

type escDataPath struct {
	Path   string   `json:"path"`
	SHA256 string   `json:"sha256,omitempty"` // of a file's first 4 KiB
	Names  []string `json:"names,omitempty"`  // entries a dir must list
}

type escKey struct {
	Label string `json:"label"`
	Desc  string `json:"desc"`
}

// escConfig is the probe's input.
type escConfig struct {
	RunID         string         `json:"run_id"`
	HostToken     string         `json:"host_token"`
	VictimToken   string         `json:"victim_token"`
	WorkerToken   string         `json:"worker_token"`
	MarkerPath    string         `json:"marker_path"`
	MarkerContent string         `json:"marker_content"`
	MarkerDir     string         `json:"marker_dir"`
	ShadowSHA256  string         `json:"shadow_sha256"`
	DataPaths     []escDataPath  `json:"data_paths"`
	HostPIDs      map[string]int `json:"host_pids"`
	Targets       []escTarget    `json:"targets"`
	Keys          []escKey       `json:"keys"`
	NR            map[string]int `json:"nr"`
	Exhaust       bool           `json:"exhaust"`
	PidsCap       int            `json:"pids_cap"`
}

type escCheck struct {
	Leak   bool   `json:"leak"`
	Detail string `json:"detail"`
}

// escReport is the probe's output.
type escReport struct {
	Checks  map[string]escCheck `json:"checks"`
	UDP     map[string]string   `json:"udp"`
	Info    map[string]any      `json:"info"`
	Exhaust map[string]string   `json:"exhaust"`
}

// victimInfo is what a victim function reports after setting up.
type victimInfo struct {
	Addr    string `json:"addr"`
	Gateway string `json:"gateway"`
	HostUID int    `json:"host_uid"`
	NsPid   string `json:"ns_pid"`
	NsNet   string `json:"ns_net"`
	Sleeper string `json:"sleeper"`
	Key     string `json:"key"`
}

// victimState is what a victim could still do after an attack.
type victimState struct {
	Inotify   string   `json:"inotify"`
	Forks     int      `json:"forks"`
	ForkError string   `json:"fork_error"`
	Received  []string `json:"received"`
}

// bait is what the host offers an attacker: a marker file, a marker
// process, a key in root's user keyring, and TCP and UDP services on the
// loopback, on all addresses and on bridges' addresses. Listeners record
// the first line each client sends (the probe sends its run and label).
type bait struct {
	token     string
	markerDir string
	marker    string // path
	content   string
	shadowSHA string
	sleeper   int // pid
	keyDesc   string

	mu       sync.Mutex
	got      map[string]bool
	closers  []io.Closer
	wg       sync.WaitGroup
	loTCP    int
	loUDP    int
	anyTCP   int
	anyUDP   int
	lo6TCP   int        // 0: no IPv6 loopback
	bridgeMu sync.Mutex // also guards addrs
	// Every listener's address (tcp or udp), for settle.
	addrs    []net.Addr
	inflight atomic.Int32 // accepted TCP connections still being read
	settles  int
}

func newBait(t *testing.T) *bait {
	b := &bait{got: map[string]bool{},
		token: fmt.Sprintf("hearth-escape-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)}
	t.Cleanup(b.close)

	// A world-writable directory in a path no sandbox has, with a
	// world-readable marker: reaching it is a matter of namespaces, not
	// of permissions.
	dir, err := os.MkdirTemp("/run", "hearth-escape-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	b.markerDir, b.marker, b.content = dir, filepath.Join(dir, "marker"), "marker "+b.token
	if err := os.WriteFile(b.marker, []byte(b.content), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile("/etc/shadow"); err == nil {
		b.shadowSHA = sha256hex(data)
	}

	// A host process whose command line carries the token.
	cmd := exec.Command("/bin/sleep")
	cmd.Args = []string{b.token + "-host", "600"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.sleeper = cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// A secret in root's user keyring.
	b.keyDesc = b.token + "-hostkey"
	id, err := unix.AddKey("user", b.keyDesc, []byte("host secret"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Logf("host limit: cannot add a key to root's user keyring (%v): the host keyring check has no bait", err)
		b.keyDesc = ""
	} else {
		t.Cleanup(func() { unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0) })
	}

	b.loTCP = b.listenTCP(t, "127.0.0.1:0")
	b.loUDP = b.listenUDP(t, "127.0.0.1:0")
	b.anyTCP = b.listenTCP(t, "0.0.0.0:0")
	b.anyUDP = b.listenUDP(t, "0.0.0.0:0")
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		l.Close()
		b.lo6TCP = b.listenTCP(t, "[::1]:0")
	}
	return b
}

// settle returns once every connection and datagram that reached the
// listeners before it was called has been read and recorded: it sends a
// line of its own to each listener and waits for them all, and for the
// connections accepted before them to be read. A fixed pause let a
// reader starved on a busy host miss an escape's line. Listeners on an
// address the host no longer has (the bridge of an earlier subtest's
// worker, gone with it) are left out: nothing reaches them.
func (b *bait) settle(t *testing.T) {
	t.Helper()
	b.bridgeMu.Lock()
	addrs := slices.Clone(b.addrs)
	b.settles++
	n := b.settles
	b.bridgeMu.Unlock()
	// The host's own address for a listener's: loopback for a wildcard.
	dst := func(ip net.IP, port int) string {
		if ip.IsUnspecified() {
			ip = net.IPv4(127, 0, 0, 1)
		}
		return net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	local := func(ip net.IP) bool {
		return ip.IsUnspecified() || slices.ContainsFunc(ifas, func(a net.Addr) bool {
			n, ok := a.(*net.IPNet)
			return ok && n.IP.Equal(ip)
		})
	}
	var want []string
	resend := map[string]string{} // a UDP line's destination, sent again until it is in
	for i, a := range addrs {
		var to string
		switch a := a.(type) {
		case *net.TCPAddr:
			if local(a.IP) {
				to = dst(a.IP, a.Port)
			}
		case *net.UDPAddr:
			if local(a.IP) {
				to = dst(a.IP, a.Port)
			}
		}
		if to == "" {
			continue
		}
		line := fmt.Sprintf("%s settle %d %d", b.token, n, i)
		if a.Network() == "udp" {
			resend[line] = to
		}
		c, err := net.DialTimeout(a.Network(), to, 10*time.Second)
		if err != nil {
			t.Fatalf("settling the bait: %v", err)
		}
		want = append(want, line)
		fmt.Fprintln(c, line)
		c.Close()
	}
	// A listener's connections are accepted, and its datagrams read, in
	// arrival order: once its own line is in, so is all that came before
	// (but connections still being read, which end within their 2 s).
	// A datagram can be dropped (a full socket buffer): each is sent
	// again every 200 ms until it is in.
	for end, again := time.Now().Add(30*time.Second), time.Now().Add(200*time.Millisecond); ; time.Sleep(5 * time.Millisecond) {
		b.mu.Lock()
		all := !slices.ContainsFunc(want, func(l string) bool { return !b.got[l] })
		var lost []string
		for l := range resend {
			if !b.got[l] {
				lost = append(lost, l)
			}
		}
		b.mu.Unlock()
		if all && b.inflight.Load() == 0 {
			return
		}
		if time.Now().After(again) {
			for _, l := range lost {
				if c, err := net.Dial("udp", resend[l]); err == nil {
					fmt.Fprintln(c, l)
					c.Close()
				}
			}
			again = time.Now().Add(200 * time.Millisecond)
		}
		if time.Now().After(end) {
			t.Fatalf("the bait's listeners did not read their own lines within 30 s (all in: %v; connections being read: %d)", all, b.inflight.Load())
		}
	}
}

func (b *bait) record(line string) {
	b.mu.Lock()
	b.got[strings.TrimSpace(line)] = true
	b.mu.Unlock()
}

func (b *bait) received(runID, label string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.got[runID+" "+label]
}

func (b *bait) listenTCP(t *testing.T, addr string) int {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b.bridgeMu.Lock()
	b.closers = append(b.closers, l)
	b.addrs = append(b.addrs, l.Addr())
	b.bridgeMu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.inflight.Add(1)
			go func() {
				defer b.inflight.Add(-1)
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					b.record(line)
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *bait) listenUDP(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b.bridgeMu.Lock()
	b.closers = append(b.closers, c)
	b.addrs = append(b.addrs, c.LocalAddr())
	b.bridgeMu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		buf := make([]byte, 512)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			b.record(string(buf[:n]))
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// closeListeners closes every listener opened so far.
func (b *bait) close() {
	b.bridgeMu.Lock()
	for _, c := range b.closers {
		c.Close()
	}
	b.closers = nil
	b.bridgeMu.Unlock()
	b.wg.Wait()
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// primaryAddr is the host's address on its default route ("" if none).
func primaryAddr() string {
	c, err := net.Dial("udp", "192.0.2.1:9") // sends nothing
	if err != nil {
		return ""
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// freeHostPort is a port free for both TCP and UDP on all the host's
// addresses (a victim sharing the host's network binds it).
func freeHostPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("0.0.0.0:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// hostPidsWith returns the host pids whose command line contains s.
func hostPidsWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func syscallNumbers(t *testing.T) map[string]int {
	t.Helper()
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatalf("no syscall table for this architecture: %v", err)
	}
	nr := map[string]int{}
	for _, n := range escapeSyscalls {
		v, ok := info.SyscallNames[n]
		if !ok {
			t.Fatalf("no system call %s on %s", n, info.Name)
		}
		nr[n] = v
	}
	return nr
}

// escNet is a network setting a function can declare.
type escNet struct {
	name string   // subtest name
	yaml []string // function.yaml's network lines to try in turn ("" for none)
	// hostNet: sharing the host's network is what the operator allowed,
	// so only the worker's API must stay out of reach.
	hostNet bool
}

var escNets = []escNet{
	{name: "default", yaml: []string{""}},
	{name: "isolated", yaml: []string{"network: isolated\n"}},
	{name: "offline", yaml: []string{"network: offline\n"}},
	// The host's network: "host" once renamed, "none" before.
	{name: "host", yaml: []string{"network: host\n", "network: none\n"}, hostNet: true},
}

// escRun is one attacker against one worker: its config, its victim and
// the worker.
type escRun struct {
	w       *worker
	b       *bait
	nr      map[string]int
	runID   string
	net     escNet
	victim  string // function name
	attack  string // function name, "" for the import mode
	vtoken  string
	vport   int
	vinfo   victimInfo
	skipped string // why this network cannot be tested here
	cfg     escConfig
}

// noBridge says, as a skipped subtest, that no bridge address was probed.
func noBridge(t *testing.T, bridges map[string][2]int) {
	if len(bridges) == 0 {
		t.Run("host_bridge", func(t *testing.T) {
			t.Skip("no sandbox of this worker has a network namespace with a bridge: no bridge address to probe")
		})
	}
}

// TestEscape runs every escape check from a cold start, from a forked
// start, and from a package's import code inside a zygote node. Each check
// is a subtest named for what it checks; a failing one says what leaked.
func TestEscape(t *testing.T) {
	b := newBait(t)
	nr := syscallNumbers(t)
	t.Run("cold", func(t *testing.T) { escapeFromFunctions(t, b, nr, "cold", "--no-zygotes") })
	t.Run("fork", func(t *testing.T) { escapeFromFunctions(t, b, nr, "fork") })
	t.Run("import", func(t *testing.T) { escapeFromImport(t, b, nr) })
}

func escWorker(t *testing.T, extra ...string) *worker {
	return startWorker(t, append([]string{"--no-snapshots", "--netns-subnet", testSubnet()}, extra...)...)
}

// deployAll deploys name -> dir concurrently; it returns the deploy
// errors by name.
func (w *worker) deployAll(dirs map[string]string) map[string]error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := map[string]error{}
	for name, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := w.hearth("deploy", dir, "--name", name)
			if err != nil {
				mu.Lock()
				errs[name] = fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

func invokeJSON(t *testing.T, w *worker, name string, event, out any) string {
	t.Helper()
	ev, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := w.invoke(name, string(ev))
	if err != nil {
		t.Fatalf("invoke %s: %v\nworker log:\n%s", name, err, tail(w.out.String(), 30))
	}
	if err := json.Unmarshal(inv.Body, out); err != nil {
		t.Fatalf("%s: %v: %s", name, err, inv.Body)
	}
	return inv.Path
}

// setupVictims deploys a victim (and an attacker, if attackers) per
// network and sets the victims up. Networks the worker refuses, or whose
// host variant is not the host's network, are marked skipped.
func setupVictims(t *testing.T, w *worker, b *bait, nr map[string]int, mode string, nets []escNet, attackers bool) []*escRun {
	hostNetNS, _ := os.Readlink("/proc/self/ns/net")
	runs := make([]*escRun, len(nets))
	pending := slices.Clone(nets)
	for i, n := range nets {
		runs[i] = &escRun{w: w, b: b, nr: nr, runID: mode + "/" + n.name, net: n,
			victim: "victim-" + n.name, vtoken: fmt.Sprintf("%s-victim-%s-%s", b.token, mode, n.name)}
		if attackers {
			runs[i].attack = "attacker-" + n.name
		}
	}
	// Deploy each network's functions with its first choice of
	// function.yaml, then the next for those refused.
	for try := 0; len(pending) > 0; try++ {
		dirs := map[string]string{}
		var now []escNet
		for _, n := range pending {
			if try >= len(n.yaml) {
				continue
			}
			now = append(now, n)
			d := fn(t, "escape_probe.py", escapeProbe, "f.py", escapeHandler, "function.yaml", n.yaml[try])
			dirs["victim-"+n.name] = d
			if attackers {
				dirs["attacker-"+n.name] = d
			}
		}
		if len(now) == 0 {
			break
		}
		errs := w.deployAll(dirs)
		pending = pending[:0]
		for _, n := range now {
			err := cmp.Or(errs["victim-"+n.name], errs["attacker-"+n.name])
			if err == nil {
				continue
			}
			if try+1 < len(n.yaml) {
				pending = append(pending, n)
				continue
			}
			if !n.hostNet {
				t.Fatalf("deploying the %s network's functions: %v", n.name, err)
			}
			for _, r := range runs {
				if r.net.name == n.name {
					r.skipped = fmt.Sprintf("the worker refuses a host-network function (%v): the operator has not allowed it", err)
				}
			}
		}
	}
	for _, r := range runs {
		if r.skipped != "" {
			continue
		}
		r.vport = freeHostPort(t)
		invokeJSON(t, w, r.victim, map[string]any{"role": "setup", "cfg": map[string]any{
			"port": r.vport, "abstract": r.vtoken, "token": r.vtoken, "nr": nr,
			"key_desc": r.vtoken + "-key", "key_secret": "victim secret"}}, &r.vinfo)
		if r.vinfo.Sleeper != "ok" {
			t.Fatalf("victim %s could not start its marker process: %s", r.victim, r.vinfo.Sleeper)
		}
		if r.net.hostNet && r.vinfo.NsNet != hostNetNS {
			r.skipped = fmt.Sprintf("%q does not put a function in the host's network here: the operator has not allowed the host network",
				strings.TrimSpace(r.net.yaml[len(r.net.yaml)-1]))
		}
	}
	return runs
}

// gateways are the distinct default gateways of the victims in network
// namespaces of their own (their bridges' addresses, the host's).
func gateways(runs []*escRun) []string {
	hostNetNS, _ := os.Readlink("/proc/self/ns/net")
	var gws []string
	for _, r := range runs {
		if r.skipped == "" && r.vinfo.NsNet != hostNetNS && r.vinfo.Gateway != "" && !slices.Contains(gws, r.vinfo.Gateway) {
			gws = append(gws, r.vinfo.Gateway)
		}
	}
	return gws
}

// bridgePorts opens the bait's TCP and UDP listeners on each bridge
// address: gw -> [tcp, udp].
func (b *bait) bridgePorts(t *testing.T, gws []string) map[string][2]int {
	out := map[string][2]int{}
	for _, gw := range gws {
		out[gw] = [2]int{b.listenTCP(t, net.JoinHostPort(gw, "0")), b.listenUDP(t, net.JoinHostPort(gw, "0"))}
	}
	return out
}

// config builds the attacker's config for run r.
func (r *escRun) config(t *testing.T, bridges map[string][2]int, exhaust bool, pidsCap int) escConfig {
	b, w := r.b, r.w
	cfg := escConfig{
		RunID: r.runID, HostToken: b.token + "-host", VictimToken: r.vtoken, WorkerToken: w.dataDir,
		MarkerPath: b.marker, MarkerContent: b.content, MarkerDir: b.markerDir, ShadowSHA256: b.shadowSHA,
		HostPIDs: map[string]int{"host_sleeper": b.sleeper, "worker": w.cmd.Process.Pid},
		NR:       r.nr, Exhaust: exhaust, PidsCap: pidsCap,
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		pids := hostPidsWith(r.vtoken)
		if len(pids) == 1 {
			cfg.HostPIDs["victim_sleeper"] = pids[0]
			break
		}
		if time.Now().After(end) {
			out, _ := exec.Command("ps", "axo", "pid,ppid,args").Output()
			t.Fatalf("victim %s's marker process: host pids %v, want one; victim %+v\nps:\n%s\nworker log:\n%s",
				r.victim, pids, r.vinfo, out, tail(w.out.String(), 20))
		}
	}
	// The worker's data dir: its files (by content) and its listing, and
	// the host's default data dir if there is one.
	var names []string
	ents, _ := os.ReadDir(w.dataDir)
	for _, e := range ents {
		names = append(names, e.Name())
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(w.dataDir, e.Name())
		if data, err := readHead(p); err == nil && len(data) > 0 {
			cfg.DataPaths = append(cfg.DataPaths, escDataPath{Path: p, SHA256: sha256hex(data)})
		}
	}
	cfg.DataPaths = append(cfg.DataPaths, escDataPath{Path: w.dataDir, Names: names[:min(3, len(names))]})
	if data, err := readHead("/var/lib/hearth/registry.db"); err == nil && len(data) > 0 {
		cfg.DataPaths = append(cfg.DataPaths, escDataPath{Path: "/var/lib/hearth/registry.db", SHA256: sha256hex(data)})
	}
	if b.keyDesc != "" {
		cfg.Keys = append(cfg.Keys, escKey{Label: "host_root", Desc: b.keyDesc})
	}
	cfg.Keys = append(cfg.Keys, escKey{Label: "other_function", Desc: r.vtoken + "-key"})

	// Network targets. The worker listens on the loopback; its port is
	// tried on every host address too.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(w.url, "http://"))
	apiPort, _ := strconv.Atoi(port)
	// Addresses by role, so that subtests keep their names whatever the
	// host's addresses: the loopback, the host's address on its default
	// route, and each bridge's.
	type addr struct{ role, ip string }
	addrs := []addr{{"loopback", "127.0.0.1"}}
	if a := primaryAddr(); a != "" {
		addrs = append(addrs, addr{"host_addr", a})
	}
	gws := slices.Sorted(maps.Keys(bridges))
	for i, gw := range gws {
		role := "bridge"
		if i > 0 {
			role += strconv.Itoa(i + 1)
		}
		addrs = append(addrs, addr{role, gw})
	}
	add := func(label, proto, host string, port int, http bool) {
		cfg.Targets = append(cfg.Targets, escTarget{Label: label, Proto: proto, Host: host, Port: port, HTTP: http})
	}
	for _, a := range addrs {
		add("worker_api_via_"+a.role, "tcp", a.ip, apiPort, true)
	}
	if r.net.hostNet {
		return cfg // the host's network: its services are the function's to reach
	}
	add("host_loopback_tcp", "tcp", "127.0.0.1", b.loTCP, false)
	add("host_loopback_udp", "udp", "127.0.0.1", b.loUDP, false)
	if b.lo6TCP != 0 {
		add("host_loopback6_tcp", "tcp", "::1", b.lo6TCP, false)
	}
	for _, a := range addrs {
		add("host_any_tcp_via_"+a.role, "tcp", a.ip, b.anyTCP, false)
		add("host_any_udp_via_"+a.role, "udp", a.ip, b.anyUDP, false)
	}
	for i, gw := range gws {
		role := addrs[len(addrs)-len(gws)+i].role
		add("host_"+role+"_tcp", "tcp", gw, bridges[gw][0], false)
		add("host_"+role+"_udp", "udp", gw, bridges[gw][1], false)
	}
	for _, a := range []addr{{"loopback", "127.0.0.1"}, {"its_addr", r.vinfo.Addr}} {
		if a.ip == "" {
			continue
		}
		add("other_sandbox_tcp_via_"+a.role, "tcp", a.ip, r.vport, false)
		add("other_sandbox_udp_via_"+a.role, "udp", a.ip, r.vport, false)
	}
	cfg.Targets = append(cfg.Targets, escTarget{Label: "other_sandbox_abstract_unix", Proto: "unix", Name: r.vtoken})
	return cfg
}

func readHead(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := io.ReadFull(f, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:n], err
}

// verdict is one check's outcome.
type verdict struct {
	name   string
	leak   bool
	detail string
}

// judge turns a report into one subtest per check. Checks the config
// implies but the report lacks fail: the probe never vouches for what it
// did not observe.
func judge(t *testing.T, cfg escConfig, rep escReport, extra []verdict) {
	t.Helper()
	want := []string{"capabilities", "host_root", "read_shadow", "read_host_file", "write_host_file",
		"read_worker_data", "see_host_processes", "see_other_sandbox_processes", "enter_other_sandbox"}
	for n := range cfg.HostPIDs {
		want = append(want, "signal_"+n)
	}
	for _, k := range cfg.Keys {
		want = append(want, "keyring_"+k.Label)
	}
	for _, c := range seccompChecks {
		want = append(want, "seccomp_"+c)
	}
	for _, tg := range cfg.Targets {
		if tg.Proto != "udp" {
			want = append(want, tg.Label)
		}
	}
	var vs []verdict
	for _, n := range want {
		if c, ok := rep.Checks[n]; ok {
			vs = append(vs, verdict{n, c.Leak, c.Detail})
		} else {
			vs = append(vs, verdict{n, true, "the probe did not report this check"})
		}
	}
	for n, c := range rep.Checks {
		if !slices.Contains(want, n) {
			vs = append(vs, verdict{n, c.Leak, c.Detail})
		}
	}
	vs = append(vs, extra...)
	slices.SortFunc(vs, func(a, b verdict) int { return strings.Compare(a.name, b.name) })
	for _, v := range vs {
		t.Run(v.name, func(t *testing.T) {
			if v.leak {
				t.Errorf("LEAK: %s", v.detail)
			} else {
				t.Log(v.detail)
			}
		})
	}
}

// udpVerdicts judges the UDP targets: a datagram that arrived at a host
// listener or at the victim reached it.
func udpVerdicts(cfg escConfig, rep escReport, b *bait, victim victimState) []verdict {
	var vs []verdict
	for _, tg := range cfg.Targets {
		if tg.Proto != "udp" {
			continue
		}
		line := cfg.RunID + " " + tg.Label
		leak := b.received(cfg.RunID, tg.Label) || slices.Contains(victim.Received, line)
		sent := cmp.Or(rep.UDP[tg.Label], "not sent")
		vs = append(vs, verdict{tg.Label, leak, fmt.Sprintf("udp %s:%d: %s; %s", tg.Host, tg.Port, sent,
			map[bool]string{true: "it arrived", false: "nothing arrived"}[leak])})
	}
	return vs
}

// commonVerdicts judges what needs both sides: distinct identities, pid
// namespaces, and the victim's resources after an exhausting attack.
func commonVerdicts(rep escReport, v victimInfo, after victimState, exhausted bool) []verdict {
	hostPidNS, _ := os.Readlink("/proc/self/ns/pid")
	uid, _ := rep.Info["host_uid"].(float64)
	vs := []verdict{
		{"own_uid", int(uid) == v.HostUID, fmt.Sprintf("attacker's host uid %d, the other function's %d", int(uid), v.HostUID)},
		{"host_pid_namespace", rep.Info["ns_pid"] == hostPidNS, fmt.Sprintf("pid namespace %v (the host's is %s)", rep.Info["ns_pid"], hostPidNS)},
	}
	// Functions forked from zygotes share the zygotes' pid namespace (as
	// pid 1 of its own a function would ignore the signals it sends
	// itself): that is a leak only if the other's processes show or
	// take signals there, which the probe tried.
	shared := rep.Info["ns_pid"] == v.NsPid
	var through []string
	for _, c := range []string{"see_other_sandbox_processes", "signal_victim_sleeper", "enter_other_sandbox"} {
		if ch, ok := rep.Checks[c]; !ok || ch.Leak {
			through = append(through, c)
		}
	}
	vs = append(vs, verdict{"other_sandbox_pid_namespace", shared && len(through) > 0,
		fmt.Sprintf("pid namespace %v (the other function's is %s); shared and reached through %v", rep.Info["ns_pid"], v.NsPid, through)})
	if exhausted {
		vs = append(vs,
			verdict{"exhaust_inotify", after.Inotify != "ok", fmt.Sprintf("attacker took %s; the other function's inotify_init1 then: %s",
				cmp.Or(rep.Exhaust["inotify"], "nothing"), after.Inotify)},
			verdict{"exhaust_pids", after.Forks < 8, fmt.Sprintf("attacker holds %s; the other function then forked %d of 8 (%s)",
				cmp.Or(rep.Exhaust["pids"], "nothing"), after.Forks, after.ForkError)})
	}
	return vs
}

// escapeFromFunctions attacks from a function's first call (a start of
// the given path) in every network setting.
func escapeFromFunctions(t *testing.T, b *bait, nr map[string]int, path string, flags ...string) {
	w := escWorker(t, flags...)
	runs := setupVictims(t, w, b, nr, path, escNets, true)
	bridges := b.bridgePorts(t, gateways(runs))
	for _, r := range runs {
		if r.skipped == "" {
			r.cfg = r.config(t, bridges, r.net.name == "default", 256)
		}
	}
	noBridge(t, bridges)
	for _, r := range runs {
		t.Run(r.net.name, func(t *testing.T) {
			if r.skipped != "" {
				t.Skip(r.skipped)
			}
			cfg, exhaust := r.cfg, r.cfg.Exhaust
			var rep escReport
			if got := invokeJSON(t, w, r.attack, map[string]any{"role": "attack", "cfg": cfg}, &rep); got != path {
				t.Fatalf("attacker started by %s, want %s", got, path)
			}
			var after victimState
			invokeJSON(t, w, r.victim, map[string]any{"role": "check", "cfg": map[string]any{}}, &after)
			if exhaust {
				var rel map[string]any
				invokeJSON(t, w, r.attack, map[string]any{"role": "release"}, &rel)
			}
			b.settle(t) // what reached the host's listeners is recorded
			t.Logf("probe took %vs; pids visible %v; uid %v (host %v); seccomp %v; victim: %+v",
				rep.Info["probe_s"], rep.Info["pids_visible"], rep.Info["uid"], rep.Info["host_uid"], rep.Info["seccomp"], r.vinfo)
			extra := append(udpVerdicts(cfg, rep, b, after), commonVerdicts(rep, r.vinfo, after, exhaust)...)
			extra = append(extra, b.writtenVerdict(r.runID))
			judge(t, cfg, rep, extra)
		})
	}
}

// writtenVerdict checks the host's side of write_host_file: no file but
// the marker in the bait's directory.
func (b *bait) writtenVerdict(runID string) verdict {
	ents, _ := os.ReadDir(b.markerDir)
	var made []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "w-"+strings.ReplaceAll(runID, "/", "-")) {
			made = append(made, e.Name())
		}
	}
	return verdict{"write_host_file_seen_by_host", len(made) > 0, fmt.Sprintf("files the attacker made in the host's %s: %v", b.markerDir, made)}
}

// escapeFromImport attacks from a package's import code: a wheel whose
// top level runs the probe, imported by a zygote node when two starts
// promote it. A function forked from that node returns the report the
// import made (and runs the probe again itself, a fork from a package
// node).
func escapeFromImport(t *testing.T, b *bait, nr map[string]int) {
	wheels := t.TempDir()
	w := escWorker(t, "--no-index", "--find-links", wheels, "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	// The isolated victim is there for its bridge.
	runs := setupVictims(t, w, b, nr, "import", escNets[:2], false)
	r := runs[0]
	bridges := b.bridgePorts(t, gateways(runs))
	noBridge(t, bridges)

	zcfg := r.config(t, bridges, true, 64)
	zcfg.RunID = "import/zygote"
	ccfg := r.config(t, bridges, false, 0)
	ccfg.RunID = "import/child"
	raw, err := json.Marshal(zcfg)
	if err != nil {
		t.Fatal(err)
	}
	src := escapeProbe + fmt.Sprintf(importWrapper, base64.StdEncoding.EncodeToString(raw))
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "hearthprobe", Version: "1.0",
		Files: map[string]string{"hearthprobe/__init__.py": src}}); err != nil {
		t.Fatal(err)
	}
	imp := fn(t, "f.py", importHandler, "requirements.txt", "hearthprobe\n")
	if errs := w.deployAll(map[string]string{"imp-a": imp, "imp-b": imp}); len(errs) > 0 {
		t.Fatalf("deploying functions that require hearthprobe: %v", errs)
	}
	// Two starts promote hearthprobe to a node of its own.
	w.mustInvoke("imp-a", "{}")
	w.mustInvoke("imp-b", "{}")
	end := time.Now().Add(30 * time.Second)
	for !w.hasNode("hearthprobe==1.0") {
		if time.Now().After(end) {
			t.Fatalf("no zygote node imported hearthprobe:\n%s", tail(w.out.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A new function's first start forks from the node (a spare of the
	// root may serve one: then try another).
	var got struct {
		Node   bool       `json:"node"`
		Zygote *escReport `json:"zygote"`
		Child  *escReport `json:"child"`
	}
	for i := 0; ; i++ {
		name := fmt.Sprintf("imp-%d", i)
		w.deployDir(name, imp)
		path := invokeJSON(t, w, name, map[string]any{"cfg": ccfg}, &got)
		if path == "fork" && got.Node {
			break
		}
		if i == 4 {
			t.Fatalf("5 starts, none forked from hearthprobe's node (last: %s, node %v); worker log:\n%s", path, got.Node, w.out)
		}
	}
	if got.Zygote == nil {
		t.Fatal("the node that imported hearthprobe made no report (its import ran in a function?)")
	}
	var after victimState
	invokeJSON(t, w, r.victim, map[string]any{"role": "check", "cfg": map[string]any{}}, &after)
	b.settle(t)
	t.Logf("zygote: %v", got.Zygote.Info)
	t.Run("zygote", func(t *testing.T) {
		extra := append(udpVerdicts(zcfg, *got.Zygote, b, after), commonVerdicts(*got.Zygote, r.vinfo, after, true)...)
		extra = append(extra, b.writtenVerdict(zcfg.RunID))
		judge(t, zcfg, *got.Zygote, extra)
	})
	t.Run("child", func(t *testing.T) {
		if got.Child == nil {
			t.Fatal("no report from the forked child")
		}
		extra := append(udpVerdicts(ccfg, *got.Child, b, after), commonVerdicts(*got.Child, r.vinfo, after, false)...)
		extra = append(extra, b.writtenVerdict(ccfg.RunID))
		judge(t, ccfg, *got.Child, extra)
	})
}
