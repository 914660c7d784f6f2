package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/packages/wheeltest"
)

// versionProbe reports alpha's version and where it came from.
const versionProbe = `
import alpha
def f(e):
    try:
        open(alpha.__file__, "a")
        writable = True
    except OSError:
        writable = False
    return {"version": alpha.VERSION, "file": alpha.__file__, "writable": writable}
`

// TestInstalledPackagesInBothModes deploys functions whose requirements
// come from a wheelhouse the test builds: two pin different versions of
// one package, and each must import its own, read-only, whether its
// sandbox was forked from a zygote or started fresh.
func TestInstalledPackagesInBothModes(t *testing.T) {
	wheels := t.TempDir()
	if err := wheeltest.House(wheels,
		wheeltest.Wheel{Name: "alpha", Version: "1.0"},
		wheeltest.Wheel{Name: "alpha", Version: "2.0"},
		wheeltest.Wheel{Name: "beta", Version: "1.0", Requires: []string{"alpha>=1.5"}},
	); err != nil {
		t.Fatal(err)
	}
	modes(t, func(t *testing.T, w *worker, path string) {
		w.deployDir("old", fn(t, "f.py", versionProbe, "requirements.txt", "alpha==1.0\n"))
		w.deployDir("new", fn(t, "f.py", versionProbe, "requirements.txt", "beta\n"))
		fns, err := w.c.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fns {
			if f.Name == "new" && len(f.Packages) != 2 {
				t.Errorf("new resolved to %v, want alpha and beta", f.Packages)
			}
		}
		for _, tc := range []struct{ name, version string }{{"old", "1.0"}, {"new", "2.0"}} {
			for i := 0; i < 3; i++ { // the third call forks from a promoted node
				inv := w.mustInvoke(tc.name, "{}")
				m := decode(t, inv.Body)
				if m["version"] != tc.version || m["writable"] != false ||
					!strings.HasPrefix(m["file"].(string), "/hearth-pkgs/alpha-"+tc.version+"/") {
					t.Errorf("%s call %d: %v", tc.name, i, m)
				}
				if path == "cold" && inv.Path != "cold" && inv.Path != "warm" {
					t.Errorf("%s: path %s with zygotes off", tc.name, inv.Path)
				}
			}
		}
		if path == "fork" {
			tree, err := w.c.Zygotes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, n := range tree.Nodes {
				for _, p := range n.Packages {
					found = found || strings.HasPrefix(p, "alpha==")
				}
			}
			if !found {
				t.Errorf("no zygote node holds alpha: %+v", tree.Nodes)
			}
		}
	}, "--no-index", "--find-links", wheels, "--no-warm-cache", "--config", writeConfig(t, "zygote:\n  promote: 2\n"))
}

// drawProbe returns a draw from Python's and from numpy's global
// generator, whether it was forked from a zygote that imported drawer (it
// does not import drawer itself), and whether numpy.random's module object
// is immortal (its reference count is 2**32-1 on Python 3.12 and 3.13).
const drawProbe = `
import random, sys
NODE = "drawer" in sys.modules
import numpy.random
def f(e):
    return {"py": random.random(), "np": float(numpy.random.random()), "node": NODE,
            "immortal": sys.getrefcount(numpy.random) == 2**32 - 1}
`

// TestForkedChildrenDrawApart checks that children forked from a zygote
// that holds numpy's global generator (its package imports numpy.random)
// do not share that generator's state: Python reseeds its own random
// module after a fork, numpy does not. It also checks that the objects
// they inherit are immortal, so counting references to them copies no
// page (the base image's Python is 3.13).
func TestForkedChildrenDrawApart(t *testing.T) {
	wheels := t.TempDir()
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "drawer", Version: "1.0",
		Files: map[string]string{"drawer/__init__.py": "import numpy.random\nVERSION = '1.0'\n"}},
	); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, "--no-index", "--find-links", wheels, "--no-warm-cache", "--no-snapshots",
		"--config", writeConfig(t, "zygote:\n  promote: 2\n"))
	for _, n := range []string{"d1", "d2"} {
		w.deployDir(n, fn(t, "f.py", drawProbe, "requirements.txt", "drawer\nnumpy\n"))
	}
	// Two starts promote {drawer, numpy}; wait for its node.
	w.mustInvoke("d1", "{}")
	w.mustInvoke("d2", "{}")
	end := time.Now().Add(30 * time.Second)
	for !w.hasNode("drawer==1.0") {
		if time.Now().After(end) {
			t.Fatal("no zygote node holds drawer")
		}
		time.Sleep(100 * time.Millisecond)
	}
	seen := map[float64]string{}
	forks := 0 // from drawer's node
	for i := range 6 {
		name := []string{"d1", "d2"}[i%2]
		inv := w.mustInvoke(name, "{}")
		m := decode(t, inv.Body)
		if inv.Path != "fork" || m["node"] != true {
			continue // a spare of the root node may serve a start
		}
		forks++
		if m["immortal"] != true {
			t.Errorf("%s call %d: numpy.random is mortal in a forked child", name, i)
		}
		for _, k := range []string{"py", "np"} {
			v := m[k].(float64)
			if prev, ok := seen[v]; ok {
				t.Errorf("%s call %d drew %s %v, as %s did", name, i, k, v, prev)
			}
			seen[v] = fmt.Sprintf("%s call %d (%s)", name, i, k)
		}
	}
	if forks < 3 {
		t.Errorf("%d of 6 calls forked from drawer's node, want at least 3", forks)
	}
}

// hasNode reports whether the live zygote tree has a node holding pkg
// with a replica ready to fork.
func (w *worker) hasNode(pkg string) bool {
	tree, err := w.c.Zygotes(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	for _, n := range tree.Nodes {
		if slices.Contains(n.Packages, pkg) && n.Replicas > 0 {
			return true
		}
	}
	return false
}

// TestPackagesForAnotherPythonReinstalled restarts a worker whose install
// cache says its packages were built for Python 3.11 (an older base
// image): the worker drops them, installs the deployed functions' sets
// again before it serves, and the function keeps working.
func TestPackagesForAnotherPythonReinstalled(t *testing.T) {
	wheels := t.TempDir()
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "alpha", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, "--no-index", "--find-links", wheels)
	w.deployDir("old", fn(t, "f.py", versionProbe, "requirements.txt", "alpha==1.0\n"))
	if m := decode(t, w.mustInvoke("old", "{}").Body); m["version"] != "1.0" {
		t.Fatalf("before: %v", m)
	}
	w.stop()
	ix := filepath.Join(w.dataDir, "packages", "index.json")
	b, err := os.ReadFile(ix)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	installed := m["packages"].(map[string]any)["alpha==1.0"].(map[string]any)["installed"]
	m["python"] = "3.11"
	b, _ = json.Marshal(m)
	if err := os.WriteFile(ix, b, 0o644); err != nil {
		t.Fatal(err)
	}
	w.start()
	if m := decode(t, w.mustInvoke("old", "{}").Body); m["version"] != "1.0" {
		t.Errorf("after the restart: %v", m)
	}
	b, _ = os.ReadFile(ix)
	json.Unmarshal(b, &m)
	e, ok := m["packages"].(map[string]any)["alpha==1.0"].(map[string]any)
	if !ok || e["installed"] == installed || m["python"] == "3.11" {
		t.Errorf("alpha not installed again for the base's Python: %s", b)
	}
}

// TestDeployUnreachableIndex deploys a function whose requirements need
// an index that refuses connections: the deploy fails with 502, says the
// index was unreachable and names every requirement it could not
// resolve (not numpy, which the base image has), and the worker logs it.
func TestDeployUnreachableIndex(t *testing.T) {
	closed := freePort(t) // nobody listens there once freePort returns
	w := startWorker(t, "--index-url", "http://"+closed+"/simple")
	dir := fn(t, "f.py", "def f(e):\n    return 1\n", "requirements.txt", "alpha\nnumpy\nbeta>=1.0\nrequests-mock\n")
	out, err := w.hearth("deploy", dir, "--name", "offline")
	if err == nil {
		t.Fatalf("deploy succeeded:\n%s", out)
	}
	for _, want := range []string{"package index http://" + closed + "/simple could not be reached",
		"could not resolve alpha, beta>=1.0, requests-mock"} {
		if !strings.Contains(out, want) {
			t.Errorf("hearth deploy output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "numpy") {
		t.Errorf("output names numpy, which the base image has:\n%s", out)
	}
	var buf bytes.Buffer
	if err := client.PackDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.Deploy(t.Context(), "offline", &buf); !isStatus(err, 502) {
		t.Errorf("API deploy: %v, want 502 (the index, not the code)", err)
	}
	if s := w.out.String(); !strings.Contains(s, "deploy failed") || !strings.Contains(s, "could not resolve alpha") {
		t.Errorf("worker log does not record the failed deploy:\n%s", tail(s, 20))
	}
}

// TestPackagesLsAsksItsWorker: `hearth packages ls` without --data-dir
// lists the cache of the worker it talks to (here one with its own data
// dir), not the default data dir's, and says which cache it lists; with
// --data-dir it reads that data dir's cache. A worker without a cache
// says so.
func TestPackagesLsAsksItsWorker(t *testing.T) {
	wheels := t.TempDir()
	if err := wheeltest.House(wheels, wheeltest.Wheel{Name: "alpha", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	w := startWorker(t, noSnapshots, "--no-index", "--find-links", wheels)
	w.deployDir("user-of-alpha", fn(t, "f.py", versionProbe, "requirements.txt", "alpha==1.0\n"))
	for _, c := range []struct {
		args  []string
		where string
	}{
		{[]string{"packages", "ls"}, "install cache of the worker at " + w.url},
		{[]string{"packages", "ls", "--data-dir", w.dataDir}, "install cache in " + filepath.Join(w.dataDir, "packages")},
	} {
		out, err := w.hearth(c.args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", c.args, err, out)
		}
		lines := strings.Split(out, "\n")
		if lines[0] != c.where {
			t.Errorf("%v: first line %q, want %q", c.args, lines[0], c.where)
		}
		if !strings.Contains(out, "user-of-alpha") || !regexp.MustCompile(`(?m)^alpha +1\.0 `).MatchString(out) ||
			!strings.Contains(out, "1 packages,") {
			t.Errorf("%v does not list alpha 1.0 used by user-of-alpha:\n%s", c.args, out)
		}
	}
	if out, err := w.hearth("packages", "gc", "--all"); err == nil || !strings.Contains(out, "--data-dir") {
		t.Errorf("packages gc without a data dir: %v\n%s", err, out)
	}

	off := startWorker(t, noSnapshots, "--no-install-cache")
	out, err := off.hearth("packages", "ls")
	if err != nil || strings.TrimSpace(out) != "the worker at "+off.url+" runs without an install cache" {
		t.Errorf("worker without a cache: %v\n%s", err, out)
	}
}
