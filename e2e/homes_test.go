package e2e

import (
	"encoding/json"
	"testing"
	"time"
)

// homeProbe reports what a sandbox's namespaces hold: the network and
// user namespaces' inode numbers (the kernel reuses a number only once a
// namespace is gone), whether loopback is up, whether a System V segment
// under a fixed key was there already (it would be if the IPC namespace
// outlived a sandbox), and the host name and uid.
const homeProbe = `import ctypes, fcntl, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)

def f(event):
    ns = {k: os.stat("/proc/self/ns/" + k).st_ino for k in ("net", "user")}
    seg = libc.shmget(0x4845, 4096, 0o1000 | 0o2000 | 0o600)  # IPC_CREAT | IPC_EXCL
    shm = "made" if seg >= 0 else os.strerror(ctypes.get_errno())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
    s.close()
    return {"net": ns["net"], "user": ns["user"], "uid": os.getuid(), "host": socket.gethostname(),
            "shm": shm, "lo_up": bool(flags & 1)}
`

type homeSeen struct {
	Net, User uint64
	UID       int
	Host      string
	Shm       string
	LoUp      bool `json:"lo_up"`
}

// TestHomes checks that a function's fork starts enter the user and
// network namespaces its last sandbox left (homes), that no other
// function ever does, that everything else about the sandbox is new
// (IPC objects, host name), and that a deleted function's homes go
// with it.
func TestHomes(t *testing.T) {
	w := startWorker(t, "--no-warm-cache", "--no-snapshots")
	probe := fn(t, "f.py", homeProbe)
	w.deployDir("ha", probe)
	w.deployDir("hb", probe)
	entered := func() float64 { return max(metricValue(t, w, `hearth_homes_total{event="entered"}`), 0) }
	kept := func() float64 { return max(metricValue(t, w, `hearth_homes_total{event="kept"}`), 0) }
	// settle waits until want homes were kept and as many spares made
	// into them: sandboxes end, and spares are made, in the background.
	settle := func(want float64) {
		t.Helper()
		end := time.Now().Add(20 * time.Second)
		for kept() < want || entered() < want {
			if time.Now().After(end) {
				t.Fatalf("%v homes kept and %v entered by a spare, want %v", kept(), entered(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	call := func(name string) homeSeen {
		t.Helper()
		inv := w.mustInvoke(name, "{}")
		if inv.Path != "fork" {
			t.Fatalf("%s: path %s, want fork", name, inv.Path)
		}
		var s homeSeen
		if err := json.Unmarshal(inv.Body, &s); err != nil {
			t.Fatalf("%s: %v: %s", name, err, inv.Body)
		}
		return s
	}
	seen := map[string][]homeSeen{}
	const rounds = 6
	for r := range rounds {
		for _, name := range []string{"ha", "hb"} {
			seen[name] = append(seen[name], call(name))
		}
		// The first start's sandbox leaves no home (its function was not
		// started again yet); each later one does, and the next start
		// enters it: the same namespaces, round after round.
		settle(float64(2 * r))
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
			if i > 0 && s.Host == l[i-1].Host {
				t.Errorf("%s call %d: host name %s again (a new UTS namespace names each sandbox)", name, i, s.Host)
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

	// Deleted, its homes and their spares go: the function deployed
	// again under its name (and uid) starts anew.
	if err := w.c.Delete(t.Context(), "ha"); err != nil {
		t.Fatal(err)
	}
	w.deployDir("ha", probe)
	before := entered()
	s := call("ha")
	if s.UID != a[0].UID {
		t.Fatalf("deployed again, ha runs as uid %d, not %d: this test needs the same uid", s.UID, a[0].UID)
	}
	if got := entered(); got != before {
		t.Errorf("ha deployed again entered a home (%v entered, %v before)", got, before)
	}
	w.stop()
	w.assertClean()
}
