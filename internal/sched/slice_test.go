package sched

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestSetSliceInherited: every thread gets the slice, and the processes
// started afterwards have it too; a process set from outside passes it
// to its forks.
func TestSetSliceInherited(t *testing.T) {
	err := SetSlice(200 * time.Microsecond)
	if err != nil {
		t.Fatalf("SetSlice: %v", err)
	}
	if got, err := Slice(0); err != nil || got != 200*time.Microsecond {
		t.Fatalf("Slice = %v, %v; want 200µs", got, err)
	}
	// A process this one starts inherits it, across fork and exec.
	got, err := exec.Command("python3", "-c", `
import ctypes, struct
buf = ctypes.create_string_buffer(56)
assert ctypes.CDLL(None).syscall(315, 0, buf, 56, 0) == 0
print(struct.unpack_from("Q", buf.raw, 24)[0])`).CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "200000" {
		t.Errorf("started process: slice %q ns (%v), want 200000", got, err)
	}
	// A process set from outside: its fork reads its own slice back
	// (sched_getattr, sched_runtime at offset 24).
	cmd := exec.Command("python3", "-c", `
import ctypes, os, struct, sys
sys.stdin.readline()
def mine():
    buf = ctypes.create_string_buffer(56)
    assert ctypes.CDLL(None).syscall(315, 0, buf, 56, 0) == 0
    return struct.unpack_from("Q", buf.raw, 24)[0]
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, b"%d" % mine())
    os._exit(0)
os.close(w)
print(mine(), os.read(r, 64).decode())`)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := SetProcessSlice(cmd.Process.Pid, 300*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("go\n"))
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v: %s", err, out.String())
	}
	if got := strings.Fields(out.String()); len(got) != 2 || got[0] != "300000" || got[1] != "300000" {
		t.Errorf("process and its fork: slices %q ns, want 300000 twice", out.String())
	}
	if err := SetSlice(time.Millisecond * 500); err == nil {
		t.Errorf("SetSlice(500ms): no error")
	}
}
