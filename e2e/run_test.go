package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/bench"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/localrun"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// localRun is a `hearth run` process under test.
type localRun struct {
	t       *testing.T
	dataDir string
	cmd     *exec.Cmd
	out     *bench.LockedBuffer
	done    chan struct{}
}

// startRun starts `hearth run` in cwd with data dir dataDir (a new one
// if empty).
func startRun(t *testing.T, cwd, dataDir string, args ...string) *localRun {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	r := &localRun{t: t, dataDir: dataDir, out: &bench.LockedBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(binDir, "hearth"),
		append([]string{"run", "--data-dir", dataDir, "--base", testBase}, args...)...)
	r.cmd.Dir = cwd
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// wait waits for the run to exit and returns its exit code.
func (r *localRun) wait(limit time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(limit):
		r.cmd.Process.Kill()
		<-r.done
		r.t.Fatalf("hearth run did not exit within %v:\n%s", limit, r.out.String())
	}
	return r.cmd.ProcessState.ExitCode()
}

// waitFor polls the output for s.
func (r *localRun) waitFor(s string, limit time.Duration) {
	r.t.Helper()
	for deadline := time.Now().Add(limit); !strings.Contains(r.out.String(), s); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("no %q in the output within %v:\n%s", s, limit, r.out.String())
		}
		select {
		case <-r.done:
			if !strings.Contains(r.out.String(), s) {
				r.t.Fatalf("hearth run exited without printing %q:\n%s", s, r.out.String())
			}
		default:
		}
	}
}

// waitCount polls the output for n occurrences of s.
func (r *localRun) waitCount(s string, n int, limit time.Duration) {
	r.t.Helper()
	for deadline := time.Now().Add(limit); strings.Count(r.out.String(), s) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("not %d of %q in the output within %v:\n%s", n, s, limit, r.out.String())
		}
	}
}

// assertClean checks that the run left nothing: its directory, cgroups,
// mounts, loop devices, processes. Only its own: a worker may share the
// data dir.
func (r *localRun) assertClean() {
	r.t.Helper()
	pid := r.cmd.Process.Pid
	runs := filepath.Join(r.dataDir, "run")
	if ents, err := os.ReadDir(runs); err == nil && len(ents) > 0 {
		r.t.Errorf("left in %s: %v", runs, ents)
	}
	if left := cgroupsLeft(fmt.Sprintf("%s%d", localrun.CgroupPrefix, pid)); len(left) > 0 {
		r.t.Errorf("cgroups left: %v", left)
	}
	if m, err := sandbox.MountsUnder(runs); err != nil || len(m) > 0 {
		r.t.Errorf("mounts left under %s: %v %v", runs, m, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := sandbox.LoopDevicesUnder(runs)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Errorf("loop devices left backed by files in %s: %v", runs, left)
			break
		}
	}
	out, _ := exec.Command("pgrep", "-f", "hearth-init.*"+runs+"/").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		r.t.Errorf("hearth-init processes left: %s", s)
	}
}

// runToEnd runs `hearth run` to its end and returns its output and exit
// code, having checked that it left nothing behind.
func runToEnd(t *testing.T, cwd string, args ...string) (string, int) {
	t.Helper()
	r := startRun(t, cwd, "", args...)
	code := r.wait(2 * time.Minute)
	r.assertClean()
	return r.out.String(), code
}

// writeFiles writes name -> content pairs below dir.
func writeFiles(t *testing.T, dir string, files ...string) {
	t.Helper()
	for i := 0; i+1 < len(files); i += 2 {
		p := filepath.Join(dir, files[i])
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func mustNotContain(t *testing.T, out string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(out, b) {
			t.Errorf("output has %q:\n%s", b, out)
		}
	}
}

// TestRunExamples runs the repository's examples with `hearth run`, as
// the README shows, from the repository's root.
func TestRunExamples(t *testing.T) {
	cases := []struct {
		dir   string
		event string
		want  []string
	}{
		{"examples/hello", `{"name": "hearth"}`, []string{
			"function examples/hello: handler f.f, memory 128 MB, timeout 30 s",
			`result: {"greeting":"hello, hearth"}`}},
		{"examples/lambda-style", `{"k": 1}`, []string{
			"handler lambda_function.lambda_handler, memory 128 MB, timeout 10 s",
			`[stdout] request lambda-style-1: {"k": 1}`,
			`"function":"lambda-style"`, `"calls_in_this_sandbox":1`, `"echo":{"k":1}`}},
		{"examples/numpy-stats", `{"values": [1, 2, 3, 10]}`, []string{
			"memory 256 MB",
			`result: {"n":4,"mean":4.0,`}},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.dir), func(t *testing.T) {
			out, code := runToEnd(t, "..", c.dir, "--event", c.event)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			mustContain(t, out, append(c.want, "start (cold): sandbox ", "call 1 (cold): ")...)
		})
	}
}

// TestRunSyntaxError: a handler that does not compile is reported with
// its file, as the user named it, and line.
func TestRunSyntaxError(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd, "broken/f.py", "def f(event):\n    x = [1,\n    return x\n")
	out, code := runToEnd(t, cwd, "broken")
	if code == 0 {
		t.Fatalf("exit 0 for a syntax error:\n%s", out)
	}
	mustContain(t, out,
		"handler failed to load after",
		"error: Runtime.UserCodeSyntaxError: Syntax error in module 'f': '[' was never closed (f.py, line 2)",
		`File "broken/f.py" Line 2`,
		"    x = [1,")
	mustNotContain(t, out, "/code/", "call 1")
	if n := strings.Count(out, "UserCodeSyntaxError"); n != 1 {
		t.Errorf("the error is shown %d times, want once:\n%s", n, out)
	}
}

// TestRunRaises: an exception shows the handler's traceback through the
// user's files, with their lines, and none of the runtime's frames; what
// the handler printed before comes first.
func TestRunRaises(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd,
		"fn/f.py", "import helper\n\n\ndef f(event):\n    print(\"dividing\")\n    return helper.divide(event[\"a\"], event[\"b\"])\n",
		"fn/helper.py", "def divide(a, b):\n    return a / b\n")
	out, code := runToEnd(t, cwd, "fn", "--event", `{"a": 1, "b": 0}`)
	if code == 0 {
		t.Fatalf("exit 0 for a handler that raised:\n%s", out)
	}
	mustContain(t, out,
		"[stdout] dividing\ncall 1 (cold): ",
		"error: ZeroDivisionError: division by zero\nTraceback (most recent call last):\n",
		`  File "fn/f.py", line 6, in f`+"\n"+`    return helper.divide(event["a"], event["b"])`,
		`  File "fn/helper.py", line 2, in divide`+"\n    return a / b")
	mustNotContain(t, out, "/code/", "hearthrt", "/hearth/", "result:")
	if n := strings.Count(out, "ZeroDivisionError"); n != 1 {
		t.Errorf("the error is shown %d times, want once:\n%s", n, out)
	}
	// The runtime's own report of the error (a worker's log line) is not
	// output of the handler's.
	mustNotContain(t, out, "[stderr] [ERROR]")
}

// TestRunRepeat: --repeat 3 calls the handler three times in one
// sandbox: the module's state carries over (warm), each call is timed.
func TestRunRepeat(t *testing.T) {
	out, code := runToEnd(t, "..", "examples/lambda-style", "--repeat", "3")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if n := strings.Count(out, "result: "); n != 3 {
		t.Errorf("%d results, want 3:\n%s", n, out)
	}
	if n := strings.Count(out, "start (cold)"); n != 1 {
		t.Errorf("%d starts, want 1:\n%s", n, out)
	}
	mustContain(t, out, "call 1 (cold): ", "call 2 (warm): ", "call 3 (warm): ",
		`"calls_in_this_sandbox":1`, `"calls_in_this_sandbox":2`, `"calls_in_this_sandbox":3`,
		"2 warm calls: min ")
}

// TestRunEventFile: --event-file passes the file's JSON as the event.
func TestRunEventFile(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd, "event.json", `{"name": "from a file"}`)
	hello, err := filepath.Abs("../examples/hello")
	if err != nil {
		t.Fatal(err)
	}
	out, code := runToEnd(t, cwd, hello, "--event-file", "event.json")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	mustContain(t, out, `result: {"greeting":"hello, from a file"}`)

	// A file that is not JSON is refused before anything starts.
	writeFiles(t, cwd, "bad.json", `{"name": `)
	out, code = runToEnd(t, cwd, hello, "--event-file", "bad.json")
	if code == 0 || !strings.Contains(out, "not valid JSON") {
		t.Errorf("exit %d for a bad event file:\n%s", code, out)
	}
}

// TestRunRequirements: requirements the base image satisfies work; any
// other is refused with a clear error naming it.
func TestRunRequirements(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd,
		"fn/f.py", "import numpy\n\ndef f(event):\n    return numpy.__name__\n",
		"fn/requirements.txt", "numpy\n",
		"other.txt", "surely-not-a-base-package==1.0\n")
	out, code := runToEnd(t, cwd, "fn")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	mustContain(t, out, `result: "numpy"`)
	out, code = runToEnd(t, cwd, "fn", "--requirements", "other.txt")
	if code == 0 {
		t.Fatalf("exit 0 with a requirement the base lacks:\n%s", out)
	}
	mustContain(t, out, "requirements not satisfied by the base image", `"surely-not-a-base-package==1.0"`)
	mustNotContain(t, out, "start (cold)")
}

// TestRunWatch: --watch runs the function again when a file in its
// directory changes, until interrupted.
func TestRunWatch(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd, "fn/f.py", "def f(event):\n    return \"v1\"\n")
	r := startRun(t, cwd, "", "fn", "--watch")
	r.waitFor(`result: "v1"`, time.Minute)
	r.waitFor("watching fn for changes", time.Minute)
	writeFiles(t, cwd, "fn/f.py", "def f(event):\n    print(\"second version\")\n    return \"v2\"\n")
	r.waitFor(`result: "v2"`, time.Minute)
	mustContain(t, r.out.String(), "--- fn changed: running again", "[stdout] second version")
	// A new file in a new directory counts too.
	r.waitCount("watching fn for changes", 2, time.Minute)
	writeFiles(t, cwd, "fn/sub/g.py", "X = 3\n", "fn/f.py", "from sub.g import X\n\ndef f(event):\n    return X\n")
	r.waitFor("result: 3", time.Minute)
	r.cmd.Process.Signal(syscall.SIGINT)
	if code := r.wait(30 * time.Second); code != 0 {
		t.Errorf("exit %d after Ctrl-C in --watch:\n%s", code, r.out.String())
	}
	r.assertClean()
}

// TestRunInterrupt: Ctrl-C in the middle of a call ends the run at once
// and leaves nothing behind: the handler's processes, the sandbox, its
// cgroups and mounts are gone.
func TestRunInterrupt(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd, "fn/f.py", "import time\n\ndef f(event):\n    print(\"sleeping\", flush=True)\n    time.sleep(120)\n")
	r := startRun(t, cwd, "", "fn")
	r.waitFor("[stdout] sleeping", time.Minute)
	parent := fmt.Sprintf("%s%d", localrun.CgroupPrefix, r.cmd.Process.Pid)
	if len(cgroupsLeft(parent)) == 0 {
		t.Fatalf("no cgroup %s while the handler runs", parent)
	}
	r.cmd.Process.Signal(syscall.SIGINT)
	if code := r.wait(30 * time.Second); code == 0 {
		t.Errorf("exit 0 after an interrupted call:\n%s", r.out.String())
	}
	mustContain(t, r.out.String(), "interrupted")
	r.assertClean()
}

// TestRunSweepsKilledRun: a run killed with SIGKILL cannot clean up; the
// next run on the data dir sweeps what it left.
func TestRunSweepsKilledRun(t *testing.T) {
	cwd := t.TempDir()
	writeFiles(t, cwd, "slow/f.py", "import time\n\ndef f(event):\n    print(\"sleeping\", flush=True)\n    time.sleep(120)\n")
	r := startRun(t, cwd, "", "slow")
	r.waitFor("[stdout] sleeping", time.Minute)
	r.cmd.Process.Kill()
	r.wait(30 * time.Second)
	parent := fmt.Sprintf("%s%d", localrun.CgroupPrefix, r.cmd.Process.Pid)
	if len(cgroupsLeft(parent)) == 0 {
		t.Fatalf("a killed run left no cgroup %s: the test proves nothing", parent)
	}
	hello, _ := filepath.Abs("../examples/hello")
	next := startRun(t, cwd, r.dataDir, hello)
	if code := next.wait(2 * time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, next.out.String())
	}
	if left := cgroupsLeft(parent); len(left) > 0 {
		t.Errorf("the killed run's cgroups are left: %v", left)
	}
	r.assertClean()
	next.assertClean()
}

// TestRunBesideWorker: a run on a running worker's data dir neither needs
// the worker nor disturbs it, and a worker starting during a run (it
// sweeps what a crashed predecessor left) does not kill the run.
func TestRunBesideWorker(t *testing.T) {
	dataDir := t.TempDir()
	cwd := t.TempDir()
	writeFiles(t, cwd, "slow/f.py", "import time\n\ndef f(event):\n    print(\"sleeping\", flush=True)\n    time.sleep(3)\n    return \"slept\"\n")
	r := startRun(t, cwd, dataDir, "slow")
	r.waitFor("[stdout] sleeping", time.Minute)

	// startWorker, on the run's data dir.
	w := &worker{t: t, dataDir: dataDir, cgroup: fmt.Sprintf("hearth-e2e-%d-%d", os.Getpid(), seq.Add(1))}
	w.args = []string{"up", "--listen", freePort(t), "--data-dir", w.dataDir,
		"--base", testBase, "--cgroup-parent", w.cgroup, "--log-level", "debug"}
	w.url = "http://" + w.args[2]
	w.c = client.New(w.url, "")
	w.start()
	t.Cleanup(func() {
		w.stop()
		w.assertClean()
	})
	if code := r.wait(2 * time.Minute); code != 0 {
		t.Fatalf("the run failed beside a starting worker (exit %d):\n%s", code, r.out.String())
	}
	mustContain(t, r.out.String(), `result: "slept"`)
	r.assertClean()

	w.deployDir("hello", "../examples/hello")
	w.mustInvoke("hello", `{}`)
	hello, _ := filepath.Abs("../examples/hello")
	r2 := startRun(t, cwd, dataDir, hello, "--repeat", "2")
	if code := r2.wait(2 * time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, r2.out.String())
	}
	r2.assertClean()
	// The worker's paused sandbox survived the run.
	inv := w.mustInvoke("hello", `{"name": "again"}`)
	if inv.Path != "warm" || !bytes.Contains(inv.Body, []byte("hello, again")) {
		t.Errorf("after a run beside it the worker answered %s from a %s start", inv.Body, inv.Path)
	}
}

// TestRunNeedsRoot: run by another user, `hearth run` says it needs
// root and does nothing.
func TestRunNeedsRoot(t *testing.T) {
	dir, err := os.MkdirTemp("", "hearth-run-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	for _, b := range []string{"hearth", "hearth-init"} {
		data, err := os.ReadFile(filepath.Join(binDir, b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, b), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hello, _ := filepath.Abs("../examples/hello")
	cmd := exec.Command(filepath.Join(dir, "hearth"), "run", "--data-dir", dir, "--base", testBase, hello)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("hearth run as nobody succeeded:\n%s", out)
	}
	mustContain(t, string(out), "hearth run must run as root")
	if _, err := os.Stat(filepath.Join(dir, "run")); err == nil {
		t.Errorf("hearth run as nobody made %s/run", dir)
	}
}
