package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hashFn reports the interpreter's hash of "x", whether hash randomization
// is on, and its PYTHONHASHSEED.
const hashFn = `
import os, sys

def f(e):
    return {"hash": hash("x"), "randomized": sys.flags.hash_randomization, "seed": os.environ.get("PYTHONHASHSEED")}
`

type hashAnswer struct {
	Hash       int64
	Randomized int
	Seed       *string
}

func (w *worker) hashOf(t *testing.T, wantPath string) hashAnswer {
	t.Helper()
	inv := w.mustInvoke("h", "{}")
	if wantPath != "" && inv.Path != wantPath {
		t.Fatalf("path %s, want %s", inv.Path, wantPath)
	}
	var a hashAnswer
	if err := json.Unmarshal(inv.Body, &a); err != nil {
		t.Fatalf("%s: %v", inv.Body, err)
	}
	return a
}

// TestHashSeeds: no function runs with hash randomization off. A root
// zygote draws a random hash secret when it starts (a rebuilt one
// another), so functions forked from two roots hash differently, and so
// do two cold starts.
func TestHashSeeds(t *testing.T) {
	// The base image's Python with PYTHONHASHSEED=0, which forked
	// functions used to run with.
	cmd := exec.Command("chroot", testBase, "/usr/bin/python3", "-S", "-c", `print(hash("x"))`)
	cmd.Env = []string{"PYTHONHASHSEED=0", "PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 in the base image: %v", err)
	}
	fixed := strings.TrimSpace(string(out))

	t.Run("forked", func(t *testing.T) {
		// No warm sandboxes and no spares: each call forks anew from the
		// live root zygote.
		w := startWorker(t, "--no-warm-cache", "--no-snapshots", "--spares", "-1")
		w.deployDir("h", fn(t, "f.py", hashFn))
		a, b := w.hashOf(t, "fork"), w.hashOf(t, "fork")
		if a.Randomized != 1 || a.Seed != nil || fixedHash(a, fixed) {
			t.Errorf("a forked function: %+v, want hash randomization on and no PYTHONHASHSEED (seed 0 hashes x to %s)", a, fixed)
		}
		t.Logf("two functions forked from one root zygote: hash(x) %d and %d (they share its secret)", a.Hash, b.Hash)

		tree, err := w.c.Zygotes(context.Background())
		if err != nil || len(tree.Nodes) == 0 || len(tree.Nodes[0].Pids) != 1 {
			t.Fatalf("zygotes: %v %+v", err, tree)
		}
		old := tree.Nodes[0].Pids[0]
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			tree, err = w.c.Zygotes(context.Background())
			if err == nil && len(tree.Nodes) > 0 && len(tree.Nodes[0].Pids) == 1 && tree.Nodes[0].Pids[0] != old {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("root zygote not rebuilt: %+v %v", tree, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c := w.hashOf(t, "fork")
		if c.Hash == a.Hash || fixedHash(c, fixed) {
			t.Errorf("a function forked from a new root zygote hashes x to %d, as one forked from the old one (%d) or seed 0 (%s)", c.Hash, a.Hash, fixed)
		}
	})

	t.Run("cold", func(t *testing.T) {
		w := startWorker(t, "--no-warm-cache", "--no-snapshots", "--no-zygotes")
		w.deployDir("h", fn(t, "f.py", hashFn))
		a, b := w.hashOf(t, "cold"), w.hashOf(t, "cold")
		if a.Randomized != 1 || a.Hash == b.Hash || fixedHash(a, fixed) || fixedHash(b, fixed) {
			t.Errorf("two cold starts: %+v and %+v, want randomized and different (seed 0 hashes x to %s)", a, b, fixed)
		}
	})
}

// fixedHash reports whether a's hash is fixed, what seed 0 gives.
func fixedHash(a hashAnswer, fixed string) bool {
	return strconv.FormatInt(a.Hash, 10) == fixed
}
