package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/netns"
)

// reachProbe tries TCP connections and UDP exchanges with short
// timeouts and says, for each target, "ok" or why not. With serve, it
// keeps a TCP listener and a UDP echo on those ports of all its
// addresses, for other sandboxes to try.
const reachProbe = `
import socket, threading

_served = False

def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return "ok"
    except OSError as e:
        return "tcp " + type(e).__name__ + ": " + str(e)

def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.sendto(b"ping", (host, port))
        s.recvfrom(16)
        return "ok"
    except OSError as e:
        return "udp " + type(e).__name__ + ": " + str(e)
    finally:
        s.close()

def _echo(u):
    while True:
        d, a = u.recvfrom(64)
        u.sendto(d, a)

def addr():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()

def f(e):
    global _served
    if e.get("serve") and not _served:
        t = socket.socket()
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("0.0.0.0", e["serve"]))
        t.listen(16)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("0.0.0.0", e["serve"]))
        threading.Thread(target=_echo, args=(u,), daemon=True).start()
        _served = (t, u)
    if e.get("hold"):
        import time
        time.sleep(e["hold"])  # running, not paused: the UDP echo answers
    out = {}
    for target in e.get("targets", []):
        proto, host, port = target.split(":")
        out[target] = (tcp if proto == "tcp" else udp)(host, int(port))
    return {"addr": addr(), "reach": out}
`

type reachReport struct {
	Addr  string            `json:"addr"`
	Reach map[string]string `json:"reach"`
}

func reach(t *testing.T, w *worker, name string, event any) reachReport {
	t.Helper()
	b, _ := json.Marshal(event)
	inv := w.mustInvoke(name, string(b))
	var r reachReport
	if err := json.Unmarshal(inv.Body, &r); err != nil {
		t.Fatalf("%s: %v: %s", name, err, inv.Body)
	}
	return r
}

// hostService listens on TCP and UDP (an echo) at bind and returns the
// port of each.
func hostService(t *testing.T, bind string) (tcpPort, udpPort int) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(bind, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
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
	return l.Addr().(*net.TCPAddr).Port, u.LocalAddr().(*net.UDPAddr).Port
}

// TestSandboxCannotReachHost: with services on the host's loopback, on
// all its addresses and on the bridge's address, a function in the
// default network (isolated), in offline and in host (allowed by the
// operator) tries TCP and UDP to each of them, to the worker's API and
// to another sandbox: nothing answers, and nothing hangs (every probe
// fails within its short timeout). The host itself reaches them all
// (positive controls).
func TestSandboxCannotReachHost(t *testing.T) {
	w := startWorker(t, "--allow-host-network")
	prefix := netPrefix(w.cgroup)
	defer func() {
		w.stop()
		waitNoLinks(t, prefix)
		if ok, err := netns.HasTable(prefix); err != nil || ok {
			t.Errorf("nftables table of prefix %s after stop: %v, %v", prefix, ok, err)
		}
	}()
	w.deployDir("iso", fn(t, "f.py", reachProbe))
	w.deployDir("srv", fn(t, "f.py", reachProbe))
	w.deployDir("off", fn(t, "f.py", reachProbe, "function.yaml", "network: offline\n"))
	w.deployDir("off2", fn(t, "f.py", reachProbe, "function.yaml", "network: offline\n"))
	w.deployDir("host", fn(t, "f.py", reachProbe, "function.yaml", "network: host\n"))

	// Another sandbox (isolated, the default) serving TCP and UDP.
	const port = 8080
	srv := reach(t, w, "srv", map[string]any{"serve": port})
	if srv.Addr == "" {
		t.Fatalf("isolated sandbox has no address: %+v", srv)
	}
	gw := netip.PrefixFrom(netip.MustParseAddr(srv.Addr), 22).Masked().Addr().Next()
	// Keep it running (a paused sandbox would answer no UDP) while the
	// others probe.
	held := make(chan error, 1)
	go func() {
		_, err := w.invoke("srv", `{"hold": 25}`)
		held <- err
	}()
	defer func() {
		if err := <-held; err != nil {
			t.Errorf("holding srv: %v", err)
		}
	}()

	targets := map[string]string{} // what -> proto:host:port
	add := func(what, host string, tp, up int) {
		targets["tcp "+what] = "tcp:" + host + ":" + strconv.Itoa(tp)
		targets["udp "+what] = "udp:" + host + ":" + strconv.Itoa(up)
	}
	lt, lu := hostService(t, "127.0.0.1")
	wt, wu := hostService(t, "0.0.0.0")
	bt, bu := hostService(t, gw.String())
	add("loopback service", "127.0.0.1", lt, lu)
	add("wildcard service on loopback", "127.0.0.1", wt, wu)
	add("wildcard service on the bridge address", gw.String(), wt, wu)
	add("bridge-address service", gw.String(), bt, bu)
	add("other sandbox", srv.Addr, port, port)
	apiHost, apiPortS, _ := net.SplitHostPort(strings.TrimPrefix(w.url, "http://"))
	apiPort, _ := strconv.Atoi(apiPortS)
	targets["tcp worker API"] = "tcp:" + apiHost + ":" + apiPortS
	targets["tcp worker API on the bridge address"] = "tcp:" + gw.String() + ":" + strconv.Itoa(apiPort)
	var list []string
	for _, v := range targets {
		list = append(list, v)
	}

	// Positive controls, from the host: every service answers (the API on
	// loopback only, as it listens there).
	for what, tgt := range targets {
		proto, rest, _ := strings.Cut(tgt, ":")
		if strings.Contains(what, "API on the bridge") {
			continue
		}
		var err error
		if proto == "tcp" {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", rest, 2*time.Second); err == nil {
				c.Close()
			}
		} else {
			// The held call may take a moment to thaw srv.
			for end := time.Now().Add(10 * time.Second); ; {
				if err = udpEcho(rest); err == nil || time.Now().After(end) {
					break
				}
			}
		}
		if err != nil {
			t.Fatalf("positive control: the host cannot reach %s (%s): %v", what, tgt, err)
		}
	}

	for _, name := range []string{"iso", "off", "host"} {
		t.Run(name, func(t *testing.T) {
			t0 := time.Now()
			r := reach(t, w, name, map[string]any{"targets": list})
			for what, tgt := range targets {
				res, ok := r.Reach[tgt]
				if !ok {
					t.Errorf("%s: no result for %s", name, what)
				} else if res == "ok" {
					t.Errorf("%s sandbox reached %s (%s)", name, what, tgt)
				}
			}
			// 0.5 s per probe at most: a rejection, not a hang.
			if d := time.Since(t0); d > time.Duration(len(list))*600*time.Millisecond+10*time.Second {
				t.Errorf("%s: probes took %v", name, d)
			}
			t.Logf("%s: %v", name, r.Reach)
		})
	}
	// Two offline sandboxes do not share a namespace: one's listener on
	// its loopback is not the other's.
	reach(t, w, "off", map[string]any{"serve": 9090})
	if r := reach(t, w, "off2", map[string]any{"targets": []string{"tcp:127.0.0.1:9090"}}); r.Reach["tcp:127.0.0.1:9090"] == "ok" {
		t.Errorf("offline sandbox reached another offline sandbox's loopback listener")
	}

	// Egress is on by default: the NAT rule is there.
	rules, err := netns.ListRules(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !rules.Masquerade || rules.Chains["input"] != 1 || rules.Chains["output"] == 0 {
		t.Errorf("nftables rules %+v: want masquerade (egress on by default), the input guard and the output guard", rules)
	}
}

func udpEcho(addr string) error {
	c, err := net.DialTimeout("udp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 8))
	return err
}

// TestNoEgressSetting: the operator's no_egress leaves no masquerade and
// adds the rule that rejects what sandboxes send beyond their bridge
// (egress itself cannot be tried here: there is no outside).
func TestNoEgressSetting(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "no_egress: true\n"))
	rules, err := netns.ListRules(netPrefix(w.cgroup))
	if err != nil {
		t.Fatal(err)
	}
	if rules.Masquerade || rules.Chains["forward"] != 2 {
		t.Errorf("rules with no_egress %+v: want no masquerade and the no-egress forward rule", rules)
	}
}

// TestHostNetworkNeedsOperator: network: host (and the deprecated none)
// is refused with 403 unless the worker allows it.
func TestHostNetworkNeedsOperator(t *testing.T) {
	w := startWorker(t)
	for _, net := range []string{"host", "none"} {
		out, err := w.hearth("deploy", fn(t, "f.py", "def f(e):\n    return 1\n", "function.yaml", "network: "+net+"\n"), "--name", "h")
		if err == nil || !strings.Contains(out, "403") && !strings.Contains(out, "HostNetworkNotAllowed") || !strings.Contains(out, "allow_host_network") {
			t.Errorf("deploy with network: %s on a worker that does not allow it: %v\n%s", net, err, out)
		}
	}
	// Allowed, none deploys as host with a warning.
	a := startWorker(t, "--allow-host-network")
	out, err := a.hearth("deploy", fn(t, "f.py", "def f(e):\n    return 1\n", "function.yaml", "network: none\n"), "--name", "h")
	if err != nil || !strings.Contains(out, "deprecated") {
		t.Errorf("deploy with network: none on a worker that allows host: %v\n%s", err, out)
	}
	if inv := a.mustInvoke("h", "{}"); string(inv.Body) != "1" {
		t.Errorf("host-network function: %s", inv.Body)
	}
}

// TestAPIToken: the API needs the token made at the first start (0600,
// root's, in the data dir) on every endpoint but /healthz, invocations
// included; the CLI on the same host finds it; no response carries an
// env value.
func TestAPIToken(t *testing.T) {
	w := startWorker(t)
	p := filepath.Join(w.dataDir, api.TokenFile)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if len(w.token) < 32 {
		t.Errorf("token %q too short", w.token)
	}
	const secret = "s3cr3t-value-4242"
	w.deployDir("env", fn(t, "f.py", "import os\ndef f(e):\n    return 1\n",
		"function.yaml", "env: {API_KEY: "+secret+", OTHER: also-"+secret+"}\n"))
	w.mustInvoke("env", "{}")

	anon := func(method, path string) int {
		req, _ := http.NewRequest(method, w.url+path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, ep := range [][2]string{
		{"GET", "/v1/functions"}, {"GET", "/v1/functions/env"}, {"DELETE", "/v1/functions/env"},
		{"PUT", "/v1/functions/x"}, {"GET", "/v1/functions/env/logs"}, {"GET", "/v1/status"},
		{"GET", "/v1/zygotes"}, {"GET", "/v1/packages"}, {"GET", "/v1/snapshots"},
		{"POST", "/v1/functions/env/snapshot"}, {"GET", "/metrics"},
		{"POST", "/v1/functions/env/invoke"}, {"POST", "/run/env"},
	} {
		if code := anon(ep[0], ep[1]); code != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", ep[0], ep[1], code)
		}
	}
	if code := anon("GET", "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz without a token: %d, want 200", code)
	}
	// With the token, and through the CLI (which reads the file).
	var bodies []string
	for _, path := range []string{"/v1/functions", "/v1/functions/env", "/v1/status", "/metrics"} {
		resp, err := w.get(path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the token: %d %s", path, resp.StatusCode, b)
		}
		bodies = append(bodies, string(b))
	}
	for _, args := range [][]string{{"ls"}, {"status"}, {"invoke", "env", "-d", "{}"}} {
		out, err := w.hearth(args...)
		if err != nil {
			t.Errorf("hearth %v on the worker's host: %v\n%s", args, err, out)
		}
		bodies = append(bodies, out)
	}
	// A redeploy's answer too.
	out, err := w.hearth("deploy", fn(t, "f.py", "def f(e):\n    return 2\n",
		"function.yaml", "env: {API_KEY: "+secret+"}\n"), "--name", "env")
	if err != nil {
		t.Fatalf("redeploy: %v\n%s", err, out)
	}
	bodies = append(bodies, out)
	resp, err := w.get("/v1/functions/env")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Spec struct {
			Env     map[string]string `json:"env"`
			EnvKeys []string          `json:"env_keys"`
		} `json:"spec"`
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	bodies = append(bodies, string(b))
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Env != nil || strings.Join(got.Spec.EnvKeys, ",") != "API_KEY" {
		t.Errorf("function spec: env %v, env_keys %v; want no env and the key API_KEY", got.Spec.Env, got.Spec.EnvKeys)
	}
	for _, body := range bodies {
		if strings.Contains(body, secret) {
			t.Errorf("a response carries an env value:\n%s", body)
		}
	}
	// A wrong token is refused too; without the file the CLI gets 401.
	cmd := exec.Command(filepath.Join(binDir, "hearth"), "ls")
	cmd.Env = append(os.Environ(), "HEARTH_URL="+w.url, "HEARTH_TOKEN=wrong")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "401") && !strings.Contains(string(out), "unauthorized") {
		t.Errorf("hearth ls with a wrong token: %v\n%s", err, out)
	}
}

// TestOpenInvoke: open_invoke serves invocations without the token (the
// rest still needs it), and is refused on an address other than loopback
// unless open_invoke_public says so.
func TestOpenInvoke(t *testing.T) {
	w := startWorker(t, "--open-invoke")
	w.deployDir("one", fn(t, "f.py", "def f(e):\n    return 1\n"))
	resp, err := http.Post(w.url+"/run/one", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("open invocation without a token: %d", resp.StatusCode)
	}
	resp, err = http.Get(w.url + "/v1/functions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/functions without a token on an open-invoke worker: %d, want 401", resp.StatusCode)
	}
	cmd := exec.Command(filepath.Join(binDir, "hearth"), "up", "--listen", "0.0.0.0:0", "--open-invoke",
		"--data-dir", t.TempDir(), "--base", testBase)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "open_invoke_public") {
		t.Errorf("up --open-invoke on 0.0.0.0: %v\n%s", err, out)
	}
}
