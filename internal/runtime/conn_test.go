package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConventions(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		handler string
		want    map[string]any
	}{
		{
			name:    "openlambda",
			files:   map[string]string{"f.py": "def f(event):\n    return {'got': event, 'n': 1}\n"},
			handler: "",
			want:    map[string]any{"got": map[string]any{"x": 1.0}, "n": 1.0},
		},
		{
			name:  "lambda",
			files: map[string]string{"lambda_function.py": lambdaSrc},
			// Same handler through the Lambda convention with a context.
			handler: "lambda_function.lambda_handler",
			want: map[string]any{
				"event":   map[string]any{"x": 1.0},
				"name":    "fn1",
				"version": "rev9",
				"rid":     "req-42",
				"mem":     "256",
				"arn":     "arn:hearth:lambda:local:000000000000:function:fn1",
				"group":   "/hearth/fn1",
				"stream":  true,
			},
		},
		{
			name:    "bound method",
			files:   map[string]string{"m.py": "class H:\n    def run(self, event, context):\n        return {'rid': context.aws_request_id}\nrun = H().run\n"},
			handler: "m.run",
			want:    map[string]any{"rid": "req-42"},
		},
		{
			name:    "package module",
			files:   map[string]string{"pkg/__init__.py": "", "pkg/mod.py": "def h(e):\n    return e['x'] * 2\n"},
			handler: "pkg/mod.h",
			want:    nil, // checked via wantBody
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.files, Options{Handler: tt.handler, Function: "fn1", Revision: "rev9", MemoryMB: 256, Timeout: 3 * time.Second})
			c := p.ready(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dl := time.Now().Add(2 * time.Second)
			r, err := c.Invoke(ctx, Request{ID: "req-42", Event: []byte(`{"x": 1}`), Deadline: dl})
			if err != nil {
				t.Fatal(err)
			}
			if r.Err != nil {
				t.Fatalf("handler error: %v %q", r.Err, r.Err.StackTrace)
			}
			if tt.want == nil {
				if string(r.Body) != "2" {
					t.Fatalf("body = %s, want 2", r.Body)
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(r.Body, &got); err != nil {
				t.Fatalf("body %s: %v", r.Body, err)
			}
			if rem, ok := got["remaining"]; ok {
				// The deadline came from the request, 2 s out.
				if ms := rem.(float64); ms <= 1000 || ms > 2000 {
					t.Errorf("remaining = %v ms, want (1000, 2000]", ms)
				}
				delete(got, "remaining")
			} else if tt.name == "lambda" {
				t.Error("no remaining time")
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("body = %v\nwant %v", got, tt.want)
			}
		})
	}
}

const lambdaSrc = `import os
def lambda_handler(event, context):
    return {
        "event": event,
        "name": context.function_name,
        "version": context.function_version,
        "rid": context.aws_request_id,
        "mem": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "group": context.log_group_name,
        "stream": context.log_stream_name.startswith("rev9/"),
        "remaining": context.get_remaining_time_in_millis(),
    }
`

func TestRemainingTimeDefaults(t *testing.T) {
	p := start(t, map[string]string{"lambda_function.py": lambdaSrc},
		Options{Handler: "lambda_function.lambda_handler", Function: "fn1", Revision: "rev9", Timeout: 10 * time.Second})
	c := p.ready(t)
	// Each window leaves the runtime 2 s to get the call to the handler,
	// for a host busy enough to keep it waiting.
	tests := []struct {
		name   string
		ctx    time.Duration // 0: no ctx deadline
		lo, hi float64
	}{
		{"ctx deadline", 5 * time.Second, 3000, 5000},
		{"function timeout", 0, 8000, 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			r, err := c.Invoke(ctx, Request{ID: "r"})
			if err != nil || r.Err != nil {
				t.Fatal(err, r.Err)
			}
			var got struct{ Remaining float64 }
			if err := json.Unmarshal(r.Body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Remaining < tt.lo || got.Remaining > tt.hi {
				t.Errorf("remaining = %v, want [%v, %v]", got.Remaining, tt.lo, tt.hi)
			}
		})
	}
}

func TestHandlerException(t *testing.T) {
	src := "def f(event):\n    if event.get('fail'):\n        helper(event)\n    return 'ok'\n\n" +
		"def helper(event):\n    raise ValueError('bad value %d' % event['fail'])\n"
	p := start(t, map[string]string{"f.py": src}, Options{Handler: "f.f"})
	c := p.ready(t)

	r := call(t, c, "1", `{"fail": 7}`)
	if r.Err == nil {
		t.Fatalf("no error, body %s", r.Body)
	}
	if r.Err.Type != "ValueError" || r.Err.Message != "bad value 7" {
		t.Errorf("error = %q %q", r.Err.Type, r.Err.Message)
	}
	tr := strings.Join(r.Err.StackTrace, "")
	for _, want := range []string{"f.py\", line 3, in f", "line 7, in helper", "raise ValueError"} {
		if !strings.Contains(tr, want) {
			t.Errorf("stack trace lacks %q:\n%s", want, tr)
		}
	}
	if strings.Contains(tr, "hearthrt") {
		t.Errorf("stack trace shows runtime frames:\n%s", tr)
	}
	if len(r.Err.StackTrace) != 2 {
		t.Errorf("got %d frames, want 2", len(r.Err.StackTrace))
	}
	if !waitFor(p.stderr, "[ERROR] ValueError: bad value 7") {
		t.Errorf("error not logged to stderr: %q", p.stderr.String())
	}

	// The Lambda shape.
	b, err := json.Marshal(r.Err)
	if err != nil {
		t.Fatal(err)
	}
	var shape map[string]any
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	if len(shape) != 3 || shape["errorType"] != "ValueError" || shape["errorMessage"] != "bad value 7" {
		t.Errorf("marshalled = %s", b)
	}
	if st, ok := shape["stackTrace"].([]any); !ok || len(st) != 2 {
		t.Errorf("stackTrace = %v", shape["stackTrace"])
	}

	// Same process keeps serving.
	if r := call(t, c, "2", `{}`); r.Err != nil || string(r.Body) != `"ok"` {
		t.Fatalf("after exception: %s %v", r.Body, r.Err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		handler string
		typ     string
		msg     string
		trace   string // substring of the joined trace; "" means empty trace
	}{
		{"missing module", map[string]string{"f.py": "def f(e): pass\n"}, "nope.f",
			"Runtime.ImportModuleError", "Unable to import module 'nope': No module named 'nope'", ""},
		{"missing dependency", map[string]string{"f.py": "import notinstalled\ndef f(e): pass\n"}, "f.f",
			"Runtime.ImportModuleError", "No module named 'notinstalled'", "import notinstalled"},
		{"missing function", map[string]string{"f.py": "def g(e): pass\n"}, "f.f",
			"Runtime.HandlerNotFound", "Handler 'f' missing on module 'f'", ""},
		{"not callable", map[string]string{"f.py": "f = 3\n"}, "f.f",
			"Runtime.HandlerNotFound", "not callable", ""},
		{"syntax error", map[string]string{"f.py": "def f(e)\n    return 1\n"}, "f.f",
			"Runtime.UserCodeSyntaxError", "Syntax error in module 'f'", "Line 1"},
		{"raise at import", map[string]string{"f.py": "x = {}\nx['k']\n"}, "f.f",
			"KeyError", "'k'", "line 2, in <module>"},
		{"exit at import", map[string]string{"f.py": "import sys\nsys.exit(3)\n"}, "f.f",
			"SystemExit", "3", "sys.exit(3)"},
		{"malformed handler", map[string]string{"f.py": ""}, "f.",
			"Runtime.MalformedHandlerName", "Bad handler 'f.'", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not validated, as a registry bug might pass it on.
			p := start(t, tt.files, Options{Handler: tt.handler})
			c := p.dial(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.WaitReady(ctx)
			var he *HandlerError
			if !errors.As(err, &he) {
				t.Fatalf("WaitReady = %v, want *HandlerError", err)
			}
			check := func(he *HandlerError) {
				t.Helper()
				if he.Type != tt.typ || !strings.Contains(he.Message, tt.msg) {
					t.Errorf("error = %q %q, want %q containing %q", he.Type, he.Message, tt.typ, tt.msg)
				}
				tr := strings.Join(he.StackTrace, "")
				if tt.trace == "" && tr != "" || !strings.Contains(tr, tt.trace) {
					t.Errorf("trace = %q, want %q", tr, tt.trace)
				}
			}
			check(he)
			// Every invoke answers with the load error; the process lives.
			for i := range 2 {
				r := call(t, c, "x", "{}")
				if r.Err == nil {
					t.Fatalf("invoke %d: body %s, want load error", i, r.Body)
				}
				check(r.Err)
			}
		})
	}
}

// TestPipeline: a request sent before the ready frame is run as soon as
// the handler has loaded, with the deadline it was sent with, or with
// the function's whole timeout from then; Invoke then reads its result,
// and the Conn serves on as usual. A handler that fails to load answers
// it with the load error. Misuse is refused.
func TestPipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The handler marks that it ran in a file the event names.
	files := map[string]string{"f.py": "import time\ntime.sleep(0.2)\n" +
		"def f(e, c):\n    left = c.get_remaining_time_in_millis()\n" +
		"    if e.get('mark'):\n        open(e['mark'], 'w').close()\n" +
		"    return {'e': {'n': e['n']}, 'left': left}\n"}
	p := start(t, files, Options{Handler: "f.f", Timeout: 30 * time.Second})
	c := p.dial(t)
	// An Invoke may come first; a Pipeline after it may not.
	if _, err := c.Invoke(ctx, Request{ID: "x", Event: []byte("0")}); err != nil {
		t.Fatalf("Invoke before ready: %v", err)
	}
	if err := c.Pipeline(ctx, Request{ID: "late", Event: []byte("1")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Pipeline after a call = %v, want ErrInvalid", err)
	}

	p = start(t, files, Options{Handler: "f.f", Timeout: 30 * time.Second})
	c = p.dial(t)
	mark := filepath.Join(t.TempDir(), "ran")
	event := []byte(`{"n": 1, "mark": "` + mark + `"}`)
	if err := c.Pipeline(ctx, Request{ID: "first", Event: event, Deadline: time.Now().Add(5 * time.Second)}); err != nil {
		t.Fatalf("Pipeline: %v", err)
	}
	if err := c.Pipeline(ctx, Request{ID: "second", Event: []byte("2")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("second Pipeline = %v, want ErrInvalid", err)
	}
	if _, err := c.Invoke(ctx, Request{ID: "other", Event: []byte("3")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Invoke of another request while one is pipelined = %v, want ErrInvalid", err)
	}
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	// The runtime runs the request before anyone asks for its result.
	for {
		if _, err := os.Stat(mark); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the pipelined request did not run before Invoke")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r, err := c.Invoke(ctx, Request{ID: "first", Event: event, Deadline: time.Now().Add(time.Hour)})
	if err != nil || r.Err != nil {
		t.Fatalf("Invoke of the pipelined request: %v %v", err, r.Err)
	}
	var got struct {
		E    map[string]int `json:"e"`
		Left float64        `json:"left"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.E["n"] != 1 {
		t.Errorf("event = %v, want the pipelined one", got.E)
	}
	if got.Left > 5000 || got.Left < 1000 {
		t.Errorf("remaining time %v ms, want under the 5 s it was sent with", got.Left)
	}
	if r := call(t, c, "next", `{"n": 2}`); r.Err != nil || !strings.Contains(string(r.Body), `"n":2`) {
		t.Errorf("next call: %s %v", r.Body, r.Err)
	}

	// Without a deadline, the runtime counts the function's timeout from
	// when it runs the request: the 0.2 s load is not the call's.
	p = start(t, files, Options{Handler: "f.f", Timeout: 30 * time.Second})
	c = p.dial(t)
	if err := c.Pipeline(ctx, Request{ID: "z", Event: []byte(`{"n": 3}`)}); err != nil {
		t.Fatalf("Pipeline: %v", err)
	}
	r, err = c.Invoke(ctx, Request{ID: "z", Event: []byte(`{"n": 3}`)})
	if err != nil || r.Err != nil {
		t.Fatalf("Invoke of the pipelined request: %v %v", err, r.Err)
	}
	if err := json.Unmarshal(r.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.E["n"] != 3 || got.Left > 30000 || got.Left < 29850 {
		t.Errorf("event %v, remaining time %v ms; want the event and the whole 30 s less the call's own time", got.E, got.Left)
	}

	// A load error answers the pipelined request.
	p = start(t, map[string]string{"f.py": "raise ValueError('nope')\n"}, Options{Handler: "f.f"})
	c = p.dial(t)
	if err := c.Pipeline(ctx, Request{ID: "first", Event: []byte("1")}); err != nil {
		t.Fatalf("Pipeline: %v", err)
	}
	var he *HandlerError
	if _, err := c.WaitReady(ctx); !errors.As(err, &he) {
		t.Fatalf("WaitReady = %v, want the load error", err)
	}
	r, err = c.Invoke(ctx, Request{ID: "first", Event: []byte("1")})
	if err != nil || r.Err == nil || r.Err.Type != "ValueError" {
		t.Errorf("Invoke after a load error: %v %+v, want Response.Err ValueError", err, r.Err)
	}
	big := Request{ID: "big", Event: make([]byte, PipelineMax+1)}
	if err := p.dial(t).Pipeline(ctx, big); !errors.Is(err, ErrInvalid) {
		t.Errorf("Pipeline of %d bytes = %v, want ErrInvalid", len(big.Event), err)
	}
}

// TestReadyLoadCPU checks the ready frame's two figures from the real
// runtime: an import that spins for 30 ms of CPU and sleeps for 150 ms
// reports a load of at least 180 ms and a load CPU time of at least
// 30 ms, well under its load time (the sleep is not CPU).
func TestReadyLoadCPU(t *testing.T) {
	src := "import time\n" +
		"t = time.thread_time()\n" +
		"while time.thread_time() - t < 0.03:\n    pass\n" +
		"time.sleep(0.15)\n" +
		"def f(e):\n    return 1\n"
	p := start(t, map[string]string{"f.py": src}, Options{Handler: "f.f"})
	c := p.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Load < 180*time.Millisecond || r.LoadCPU < 30*time.Millisecond || r.LoadCPU > r.Load-100*time.Millisecond {
		t.Errorf("ready: load %v, load CPU %v; want load >= 180ms, CPU >= 30ms and at least 100ms under the load", r.Load, r.LoadCPU)
	}
}
