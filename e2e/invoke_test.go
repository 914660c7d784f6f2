package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-run/hearth/internal/client"
)

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return m
}

func TestExamplesColdWarmAndCLI(t *testing.T) {
	w := startWorker(t)
	w.deployDir("hello", "../examples/hello")
	w.deployDir("lambda-style", "../examples/lambda-style")
	w.deployDir("numpy-stats", "../examples/numpy-stats")

	inv := w.mustInvoke("hello", `{"name":"hearth"}`)
	if inv.Path != "fork" {
		t.Errorf("first call path = %q, want fork (from the root zygote)", inv.Path)
	}
	if got := decode(t, inv.Body)["greeting"]; got != "hello, hearth" {
		t.Errorf("greeting = %v", got)
	}
	inv = w.mustInvoke("hello", `{"name":"again"}`)
	if inv.Path != "warm" {
		t.Errorf("second call path = %q, want warm", inv.Path)
	}

	inv = w.mustInvoke("lambda-style", `{"x":1}`)
	m := decode(t, inv.Body)
	// AWS's runtime gives memory_limit_in_mb as a string; accept both.
	if m["function"] != "lambda-style" || fmt.Sprint(m["memory_limit_in_mb"]) != "128" || m["request_id"] == "" {
		t.Errorf("lambda context wrong: %v", m)
	}
	if rem, _ := m["remaining_ms"].(float64); rem <= 0 || rem > 10000 {
		t.Errorf("remaining_ms = %v, want in (0, 10000]", m["remaining_ms"])
	}
	inv = w.mustInvoke("lambda-style", `{"x":2}`)
	if m := decode(t, inv.Body); m["calls_in_this_sandbox"] != float64(2) {
		t.Errorf("warm sandbox did not keep state: %v", m)
	}

	inv = w.mustInvoke("numpy-stats", `{"values":[1,2,3,4,10]}`)
	if m := decode(t, inv.Body); m["mean"] != float64(4) || m["n"] != float64(5) {
		t.Errorf("numpy-stats = %v", m)
	}

	// The CLI, end to end.
	out, err := w.hearth("invoke", "hello", "--data", `{"name":"cli"}`)
	if err != nil || !strings.Contains(out, "hello, cli") {
		t.Errorf("hearth invoke: %v\n%s", err, out)
	}
	out, err = w.hearth("ls")
	if err != nil || !strings.Contains(out, "numpy-stats") || !strings.Contains(out, "lambda-style") {
		t.Errorf("hearth ls: %v\n%s", err, out)
	}
	out, err = w.hearth("logs", "lambda-style")
	if err != nil || !strings.Contains(out, `{"x": 2}`) {
		t.Errorf("hearth logs: %v\n%s", err, out)
	}
	out, err = w.hearth("status")
	if err != nil || !strings.Contains(out, `"cgroup_mode"`) || !strings.Contains(out, `"sandboxes"`) {
		t.Errorf("hearth status: %v\n%s", err, out)
	}
	if out, err = w.hearth("rm", "hello"); err != nil {
		t.Errorf("hearth rm: %v\n%s", err, out)
	}
	if _, err := w.invoke("hello", "{}"); !isStatus(err, 404) {
		t.Errorf("deleted function: err = %v, want 404", err)
	}
}

// fresh reports whether a start path made a new sandbox.
func fresh(path string) bool { return path == "fork" || path == "cold" }

func isStatus(err error, code int) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == code
}

func TestCodeUpdateRetiresOldSandboxes(t *testing.T) {
	w := startWorker(t)
	w.deployDir("upd", fn(t, "f.py", "def f(e):\n    return 'v1'\n"))
	first := w.mustInvoke("upd", "{}")
	if string(first.Body) != `"v1"` {
		t.Fatalf("v1 body = %s", first.Body)
	}
	w.mustInvoke("upd", "{}") // now a paused v1 sandbox is cached
	w.deployDir("upd", fn(t, "f.py", "def f(e):\n    return 'v2'\n"))
	inv := w.mustInvoke("upd", "{}")
	if string(inv.Body) != `"v2"` || !fresh(inv.Path) || inv.Revision == first.Revision {
		t.Errorf("after update: body %s path %s rev %s (old %s)", inv.Body, inv.Path, inv.Revision, first.Revision)
	}
	st, err := w.c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sandboxes {
		if s.Function == "upd" && s.Revision == first.Revision {
			t.Errorf("old revision sandbox still alive: %+v", s)
		}
	}
	// Identical content keeps the revision.
	w.deployDir("upd", fn(t, "f.py", "def f(e):\n    return 'v2'\n"))
	if again := w.mustInvoke("upd", "{}"); again.Revision != inv.Revision || again.Path != "warm" {
		t.Errorf("identical redeploy: rev %s path %s, want %s warm", again.Revision, again.Path, inv.Revision)
	}
}

func TestHandlerExceptionKeepsSandbox(t *testing.T) {
	w := startWorker(t)
	w.deployDir("boom", fn(t, "f.py", `
def f(e):
    if e.get("fail"):
        raise ValueError("bad value: " + str(e["fail"]))
    return "fine"
`))
	_, err := w.invoke("boom", `{"fail": 42}`)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 500 {
		t.Fatalf("err = %v, want HTTP 500", err)
	}
	m := decode(t, ce.Body)
	if m["errorType"] != "ValueError" || m["errorMessage"] != "bad value: 42" {
		t.Errorf("error = %v", m)
	}
	if st, _ := m["stackTrace"].([]any); len(st) == 0 {
		t.Errorf("no stackTrace: %v", m)
	}
	inv := w.mustInvoke("boom", `{}`)
	if string(inv.Body) != `"fine"` || inv.Path != "warm" {
		t.Errorf("after exception: %s via %s, want \"fine\" via warm", inv.Body, inv.Path)
	}
}

func TestTimeoutKillsSandbox(t *testing.T) {
	w := startWorker(t)
	w.deployDir("slow", fn(t,
		"f.py", "import time\ndef f(e):\n    time.sleep(e.get('s', 0))\n    return 'done'\n",
		"function.yaml", "timeout_s: 1\n"))
	_, err := w.invoke("slow", `{"s": 30}`)
	if !isStatus(err, 504) {
		t.Fatalf("err = %v, want 504", err)
	}
	inv := w.mustInvoke("slow", `{"s": 0}`)
	if string(inv.Body) != `"done"` || !fresh(inv.Path) {
		t.Errorf("after timeout: %s via %s, want done via a new sandbox", inv.Body, inv.Path)
	}
}

func TestConcurrencyLimitAndQueue(t *testing.T) {
	w := startWorker(t)
	w.deployDir("conc", fn(t,
		"f.py", "import os, time\ndef f(e):\n    time.sleep(0.5)\n    return os.uname().nodename\n",
		"function.yaml", "max_concurrency: 2\n"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	hosts := map[string]int{}
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv, err := w.invoke("conc", "{}")
			if err != nil {
				t.Errorf("invoke: %v", err)
				return
			}
			mu.Lock()
			hosts[string(inv.Body)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(hosts) > 2 {
		t.Errorf("%d sandboxes served, max_concurrency is 2: %v", len(hosts), hosts)
	}
}

func TestQueueOverflowIs429(t *testing.T) {
	w := startWorker(t, "--config", writeConfig(t, "queue_timeout: 300ms\n"))
	w.deployDir("one", fn(t,
		"f.py", "import time\ndef f(e):\n    time.sleep(2)\n    return 1\n",
		"function.yaml", "max_concurrency: 1\n"))
	var wg sync.WaitGroup
	codes := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := w.invoke("one", "{}")
			codes <- err
		}()
	}
	wg.Wait()
	close(codes)
	ok, throttled := 0, 0
	for err := range codes {
		switch {
		case err == nil:
			ok++
		case isStatus(err, 429):
			throttled++
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 || throttled != 2 {
		t.Errorf("ok=%d throttled=%d, want 1 and 2", ok, throttled)
	}
}
