package e2e

import (
	"errors"
	"strings"
	"testing"

	"github.com/hearth-run/hearth/internal/client"
)

// TestExitStatusReported: a handler that exits, or is killed by a signal,
// fails its call with that exit status or signal in the message, on every
// start path, and the function serves again afterwards.
func TestExitStatusReported(t *testing.T) { modes(t, testExitStatus) }

func testExitStatus(t *testing.T, w *worker, path string) {
	w.deployDir("quits", fn(t, "f.py", `
import os, signal, sys
def f(e):
    if e.get("exit") is not None:
        print("about to exit", flush=False)
        sys.exit(e["exit"])
    if e.get("signal"):
        os.kill(os.getpid(), e["signal"])
    if e.get("hard") is not None:
        os._exit(e["hard"])
    return "alive"
`))
	cases := []struct {
		event, want string
	}{
		{`{"exit": 3}`, "exited with status 3"},
		{`{"hard": 7}`, "exited with status 7"},
		{`{"signal": 11}`, "killed by signal 11 (SIGSEGV)"},
		{`{"signal": 6}`, "killed by signal 6 (SIGABRT)"},
	}
	for _, c := range cases {
		inv, err := w.invoke("quits", c.event)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 502 || e.Type != "SandboxError" || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: err = %v, want 502 SandboxError saying %q", c.event, err, c.want)
			continue
		}
		if inv.Path != path && inv.Path != "warm" {
			t.Errorf("%s: path %s, want %s or warm", c.event, inv.Path, path)
		}
	}
	if inv := w.mustInvoke("quits", "{}"); string(inv.Body) != `"alive"` {
		t.Errorf("after the exits: %s", inv.Body)
	}
	// What the handler printed before sys.exit reaches the function's log.
	lines, err := w.c.Logs(t.Context(), "quits", 100)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "about to exit") {
		t.Errorf("output before sys.exit lost; logs: %q", lines)
	}
}

// TestNonFiniteResultIsAnError: JSON has no NaN or Infinity, so a handler
// returning one fails its call with Lambda's marshal error instead of
// answering 200 with a body no JSON parser reads.
func TestNonFiniteResultIsAnError(t *testing.T) {
	w := startWorker(t)
	w.deployDir("nan", fn(t, "f.py", `
def f(e):
    return {"x": [1.5, float(e["v"])]}
`))
	for _, v := range []string{"nan", "inf", "-inf"} {
		inv, err := w.invoke("nan", `{"v": "`+v+`"}`)
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 500 || e.Type != "Runtime.MarshalError" ||
			!strings.Contains(e.Message, "Out of range float values are not JSON compliant") {
			t.Errorf("%s: body %s err %v, want 500 Runtime.MarshalError", v, inv.Body, err)
		}
	}
	if inv := w.mustInvoke("nan", `{"v": "2.5"}`); string(inv.Body) != `{"x":[1.5,2.5]}` {
		t.Errorf("finite result: %s", inv.Body)
	}
}
