package python

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestReseed runs the module in Debian's python: the signal reseeds
// random (numpy too, if it is installed), runs the hooks in order, and a
// failing hook does not stop the others.
func TestReseed(t *testing.T) {
	dir := t.TempDir()
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	script := `
import os, random, signal, sys
import hearth_snapshot as hs
hs.install()
try:
    import numpy
except ImportError:
    numpy = None
random.seed(42)
if numpy is not None:
    numpy.random.seed(42)
calls = []
hs.after_restore(lambda: calls.append("a"))
def bad():
    raise RuntimeError("boom")
hs.after_restore(bad)
hs.after_restore(lambda: calls.append("c"))
state = random.getstate()
np_state = numpy.random.get_state()[1].tolist() if numpy is not None else None
os.kill(os.getpid(), hs.SIGNAL)
assert hs.restores == 1, hs.restores
assert calls == ["a", "c"], calls
assert random.getstate() != state, "random not reseeded"
if numpy is not None:
    assert numpy.random.get_state()[1].tolist() != np_state, "numpy not reseeded"
print("ok", numpy is not None)
`
	cmd := exec.Command("/usr/bin/python3", "-S", "-c", script)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir+":/usr/lib/python3/dist-packages")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "ok") || !strings.Contains(string(out), "hook bad failed: RuntimeError: boom") {
		t.Fatalf("output:\n%s", out)
	}
	if len(Source()) == 0 {
		t.Fatal("empty embedded source")
	}
}
