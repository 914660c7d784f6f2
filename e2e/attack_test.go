package e2e

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

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
// on its package index, and waits until two functions requiring it have
// made the node. It returns the node's import report, as a function
// forked from the node sees it.
func attackWorker(t *testing.T) (*worker, map[string]any) {
	t.Helper()
	wheels := t.TempDir()
	w := startWorker(t, "--no-snapshots", "--no-index", "--find-links", wheels,
		"--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "hearthattack", Version: "1.0",
		Files: map[string]string{"hearthattack/__init__.py": attackNode}}); err != nil {
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
	w, rep := attackWorker(t)
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
