package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// openDisks opens Disks in a fresh dir for e's factory; at the end of the
// test it closes them and checks that no loop device is left.
func openDisks(t testing.TB, e *env, ready int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disks")
	d, err := sandbox.OpenDisks(dir, sandbox.DisksConfig{Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	e.f.Disks = d
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		waitNoLoops(t, dir)
	})
	return dir
}

// waitNoLoops waits until no loop device is backed by a file in dir: a
// device goes once its file system's last user has.
func waitNoLoops(t testing.TB, dir string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		left := sandbox.LoopDevicesUnder(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("loop devices left backed by %s: %v", dir, left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scratchProbe reports /tmp's file system type, size and free space, then
// writes the given MiB to /tmp/f and reports how it went.
const scratchProbe = `
import errno, os, sys
mnt = [l.split() for l in open("/proc/self/mountinfo")]
tmp = [m for m in mnt if m[4] == "/tmp"][0]
fstype = tmp[tmp.index("-") + 1]
st = os.statvfs("/tmp")
total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
res = "ok"
try:
    with open("/tmp/f", "wb") as f:
        for _ in range(int(sys.argv[1])):
            f.write(b"x" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())
except OSError as e:
    res = errno.errorcode.get(e.errno, str(e.errno))
print(fstype, tmp[tmp.index("-") + 2], total, free, res, os.stat("/tmp").st_mode & 0o7777, sorted(os.listdir("/tmp")))
`

func runProbe(t *testing.T, e *env, id string, cfg sandbox.Config, mb int) string {
	t.Helper()
	return runPython(t, e, id, cfg, scratchProbe, fmt.Sprint(mb))
}

// runPython runs a Python program in a new sandbox of cfg, as its main
// process, and returns what it printed once it exited 0.
func runPython(t *testing.T, e *env, id string, cfg sandbox.Config, prog string, args ...string) string {
	t.Helper()
	g, err := e.cg.Create(id, cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(context.Background())
	var out strings.Builder
	cfg.ID, cfg.Group, cfg.Stdout, cfg.Stderr, cfg.Socket = id, g, &out, &out, "s.sock"
	cfg.Command = append([]string{"/usr/bin/python3", "-S", "-c", prog}, args...)
	sb, err := e.f.Create(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	select {
	case <-sb.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("main process did not exit")
	}
	if n, _ := g.OOMKills(); n > 0 || sb.ExitStatus() != 0 {
		t.Fatalf("exit %d, OOM kills %d: %s", sb.ExitStatus(), n, out.String())
	}
	return strings.TrimSpace(out.String())
}

// TestDiskScratch: an on-disk /tmp is ext4 on a loop device, holds about
// its size and not a byte more (ENOSPC), takes more than the sandbox's
// memory limit without an OOM kill, is in no mount namespace but the
// sandbox's, and goes back to the reserve or, loop device and all, away
// with the sandbox.
func TestDiskScratch(t *testing.T) {
	e := setup(t)
	dir := openDisks(t, e, 1)
	const mb = 32
	cfg := sandbox.Config{ScratchDisk: true, ScratchBytes: mb << 20}

	f := strings.Fields(runProbe(t, e, "full", cfg, mb+1))
	if len(f) < 7 || f[0] != "ext4" || !strings.HasPrefix(f[1], "/dev/loop") || f[4] != "ENOSPC" || f[5] != "1023" {
		t.Fatalf("probe: %q, want ext4 on a loop device, mode 1777, ENOSPC writing %d MiB", f, mb+1)
	}
	var total, free int64
	fmt.Sscan(f[2], &total)
	fmt.Sscan(f[3], &free)
	if free > mb<<20 || free < (mb<<20)*97/100 || total > (mb+2)<<20 {
		t.Errorf("/tmp has %d bytes free of %d, want at most %d and within 3%%", free, total, mb<<20)
	}
	// Twice the memory limit of 64 MiB: page cache, written back and
	// reclaimed, not tmpfs memory the cgroup must hold.
	big := sandbox.Config{ScratchDisk: true, ScratchBytes: 256 << 20}
	if got := strings.Fields(runProbe(t, e, "big", big, 128)); len(got) < 5 || got[4] != "ok" {
		t.Errorf("writing 128 MiB into a 256 MiB /tmp with 64 MiB of memory: %q", got)
	}

	// A holder: the file system is in the sandbox's mount namespace only
	// (where init's chroot shows it at /tmp), and its loop device goes
	// with the sandbox.
	sb, err := e.f.Create(context.Background(), sandbox.Config{ID: "holder", ScratchDisk: true, ScratchBytes: mb << 20, Socket: "s.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	if _, err := os.Stat(sb.SocketPath("s.sock")); err != nil {
		t.Errorf("socket: %v", err)
	}
	inside, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", sb.InitPid()))
	if err != nil {
		t.Fatal(err)
	}
	var dev string
	for _, l := range strings.Split(string(inside), "\n") {
		if m := strings.Fields(l); len(m) > 4 && m[4] == "/tmp" {
			dev = m[slices.Index(m, "-")+2]
		}
	}
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("no loop device at the holder's /tmp:\n%s", inside)
	}
	host, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(host), " "+dev+" ") {
		t.Errorf("%s is mounted in the host's mount namespace", dev)
	}
	if !slices.Contains(sandbox.LoopDevicesUnder(dir), dev) {
		t.Errorf("%s is not backed by an image in %s: %v", dev, dir, sandbox.LoopDevicesUnder(dir))
	}
	// After it, the file system is either back in the reserve, emptied
	// (TestDiskReuse), or gone with its loop device.
	before := e.f.Disks.Stats()
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.f.Disks.Reuse() == nil {
		if st := e.f.Disks.Stats(); st.Reused != before.Reused+1 {
			t.Errorf("the holder's file system: %+v, then %+v; want it reused", before, st)
		}
		return
	}
	deadline := time.Now().Add(20 * time.Second)
	for slices.Contains(sandbox.LoopDevicesUnder(dir), dev) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still attached after Destroy", dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tmpProbe lists /tmp and says which device it is on, then leaves argv[1]
// files there (a secret in each).
const tmpProbe = `
import os, sys
mnt = [l.split() for l in open("/proc/self/mountinfo")]
tmp = [m for m in mnt if m[4] == "/tmp"][0]
st = os.statvfs("/tmp")
print(tmp[tmp.index("-") + 2], tmp[3], sorted(os.listdir("/tmp")), st.f_bfree, st.f_ffree, oct(os.stat("/tmp").st_mode & 0o7777))
for i in range(int(sys.argv[1])):
    with open("/tmp/secret%d" % i, "w") as f:
        f.write("tenant data")
`

// TestDiskReuse: a released on-disk /tmp serves the next sandbox empty,
// the same size and mode, its blocks and inodes all free again; one that
// anything still holds a file of, or that was left with many files, is
// dropped, never reused.
func TestDiskReuse(t *testing.T) {
	e := setup(t)
	openDisks(t, e, 1)
	d := e.f.Disks
	cfg := sandbox.Config{ScratchDisk: true, ScratchBytes: 16 << 20}
	first := strings.Fields(runPython(t, e, "a", cfg, tmpProbe, "3"))
	if d.Reuse() != nil {
		t.Skipf("this kernel cannot reuse a /tmp file system: %v", d.Reuse())
	}
	if len(first) != 6 || !strings.HasPrefix(first[0], "/dev/loop") || first[1] != "/tmp" || first[2] != "['s.sock']" || first[5] != "0o1777" {
		t.Fatalf("first sandbox's /tmp: %q, want a loop device's tmp with only the socket, mode 1777", first)
	}
	if st := d.Stats(); st.Reused < 1 || st.Dropped != 0 {
		t.Fatalf("after one sandbox: %+v, want its file system reused", st)
	}
	// The next sandbox gets the same file system (the reserve holds it),
	// with none of the first's files, and every block and inode as free.
	second := strings.Fields(runPython(t, e, "b", cfg, tmpProbe, "0"))
	if len(second) != 6 || second[0] != first[0] || !slices.Equal(second[2:], first[2:]) {
		t.Fatalf("second sandbox's /tmp: %q, want %q again (the same device, empty)", second, first)
	}

	// A file of it still open: dropped.
	before := d.Stats()
	g, err := e.cg.Create("held", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(context.Background())
	sb, err := e.f.Create(context.Background(), sandbox.Config{ID: "held", Group: g, ScratchDisk: true, ScratchBytes: 16 << 20,
		Command: []string{"/bin/sh", "-c", "echo x > /tmp/kept"}})
	if err != nil {
		t.Fatal(err)
	}
	<-sb.Done()
	held, err := os.Open(filepath.Join(sb.Scratch(), "kept"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	held.Close()
	if st := d.Stats(); st.Dropped != before.Dropped+1 || st.Reused != before.Reused {
		t.Errorf("with a file still open: %+v, then %+v; want it dropped", before, st)
	}

	// Many files left, or one file under many names: dropped rather
	// than emptied.
	before = d.Stats()
	runPython(t, e, "many", cfg, tmpProbe, "100")
	if st := d.Stats(); st.Dropped != before.Dropped+1 || st.Reused != before.Reused {
		t.Errorf("with 100 files left: %+v, then %+v; want it dropped", before, st)
	}
	before = d.Stats()
	runPython(t, e, "links", cfg, `
import os
os.mkdir("/tmp/d")
open("/tmp/d/f", "w").close()
for i in range(1000):
    os.link("/tmp/d/f", "/tmp/d/l%d" % i)
`)
	if st := d.Stats(); st.Dropped != before.Dropped+1 || st.Reused != before.Reused {
		t.Errorf("with 1000 hard links left: %+v, then %+v; want it dropped", before, st)
	}
	// And a /tmp whose tree the tenant made deep, with symbolic links to
	// /etc (the host's, seen from the worker), is emptied and reused,
	// nothing outside touched.
	before = d.Stats()
	runPython(t, e, "deep", cfg, `
import os
p = "/tmp"
for i in range(10):
    p += "/d%d" % i
    os.mkdir(p)
    os.symlink("/etc", p + "/etc")
open(p + "/f", "w").close()
`)
	if st := d.Stats(); st.Reused != before.Reused+1 {
		t.Errorf("with a deep tree left: %+v, then %+v; want it reused", before, st)
	}
	third := strings.Fields(runPython(t, e, "c", cfg, tmpProbe, "0"))
	if len(third) != 6 || !slices.Equal(third[2:], first[2:]) {
		t.Errorf("after a deep tree, /tmp: %q, want %q again", third, first)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("/etc/passwd: %v", err)
	}
}

// TestMemoryScratch: a tmpfs /tmp is what it was, sized as asked.
func TestMemoryScratch(t *testing.T) {
	e := setup(t)
	f := strings.Fields(runProbe(t, e, "mem", sandbox.Config{ScratchBytes: 8 << 20}, 9))
	if len(f) < 7 || f[0] != "tmpfs" || f[2] != fmt.Sprint(8<<20) || f[4] != "ENOSPC" || f[5] != "1023" {
		t.Errorf("probe: %q, want an 8 MiB tmpfs, mode 1777, full at 9 MiB", f)
	}
}

// TestSweepDisks: a loop device left backed by an image in the disks
// dir (a crashed worker's) is released by the next OpenDisks.
func TestSweepDisks(t *testing.T) {
	e := setup(t)
	dir := openDisks(t, e, -1)
	sb, err := e.f.Create(context.Background(), sandbox.Config{ID: "left", ScratchDisk: true, ScratchBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(sandbox.LoopDevicesUnder(dir)) != 1 {
		t.Fatalf("loop devices under %s: %v, want the sandbox's", dir, sandbox.LoopDevicesUnder(dir))
	}
	// The sandbox outlives its worker: its device is still in use, and
	// goes when the sandbox does.
	if _, err := sandbox.SweepDisks(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s survived the sweep: %v", dir, err)
	}
	sb.Destroy(context.Background())
	waitNoLoops(t, dir)
}

// BenchmarkScratch measures making a sandbox's /tmp: a tmpfs, an on-disk
// file system taken from the ready reserve, and one made on demand.
func BenchmarkScratch(b *testing.B) {
	for _, mode := range []string{"tmpfs", "disk-ready", "disk-made"} {
		b.Run(mode, func(b *testing.B) {
			e := setup(b)
			cfg := sandbox.Config{ScratchBytes: 512 << 20}
			switch mode {
			case "disk-ready":
				openDisks(b, e, 4)
				cfg.ScratchDisk = true
			case "disk-made":
				openDisks(b, e, -1)
				cfg.ScratchDisk = true
			}
			for i := 0; i < b.N; i++ {
				if mode == "disk-ready" {
					b.StopTimer()
					time.Sleep(30 * time.Millisecond) // the refill catches up
					b.StartTimer()
				}
				cfg.ID = fmt.Sprint("b", i)
				sb, err := e.f.Create(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sb.Destroy(context.Background())
				b.StartTimer()
			}
		})
	}
}
