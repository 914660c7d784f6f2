package lambda

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/worker"
)

// stubWorker stands in for the worker in the HTTP layer's tests (the
// e2e tests drive a real one): it answers with what its fn says, and
// counts the calls.
type stubWorker struct {
	mu    sync.Mutex
	calls map[string]int // by request id
	fn    func(name string, event []byte) (worker.Result, error)
}

func (s *stubWorker) InvokeID(ctx context.Context, name string, event []byte, id string) (worker.Result, error) {
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[id]++
	s.mu.Unlock()
	if s.fn != nil {
		return s.fn(name, event)
	}
	return worker.Result{Body: event, Path: "warm", Revision: "r"}, nil
}
func (s *stubWorker) Retire(name, keep string)                             {}
func (s *stubWorker) Logs(name string, n int, since uint64) worker.LogTail { return worker.LogTail{} }

func (s *stubWorker) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

type env struct {
	t   *testing.T
	srv *httptest.Server
	api *Server
	reg *registry.Registry
	wk  *stubWorker
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	dir := t.TempDir()
	reg, err := registry.Open(dir, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	wk := &stubWorker{}
	cfg.DataDir = dir
	if cfg.Keys == nil && !cfg.Insecure {
		cfg.Keys = testKeys
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg, reg, wk)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, api: s, reg: reg, wk: wk}
}

// do sends a request signed with the test key and decodes a JSON answer
// into out (when not nil).
func (e *env) do(method, path string, body any, hdr map[string]string, out any) *http.Response {
	e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	default:
		b, _ = json.Marshal(v)
	}
	req := signedRequest(e.t, method, e.srv.URL+path, b, hdr, "AKIDTEST", "secret/with+chars", time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp
}

func zipOf(t *testing.T, files ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		w, err := zw.Create(files[i])
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(files[i+1]))
	}
	zw.Close()
	return buf.Bytes()
}

const handlerPy = "def lambda_handler(event, context):\n    return event\n"

func (e *env) create(name string, extra map[string]any) *http.Response {
	req := map[string]any{"FunctionName": name, "Runtime": "python3.13", "Role": "arn:aws:iam::000000000000:role/r",
		"Handler": "lambda_function.lambda_handler",
		"Code":    map[string]any{"ZipFile": zipOf(e.t, "lambda_function.py", handlerPy, "function.yaml", "cpus: 0.5\n")}}
	for k, v := range extra {
		req[k] = v
	}
	return e.do("POST", "/2015-03-31/functions", req, nil, nil)
}

func errType(r *http.Response) string { return r.Header.Get("X-Amzn-Errortype") }

func TestFunctions(t *testing.T) {
	e := newEnv(t, Config{})
	var cfg functionConfiguration
	zipData := zipOf(t, "lambda_function.py", handlerPy)
	resp := e.do("POST", "/2015-03-31/functions", map[string]any{
		"FunctionName": "fn1", "Runtime": "python3.12", "Role": "role", "Handler": "lambda_function.lambda_handler",
		"Code": map[string]any{"ZipFile": zipData}, "MemorySize": 256, "Description": "d",
		"Environment": map[string]any{"Variables": map[string]string{"A": "1"}},
	}, nil, &cfg)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %+v", resp.StatusCode, cfg)
	}
	if cfg.Runtime != "python3.12" || cfg.MemorySize != 256 || cfg.Timeout != 3 || cfg.Description != "d" ||
		cfg.Environment == nil || cfg.Environment.Variables["A"] != "1" || cfg.Version != "$LATEST" ||
		cfg.FunctionArn != "arn:aws:lambda:eu-west-1:000000000000:function:fn1" || cfg.CodeSize != int64(len(zipData)) {
		t.Fatalf("create answered %+v", cfg)
	}
	// The same function for /v1: its spec carries the Lambda settings.
	fn, err := e.reg.Get("fn1")
	if err != nil || fn.Spec.MemoryMB != 256 || fn.Spec.TimeoutS != 3 || fn.Spec.Env["A"] != "1" || fn.Spec.Handler != "lambda_function.lambda_handler" {
		t.Fatalf("registry: %+v %v", fn.Spec, err)
	}

	if r := e.create("fn1", nil); r.StatusCode != 409 || errType(r) != typeConflict {
		t.Fatalf("second create: %d %s", r.StatusCode, errType(r))
	}
	if r := e.create("fn2", map[string]any{"Runtime": "nodejs18.x"}); r.StatusCode != 400 || errType(r) != typeInvalidParam {
		t.Fatalf("nodejs: %d %s", r.StatusCode, errType(r))
	}
	if r := e.create("fn2", map[string]any{"Code": map[string]any{"ZipFile": []byte("not a zip")}}); r.StatusCode != 400 || errType(r) != typeInvalidParam {
		t.Fatalf("bad zip: %d %s", r.StatusCode, errType(r))
	}
	if _, err := e.reg.Get("fn2"); err == nil {
		t.Fatal("a refused create deployed fn2")
	}
	if r := e.create("fn2", nil); r.StatusCode != 201 {
		t.Fatalf("create fn2: %d", r.StatusCode)
	}
	fn2, _ := e.reg.Get("fn2")
	if fn2.Spec.CPUs != 0.5 {
		t.Fatalf("the zip's function.yaml lost its cpus: %+v", fn2.Spec)
	}

	var got struct {
		Configuration functionConfiguration
		Code          map[string]string
	}
	if r := e.do("GET", "/2015-03-31/functions/fn1", nil, nil, &got); r.StatusCode != 200 || got.Configuration.FunctionName != "fn1" {
		t.Fatalf("get: %d %+v", r.StatusCode, got)
	}
	var aerr map[string]string
	r := e.do("GET", "/2015-03-31/functions/nope/configuration", nil, nil, &aerr)
	if r.StatusCode != 404 || errType(r) != typeNotFound || !strings.Contains(aerr["Message"], "Function not found") || aerr["Type"] != "User" {
		t.Fatalf("get missing: %d %s %v", r.StatusCode, errType(r), aerr)
	}
	if r := e.do("GET", "/2015-03-31/functions/fn1:2", nil, nil, nil); r.StatusCode != 404 {
		t.Fatalf("version 2: %d", r.StatusCode)
	}

	// Configuration: the code stays, the settings change.
	var up functionConfiguration
	r = e.do("PUT", "/2015-03-31/functions/fn1/configuration", map[string]any{"Timeout": 20, "Description": "e",
		"Environment": map[string]any{"Variables": map[string]string{"B": "2"}}}, nil, &up)
	if r.StatusCode != 200 || up.Timeout != 20 || up.MemorySize != 256 || up.Description != "e" || up.Environment.Variables["B"] != "2" ||
		up.Environment.Variables["A"] != "" || up.CodeSha256 != cfg.CodeSha256 || up.RevisionID == cfg.RevisionID {
		t.Fatalf("update configuration: %d %+v", r.StatusCode, up)
	}
	if r := e.do("PUT", "/2015-03-31/functions/fn1/configuration", map[string]any{"Timeout": 5, "RevisionId": cfg.RevisionID}, nil, nil); r.StatusCode != 412 {
		t.Fatalf("stale RevisionId: %d", r.StatusCode)
	}
	if r := e.do("PUT", "/2015-03-31/functions/fn1/configuration", map[string]any{"MemorySize": 1}, nil, nil); r.StatusCode != 400 {
		t.Fatalf("memory 1: %d", r.StatusCode)
	}
	// Code: the settings stay, the code changes.
	newZip := zipOf(t, "lambda_function.py", handlerPy+"# v2\n", "function.yaml", "timeout_s: 99\n")
	var uc functionConfiguration
	r = e.do("PUT", "/2015-03-31/functions/fn1/code", map[string]any{"ZipFile": newZip}, nil, &uc)
	if r.StatusCode != 200 || uc.Timeout != 20 || uc.CodeSize != int64(len(newZip)) || uc.CodeSha256 == cfg.CodeSha256 || uc.Environment.Variables["B"] != "2" {
		t.Fatalf("update code: %d %+v", r.StatusCode, uc)
	}

	if r := e.do("DELETE", "/2015-03-31/functions/fn1", nil, nil, nil); r.StatusCode != 204 {
		t.Fatalf("delete: %d", r.StatusCode)
	}
	if r := e.do("DELETE", "/2015-03-31/functions/fn1", nil, nil, nil); r.StatusCode != 404 || errType(r) != typeNotFound {
		t.Fatalf("second delete: %d", r.StatusCode)
	}
	if r := e.do("GET", "/2015-03-31/functions/nothing/here/at/all", nil, nil, nil); r.StatusCode != 404 || errType(r) != typeUnknownOp {
		t.Fatalf("unknown operation: %d %s", r.StatusCode, errType(r))
	}
}

func TestListFunctionsPaging(t *testing.T) {
	e := newEnv(t, Config{})
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("f%02d", i)
		want = append(want, name)
		// Through /v1's path: the registry directly.
		var buf bytes.Buffer
		buf.Write(zipOf(t, "lambda_function.py", handlerPy))
		if _, err := e.reg.Deploy(context.Background(), name, registry.Source{Archive: bytes.NewReader(buf.Bytes()), Size: int64(buf.Len())}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	marker := ""
	pages := 0
	for {
		var page struct {
			Functions  []functionConfiguration
			NextMarker string
		}
		path := "/2015-03-31/functions/?MaxItems=3"
		if marker != "" {
			path += "&Marker=" + marker
		}
		if r := e.do("GET", path, nil, nil, &page); r.StatusCode != 200 {
			t.Fatalf("list: %d", r.StatusCode)
		}
		pages++
		for _, f := range page.Functions {
			got = append(got, f.FunctionName)
			if f.Runtime != "python3" || f.CodeSha256 == "" {
				t.Fatalf("a /v1 function: %+v", f)
			}
		}
		if page.NextMarker == "" {
			break
		}
		marker = page.NextMarker
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || pages != 3 {
		t.Fatalf("paged %v in %d pages, want %v in 3", got, pages, want)
	}
	if r := e.do("GET", "/2015-03-31/functions/?MaxItems=0", nil, nil, nil); r.StatusCode != 400 {
		t.Fatalf("MaxItems=0: %d", r.StatusCode)
	}
}

func TestInvoke(t *testing.T) {
	e := newEnv(t, Config{MaxBody: 1 << 10})
	if r := e.create("f", nil); r.StatusCode != 201 {
		t.Fatalf("create: %d", r.StatusCode)
	}
	inv := "/2015-03-31/functions/f/invocations"
	r := e.do("POST", inv, []byte(`{"a":1}`), nil, nil)
	if r.StatusCode != 200 || r.Header.Get("X-Amz-Executed-Version") != "$LATEST" || r.Header.Get("X-Hearth-Start-Path") != "warm" ||
		r.Header.Get("X-Amz-Function-Error") != "" {
		t.Fatalf("invoke: %d %v", r.StatusCode, r.Header)
	}
	e.wk.fn = func(string, []byte) (worker.Result, error) {
		return worker.Result{Path: "cold", Err: &runtime.HandlerError{Type: "ValueError", Message: "boom", StackTrace: []string{"x"}}}, nil
	}
	var herr runtime.HandlerError
	r = e.do("POST", inv, nil, nil, &herr)
	if r.StatusCode != 200 || r.Header.Get("X-Amz-Function-Error") != "Unhandled" || herr.Type != "ValueError" || herr.Message != "boom" {
		t.Fatalf("handler error: %d %v %+v", r.StatusCode, r.Header, herr)
	}
	e.wk.fn = func(name string, _ []byte) (worker.Result, error) {
		return worker.Result{Path: "warm"}, fmt.Errorf("%s: timed out: %w", name, worker.ErrTimeout)
	}
	r = e.do("POST", inv, nil, map[string]string{"X-Amz-Log-Type": "Tail"}, &herr)
	if r.StatusCode != 200 || r.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(herr.Message, "Task timed out after 3.00 seconds") {
		t.Fatalf("timeout: %d %+v", r.StatusCode, herr)
	}
	logs, _ := base64.StdEncoding.DecodeString(r.Header.Get("X-Amz-Log-Result"))
	if !strings.Contains(string(logs), "START RequestId: "+r.Header.Get("X-Amzn-Requestid")) {
		t.Fatalf("log result %q", logs)
	}
	e.wk.fn = func(name string, _ []byte) (worker.Result, error) {
		return worker.Result{}, fmt.Errorf("%s: %w", name, worker.ErrTooMany)
	}
	if r := e.do("POST", inv, nil, nil, nil); r.StatusCode != 429 || errType(r) != typeTooMany {
		t.Fatalf("throttled: %d %s", r.StatusCode, errType(r))
	}
	e.wk.fn = nil
	if r := e.do("POST", inv, []byte(`{"a":`), nil, nil); r.StatusCode != 400 || errType(r) != typeInvalidContent {
		t.Fatalf("bad JSON: %d %s", r.StatusCode, errType(r))
	}
	if r := e.do("POST", inv, []byte(`"`+strings.Repeat("x", 2<<10)+`"`), nil, nil); r.StatusCode != 413 || errType(r) != typeTooLarge {
		t.Fatalf("too large: %d %s", r.StatusCode, errType(r))
	}
	if r := e.do("POST", inv, nil, map[string]string{"X-Amz-Invocation-Type": "DryRun"}, nil); r.StatusCode != 204 {
		t.Fatalf("dry run: %d", r.StatusCode)
	}
	if r := e.do("POST", "/2015-03-31/functions/g/invocations", nil, map[string]string{"X-Amz-Invocation-Type": "DryRun"}, nil); r.StatusCode != 404 {
		t.Fatalf("dry run of nothing: %d", r.StatusCode)
	}
	r = e.do("POST", inv, []byte(`{"e":1}`), map[string]string{"X-Amz-Invocation-Type": "Event"}, nil)
	id := r.Header.Get("X-Amzn-Requestid")
	if r.StatusCode != 202 || id == "" {
		t.Fatalf("event: %d", r.StatusCode)
	}
	rec := waitFinal(t, e.api, id)
	if rec.State != StateSucceeded || rec.Attempts != 1 || e.wk.count(id) != 1 {
		t.Fatalf("event record %+v, %d calls", rec, e.wk.count(id))
	}
}

func waitFinal(t *testing.T, s *Server, id string) Record {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		rec, err := s.q.Get(id)
		if err == nil && Final(rec.State) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not final: %+v %v", id, rec, err)
		}
	}
}

func TestAuthRefusals(t *testing.T) {
	off := newEnv(t, Config{Keys: Keys{}})
	off.api.ver = nil
	if r := off.do("GET", "/2015-03-31/functions/", nil, nil, nil); r.StatusCode != 403 || errType(r) != typeAccessDenied {
		t.Fatalf("no keys: %d %s", r.StatusCode, errType(r))
	}
	on := newEnv(t, Config{})
	resp, err := http.Post(on.srv.URL+"/2015-03-31/functions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || errType(resp) != typeMissingAuth {
		t.Fatalf("unsigned: %d %s", resp.StatusCode, errType(resp))
	}
	insecure := newEnv(t, Config{Insecure: true})
	resp, err = http.Get(insecure.srv.URL + "/2015-03-31/functions/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("insecure, unsigned: %d", resp.StatusCode)
	}
}
