package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hugeProbe reports the mapping that holds the interpreter's own code
// (Py_Initialize's address): its file, if any, and how much of it is on
// anonymous huge pages.
const hugeProbe = `
import ctypes, json

def probe():
    addr = ctypes.cast(ctypes.pythonapi.Py_Initialize, ctypes.c_void_p).value
    cur = out = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            f = line.split()
            if f and "-" in f[0] and not f[0].endswith(":"):
                lo, hi = (int(x, 16) for x in f[0].split("-"))
                cur = {"lo": lo, "hi": hi, "perms": f[1], "path": f[5] if len(f) > 5 else "", "huge_kb": 0}
                if lo <= addr < hi:
                    out = cur
            elif f and f[0] == "AnonHugePages:" and cur is out and cur is not None:
                cur["huge_kb"] = int(f[1])
    return {"addr": addr, "mapping": out}

def f(event):
    return probe()
`

type codeMapping struct {
	Addr    uint64
	Mapping struct {
		Lo, Hi uint64
		Perms  string
		Path   string
		HugeKB int64 `json:"huge_kb"`
	}
}

// thpNever reports whether the host has transparent huge pages off.
func thpNever(t *testing.T) bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		t.Logf("no transparent huge pages on this host (%v)", err)
		return true
	}
	return strings.Contains(string(b), "[never]")
}

// TestForkedCodeOnHugePages: a zygote moves the hot code of the
// interpreter onto anonymous huge pages of its own, which its children
// share, so that a forked function's interpreter code is one huge page
// table entry per 2 MiB, not a page fault and a TLB entry per 4 KiB.
// The same probe in a cold start finds its code mapped from the file.
// Where the kernel gives no huge pages (a worker run with THP disabled
// for it, PR_SET_THP_DISABLE, which all it starts inherit), the code
// stays where it was, the zygote says why, and forks serve as before.
func TestForkedCodeOnHugePages(t *testing.T) {
	run := func(t *testing.T, want string, flags ...string) (*worker, codeMapping) {
		w := startWorker(t, append([]string{"--no-warm-cache", "--no-snapshots"}, flags...)...)
		w.deployDir("huge", fn(t, "f.py", hugeProbe))
		inv := w.mustInvoke("huge", "{}")
		if inv.Path != want {
			t.Fatalf("path %s, want %s", inv.Path, want)
		}
		var m codeMapping
		if err := json.Unmarshal(inv.Body, &m); err != nil || m.Mapping.Hi == 0 {
			t.Fatalf("%s: %v", inv.Body, err)
		}
		return w, m
	}
	rootHuge := func(t *testing.T, w *worker) (int64, string) {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil || len(tree.Nodes) == 0 {
			t.Fatalf("zygote tree: %+v, %v", tree, err)
		}
		return tree.Nodes[0].HugeCode, tree.Nodes[0].HugeCodeError
	}
	_, cold := run(t, "cold", "--no-zygotes")
	if !strings.HasPrefix(cold.Mapping.Path, "/") || cold.Mapping.HugeKB != 0 {
		t.Fatalf("a cold start's interpreter code is in %+v, want its file's mapping", cold.Mapping)
	}
	t.Logf("cold start: Py_Initialize at %#x in %s", cold.Addr, cold.Mapping.Path)
	if thpNever(t) {
		t.Log("this host has transparent huge pages off: only the fallback is tested")
	} else {
		for _, c := range []struct {
			name  string
			flags []string
		}{{"spare", nil}, {"on demand", []string{"--spares", "-1"}}} {
			t.Run(c.name, func(t *testing.T) {
				w, m := run(t, "fork", c.flags...)
				if m.Mapping.Path != "" || m.Mapping.HugeKB < 2048 || m.Mapping.Lo%(2<<20) != 0 || strings.Contains(m.Mapping.Perms, "w") {
					t.Errorf("a forked function's interpreter code is in %+v, want an anonymous, read-only mapping on huge pages", m.Mapping)
				}
				if n, why := rootHuge(t, w); n < 2<<20 || why != "" {
					t.Errorf("the root zygote reports %d bytes of code on huge pages (%q), want at least 2 MiB and no error", n, why)
				}
			})
		}
	}
	t.Run("no huge pages", func(t *testing.T) {
		// Inherited by the worker and all it starts, across exec.
		if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			t.Fatalf("PR_SET_THP_DISABLE: %v", err)
		}
		defer unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0)
		w := startWorker(t, "--no-warm-cache", "--no-snapshots")
		if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 0, 0, 0, 0); err != nil {
			t.Fatalf("PR_SET_THP_DISABLE off: %v", err)
		}
		w.deployDir("huge", fn(t, "f.py", hugeProbe))
		inv := w.mustInvoke("huge", "{}")
		if inv.Path != "fork" {
			t.Fatalf("path %s, want fork", inv.Path)
		}
		var m codeMapping
		if err := json.Unmarshal(inv.Body, &m); err != nil {
			t.Fatalf("%s: %v", inv.Body, err)
		}
		if m.Mapping.Path != cold.Mapping.Path || m.Mapping.HugeKB != 0 {
			t.Errorf("without huge pages a forked function's interpreter code is in %+v, want %s's mapping", m.Mapping, cold.Mapping.Path)
		}
		n, why := rootHuge(t, w)
		if n != 0 || !strings.Contains(why, "huge pages") {
			t.Errorf("without huge pages the root zygote reports %d bytes moved and %q, want 0 and why", n, why)
		}
	})
}
