package runtime

import (
	"context"
	"encoding/json"
	"errors"
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

// echoSrc returns its event, or misbehaves on request.
const echoSrc = `import os, sys, time
def f(event):
    if isinstance(event, dict):
        if "sleep" in event:
            time.sleep(event["sleep"])
        if "exit" in event:
            os._exit(event["exit"])
        if "print" in event:
            print(event["print"])
            sys.stdout.write("partial-line-no-newline")
            sys.stderr.write("to-stderr\n")
            os.write(1, b"raw-fd1-write\n")
        if "ret" in event:
            return eval(event["ret"])
        if "pid" in event:
            return os.getpid()
    return event
`

func TestResults(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	tests := []struct {
		name  string
		event string
		body  string // exact body, or "" when errType is set
		typ   string
		msg   string
	}{
		{"empty body", "", "null", "", ""},
		{"whitespace body", " \n\t", "null", "", ""},
		{"string", `"héllo \u2603"`, `"h\u00e9llo \u2603"`, "", ""},
		{"nested", `{"a": [1, 2.5, null, true, {"b": "c"}], "big": 123456789012345678901234567890}`,
			`{"a":[1,2.5,null,true,{"b":"c"}],"big":123456789012345678901234567890}`, "", ""},
		{"utf-8 bom", "\xef\xbb\xbf[1]", "[1]", "", ""},
		// JSON has no NaN or Infinity: AWS Lambda fails such results too.
		{"infinity", `{"ret": "float('inf')"}`, "", "Runtime.MarshalError", "Out of range float values are not JSON compliant"},
		{"nan", `{"ret": "float('nan')"}`, "", "Runtime.MarshalError", "Out of range float values are not JSON compliant"},
		{"nested -infinity", `{"ret": "{'a': [1, float('-inf')]}"}`, "", "Runtime.MarshalError", "Out of range float values are not JSON compliant"},
		{"largest floats", `{"ret": "[1e308, -1e308]"}`, "[1e+308,-1e+308]", "", ""},
		{"tuple", `{"ret": "(1, 'a')"}`, `[1,"a"]`, "", ""},
		{"set", `{"ret": "{1, 2}"}`, "", "Runtime.MarshalError", "Object of type set is not JSON serializable"},
		{"bytes", `{"ret": "b'x'"}`, "", "Runtime.MarshalError", "Object of type bytes is not JSON serializable"},
		{"circular", `{"ret": "(lambda l: (l.append(l), l)[1])([])"}`, "", "Runtime.MarshalError", "Circular reference"},
		{"bad json", `{"a":`, "", "Runtime.UnmarshalError", "Unable to unmarshal input: Expecting value"},
		{"extra data", `[1] [2]`, "", "Runtime.UnmarshalError", "Extra data"},
		{"bad utf-8", "\"\xff\"", "", "Runtime.UnmarshalError", "utf-8"},
		{"after errors", `{"k": "v"}`, `{"k":"v"}`, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, c, "id", tt.event)
			if tt.typ == "" {
				if r.Err != nil {
					t.Fatalf("error %v", r.Err)
				}
				if string(r.Body) != tt.body {
					t.Errorf("body = %s, want %s", r.Body, tt.body)
				}
				return
			}
			if r.Err == nil {
				t.Fatalf("body %s, want %s", r.Body, tt.typ)
			}
			if r.Err.Type != tt.typ || !strings.Contains(r.Err.Message, tt.msg) {
				t.Errorf("error = %q %q, want %q containing %q", r.Err.Type, r.Err.Message, tt.typ, tt.msg)
			}
			if r.Body != nil {
				t.Errorf("body %s set along with error", r.Body)
			}
		})
	}
}

func TestStdout(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	// Enough output to fill a pipe buffer several times over would block
	// a runtime that used stdout for anything else.
	line := strings.Repeat("x", 1000)
	for i := range 3 {
		r := call(t, c, strconv.Itoa(i), fmt.Sprintf(`{"print": "out-%d %s", "ret": "'fine'"}`, i, line))
		if r.Err != nil || string(r.Body) != `"fine"` {
			t.Fatalf("call %d: %s %v", i, r.Body, r.Err)
		}
	}
	for _, want := range []string{"out-0 " + line + "\n", "out-2 ", "partial-line-no-newline", "raw-fd1-write\n"} {
		if !waitFor(p.stdout, want) {
			t.Errorf("stdout lacks %.20q:\n%.200s", want, p.stdout.String())
		}
	}
	if !waitFor(p.stderr, "to-stderr\n") {
		t.Errorf("stderr = %q", p.stderr.String())
	}
}

// TestOutputOrder alternates lines on stdout and stderr: they reach the
// worker's two pipe readers in the order the handler wrote them, each
// with its stream.
func TestOutputOrder(t *testing.T) {
	src := `import sys
def f(event):
    for i in range(event):
        print("out", i)
        print("err", i, file=sys.stderr)
        sys.stderr.write("err-b %d\n" % i)
    return event
`
	p := start(t, map[string]string{"f.py": src}, Options{})
	c := p.ready(t)
	const n = 300
	if r := call(t, c, "1", strconv.Itoa(n)); r.Err != nil {
		t.Fatal(r.Err)
	}
	var want strings.Builder
	for i := range n {
		fmt.Fprintf(&want, "stdout: out %d\nstderr: err %d\nstderr: err-b %d\n", i, i, i)
	}
	if !waitFor(p.lines, want.String()) || p.lines.String() != want.String() {
		t.Errorf("lines out of order:\n%.2000s", p.lines.String())
	}
}

func TestDeadline(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.Invoke(ctx, Request{ID: "slow", Event: []byte(`{"sleep": 5}`)})
	if el := time.Since(t0); el > time.Second {
		t.Errorf("returned after %v", el)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The Conn is broken: the late result must not be taken for the next
	// request's.
	if _, err2 := c.Invoke(context.Background(), Request{ID: "next"}); !errors.Is(err2, context.DeadlineExceeded) {
		t.Errorf("after timeout: %v", err2)
	}
}

func TestCancel(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	t0 := time.Now()
	_, err := c.Invoke(ctx, Request{ID: "slow", Event: []byte(`{"sleep": 5}`)})
	if el := time.Since(t0); el > time.Second {
		t.Errorf("returned after %v", el)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}

func TestCrash(t *testing.T) {
	tests := []struct {
		name string
		kill func(p *proc)
		ev   string
	}{
		{"exit", func(*proc) {}, `{"exit": 3}`},
		// SIGKILL, as the OOM killer does.
		{"sigkill", func(p *proc) {
			time.Sleep(100 * time.Millisecond)
			p.cmd.Process.Signal(syscall.SIGKILL)
		}, `{"sleep": 5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, map[string]string{"f.py": echoSrc}, Options{})
			c := p.ready(t)
			go tt.kill(p)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.Invoke(ctx, Request{ID: "x", Event: []byte(tt.ev)})
			if !errors.Is(err, ErrCrashed) {
				t.Fatalf("err = %v, want ErrCrashed", err)
			}
			if _, err := c.Invoke(ctx, Request{ID: "y"}); !errors.Is(err, ErrCrashed) {
				t.Errorf("second call: %v", err)
			}
		})
	}
}

func TestCrashBeforeReady(t *testing.T) {
	// A hard exit at import never gets to report a load error.
	p := start(t, map[string]string{"f.py": "import os\nos._exit(1)\n"}, Options{})
	c := p.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); !errors.Is(err, ErrCrashed) {
		t.Fatalf("WaitReady = %v, want ErrCrashed", err)
	}
}

func TestReconnect(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	var pids []string
	for i := range 3 {
		c := p.ready(t)
		r := call(t, c, "x", `{"pid": 1}`)
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		pids = append(pids, string(r.Body))
		if i == 1 {
			// Drop the connection mid-frame: the runtime must recover.
			c.c.Write([]byte{9, 0, 0})
		}
		c.Close()
	}
	if want := strconv.Itoa(p.cmd.Process.Pid); pids[0] != want || pids[1] != want || pids[2] != want {
		t.Errorf("pids = %v, want all %s", pids, want)
	}
}

func TestBusy(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	done := make(chan error)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Invoke(ctx, Request{ID: "a", Event: []byte(`{"sleep": 0.3}`)})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Invoke(context.Background(), Request{ID: "b"}); !errors.Is(err, ErrBusy) {
		t.Errorf("concurrent Invoke = %v, want ErrBusy", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := call(t, c, "c", "1"); string(r.Body) != "1" {
		t.Errorf("after busy: %s %v", r.Body, r.Err)
	}
}

func TestResponseTooLarge(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	c.MaxResponse = 1 << 20
	r := call(t, c, "big", `{"ret": "'x' * 2000000"}`)
	if r.Err == nil || r.Err.Type != "Function.ResponseSizeTooLarge" {
		t.Fatalf("got %d bytes, err %v", len(r.Body), r.Err)
	}
	// Drained: the next result is in step.
	r = call(t, c, "small", `{"ret": "'x' * 1000000"}`)
	if r.Err != nil || len(r.Body) != 1000002 {
		t.Fatalf("after drain: %d bytes, err %v", len(r.Body), r.Err)
	}
	// A large event goes out in two writes.
	ev := `"` + strings.Repeat("é", 100000) + `"`
	if r := call(t, c, "in", ev); r.Err != nil || len(r.Body) != 100000*6+2 {
		t.Fatalf("large event: %d bytes, err %v", len(r.Body), r.Err)
	}
}

func TestInvalidRequest(t *testing.T) {
	p := start(t, map[string]string{"f.py": echoSrc}, Options{})
	c := p.ready(t)
	if _, err := c.Invoke(context.Background(), Request{ID: strings.Repeat("i", 70000)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long id: %v", err)
	}
	if r := call(t, c, "ok", "2"); string(r.Body) != "2" {
		t.Errorf("after invalid: %s %v", r.Body, r.Err)
	}
}

func TestSysPath(t *testing.T) {
	extra := writeCode(t, map[string]string{"extlib.py": "VALUE = 'from-extra'\n"})
	src := "import sys, extlib\ndef f(e):\n    return {'path': sys.path, 'v': extlib.VALUE, 'mods': sorted(sys.modules)}\n"
	p := start(t, map[string]string{"f.py": src}, Options{Path: []string{extra}})
	c := p.ready(t)
	r := call(t, c, "x", "")
	var got struct {
		Path []string
		V    string
		Mods []string
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatalf("%s %v: %v", r.Body, r.Err, err)
	}
	if got.V != "from-extra" {
		t.Errorf("extlib.VALUE = %q", got.V)
	}
	idx := func(s string) int {
		for i, p := range got.Path {
			if p == s {
				return i
			}
		}
		return -1
	}
	code := p.cmd.Dir
	dist := "/usr/lib/python3/dist-packages"
	if idx(code) != 0 {
		t.Errorf("code dir not first: %v", got.Path)
	}
	if i := idx(extra); i < 0 || i > idx(dist) || idx(dist) < 0 {
		t.Errorf("want extra dir before %s: %v", dist, got.Path)
	}
	if idx(rtDir) >= 0 || idx(filepath.Clean(rtDir)) >= 0 {
		t.Errorf("runtime dir on sys.path: %v", got.Path)
	}
	// The point of -S and the _json shortcut: the runtime imports none of
	// the expensive modules on the success path.
	for _, m := range []string{"json", "re", "traceback", "site", "socket", "inspect", "enum", "typing"} {
		for _, have := range got.Mods {
			if have == m {
				t.Errorf("runtime imported %s", m)
			}
		}
	}
	if _, err := os.Stat(dist); err == nil && !reflect.DeepEqual(got.Path[len(got.Path)-1:], []string{dist}) && idx("/usr/lib/python3.11/dist-packages") < 0 {
		t.Errorf("dist-packages not last: %v", got.Path)
	}
}

// TestReuse drives the pieces a zygote child will call, with a str-keyed
// environment instead of the process's own.
func TestReuse(t *testing.T) {
	driver := `import sys, posix, _socket
sys.path.insert(0, sys.argv[1])
import hearthrt
assert "f" not in sys.modules
env = {k.decode(): v.decode() for k, v in posix.environ.items()}
hearthrt.setup_path(env)
hearthrt.tag_output()
env.update(HEARTH_HANDLER="lambda_function.lambda_handler", HEARTH_FUNCTION="zz", HEARTH_REVISION="rev9")
hearthrt.run(_socket.socket(fileno=3), env)
`
	p := startArgv(t, map[string]string{"lambda_function.py": lambdaSrc}, Options{Handler: "wrong.one", MemoryMB: 64},
		[]string{python, "-S", "-B", "-c", driver, rtDir})
	c := p.ready(t)
	r := call(t, c, "rid", "[]")
	var got map[string]any
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatalf("%s %v: %v", r.Body, r.Err, err)
	}
	if got["name"] != "zz" || got["mem"] != "64" || got["rid"] != "rid" {
		t.Errorf("context = %v", got)
	}
}

// handlerModuleProbe reports how its module was imported, from inside
// the handler: the attributes the import system sets, whether a normal
// import statement finds the same module, and whether sys.path was
// searched (a finder made for the code dir) by the time it ran.
const handlerModuleProbe = `import sys
SEARCHED = sys.path[0] in sys.path_importer_cache
def f(e):
    m = sys.modules[__name__]
    import importlib
    again = importlib.import_module(__name__)
    return {"kind": KIND, "name": __name__, "file": __file__, "cached": __cached__,
            "loader": type(__loader__).__name__, "spec_name": __spec__.name,
            "origin": __spec__.origin, "has_location": __spec__.has_location,
            "parent": __spec__.parent, "same": again is m, "package": __package__,
            "searched": SEARCHED}
`

// TestHandlerImportedAsByImport checks that the handler's module comes
// out of the runtime's shortcut (straight from the code dir, no sys.path
// search) exactly as an import statement makes it, and that the shortcut
// stands aside where the search would find something else first: a
// package of the same name.
func TestHandlerImportedAsByImport(t *testing.T) {
	probe := func(files map[string]string) map[string]any {
		t.Helper()
		p := start(t, files, Options{Handler: "f.f"})
		r := call(t, p.ready(t), "x", "{}")
		var got map[string]any
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatalf("%s %v: %v", r.Body, r.Err, err)
		}
		got["dir"] = p.cmd.Dir
		return got
	}
	got := probe(map[string]string{"f.py": "KIND = 'module'\n" + handlerModuleProbe})
	dir := got["dir"].(string)
	want := map[string]any{"kind": "module", "name": "f", "file": dir + "/f.py",
		"loader": "SourceFileLoader", "spec_name": "f", "origin": dir + "/f.py",
		"has_location": true, "parent": "", "same": true, "package": "",
		"searched": false} // the shortcut built no finder for the code dir
	for k, v := range want {
		if got[k] != v {
			t.Errorf("module import: %s = %v, want %v", k, got[k], v)
		}
	}
	if c, _ := got["cached"].(string); !strings.HasPrefix(c, dir+"/__pycache__/f.") || !strings.HasSuffix(c, ".pyc") {
		t.Errorf("module import: __cached__ = %q, want %s/__pycache__/f.*.pyc", c, dir)
	}
	// A package shadows a module of the same name, as in any import.
	got = probe(map[string]string{
		"f.py":          "KIND = 'module'\n" + handlerModuleProbe,
		"f/__init__.py": "KIND = 'package'\n" + handlerModuleProbe,
	})
	if got["kind"] != "package" || got["package"] != "f" || got["searched"] != true {
		t.Errorf("with a package f beside f.py: imported %v (package %v, searched %v), want the package by a search",
			got["kind"], got["package"], got["searched"])
	}
}
