package e2e

import "testing"

// cacheProbe reports whether the handler's module and the runtime's have
// bytecode caches for the Python that runs them.
const cacheProbe = `
import importlib.util, os, sys
def f(e):
    rt = sys.modules["hearthrt"].__file__
    return {"handler": os.path.exists(importlib.util.cache_from_source(__file__)),
            "runtime": os.path.exists(importlib.util.cache_from_source(rt)),
            "version": sys.version_info[:2]}
`

// TestBytecodeForTheSandboxPython checks that deploy and start-up compile
// bytecode with the base image's Python, not the host's: a cache for
// another version would be ignored, and every start would compile.
func TestBytecodeForTheSandboxPython(t *testing.T) {
	w := startWorker(t)
	w.deployDir("cached", fn(t, "f.py", cacheProbe))
	m := decode(t, w.mustInvoke("cached", "{}").Body)
	if m["handler"] != true || m["runtime"] != true {
		t.Errorf("bytecode caches for Python %v: %v", m["version"], m)
	}
}
