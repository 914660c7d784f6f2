package e2e

import (
	"fmt"
	"testing"

	"github.com/hearth-run/hearth/internal/sandbox"
)

// tmpWriter writes event["mb"] MiB to /tmp and says how it went, with
// /tmp's size and free space (MiB) as the function sees them: the free
// space of an empty /tmp is its tmp_mb, give or take ext4's metadata.
const tmpWriter = `
import errno, os
def f(e):
    st = os.statvfs("/tmp")
    size, free = st.f_blocks * st.f_frsize >> 20, st.f_bavail * st.f_frsize >> 20
    res, written = "ok", 0
    chunk = b"x" * (1 << 20)
    try:
        with open("/tmp/data", "wb") as fh:
            for _ in range(e["mb"]):
                fh.write(chunk)
                written += 1
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as x:
        res = errno.errorcode.get(x.errno, str(x.errno))
    finally:
        if os.path.exists("/tmp/data"):
            os.remove("/tmp/data")
    return {"res": res, "written": written, "size": size, "free": free}
`

// TestTmpOnDisk: a function's /tmp is its tmp_mb (512 by default) on
// disk, not in its memory: 200 MB fit with memory_mb 128; writing more
// than tmp_mb fails with ENOSPC inside the function; tmp_storage: memory
// keeps a tmpfs, counted against memory. Every /tmp goes with the worker,
// after a crash too (assertClean checks mounts and loop devices).
func TestTmpOnDisk(t *testing.T) {
	// No snapshots: CRIU is not what this tests, and dumps can hang (being
	// fixed apart).
	w := startWorker(t, "--no-snapshots")
	w.deployDir("bigtmp", fn(t, "f.py", tmpWriter))
	w.deployDir("smalltmp", fn(t, "f.py", tmpWriter, "function.yaml", "tmp_mb: 64\n"))
	w.deployDir("memtmp", fn(t, "f.py", tmpWriter, "function.yaml", "tmp_mb: 256\ntmp_storage: memory\nmemory_mb: 64\n"))

	check := func(name string, mb int, res string, size int) {
		t.Helper()
		inv := w.mustInvoke(name, fmt.Sprintf(`{"mb": %d}`, mb))
		m := decode(t, inv.Body)
		if free := m["free"].(float64); m["res"] != res || free > float64(size) || free < float64(size)*0.96 {
			t.Errorf("%s writing %d MiB (%s start): %v, want %s in a /tmp of about %d MiB",
				name, mb, inv.Path, m, res, size)
		}
	}
	for range 2 { // a new sandbox, then the warm one
		check("bigtmp", 200, "ok", 512)
	}
	check("smalltmp", 60, "ok", 64)
	check("smalltmp", 65, "ENOSPC", 64)
	check("bigtmp", 513, "ENOSPC", 512)
	if left := sandbox.LoopDevicesUnder(w.dataDir); len(left) == 0 {
		t.Error("no loop device backs a /tmp while the worker runs")
	}

	// In memory, /tmp counts against memory_mb: 100 MiB in a 64 MiB
	// sandbox is out of memory.
	if _, err := w.invoke("memtmp", `{"mb": 100}`); !isStatus(err, 502) {
		t.Errorf("memtmp writing 100 MiB: %v, want 502 (out of memory)", err)
	}
	check("memtmp", 20, "ok", 256)

	// A crash: the worker's descriptors close with it, but paused
	// sandboxes stay frozen, holding their /tmp, until the next start
	// kills them; it also sweeps the images left in the data dir. After
	// it stops, nothing may be left.
	w.crash()
	w.start()
	check("bigtmp", 200, "ok", 512)
	w.stop()
	w.assertClean()
}

// tmpLister lists /tmp (but the runtime's socket) and its free space as
// the function sees them, then leaves a file of event["tag"] in it.
const tmpLister = `
import os, socket, stat
def f(e):
    names = sorted(n for n in os.listdir("/tmp") if not stat.S_ISSOCK(os.lstat("/tmp/" + n).st_mode))
    st = os.statvfs("/tmp")
    with open("/tmp/secret-" + e["tag"], "w") as fh:
        fh.write("tenant " + e["tag"])
    os.mkdir("/tmp/dir-" + e["tag"])
    return {"names": names, "free": st.f_bfree, "files": st.f_ffree, "mode": oct(os.stat("/tmp").st_mode & 0o7777)}
`

// TestTmpReuse: with every sandbox torn down after its call, the worker
// reuses their /tmp file systems, emptied, and no function ever sees a
// file another left, or less free space or fewer inodes than the first.
func TestTmpReuse(t *testing.T) {
	if err := sandbox.ProbeReuse(); err != nil {
		t.Skipf("/tmp file systems are not reused on this kernel: %v", err)
	}
	w := startWorker(t, "--no-snapshots", "--no-warm-cache")
	w.deployDir("tenant-a", fn(t, "f.py", tmpLister))
	w.deployDir("tenant-b", fn(t, "f.py", tmpLister))
	var first map[string]any
	for i := range 12 {
		name := []string{"tenant-a", "tenant-b"}[i%2]
		inv := w.mustInvoke(name, fmt.Sprintf(`{"tag": "%s-%d"}`, name, i))
		m := decode(t, inv.Body)
		if names := m["names"].([]any); len(names) != 0 {
			t.Fatalf("call %d (%s, %s start) found %v in its new /tmp", i, name, inv.Path, names)
		}
		if first == nil {
			first = m
		} else if m["free"] != first["free"] || m["files"] != first["files"] || m["mode"] != "0o1777" {
			t.Errorf("call %d (%s start): /tmp %v, the first saw %v", i, inv.Path, m, first)
		}
	}
	reused := metricValue(t, w, `hearth_scratch_filesystems_total{outcome="reused"}`)
	if made := metricValue(t, w, `hearth_scratch_filesystems_total{outcome="made"}`); reused < 6 || made < 1 {
		t.Errorf("/tmp file systems over 12 starts: %v made, %v reused; want at least half reused", made, reused)
	}
	w.stop()
	w.assertClean()
}
