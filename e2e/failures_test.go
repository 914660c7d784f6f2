package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-run/hearth/internal/client"
)

// TestExitStatusReported: a handler that exits, or is killed by a signal,
// fails its call with that exit status or signal in the message, on every
// start path, and the function serves again afterwards.
func TestExitStatusReported(t *testing.T) { modes(t, testExitStatus, noSnapshots) }

// noSnapshots keeps function snapshots out of tests about something else:
// a background CRIU dump can hang on a host where CRIU misbehaves, and
// the worker's stop with it.
const noSnapshots = "--no-snapshots"

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
	lt, err := w.c.Logs(t.Context(), "quits", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range lt.Lines {
		lines = append(lines, l.Text)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "about to exit") {
		t.Errorf("output before sys.exit lost; logs: %q", lines)
	}
}

// TestNonFiniteResultIsAnError: JSON has no NaN or Infinity, so a handler
// returning one fails its call with Lambda's marshal error instead of
// answering 200 with a body no JSON parser reads.
func TestNonFiniteResultIsAnError(t *testing.T) {
	w := startWorker(t, noSnapshots)
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

// TestFunctionNamesAsLambda: names take Lambda's rule (letters of either
// case, digits, "_" and "-", up to 64); two names that differ only in
// case are two functions, each with its own code, logs and sandboxes,
// and both survive a restart. A name no function has, valid or not, is
// not found (404).
func TestFunctionNamesAsLambda(t *testing.T) {
	w := startWorker(t, noSnapshots)
	// The CLI keeps the directory's case.
	dir := filepath.Join(t.TempDir(), "MyFunc")
	if err := os.CopyFS(dir, os.DirFS(fn(t, "f.py", "def f(e):\n    print('upper ran')\n    return 'upper'\n"))); err != nil {
		t.Fatal(err)
	}
	if out, err := w.hearth("deploy", dir); err != nil || !strings.Contains(out, "deployed MyFunc ") {
		t.Fatalf("deploy MyFunc: %v\n%s", err, out)
	}
	w.deployDir("myfunc", fn(t, "f.py", "def f(e):\n    print('lower ran')\n    return 'lower'\n"))
	long := strings.Repeat("Ab_-", 16)
	w.deployDir(long, fn(t, "f.py", "def f(e):\n    return 'long'\n"))
	check := func() {
		t.Helper()
		for name, want := range map[string]string{"MyFunc": `"upper"`, "myfunc": `"lower"`, long: `"long"`} {
			if inv := w.mustInvoke(name, "{}"); string(inv.Body) != want {
				t.Errorf("%s answered %s, want %s", name, inv.Body, want)
			}
		}
	}
	check()
	check() // warm
	lt, err := w.c.Logs(t.Context(), "MyFunc", 100, 0)
	var lines []string
	if err == nil {
		for _, l := range lt.Lines {
			lines = append(lines, l.Text)
		}
	}
	if err != nil || !slices.Contains(lines, "upper ran") || slices.Contains(lines, "lower ran") {
		t.Errorf("MyFunc logs %q (%v): want its own output only", lines, err)
	}
	out, err := w.hearth("ls")
	if err != nil || !strings.Contains(out, "MyFunc") || !strings.Contains(out, "myfunc") {
		t.Errorf("ls: %v\n%s", err, out)
	}
	for _, name := range []string{"NoSuchFunction", "bad.name", "x%20y", strings.Repeat("a", 65)} {
		_, err := w.invoke(name, "{}")
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 404 || e.Type != "NotFound" {
			t.Errorf("invoke %q: %v, want 404 NotFound", name, err)
		}
	}
	w.stop()
	w.start()
	check()
	if err := w.c.Delete(t.Context(), "myfunc"); err != nil {
		t.Fatal(err)
	}
	if inv := w.mustInvoke("MyFunc", "{}"); string(inv.Body) != `"upper"` {
		t.Errorf("after deleting myfunc, MyFunc answered %s", inv.Body)
	}
	if _, err := w.invoke("myfunc", "{}"); !isStatus(err, 404) {
		t.Errorf("deleted myfunc: %v", err)
	}
}

// TestInvokeVerboseShowsFailedInit: `hearth invoke -v` of a function whose
// handler does not load says that init failed, and why, not init=0.
func TestInvokeVerboseShowsFailedInit(t *testing.T) {
	w := startWorker(t, noSnapshots)
	w.deployDir("badimport", fn(t, "f.py", "import no_such_module\ndef f(e):\n    return 1\n"))
	w.deployDir("good", fn(t, "f.py", "def f(e):\n    return 1\n"))
	out, err := w.hearth("invoke", "-v", "badimport")
	if err == nil {
		t.Fatalf("invoke of a handler that does not import succeeded:\n%s", out)
	}
	if !strings.Contains(out, "init=failed after ") ||
		!strings.Contains(out, "(Runtime.ImportModuleError: Unable to import module 'f': No module named 'no_such_module')") ||
		strings.Contains(out, "init=0.000ms") || strings.Contains(out, "run=0") {
		t.Errorf("invoke -v of a failed init:\n%s", out)
	}
	inv, _ := w.invoke("badimport", "{}")
	if inv.InitError != "Runtime.ImportModuleError" || inv.InitMs <= 0 {
		t.Errorf("failed init: InitError %q InitMs %v", inv.InitError, inv.InitMs)
	}
	out, err = w.hearth("invoke", "-v", "good")
	if err != nil || !strings.Contains(out, "init=") || strings.Contains(out, "failed") || !strings.Contains(out, "run=") {
		t.Errorf("invoke -v of a good function: %v\n%s", err, out)
	}
}

// TestNoHostPathsInResponses deploys and invokes broken functions and
// reads every management endpoint: no response, body or header, names
// the worker's data dir, its base image or its binaries.
func TestNoHostPathsInResponses(t *testing.T) {
	w := startWorker(t, noSnapshots, "--no-index", "--find-links", t.TempDir())
	hostPaths := []string{w.dataDir, testBase, binDir}
	check := func(what string, resp *http.Response, body []byte) {
		t.Helper()
		all := string(body)
		for k, vs := range resp.Header {
			all += "\n" + k + ": " + strings.Join(vs, ", ")
		}
		for _, p := range hostPaths {
			if strings.Contains(all, p) {
				t.Errorf("%s (HTTP %d) reveals %s:\n%s", what, resp.StatusCode, p, all)
			}
		}
	}
	do := func(method, path string, body []byte) (int, []byte) {
		t.Helper()
		resp, err := w.do(method, path, "", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		check(method+" "+path, resp, b)
		return resp.StatusCode, b
	}
	deploy := func(name string, entries ...entry) int {
		t.Helper()
		code, _ := do("PUT", "/v1/functions/"+name, tarGz(t, entries...))
		return code
	}
	handler := func(src string) entry { return entry{name: "f.py", body: src} }

	if code := deploy("good", handler("def f(e):\n    return 1\n")); code != 200 {
		t.Fatalf("deploy good: %d", code)
	}
	// Deploys that fail.
	for name, entries := range map[string][]entry{
		"noreq":     {handler("def f(e):\n    return 1\n"), {name: "requirements.txt", body: "no-such-package==1.0\n"}},
		"badyaml":   {handler("def f(e):\n    return 1\n"), {name: "function.yaml", body: "memory_mb: [1\n"}},
		"nomodule":  {{name: "g.py", body: "x = 1\n"}},
		"unsafe":    {handler(""), {name: "../escape", body: "x"}},
		"yamldir":   {handler(""), {name: "function.yaml", typ: '5'}},
		"truncated": nil,
	} {
		if code := deploy(name, entries...); code < 400 {
			t.Errorf("deploy %s: HTTP %d, want an error", name, code)
		}
	}
	// Functions that fail when invoked, each in its own way.
	broken := map[string][]entry{
		"importerror":  {handler("import no_such_module\ndef f(e):\n    return 1\n")},
		"exitatimport": {handler("import os\nos._exit(4)\n")},
		"crash":        {handler("import os\ndef f(e):\n    os.kill(os.getpid(), 11)\n")},
		"exits":        {handler("import sys\ndef f(e):\n    sys.exit(3)\n")},
		"raises":       {handler("def f(e):\n    raise ValueError(open('/proc/self/cmdline').read())\n")},
		"nan":          {handler("def f(e):\n    return float('nan')\n")},
		"slow":         {handler("import time\ndef f(e):\n    time.sleep(5)\n"), {name: "function.yaml", body: "timeout_s: 1\n"}},
		"bomb": {handler("def f(e):\n    b = []\n    while True:\n        b.append(bytearray(4 << 20))\n"),
			{name: "function.yaml", body: "memory_mb: 32\n"}},
	}
	for name, entries := range broken {
		if code := deploy(name, entries...); code != 200 {
			t.Fatalf("deploy %s: HTTP %d", name, code)
		}
	}
	for name := range broken {
		for range 2 { // a fresh start, then whatever comes next
			if code, body := do("POST", "/v1/functions/"+name+"/invoke", []byte("{}")); code < 400 {
				t.Errorf("invoke %s: HTTP %d %s, want an error", name, code, body)
			}
		}
		do("GET", "/v1/functions/"+name+"/logs", nil)
		do("GET", "/v1/functions/"+name, nil)
		do("POST", "/v1/functions/"+name+"/snapshot", nil)
	}
	for _, p := range []string{"/v1/functions", "/v1/functions/good", "/v1/status", "/v1/zygotes",
		"/v1/packages", "/v1/snapshots", "/v1/functions/nosuch/logs", "/metrics"} {
		do("GET", p, nil)
	}
	do("DELETE", "/v1/snapshots/..%2F..%2Fetc", nil)
	do("POST", "/v1/functions/nosuch/invoke", []byte("{}"))
	do("POST", "/run/good", []byte("{not json"))
	do("DELETE", "/v1/functions/good", nil)
	// The details are in the worker's log.
	found := false
	for _, l := range strings.Split(w.out.String(), "\n") {
		// The runtime's socket is reached through a descriptor of the
		// sandbox's /tmp, which is mounted in the sandbox only.
		found = found || strings.Contains(l, "runtime did not start") && strings.Contains(l, "sandbox=") && strings.Contains(l, "err=")
	}
	if !found {
		t.Errorf("the worker's log lacks the failed start's details")
	}
}

// TestMemoryBombsAreAlwaysOOM: every memory bomb, run again and again on
// every start path, is reported as out of memory (502 OutOfMemory), never
// as a sandbox crash: the kernel's OOM kill and the worker's reading of
// it race, and the worker must wait for the evidence.
func TestMemoryBombsAreAlwaysOOM(t *testing.T) { modes(t, testMemoryBombs, noSnapshots) }

func testMemoryBombs(t *testing.T, w *worker, path string) {
	w.deployDir("bomb", fn(t,
		"f.py", `
def f(e):
    blocks = []
    while True:
        blocks.append(bytearray(e.get("step", 8) << 20))
`,
		"function.yaml", "memory_mb: 64\nmax_concurrency: 2\n"))
	const rounds = 10
	for i := range rounds {
		step := []int{8, 1, 32}[i%3] // big and small allocations
		_, err := w.invoke("bomb", fmt.Sprintf(`{"step": %d}`, step))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 502 || e.Type != "OutOfMemory" || !strings.Contains(e.Message, "64 MB") {
			t.Errorf("bomb %d (%d MiB steps): %v, want 502 OutOfMemory naming the 64 MB limit", i, step, err)
		}
	}
	// Two at once, twice.
	for range 2 {
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := w.invoke("bomb", `{"step": 4}`)
				var e *client.Error
				if !errors.As(err, &e) || e.Type != "OutOfMemory" {
					t.Errorf("concurrent bomb: %v, want OutOfMemory", err)
				}
			}()
		}
		wg.Wait()
	}
}
