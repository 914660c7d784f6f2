package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// homeProbe reports what a sandbox's namespaces hold: the network and
// user namespaces' inode numbers (the kernel reuses a number only once a
// namespace is gone), whether loopback is up, whether a System V segment
// under a fixed key was there already (it would be if the IPC namespace
// outlived a sandbox), and the host name and uid; when the module was
// imported; and what its process is and holds: its ids, capabilities,
// filters, working directory, environment, import path and mounts.
const homeProbe = `import ctypes, fcntl, os, socket, struct, sys, time
LOADED = time.time()
libc = ctypes.CDLL(None, use_errno=True)

def state():
    keep = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters")
    st = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in keep:
                st[k] = v.strip()
    with open("/proc/self/mountinfo") as fh:
        # mount point, its options, file system type, per-mount options
        st["mounts"] = sorted(" ".join((l.split()[4], l.split()[5], l.split(" - ")[1].split()[0])) for l in fh)
    st["cwd"] = os.getcwd()
    st["env"] = sorted("%s=%s" % kv for kv in os.environ.items())
    st["path"] = sys.path
    return st

def owner(kind):
    # NS_GET_USERNS: the user namespace that owns the namespace.
    fd = os.open("/proc/self/ns/" + kind, os.O_RDONLY)
    try:
        u = fcntl.ioctl(fd, 0xb701)
    except OSError as e:
        return str(e)
    finally:
        os.close(fd)
    try:
        return os.fstat(u).st_ino
    finally:
        os.close(u)

def f(event):
    if event.get("net"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("127.0.0.1", 9))
        s.close()
    ns = {k: os.stat("/proc/self/ns/" + k).st_ino for k in ("net", "user")}
    seg = libc.shmget(0x4845, 4096, 0o1000 | 0o2000 | 0o600)  # IPC_CREAT | IPC_EXCL
    shm = "made" if seg >= 0 else os.strerror(ctypes.get_errno())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
    s.close()
    return {"net": ns["net"], "user": ns["user"], "uid": os.getuid(), "shm": shm, "lo_up": bool(flags & 1),
            "owners": {k: owner(k) for k in ("mnt", "uts", "ipc", "net")}, "loaded": LOADED, "state": state()}
`

type homeSeen struct {
	Net, User uint64
	UID       int
	Shm       string
	LoUp      bool           `json:"lo_up"`
	Owners    map[string]any `json:"owners"` // inode of each namespace's owning user namespace, or an error
	Loaded    float64        // when the module was imported, in Unix seconds
	State     map[string]any // its process's ids, capabilities, filters, cwd, environment, sys.path, mounts
	Mark      int            // set by the probe deployed again
	asked     time.Time      // when the call was made
}

// checkPrepared checks that the one process of function name's uid (first
// is its first call's report) in the worker's cgroups (under parent),
// between calls, is a prepared spare: the function's ids, no
// capabilities, its filters, in its code directory. It waits for the
// spare to have arrived (it does so at the lowest CPU weight).
func checkPrepared(t *testing.T, parent, name string, first homeSeen) {
	t.Helper()
	var why []string
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		why = why[:0]
		procs := procsOf(parent, first.UID)
		if len(procs) != 1 {
			why = append(why, fmt.Sprintf("%d processes of its uid %d between calls, want its prepared spare alone", len(procs), first.UID))
		}
		for _, p := range procs {
			for _, k := range []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters"} {
				if want := first.State[k]; p.status[k] != want {
					why = append(why, fmt.Sprintf("%s: %s %q, want %q as in a call", p.dir, k, p.status[k], want))
				}
			}
			// Its environment is set with putenv, which /proc/PID/environ
			// (the block it was started with) does not show; its working
			// directory is set with it, the function's code.
			if p.cwd != first.State["cwd"] {
				why = append(why, fmt.Sprintf("%s: working directory %q, want %q as in a call", p.dir, p.cwd, first.State["cwd"]))
			}
		}
		if len(why) == 0 {
			return
		}
	}
	t.Errorf("%s's waiting spare: %s", name, strings.Join(why, "; "))
}

// proc is a process's /proc/PID/status, by field, and working directory.
type proc struct {
	dir, cwd string
	status   map[string]string
}

// procsOf lists the processes of uid in cgroups under parent (other
// tests' workers, running in parallel, give their functions the same
// uids).
func procsOf(parent string, uid int) []proc {
	var out []proc
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/status")
		if err != nil {
			continue
		}
		st := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			st[k] = strings.TrimSpace(v)
		}
		if f := strings.Fields(st["Uid"]); len(f) == 0 || f[0] != strconv.Itoa(uid) {
			continue
		}
		if cg, err := os.ReadFile(d + "/cgroup"); err != nil || !strings.Contains(string(cg), "/"+parent+"/") {
			continue
		}
		cwd, _ := os.Readlink(d + "/cwd")
		out = append(out, proc{dir: d, cwd: cwd, status: st})
	}
	return out
}

// TestHomes checks that a function's fork starts enter the user and
// network namespaces its last sandbox left (homes), that no other
// function ever does, that the sandbox's mount, uts and ipc namespaces
// are new and its own (owned by its user namespace; no IPC object of an
// earlier sandbox), that a namespace whose network was used is not kept,
// and that a deleted function's homes go with it.
func TestHomes(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--no-snapshots")
	probe := fn(t, "f.py", homeProbe)
	w.deployDir("ha", probe)
	w.deployDir("hb", probe)
	event := func(e string) float64 {
		return max(metricValue(t, w, `hearth_homes_total{event="`+e+`"}`), 0)
	}
	// Every sandbox here has a home, and leaves it, when it has ended,
	// kept or closed: wait for each to end before the next call, and for
	// the spare made into a home kept, so that what each call finds is
	// known.
	calls := 0.0
	settle := func() {
		t.Helper()
		end := time.Now().Add(20 * time.Second)
		for event("kept")+event("closed") < calls || event("spare") < event("kept") {
			if time.Now().After(end) {
				t.Fatalf("after %v calls: %v homes kept, %v closed, %v spares made into one, %v dropped (see the worker's log)", calls, event("kept"), event("closed"), event("spare"), event("dropped"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	call := func(name, ev string) homeSeen {
		t.Helper()
		asked := time.Now()
		inv := w.mustInvoke(name, ev)
		calls++
		settle()
		if inv.Path != "fork" {
			t.Fatalf("%s: path %s, want fork", name, inv.Path)
		}
		var s homeSeen
		if err := json.Unmarshal(inv.Body, &s); err != nil {
			t.Fatalf("%s: %v: %s", name, err, inv.Body)
		}
		s.asked = asked
		return s
	}
	seen := map[string][]homeSeen{}
	const rounds = 6
	// The first start's sandbox leaves no home (its function was not
	// started again yet); each later one does, and the next start
	// enters it: the same namespaces, round after round. From the third
	// call on, a spare prepared in the home waits for it: the function's
	// only process between calls, already its uid, confined and in its
	// environment; a while later the call finds it has imported nothing.
	for range rounds {
		for _, name := range []string{"ha", "hb"} {
			if l := seen[name]; len(l) >= 2 {
				time.Sleep(150 * time.Millisecond)
				checkPrepared(t, w.cgroup, name, l[0])
			}
			seen[name] = append(seen[name], call(name, "{}"))
		}
	}
	if k, c, tk := event("kept"), event("closed"), event("taken"); k != 2*(rounds-1) || c != 2 || tk != 2*(rounds-2) {
		t.Errorf("homes kept %v, closed %v, taken by a start %v; want %d, 2, %d", k, c, tk, 2*(rounds-1), 2*(rounds-2))
	}
	for name, l := range seen {
		for i, s := range l {
			if s.Shm != "made" {
				t.Errorf("%s call %d: System V segment: %s, want made (a new IPC namespace)", name, i, s.Shm)
			}
			if !s.LoUp {
				t.Errorf("%s call %d: loopback is down", name, i)
			}
			if s.UID != l[0].UID {
				t.Errorf("%s call %d: uid %d, want %d", name, i, s.UID, l[0].UID)
			}
			for _, k := range []string{"mnt", "uts", "ipc", "net"} {
				if o, ok := s.Owners[k].(float64); !ok || uint64(o) != s.User {
					t.Errorf("%s call %d: its %s namespace's owner is %v, want its user namespace %d", name, i, k, s.Owners[k], s.User)
				}
			}
			// A spare in a home has arrived (code mounted, ids, filters,
			// environment) ahead of need, but imports nothing before
			// its start: the same process state as a plain start's,
			// and the module loaded after the call was made.
			if !reflect.DeepEqual(s.State, l[0].State) {
				t.Errorf("%s call %d: process state differs from call 0's:\n%v\nwant\n%v", name, i, s.State, l[0].State)
			}
			if loaded := time.Unix(0, int64(s.Loaded*1e9)); loaded.Before(s.asked.Add(-time.Millisecond)) {
				t.Errorf("%s call %d: module imported at %v, before the call at %v", name, i, loaded, s.asked)
			}
			if i >= 2 && (s.Net != l[1].Net || s.User != l[1].User) {
				t.Errorf("%s call %d: namespaces net %d user %d, want the home of call 1 (net %d user %d)", name, i, s.Net, s.User, l[1].Net, l[1].User)
			}
		}
	}
	a, b := seen["ha"], seen["hb"]
	if a[0].UID == b[0].UID {
		t.Fatalf("both functions run as uid %d", a[0].UID)
	}
	// Both homes are alive between calls, so their numbers differ unless
	// one function entered the other's.
	for i := 1; i < rounds; i++ {
		for j := 1; j < rounds; j++ {
			if a[i].Net == b[j].Net || a[i].User == b[j].User {
				t.Fatalf("ha call %d and hb call %d share namespaces: %+v %+v", i, j, a[i], b[j])
			}
		}
	}

	// Deployed again with other code, hb's prepared spares go: its next
	// start runs the new code, from no home.
	before := event("taken")
	w.deployDir("hb", fn(t, "f.py", strings.Replace(homeProbe, `"state": state()}`, `"state": state(), "mark": 1}`, 1)))
	for end := time.Now().Add(20 * time.Second); len(procsOf(w.cgroup, b[0].UID)) > 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("hb deployed again: %d processes of its uid remain (its spare prepared for the earlier code)", len(procsOf(w.cgroup, b[0].UID)))
		}
	}
	if s := call("hb", "{}"); s.Mark != 1 {
		t.Errorf("hb deployed again ran its old code: %+v", s)
	}
	if got := event("taken"); got != before {
		t.Errorf("hb deployed again took a spare in a home (%v taken, %v before)", got, before)
	}

	// A sandbox whose network was used leaves no home: hc's third call,
	// in the home its second left, sends a datagram.
	w.deployDir("hc", probe)
	kept, closed := event("kept"), event("closed")
	call("hc", "{}") // its namespaces are closed: hc was not started before
	c := call("hc", "{}")
	if got := call("hc", `{"net": true}`); got.Net != c.Net {
		t.Fatalf("hc's third call is not in the home its second left: net %d, want %d", got.Net, c.Net)
	}
	if k, cl := event("kept"), event("closed"); k != kept+1 || cl != closed+2 {
		t.Errorf("after hc used its network: %v homes kept, %v closed; want %v, %v", k, cl, kept+1, closed+2)
	}

	// Deleted, its homes and their spares go: the function deployed
	// again under its name (and uid) starts anew.
	if err := w.c.Delete(t.Context(), "ha"); err != nil {
		t.Fatal(err)
	}
	w.deployDir("ha", probe)
	before = event("taken")
	s := call("ha", "{}")
	if s.UID != a[0].UID {
		t.Fatalf("deployed again, ha runs as uid %d, not %d: this test needs the same uid", s.UID, a[0].UID)
	}
	if got := event("taken"); got != before {
		t.Errorf("ha deployed again took a spare in a home (%v taken, %v before)", got, before)
	}
	w.stop()
	w.assertClean()
}

// TestHomeSpareDeadFallsBack checks that a start whose home holds a
// prepared spare that died waiting takes one of its node's plain spares
// rather than forking on demand, and still runs in a sandbox of its own.
func TestHomeSpareDeadFallsBack(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--no-snapshots")
	w.deployDir("hf", fn(t, "f.py", homeProbe))
	metric := func(m string) float64 { return max(metricValue(t, w, m), 0) }
	call := func() homeSeen {
		t.Helper()
		inv := w.mustInvoke("hf", "{}")
		if inv.Path != "fork" {
			t.Fatalf("path %s, want fork", inv.Path)
		}
		var s homeSeen
		if err := json.Unmarshal(inv.Body, &s); err != nil {
			t.Fatalf("%v: %s", err, inv.Body)
		}
		return s
	}
	// The second call's sandbox leaves a home; a spare is prepared in it.
	// The first's leaves none, once it has ended (waited for: ended
	// after the second start, it would leave a second home).
	first := call()
	for end := time.Now().Add(20 * time.Second); metric(`hearth_homes_total{event="closed"}`) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the first call's sandbox did not end")
		}
	}
	second := call()
	for end := time.Now().Add(20 * time.Second); metric(`hearth_homes_total{event="spare"}`) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("no spare was made into the home the second call left")
		}
	}
	checkPrepared(t, w.cgroup, "hf", first)
	procs := procsOf(w.cgroup, first.UID)
	if len(procs) != 1 {
		t.Fatalf("%d processes of hf's uid between calls, want its prepared spare alone", len(procs))
	}
	pid, err := strconv.Atoi(filepath.Base(procs[0].dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The dead spare is still counted ready (the worker finds it dead
	// when a start takes it); wait for a plain one beside it.
	for end := time.Now().Add(20 * time.Second); len(procsOf(w.cgroup, first.UID)) > 0 || metric(`hearth_zygote_spares{node="root"}`) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d processes of hf's uid, %v spares ready", len(procsOf(w.cgroup, first.UID)), metric(`hearth_zygote_spares{node="root"}`))
		}
	}
	starts, taken, dropped := metric("hearth_spare_starts_total"), metric(`hearth_homes_total{event="taken"}`), metric(`hearth_homes_total{event="dropped"}`)
	third := call()
	if got := metric("hearth_spare_starts_total"); got != starts+1 {
		t.Errorf("spare starts %v after the home's spare died, want %v: the start forked on demand", got, starts+1)
	}
	if got := metric(`hearth_homes_total{event="taken"}`); got != taken {
		t.Errorf("homes taken %v, want %v: a dead spare started the function", got, taken)
	}
	// The dead spare's home goes with it (discarded in the background).
	for end := time.Now().Add(20 * time.Second); metric(`hearth_homes_total{event="dropped"}`) != dropped+1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("homes dropped %v, want %v: the dead spare's home was not closed", metric(`hearth_homes_total{event="dropped"}`), dropped+1)
		}
	}
	if third.Net == second.Net || third.User == second.User || third.UID != first.UID {
		t.Errorf("third call: net %d user %d uid %d; want other namespaces than the home's (net %d user %d), uid %d", third.Net, third.User, third.UID, second.Net, second.User, first.UID)
	}
	if !reflect.DeepEqual(third.State, first.State) {
		t.Errorf("third call's process state differs from the first's:\n%v\nwant\n%v", third.State, first.State)
	}
	w.stop()
	w.assertClean()
}
