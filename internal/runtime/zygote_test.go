package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// zygoteMemProbe runs zygote.py's settling steps in a plain interpreter
// and reports what they change: how many pages 200 new objects of one
// size class land on after holes were punched into that class's pools
// (with or without fill_pools), and how many pages of the interpreter's
// own code are cached but unmapped (before and after populate_files).
const zygoteMemProbe = `import sys, json, ctypes
sys.path.insert(0, sys.argv[1])
import zygote

def unmapped_cached_pages():
    # Pages of the interpreter's r-x mappings that are in the page cache
    # but not in this process's page tables.
    n = 0
    for line in open("/proc/self/maps"):
        f = line.split()
        if len(f) < 6 or f[1] != "r-xp" or not f[5].startswith("/"):
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        vec = ctypes.create_string_buffer((hi - lo) // 4096)
        zygote._mincore(lo, hi - lo, vec)
        with open("/proc/self/pagemap", "rb") as pm:
            pm.seek(lo // 4096 * 8)
            ents = pm.read((hi - lo) // 4096 * 8)
        for i, c in enumerate(vec.raw):
            present = int.from_bytes(ents[i*8:i*8+8], "little") >> 63
            n += (c & 1) and not present
    return n

before = unmapped_cached_pages()
mapped = zygote.populate_files()
after = unmapped_cached_pages()

# bytes(60) is a 96-byte pymalloc block. Keep 20000, free one in 16.
keep = [bytes(60) for _ in range(20000)]
del keep[::16]
filled = zygote.fill_pools() if sys.argv[2] == "fill" else 0
new = [bytes(60) for _ in range(200)]
pages = len({id(o) >> 12 for o in new})
print(json.dumps({"pages": pages, "filled": filled, "before": before, "after": after, "mapped": mapped}))
`

func zygoteMem(t *testing.T, mode string) map[string]int {
	t.Helper()
	out, err := exec.Command(python, "-S", "-B", "-c", zygoteMemProbe, rtDir, mode).CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	var m map[string]int
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	return m
}

// TestZygoteSettlesMemory checks the two steps by which a zygote keeps a
// child's own pages few: fill_pools takes the holes of pymalloc's pools,
// so that a child's new objects pack into fresh pools instead of copying
// one zygote page each; populate_files maps the cached pages of the
// zygote's code, so that a child never maps one alone.
func TestZygoteSettlesMemory(t *testing.T) {
	holes := zygoteMem(t, "holes")
	filled := zygoteMem(t, "fill")
	t.Logf("200 objects of 96 bytes: on %d pages among holes, %d after fill_pools (%d blocks taken); "+
		"cached code pages unmapped: %d, then %d after populate_files mapped %d",
		holes["pages"], filled["pages"], filled["filled"], filled["before"], filled["after"], filled["mapped"])
	// 200 blocks of 96 bytes packed fill 5 pages (6 if they straddle).
	if filled["pages"] > 8 {
		t.Errorf("after fill_pools, 200 new objects span %d pages, want <= 8", filled["pages"])
	}
	if holes["pages"] < 4*filled["pages"] {
		t.Errorf("without fill_pools, 200 new objects span %d pages: the probe made no scattered holes", holes["pages"])
	}
	if filled["filled"] < 1250 {
		t.Errorf("fill_pools took %d blocks, want at least the 1250 holes punched", filled["filled"])
	}
	if filled["mapped"] <= 0 || filled["after"] != 0 {
		t.Errorf("populate_files mapped %d pages; %d cached code pages unmapped before, %d after, want 0",
			filled["mapped"], filled["before"], filled["after"])
	}
}

// TestSetEnviron checks that a zygote child's environment is replaced
// everywhere it is read: posix.environ, os.environ and the C library's
// (getenv, as extensions read it), with nothing left of the zygote's.
func TestSetEnviron(t *testing.T) {
	const driver = `import sys, os, posix, ctypes, json
sys.path.insert(0, sys.argv[1])
import hearthrt
getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
hearthrt.set_environ({"KEEP": "same", "CHANGED": "new", "ADDED": "yes"})
print(json.dumps({"os": dict(os.environ), "posix": {k.decode(): v.decode() for k, v in posix.environ.items()},
    "c": {k: (getenv(k.encode()) or b"").decode() for k in ("KEEP", "CHANGED", "ADDED", "GONE", "PATH")}}))
`
	cmd := exec.Command(python, "-S", "-B", "-c", driver, rtDir)
	cmd.Env = []string{"KEEP=same", "CHANGED=old", "GONE=zygote's", "PATH=/usr/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got map[string]map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	want := map[string]string{"KEEP": "same", "CHANGED": "new", "ADDED": "yes"}
	for _, view := range []string{"os", "posix"} {
		if len(got[view]) != len(want) {
			t.Errorf("%s environ = %v, want %v", view, got[view], want)
		}
		for k, v := range want {
			if got[view][k] != v {
				t.Errorf("%s environ[%s] = %q, want %q", view, k, got[view][k], v)
			}
		}
	}
	want["GONE"], want["PATH"] = "", ""
	for k, v := range want {
		if got["c"][k] != v {
			t.Errorf("getenv(%s) = %q, want %q", k, got["c"][k], v)
		}
	}
}

// TestPremadeOutput checks the streams a zygote makes for its children
// (premake_output): a child cloned as zygotes clone installs them with
// tag_output, its lines come out tagged on its fd 1, and nothing the
// zygote printed before the clone, left in its own buffer, reaches the
// child's output: neither before the streams were made, nor after (a
// node zygote's packages print after its parent made them).
func TestPremadeOutput(t *testing.T) {
	const driver = `import sys, os, posix
sys.path.insert(0, sys.argv[1])
import zygote, hearthrt
print("printed by the zygote, not flushed")  # a pipe: block-buffered
hearthrt.premake_output()
print("printed by the zygote after, not flushed")
hearthrt.premake_output()  # a node's: made already
premade = hearthrt._premade[1][0][1]
r, w = posix.pipe()
pid, pidfd = zygote.clone(0)
if pid == 0:
    posix.close(r)
    posix.dup2(w, 1)
    posix.close(w)
    hearthrt.tag_output()
    print("child", sys.stdout is premade)
    hearthrt.flush()
    posix._exit(0)
posix.close(w)
os.waitpid(pid, 0)
got = b""
while True:
    b = posix.read(r, 4096)
    if not b:
        break
    got += b
sys.stderr.write(repr(got))
`
	cmd := exec.Command(python, "-S", "-B", "-c", driver, rtDir)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no PYTHONUNBUFFERED: a zygote's stdout is a pipe, buffered
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s%s", err, stdout.String(), stderr.String())
	}
	if want := `b'\x1eochild True\n'`; stderr.String() != want {
		t.Errorf("the child's output: %s, want %s (its line, tagged, from the premade stream, alone)", stderr.String(), want)
	}
	if got := strings.Count(stdout.String(), "printed by the zygote"); got != 2 {
		t.Errorf("the zygote's own output has its lines %d times, want each once: %q", got, stdout.String())
	}
}

// TestZygoteConfine: zygote.py's confine installs the filter Install
// wrote, which denies keyctl with EPERM in the process and what it
// forks; load_filter refuses a file that is no filter.
func TestZygoteConfine(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the probe calls keyctl by its x86-64 number")
	}
	const driver = `import sys, os, ctypes
sys.path.insert(0, sys.argv[1])
import zygote
zygote.use_filter(zygote.load_filter(sys.argv[2]))
zygote._prctl(zygote.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # hearth-init sets it for a zygote
zygote.confine()
libc = ctypes.CDLL(None, use_errno=True)
def probe():
    st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    r = libc.syscall(250, 0, -2, 0)  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING)
    return "%s/%d" % (st["Seccomp"].strip(), ctypes.get_errno() if r < 0 else 0)
pid = os.fork()
if pid == 0:
    os._exit(0 if probe() == "2/1" else 1)
print(probe(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
`
	out, err := exec.Command(python, "-S", "-B", "-c", driver, rtDir, filepath.Join(rtDir, SeccompFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "2/1 0"; got != want {
		t.Errorf("got %q, want %q (seccomp mode 2 and EPERM, in the forked child too)", got, want)
	}
	bad := filepath.Join(t.TempDir(), "bad.bpf")
	if err := os.WriteFile(bad, []byte("12345"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(python, "-S", "-B", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import zygote; zygote.load_filter(sys.argv[2])",
		rtDir, bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not a seccomp filter") {
		t.Errorf("loading a file that is no filter: %v\n%s", err, out)
	}
}

// immortalProbe runs immortalize in the interpreter the zygotes run
// (the base image's, which has immortal objects) and reports how many
// objects it changed, whether the objects it should reach became
// immortal, and the sizes of any set as large as half that count which
// outlived it: its own record of the objects it visited.
const immortalProbe = `import sys, gc, json
sys.path.insert(0, "/tmp")
import zygote
held = [str(i) * 3 for i in range(20000)]
if not zygote._CAN_IMMORTALIZE:
    print(json.dumps({"python": sys.version}))
    raise SystemExit
n = zygote.immortalize()
big = [len(o) for o in gc.get_objects() if type(o) is set and len(o) >= n // 2]
print(json.dumps({"python": sys.version, "n": n, "held": sys.getrefcount(held[123]) >= 1 << 30, "left": big}))
`

// TestImmortalizeKeepsNothingOfItsOwn: immortalize makes immortal what
// the zygote holds, and nothing it made for the walk. Its set of visited
// ids is tracked by the collector, so the walk reached it: made
// immortal, it and its ints stayed in every zygote (7.5 MiB with numpy),
// copied into each fork's page tables.
func TestImmortalizeKeepsNothingOfItsOwn(t *testing.T) {
	base := os.Getenv("HEARTH_TEST_BASE")
	if base == "" {
		base = "/var/lib/hearth/base"
	}
	py := filepath.Join(base, "usr/bin/python3")
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("the zygotes' interpreter: %v (set HEARTH_TEST_BASE to the base image)", err)
	}
	// The runtime goes on the base's /tmp in a mount namespace of the
	// probe's own: the base image is shared and stays as it is.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec",
		`mount --bind "$1" "$2/tmp"; exec chroot "$2" /usr/bin/python3 -E -S -B -c "$3"`,
		"sh", rtDir, base, immortalProbe)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	var got struct {
		Python string
		N      int
		Held   bool
		Left   []int
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	if got.N == 0 {
		t.Fatalf("the base image's Python (%s) has no immortal objects: immortalize changed nothing", got.Python)
	}
	t.Logf("%s: %d objects made immortal", strings.Fields(got.Python)[0], got.N)
	if !got.Held {
		t.Errorf("a string the probe held is not immortal after immortalize")
	}
	if len(got.Left) > 0 {
		t.Errorf("sets of %v entries outlived immortalize, which changed %d objects: its record of visited objects was made immortal", got.Left, got.N)
	}
}

// stretchesProbe feeds zygote.code_stretches made-up mappings of a real
// file (argv[2], 64 MiB) and prints the stretches it picks, by case.
const stretchesProbe = `import sys, os, json
sys.path.insert(0, sys.argv[1])
import zygote
path = sys.argv[2].encode()
st = os.stat(path)
M = 1 << 20
def m(lo, hi, perms, off, rss=None, anon=0, ino=st.st_ino, p=path):
    return [lo, hi, perms, off, ino, p, hi - lo if rss is None else rss, anon, 0]
def code(share=1.0):
    # headers, code, constants: 2 MiB-aligned chunks at 4, 6 and 8 MiB,
    # share of each resident
    return [m(lo, hi, p, off, rss=int((hi - lo) * share) // 4096 * 4096) for lo, hi, p, off in
            ((4*M, 4*M + 0x20000, b"r--p", 0), (4*M + 0x20000, 9*M, b"r-xp", 0x20000), (9*M, 10*M, b"r--p", 5*M))]
cases = {
    "hot": code(),
    "cold": code(0.2),
    "a quarter": code(0.26),
    "relocated": [m(4*M, 6*M, b"r-xp", 0), m(6*M, 8*M, b"r--p", 2*M, anon=4096), m(8*M, 10*M, b"r--p", 4*M)],
    "gap": [m(4*M, 7*M, b"r-xp", 0), m(7*M, 7*M + 4096, b"---p", 3*M + 4096), m(7*M + 4096, 10*M, b"r--p", 3*M + 4096)],
    "shared": [m(4*M, 10*M, b"r-xs", 0)],
    "no code": [m(4*M, 10*M, b"r--p", 0)],
    "past the end": [m(4*M, 10*M, b"r-xp", 60*M)],
    "another file": [m(4*M, 10*M, b"r-xp", 0, ino=st.st_ino + 1)],
    "writable": [m(4*M, 10*M, b"rwxp", 0)],
    # 40 MiB of code, its first 20 MiB more resident than the rest: the
    # bound keeps the hottest 32 MiB
    "bounded": [m(4*M, 24*M, b"r-xp", 0), m(24*M, 44*M, b"r-xp", 20*M, rss=8*M)],
}
print(json.dumps({k: [[lo // M, hi // M] for lo, hi, _ in zygote.code_stretches(v)] for k, v in cases.items()}))
`

// TestCodeStretches: huge_code moves only 2 MiB-aligned stretches of a
// file's private, read-only, unmodified mappings with code, that are
// mostly resident; nothing with pages of the process's own (relocated
// data, a uprobe's patch), across an unreadable gap, past the file's end,
// of a file other than the one mapped, shared or writable.
func TestCodeStretches(t *testing.T) {
	f := filepath.Join(t.TempDir(), "lib.so")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "-S", "-B", "-c", stretchesProbe, rtDir, f).CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	var got map[string][][2]int
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("probe output %q: %v", out, err)
	}
	want := map[string][][2]int{
		"hot":          {{4, 10}}, // the file's 4-10 MiB, one stretch of three huge pages
		"cold":         {},
		"a quarter":    {{4, 10}},
		"relocated":    {{4, 6}},
		"gap":          {{4, 6}},
		"shared":       {},
		"no code":      {},
		"past the end": {},
		"another file": {},
		"writable":     {},
		"bounded":      {{4, 36}},
	}
	for k, w := range want {
		g := got[k]
		if len(g) == 0 && len(w) == 0 {
			continue
		}
		if fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: stretches %v (MiB), want %v", k, g, w)
		}
	}
}
