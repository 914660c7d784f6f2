package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hearth.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// probe reports what a handler can see and do from inside its sandbox.
const probe = `
import os, time

def tryw(path):
    try:
        with open(path, "w") as fh:
            fh.write("x")
        return True
    except OSError:
        return False

def loopback():
    import socket
    try:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        c = socket.create_connection(s.getsockname(), timeout=2)
        a, _ = s.accept()
        c.sendall(b"x")
        ok = a.recv(1) == b"x"
        for x in (a, c, s):
            x.close()
        return ok
    except OSError:
        return False

def ipv6_links():
    try:
        with open("/proc/net/if_inet6") as fh:
            return sorted(l.split()[-1] for l in fh if l.split()[-1] != "lo")
    except FileNotFoundError:  # a kernel without IPv6
        return []

def f(e):
    if e.get("mark"):
        with open("/tmp/mark", "w") as fh:
            fh.write(e["mark"])
        time.sleep(e.get("hold", 0))
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    return {
        "uid": os.getuid(), "gid": os.getgid(),
        "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "write_base": tryw("/usr/lib/hearth-probe"),
        "write_code": tryw("/code/probe"),
        "write_tmp": tryw("/tmp/probe"),
        "tmp": sorted(os.listdir("/tmp")),
        "hostname": os.uname().nodename,
        "dev": sorted(os.listdir("/dev")),
        "procfs": sorted(os.listdir("/proc/fs")),
        "disks": [open("/proc/" + n).read() for n in ("diskstats", "partitions")],
        "loopback": loopback(),
        "ipv6": ipv6_links(),
    }
`

func checkIsolation(t *testing.T, m map[string]any) {
	t.Helper()
	if m["uid"] == float64(0) || m["gid"] == float64(0) {
		t.Errorf("handler runs as root: uid %v gid %v", m["uid"], m["gid"])
	}
	if m["cap_eff"] != "0000000000000000" || m["cap_bnd"] != "0000000000000000" {
		t.Errorf("capabilities not dropped: eff %v bnd %v", m["cap_eff"], m["cap_bnd"])
	}
	if m["no_new_privs"] != "1" {
		t.Errorf("no_new_privs = %v", m["no_new_privs"])
	}
	if m["write_base"] == true || m["write_code"] == true {
		t.Errorf("base or code writable: %v %v", m["write_base"], m["write_code"])
	}
	if m["write_tmp"] != true {
		t.Errorf("/tmp not writable")
	}
	pids, _ := m["pids"].([]any)
	if len(pids) == 0 || len(pids) > 4 {
		t.Errorf("handler sees pids %v: want only its sandbox's few processes", pids)
	}
	for _, p := range pids {
		if p.(float64) > 100 {
			t.Errorf("handler sees a host-numbered pid %v", p)
		}
	}
	if h, _ := m["hostname"].(string); !strings.HasPrefix(h, "hearth-") {
		t.Errorf("hostname %q: uts namespace not private", h)
	}
	if d := m["dev"]; len(d.([]any)) > 8 {
		t.Errorf("/dev has more than the minimal devices: %v", d)
	}
	// Its own loopback is up: a server on 127.0.0.1 answers it.
	if m["loopback"] != true {
		t.Errorf("no loopback of its own: %v", m["loopback"])
	}
	// IPv4 only: no IPv6 address but loopback's.
	if v6, ok := m["ipv6"].([]any); !ok || len(v6) != 0 {
		t.Errorf("links with IPv6 addresses: %v", m["ipv6"])
	}
	// The host's file systems' state (other sandboxes' /tmp among them).
	if d, ok := m["procfs"].([]any); !ok || len(d) != 0 {
		t.Errorf("/proc/fs shows %v", d)
	}
	// The host's block devices and their I/O counters (other sandboxes'
	// /tmp loop devices among them).
	if d, ok := m["disks"].([]any); !ok || len(d) != 2 || d[0] != "" || d[1] != "" {
		t.Errorf("/proc/diskstats and /proc/partitions show %q, want both empty", d)
	}
}

// modes runs f against a worker that forks from zygotes and one that
// starts fresh interpreters: a forked child must be exactly as isolated as
// a cold-started one.
// modes runs f against three workers: one whose fork starts take spare
// zygote children forked ahead of need (the default; primed so that the
// root node has spares, and checked to have used them), one that forks
// on demand, and one with fresh interpreters only.
func modes(t *testing.T, f func(t *testing.T, w *worker, path string), flags ...string) {
	for _, m := range []struct {
		name, path string
		flags      []string
	}{{"spare", "fork", nil}, {"fork", "fork", []string{"--spares", "-1"}}, {"cold", "cold", []string{"--no-zygotes"}}} {
		t.Run(m.name, func(t *testing.T) {
			w := startWorker(t, append(m.flags, flags...)...)
			if m.name == "spare" {
				primeSpares(t, w)
			}
			f(t, w, m.path)
			if m.name == "spare" && metricValue(t, w, "hearth_spare_starts_total") < 1 {
				t.Errorf("no start took a spare")
			}
		})
	}
}

// primeSpares makes the root zygote node keep spares: a start from it
// asks for them.
func primeSpares(t *testing.T, w *worker) {
	t.Helper()
	w.deployDir("primer", "../examples/hello")
	w.mustInvoke("primer", "{}")
	end := time.Now().Add(30 * time.Second)
	for {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(tree.Nodes) > 0 && tree.Nodes[0].Spares > 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("root zygote node has no spares: %+v", tree.Nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIsolation(t *testing.T) { modes(t, testIsolation) }

func testIsolation(t *testing.T, w *worker, path string) {
	w.deployDir("probe", fn(t, "f.py", probe, "function.yaml", "max_concurrency: 2\n"))
	inv := w.mustInvoke("probe", "{}")
	if inv.Path != path {
		t.Fatalf("path %s, want %s", inv.Path, path)
	}
	checkIsolation(t, decode(t, inv.Body))

	// Two sandboxes at once: each /tmp is private.
	var wg sync.WaitGroup
	res := make([]map[string]any, 2)
	for i, mark := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := w.invoke("probe", `{"mark":"`+mark+`","hold":0.5}`)
			if err != nil {
				t.Errorf("invoke: %v", err)
				return
			}
			res[i] = decode(t, inv.Body)
		}()
	}
	wg.Wait()
	if res[0] == nil || res[1] == nil {
		return
	}
	if res[0]["hostname"] == res[1]["hostname"] {
		t.Fatalf("both calls ran in one sandbox %v", res[0]["hostname"])
	}
	for i, r := range res {
		tmp := r["tmp"].([]any)
		// The runtime socket lives in /tmp too: count the marks only.
		marks := 0
		for _, f := range tmp {
			if f == "mark" {
				marks++
			}
		}
		if marks != 1 {
			t.Errorf("sandbox %d /tmp = %v, want exactly its own mark", i, tmp)
		}
	}
}

func TestMemoryBombIsOOMAndOthersKeepWorking(t *testing.T) { modes(t, testMemoryBomb) }

func testMemoryBomb(t *testing.T, w *worker, path string) {
	w.deployDir("bomb", fn(t,
		"f.py", "def f(e):\n    blocks = []\n    while True:\n        blocks.append(bytearray(8 << 20))\n",
		"function.yaml", "memory_mb: 64\n"))
	w.deployDir("hello", "../examples/hello")
	if inv := w.mustInvoke("hello", "{}"); inv.Path != path {
		t.Errorf("path %s, want %s", inv.Path, path)
	}
	_, err := w.invoke("bomb", "{}")
	if !isStatus(err, 502) || !strings.Contains(err.Error(), "out of memory") || !strings.Contains(err.Error(), "64 MB") {
		t.Fatalf("memory bomb: err = %v, want 502 out of memory with the 64 MB limit", err)
	}
	if inv := w.mustInvoke("hello", "{}"); inv.Path != "warm" {
		t.Errorf("other function lost its warm sandbox: path %s", inv.Path)
	}
	// The bomb's function itself recovers with a fresh sandbox.
	if _, err := w.invoke("bomb", "{}"); !isStatus(err, 502) {
		t.Errorf("second bomb: %v", err)
	}
}

func TestForkBombIsContained(t *testing.T) { modes(t, testForkBomb) }

func testForkBomb(t *testing.T, w *worker, path string) {
	w.deployDir("forkbomb", fn(t, "f.py", `
import os, time
def f(e):
    n = 0
    try:
        for _ in range(10000):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            n += 1
    except OSError as err:
        return {"forked": n, "error": err.__class__.__name__}
    return {"forked": n}
`, "function.yaml", "timeout_s: 10\n"))
	w.deployDir("hello", "../examples/hello")
	inv := w.mustInvoke("forkbomb", "{}")
	if inv.Path != path {
		t.Errorf("path %s, want %s", inv.Path, path)
	}
	m := decode(t, inv.Body)
	if n := m["forked"].(float64); n >= 64 || m["error"] == nil {
		t.Errorf("fork bomb not contained by the pids limit: %v", m)
	}
	if inv := w.mustInvoke("hello", `{"name":"x"}`); !strings.Contains(string(inv.Body), "hello, x") {
		t.Errorf("worker stopped serving: %s", inv.Body)
	}
}
