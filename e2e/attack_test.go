package e2e

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/packages/wheeltest"
)

// attackNode is the attacker's package: see its header.
//
//go:embed testdata/attack_node.py
var attackNode string

// attackReportHandler is a function that requires hearthattack: forked from
// the node that imported it, it returns what the import saw there.
const attackReportHandler = `
import sys
NODE = "hearthattack" in sys.modules
import hearthattack

def f(e):
    return {"node": NODE, "report": hearthattack.REPORT}
`

// attackWorker starts a worker whose zygote promotes a package set to a
// node of its own after two starts, with hearthattack (from attack_node.py)
// on its package index, its import running attacks (see its main), and waits until two functions requiring it have
// made the node. It returns the node's import report, as a function
// forked from the node sees it.
func attackWorker(t *testing.T, attacks map[string]any) (*worker, map[string]any) {
	t.Helper()
	raw, err := json.Marshal(attacks)
	if err != nil {
		t.Fatal(err)
	}
	wheels := t.TempDir()
	w := startWorker(t, "--no-snapshots", "--no-index", "--find-links", wheels,
		"--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "hearthattack", Version: "1.0",
		Files: map[string]string{"hearthattack/__init__.py": attackNode + fmt.Sprintf("\nmain(__import__('json').loads(%q))\n", raw)}}); err != nil {
		t.Fatal(err)
	}
	imp := fn(t, "f.py", attackReportHandler, "requirements.txt", "hearthattack\n")
	if errs := w.deployAll(map[string]string{"att-a": imp, "att-b": imp}); len(errs) > 0 {
		t.Fatalf("deploying the attacker's functions: %v", errs)
	}
	w.mustInvoke("att-a", "{}")
	w.mustInvoke("att-b", "{}")
	for end := time.Now().Add(60 * time.Second); !w.hasNode("hearthattack==1.0"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no zygote node imported hearthattack:\n%s", tail(w.out.String(), 30))
		}
	}
	var got struct {
		Node   bool           `json:"node"`
		Report map[string]any `json:"report"`
	}
	for i := 0; ; i++ {
		name := fmt.Sprintf("att-%d", i)
		w.deployDir(name, imp)
		path := invokeJSON(t, w, name, map[string]any{}, &got)
		if path == "fork" && got.Node {
			break
		}
		if i == 4 {
			t.Fatalf("5 starts, none forked from hearthattack's node (last: %s, node %v)", path, got.Node)
		}
	}
	return w, got.Report
}

// TestAttackNodeStealsRootRequests: a zygote node is an os.fork of the
// zygote it was forked from, and keeps its descriptors. A package's import
// code in a node must not hold the root zygote's control socket (fd 3):
// with it, it takes requests the worker sends the root (forks and spares
// of every function that starts from the root, whatever its tenant) and
// serves them from its own node, as the function it was sent (its
// environment, its code, its uid, which the worker maps for it).
func TestAttackNodeStealsRootRequests(t *testing.T) {
	w, rep := attackWorker(t, map[string]any{"thief": true})
	t.Logf("node's descriptors: %v; thief: %v", rep["fds"], rep["thief"])

	// Victims: functions of other tenants with no packages, so they start
	// from the root zygote (a fork or a spare of it).
	const victims = 8
	secret := fmt.Sprintf("victim-secret-%d", time.Now().UnixNano())
	vdir := fn(t, "f.py", "import os\n\ndef f(e):\n    return {\"victim\": True, \"uid\": os.getuid()}\n",
		"function.yaml", "env: {SECRET: "+secret+"}\n")
	dirs := map[string]string{}
	for i := range victims {
		dirs[fmt.Sprintf("victim-%d", i)] = vdir
	}
	if errs := w.deployAll(dirs); len(errs) > 0 {
		t.Fatalf("deploying the victims: %v", errs)
	}
	var stolen []string
	for i := range victims {
		name := fmt.Sprintf("victim-%d", i)
		inv := w.mustInvoke(name, "{}")
		body := string(inv.Body)
		if strings.Contains(body, "hearth-attack-stolen") {
			var r struct {
				Env map[string]string `json:"env"`
				UID int               `json:"uid"`
			}
			json.Unmarshal(inv.Body, &r)
			stolen = append(stolen, fmt.Sprintf("%s (start %s): served by the attacker's node as uid %d, SECRET=%q",
				name, inv.Path, r.UID, r.Env["SECRET"]))
		}
	}
	fd3, _ := rep["fds"].(map[string]any)["3"].(string)
	if thief, _ := rep["thief"].(string); strings.HasPrefix(thief, "serving") {
		t.Errorf("LEAK: the node's import code holds the root zygote's control socket (fd 3 -> %s) and serves it", fd3)
	}
	if len(stolen) > 0 {
		t.Errorf("LEAK: %d of %d other functions' starts were served by the attacker's node:\n%s",
			len(stolen), victims, strings.Join(stolen, "\n"))
	}
}

// TestAttackNodeResources: a package's import code in a zygote node is
// tenant code, and issue #13 wants it inside a cgroup with limits. Each
// check is bounded so that the test cannot hurt the host it runs on.
func TestAttackNodeResources(t *testing.T) {
	const forkCap = 512 // 8 times a sandbox's default pids limit
	const inotifyCap = 16384
	w, rep := attackWorker(t, map[string]any{"forks": forkCap, "inotify": inotifyCap})
	t.Cleanup(killHolders)
	t.Logf("node's report: forks %v, inotify %v", rep["forks"], rep["inotify"])

	// A function of another tenant, forked from the root zygote while
	// the node's holder keeps its inotify instances.
	vdir := fn(t, "f.py", `
import ctypes, os
def f(e):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0o2000000)
    if fd < 0:
        return {"inotify": os.strerror(ctypes.get_errno())}
    os.close(fd)
    return {"inotify": "ok"}
`)
	w.deployDir("inotify-victim", vdir)
	var vic struct {
		Inotify string `json:"inotify"`
	}
	path := invokeJSON(t, w, "inotify-victim", map[string]any{}, &vic)
	killHolders()

	t.Run("pids", func(t *testing.T) {
		f, _ := rep["forks"].(map[string]any)
		if n, _ := f["n"].(float64); int(n) >= forkCap {
			t.Errorf("LEAK: the node forked %d processes (%v) and held them at once: no pids limit binds it; a package can exhaust the host's pid space", int(n), f["why"])
		} else {
			t.Logf("the node held %v processes, then: %v", f["n"], f["why"])
		}
	})
	t.Run("inotify", func(t *testing.T) {
		if vic.Inotify != "ok" {
			t.Errorf("LEAK: the node took %v inotify instances; another tenant's function (a %s start) then got %q from inotify_init1",
				rep["inotify"], path, vic.Inotify)
		} else {
			t.Logf("the node took %v; another tenant's function (a %s start) still made one", rep["inotify"], path)
		}
	})
}

// killHolders kills the attacker's inotify holders (see attack_node.py).
func killHolders() {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(b)) == "hearthholder" {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// TestAttackNodeMovesZygoteIntoSandbox: a node writes each function
// sandbox's cgroup.procs descriptors (the worker hands them over with
// every fork) and every zygote has the same host uid, which is all cgroup
// v1 asks of a writer. A package's import code must not be able to move
// another zygote (here the root, its parent) into a sandbox's cgroup,
// where the sandbox's limits bind it and its end kills it.
func TestAttackNodeMovesZygoteIntoSandbox(t *testing.T) {
	w, rep := attackWorker(t, map[string]any{"movecg": true})
	t.Logf("node's report: movecg %v, moved %v", rep["movecg"], rep["moved"])
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var root int
	for _, n := range tree.Nodes {
		if n.Parent == -1 && len(n.Pids) > 0 {
			root = n.Pids[0]
		}
	}
	if root == 0 {
		t.Fatalf("no root zygote in %+v", tree)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", root))
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.Contains(line, w.cgroup) && !strings.Contains(line, "/zygote-root-") {
			in = append(in, line)
		}
	}
	if len(in) > 0 {
		t.Errorf("LEAK: the attacker's node moved the root zygote (pid %d) out of its cgroup: %v", root, in)
	}
}
