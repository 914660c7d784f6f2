// Package e2e drives real hearth workers through the HTTP API and the CLI:
// real namespaces, cgroups, mounts and processes. It needs root and a base
// image ($HEARTH_TEST_BASE, default /var/lib/hearth/base; scripts/test.sh
// builds it).
package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/bench"
	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/sandbox"
)

var (
	binDir   string // hearth and hearth-init, built once
	testBase string
	seq      atomic.Int32
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: tests need root (namespaces, cgroups, mounts)")
		os.Exit(1)
	}
	testBase = os.Getenv("HEARTH_TEST_BASE")
	if testBase == "" {
		testBase = "/var/lib/hearth/base"
	}
	if _, err := os.Stat(filepath.Join(testBase, "usr/bin/python3")); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no base image at %s (run scripts/setup.sh or set HEARTH_TEST_BASE): %v\n", testBase, err)
		os.Exit(1)
	}
	sweepBinDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("hearth-e2e-bin-%d-", os.Getpid()))
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sweepBinDirs removes the binaries of earlier runs that did not get to
// remove them (a run killed by go test's -timeout exits from a panic):
// hearth-e2e-bin-PID-* of a PID no longer running.
func sweepBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "hearth-e2e-bin-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(d), "hearth-e2e-bin-"), "-", 2)[0])
		if err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// worker is a `hearth up` process under test.
type worker struct {
	t       *testing.T
	url     string
	dataDir string
	cgroup  string
	args    []string
	cmd     *exec.Cmd
	out     *bench.LockedBuffer
	c       *client.Client
	token   string // the API token the worker made in its data dir
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startWorker starts a worker with its own data dir and cgroup parent. At
// the end of the test it is stopped with SIGTERM and checked for leaks.
func startWorker(t *testing.T, extra ...string) *worker {
	t.Helper()
	w := &worker{
		t:       t,
		dataDir: t.TempDir(),
		cgroup:  fmt.Sprintf("hearth-e2e-%d-%d", os.Getpid(), seq.Add(1)),
	}
	w.args = append([]string{"up", "--listen", freePort(t), "--data-dir", w.dataDir,
		"--base", testBase, "--cgroup-parent", w.cgroup, "--log-level", "debug"}, extra...)
	if !slices.Contains(extra, "--netns-subnet") {
		// Every worker has isolated sandboxes (the default network):
		// workers side by side need subnets of their own.
		w.args = append(w.args, "--netns-subnet", testSubnet())
	}
	w.url = "http://" + w.args[2]
	w.c = client.New(w.url, "")
	w.start()
	t.Cleanup(func() {
		w.stop()
		w.assertClean()
	})
	return w
}

func (w *worker) start() {
	w.t.Helper()
	w.out = &bench.LockedBuffer{}
	w.cmd = exec.Command(filepath.Join(binDir, "hearth"), w.args...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !w.c.Healthy(ctx) {
		if ctx.Err() != nil {
			w.cmd.Process.Kill()
			w.cmd.Wait()
			w.t.Fatalf("worker did not become healthy:\n%s", w.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Made at the first start, before the worker serves.
	t, err := api.ReadToken(filepath.Join(w.dataDir, api.TokenFile))
	if err != nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
		w.t.Fatalf("worker's API token: %v", err)
	}
	w.token = t
	w.c = client.New(w.url, t)
}

// do sends an authenticated request to w's API.
func (w *worker) do(method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, w.url+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	return http.DefaultClient.Do(req)
}

// get is an authenticated GET of path.
func (w *worker) get(path string) (*http.Response, error) { return w.do(http.MethodGet, path, "", nil) }

// post is an authenticated POST to path.
func (w *worker) post(path, contentType string, body io.Reader) (*http.Response, error) {
	return w.do(http.MethodPost, path, contentType, body)
}

// stop sends SIGTERM and waits.
func (w *worker) stop() {
	if w.cmd == nil || w.cmd.ProcessState != nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			w.t.Errorf("worker exited with %v:\n%s", err, tail(w.out.String(), 40))
		}
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		<-done
		w.t.Errorf("worker did not stop within 30s")
	}
}

// crash kills the worker with SIGKILL, as a crash would.
func (w *worker) crash() {
	w.cmd.Process.Kill()
	w.cmd.Wait()
}

// assertClean checks that the worker left no mounts, cgroups, loop devices
// or processes.
func (w *worker) assertClean() {
	w.t.Helper()
	if m, err := sandbox.MountsUnder(w.dataDir); err != nil || len(m) > 0 {
		w.t.Errorf("mounts left under %s: %v %v", w.dataDir, m, err)
	}
	if left := cgroupsLeft(w.cgroup); len(left) > 0 {
		w.t.Errorf("cgroups left: %v", left)
	}
	// A /tmp's loop device goes once its last user has: poll briefly.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := sandbox.LoopDevicesUnder(w.dataDir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			w.t.Errorf("loop devices left backed by files in %s: %v", w.dataDir, left)
			break
		}
	}
	out, _ := exec.Command("pgrep", "-f", "hearth-init.*"+w.dataDir).Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		w.t.Errorf("hearth-init processes left: %s", s)
	}
	// The reaper ends once it has swept (and written what it found into
	// the data dir, which the test's clean-up removes next).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-f", "hearth reap --data-dir "+w.dataDir).Output()
		s := strings.TrimSpace(string(out))
		if s == "" {
			break
		}
		if time.Now().After(deadline) {
			w.t.Errorf("the worker's reaper still runs: %s", s)
			break
		}
	}
}

// cgroupsLeft lists cgroup dirs named parent (or the install cache's
// parent-pkgs) in any hierarchy.
func cgroupsLeft(parent string) []string {
	var left []string
	for _, name := range []string{parent, parent + "-pkgs"} {
		roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
		left = append(left, roots...)
		if _, err := os.Stat("/sys/fs/cgroup/" + name); err == nil {
			left = append(left, "/sys/fs/cgroup/"+name)
		}
	}
	return left
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// hearth runs the CLI against w and returns its combined output.
func (w *worker) hearth(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "hearth"), args...)
	// The CLI finds the token as it does on a worker's host: in the data
	// dir (here not the default one).
	cmd.Env = append(os.Environ(), "HEARTH_URL="+w.url, "HEARTH_TOKEN_FILE="+filepath.Join(w.dataDir, api.TokenFile))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// deployDir deploys a directory through the CLI.
func (w *worker) deployDir(name, dir string) {
	w.t.Helper()
	out, err := w.hearth("deploy", dir, "--name", name)
	if err != nil {
		w.t.Fatalf("deploy %s: %v\n%s", name, err, out)
	}
}

// fn writes a function directory from name -> content pairs.
func fn(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i+1 < len(files); i += 2 {
		p := filepath.Join(dir, files[i])
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(files[i+1]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func (w *worker) invoke(name, event string) (client.Invocation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return w.c.Invoke(ctx, name, []byte(event))
}

func (w *worker) mustInvoke(name, event string) client.Invocation {
	w.t.Helper()
	inv, err := w.invoke(name, event)
	if err != nil {
		w.t.Fatalf("invoke %s: %v\nworker log:\n%s", name, err, tail(w.out.String(), 30))
	}
	return inv
}
