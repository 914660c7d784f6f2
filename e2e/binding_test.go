package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// bindingProbe reports, for library functions the interpreter calls
// through its procedure linkage table and that neither a zygote nor a
// start calls, which mapping the interpreter's GOT slot for each points
// into: the library (bound) or the interpreter itself (not yet bound,
// lazily: the first call would run the dynamic linker's lookup). Python
// 3 on x86-64 Linux, ELF64 little-endian.
const bindingProbe = `
import ctypes, json, os, struct, sys

NAMES = ("initgroups", "getloadavg", "ctermid", "execv", "pause", "symlink", "sched_rr_get_interval")

def slots(exe):
    data = open(exe, "rb").read()
    e_type, = struct.unpack_from("<H", data, 16)
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    def cstr(off):
        return data[off:data.index(b"\0", off)].decode()
    by = {cstr(secs[e_shstrndx][4] + s[0]): s for s in secs}
    rela = by[".rela.plt"]
    dynsym = secs[rela[6]]
    dynstr = secs[dynsym[6]]
    out = {}
    for off in range(rela[4], rela[4] + rela[5], 24):
        r_offset, r_info, _ = struct.unpack_from("<QQq", data, off)
        st_name, = struct.unpack_from("<I", data, dynsym[4] + (r_info >> 32) * 24)
        name = cstr(dynstr[4] + st_name)
        if name in NAMES:
            out[name] = r_offset
    return out, e_type

def where(addr, maps):
    for lo, hi, path in maps:
        if lo <= addr < hi:
            return path
    return "?"

def probe():
    exe = os.path.realpath(sys.executable)
    maps = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            f = line.split()
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            maps.append((lo, hi, f[5] if len(f) > 5 else ""))
    found, e_type = slots(exe)
    base = 0 if e_type == 2 else min(lo for lo, _, p in maps if p == exe)
    return {"exe": exe, "targets": {n: where(ctypes.c_uint64.from_address(base + a).value, maps) for n, a in found.items()}}

def f(event):
    return probe()

if __name__ == "__main__":
    print(json.dumps(probe()))
`

type binding struct {
	Exe     string
	Targets map[string]string // function -> path of the mapping its GOT slot points into
}

// TestForkedBindNow: a function forked from a zygote, on demand or from
// a spare, finds the interpreter's library calls bound already (the
// zygote started with LD_BIND_NOW), so its first call of one runs no
// dynamic linker lookup and writes no GOT page of its own. The same
// probe in a cold start's fresh interpreter (lazy binding, the default)
// finds some unbound: the probe tells the two apart.
func TestForkedBindNow(t *testing.T) {
	run := func(t *testing.T, want string, flags ...string) binding {
		w := startWorker(t, append([]string{"--no-warm-cache", "--no-snapshots"}, flags...)...)
		w.deployDir("bind", fn(t, "f.py", bindingProbe))
		inv := w.mustInvoke("bind", "{}")
		if inv.Path != want {
			t.Fatalf("path %s, want %s", inv.Path, want)
		}
		var b binding
		if err := json.Unmarshal(inv.Body, &b); err != nil {
			t.Fatalf("%s: %v", inv.Body, err)
		}
		if len(b.Targets) < 3 {
			t.Fatalf("the interpreter %s calls only %v of the probe's functions through its PLT", b.Exe, b.Targets)
		}
		return b
	}
	cold := run(t, "cold", "--no-zygotes")
	var lazy []string
	for name, p := range cold.Targets {
		if p == cold.Exe {
			lazy = append(lazy, name)
		}
	}
	if len(lazy) == 0 {
		t.Fatalf("a cold start, binding lazily, has every probed call bound already: %v; the probe cannot tell", cold.Targets)
	}
	t.Logf("cold start: %v of %d probed calls unbound", lazy, len(cold.Targets))
	for _, c := range []struct {
		name  string
		flags []string
	}{{"spare", nil}, {"on demand", []string{"--spares", "-1"}}} {
		t.Run(c.name, func(t *testing.T) {
			forked := run(t, "fork", c.flags...)
			if len(forked.Targets) != len(cold.Targets) {
				t.Fatalf("forked: %v, cold: %v: want the same functions", forked.Targets, cold.Targets)
			}
			for name, p := range forked.Targets {
				if p == forked.Exe || !strings.Contains(p, ".so") {
					t.Errorf("%s's slot points into %q, want a library (bound by its zygote)", name, p)
				}
			}
		})
	}
}
