package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/zygote"
)

// hugeProbe reports the mapping that holds the interpreter's own code
// (Py_Initialize), and each anonymous executable mapping on huge pages
// that sits next to a mapping of a file: the file, and whether its bytes
// are that file's at the same place (the neighbour's address minus its
// offset gives where the file's start would be).
const hugeProbe = `
import ctypes, json

def maps():
    out, cur = [], None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            f = line.split(None, 5)
            if len(f) >= 5 and "-" in f[0] and not f[0].endswith(":"):
                lo, hi = (int(x, 16) for x in f[0].split("-"))
                cur = {"lo": lo, "hi": hi, "perms": f[1], "offset": int(f[2], 16),
                       "path": f[5].strip() if len(f) > 5 else "", "huge_kb": 0}
                out.append(cur)
            elif cur is not None and f and f[0] == "AnonHugePages:":
                cur["huge_kb"] = int(f[1])
    return out

def probe():
    addr = ctypes.cast(ctypes.pythonapi.Py_Initialize, ctypes.c_void_p).value
    m = maps()
    code = next(x for x in m if x["lo"] <= addr < x["hi"])
    moved = []
    for i, x in enumerate(m):
        if x["path"] or "x" not in x["perms"] or not x["huge_kb"]:
            continue
        for n in m[max(i - 1, 0):i] + m[i + 1:i + 2]:
            if n["path"].startswith("/") and (n["hi"] == x["lo"] or n["lo"] == x["hi"]):
                with open(n["path"], "rb") as fh:
                    fh.seek(x["lo"] - (n["lo"] - n["offset"]))
                    want = fh.read(x["hi"] - x["lo"])
                moved.append(dict(x, file=n["path"], same=ctypes.string_at(x["lo"], x["hi"] - x["lo"]) == want))
                break
    return {"addr": addr, "code": code, "moved": moved}

def f(event):
    return probe()
`

type codeMapping struct {
	Lo, Hi uint64
	Perms  string
	Path   string
	HugeKB int64 `json:"huge_kb"`
	File   string
	Same   bool
}

type codeProbe struct {
	Addr  uint64
	Code  codeMapping
	Moved []codeMapping
}

// TestForkedCodeOnHugePages: a zygote moves the code it runs most onto
// anonymous huge pages of its own, which its children share, so that a
// forked function's interpreter code is one page table entry per 2 MiB,
// not a page fault and a TLB entry per 4 KiB; the bytes are the file's,
// at the same addresses. A cold start's interpreter code is its file's
// mapping. Where the kernel gives no huge pages (a worker run with them
// disabled, PR_SET_THP_DISABLE, which all it starts inherit), the code
// stays where it was, the zygote says why, and forks serve as before;
// as with zygote.small_code, which asks for that.
func TestForkedCodeOnHugePages(t *testing.T) {
	run := func(t *testing.T, want string, flags ...string) (*worker, codeProbe) {
		w := startWorker(t, append([]string{"--no-warm-cache", "--no-snapshots"}, flags...)...)
		w.deployDir("huge", fn(t, "f.py", hugeProbe))
		inv := w.mustInvoke("huge", "{}")
		if inv.Path != want {
			t.Fatalf("path %s, want %s", inv.Path, want)
		}
		var p codeProbe
		if err := json.Unmarshal(inv.Body, &p); err != nil || p.Code.Hi == 0 {
			t.Fatalf("%s: %v", inv.Body, err)
		}
		return w, p
	}
	rootHuge := func(t *testing.T, w *worker) (int64, string) {
		tree, err := w.c.Zygotes(context.Background())
		if err != nil || len(tree.Nodes) == 0 {
			t.Fatalf("zygote tree: %+v, %v", tree, err)
		}
		return tree.Nodes[0].HugeCode, tree.Nodes[0].HugeCodeError
	}
	_, cold := run(t, "cold", "--no-zygotes")
	interp := cold.Code.Path
	if !strings.HasPrefix(interp, "/") || cold.Code.HugeKB != 0 || len(cold.Moved) != 0 {
		t.Fatalf("a cold start's interpreter code is in %+v (moved: %+v), want its file's mapping and nothing moved", cold.Code, cold.Moved)
	}
	t.Logf("cold start: Py_Initialize at %#x in %s", cold.Addr, interp)
	mode, hostErr := zygote.ProbeHugeCode()
	for _, c := range []struct {
		name  string
		flags []string
	}{{"spare", nil}, {"on demand", []string{"--spares", "-1"}}} {
		t.Run(c.name, func(t *testing.T) {
			if hostErr != nil {
				t.Skipf("this host gives no huge pages for code (THP %s): %v", mode, hostErr)
			}
			w, p := run(t, "fork", c.flags...)
			ours := false
			for _, m := range p.Moved {
				if !m.Same || m.Lo%(2<<20) != 0 || m.HugeKB*1024 < int64(m.Hi-m.Lo) || strings.Contains(m.Perms, "w") {
					t.Errorf("moved code %+v: want the file's bytes, read-only, on huge pages, 2 MiB-aligned", m)
				}
				ours = ours || m.File == interp
			}
			if !ours {
				t.Errorf("no code of %s moved onto huge pages in a forked function: %+v (Py_Initialize's mapping: %+v)", interp, p.Moved, p.Code)
			}
			n, why := rootHuge(t, w)
			if n < 2<<20 {
				t.Errorf("the root zygote reports %d bytes of code on huge pages (%q), want at least 2 MiB", n, why)
			}
			t.Logf("moved: %d mappings; the root zygote moved %d MiB (%q)", len(p.Moved), n>>20, why)
		})
	}
	t.Run("small_code", func(t *testing.T) {
		w, p := run(t, "fork", "--config", writeConfig(t, "zygote:\n  small_code: true\n"))
		if p.Code.Path != interp || len(p.Moved) != 0 {
			t.Errorf("with small_code a forked function's interpreter code is in %+v (moved: %+v), want %s's mapping", p.Code, p.Moved, interp)
		}
		if n, why := rootHuge(t, w); n != 0 || !strings.Contains(why, "small_code") {
			t.Errorf("with small_code the root zygote reports %d bytes moved and %q, want 0 and why", n, why)
		}
	})
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
		var p codeProbe
		if err := json.Unmarshal(inv.Body, &p); err != nil {
			t.Fatalf("%s: %v", inv.Body, err)
		}
		if p.Code.Path != interp || len(p.Moved) != 0 {
			t.Errorf("without huge pages a forked function's interpreter code is in %+v (moved: %+v), want %s's mapping", p.Code, p.Moved, interp)
		}
		n, why := rootHuge(t, w)
		if n != 0 || !strings.Contains(why, "huge pages") {
			t.Errorf("without huge pages the root zygote reports %d bytes moved and %q, want 0 and why", n, why)
		}
	})
}
