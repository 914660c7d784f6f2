package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hearth-run/hearth/internal/client"
	"github.com/hearth-run/hearth/internal/fsutil"
)

// Worker is a `hearth up` process started for a benchmark, with its own
// data dir and cgroup parent.
type Worker struct {
	URL    string
	Token  string // the API token the worker made in its data dir
	Client *client.Client
	cmd    *exec.Cmd
	dir    string
	out    *LockedBuffer
	// acct is the worker's cgroup v1 cpuacct group ("" if none): it
	// counts the CPU of the worker and of the processes it starts, but
	// for those it moves into its own cpuacct groups, under sandboxes
	// (its parent's and its installer's, where it makes them).
	acct      string
	sandboxes []string
	// made marks the groups of sandboxes that existed at a reading: one
	// gone since (a worker that died) makes the count wrong, an error.
	made map[string]bool
	// kernel counts the kernel threads' CPU across CPU's readings.
	kernel kernelUse
}

// LockedBuffer is a bytes.Buffer safe for concurrent writers, for a
// child process's combined output.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// StartWorker runs `hearth up` from binary hearth on a free loopback port
// with the given extra flags, and waits until it is healthy.
func StartWorker(ctx context.Context, hearth, base string, extra ...string) (*Worker, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	sweepTemp()
	// A build from before first-come (--worker OLD) shares the CPU alike
	// and has no flag to say so.
	if i := slices.Index(extra, "--first-come=false"); i >= 0 && !hasFlag(hearth, "up", "--first-come") {
		extra = slices.Delete(slices.Clone(extra), i, i+1)
	}
	parent := fmt.Sprintf("hearth-bench-%d", os.Getpid())
	dir, err := tempDir("worker")
	if err != nil {
		return nil, err
	}
	// The benchmark is one client standing for many: the caps that keep
	// one address from taking the worker (64 requests in flight) would
	// cut its bursts short.
	args := append([]string{"up", "--listen", addr, "--data-dir", dir, "--base", base,
		"--cgroup-parent", parent, "--log-level", "warn",
		"--max-requests-per-ip", "-1", "--max-conns-per-ip", "-1"}, extra...)
	w := &Worker{URL: "http://" + addr, dir: dir, out: &LockedBuffer{}}
	w.Client = client.New(w.URL, "")
	w.cmd = exec.Command(hearth, args...)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	// A benchmark killed outright (SIGKILL: no Stop) takes its worker
	// down with it: SIGTERM, on which the worker removes its sandboxes
	// and cgroups. The signal comes when the thread that forked exits,
	// not the process: benchmarks start workers from goroutines that are
	// not locked to a thread (whose threads Go keeps for good) or from
	// the main goroutine (locked to the main thread by initproc's init).
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := w.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Before it starts anything: its children are born in its group, one
	// per worker (two may run at once).
	if w.acct = newAcct(fmt.Sprintf("hearth-bench-%d-%d-acct", os.Getpid(), acctSeq.Add(1))); w.acct != "" {
		// The last --cgroup-parent given wins; its installs go to
		// PARENT-pkgs.
		for i, a := range args {
			if v, ok := strings.CutPrefix(a, "--cgroup-parent="); ok {
				parent = v
			} else if a == "--cgroup-parent" && i+1 < len(args) {
				parent = args[i+1]
			}
		}
		w.sandboxes = []string{filepath.Join(cpuacctRoot, parent), filepath.Join(cpuacctRoot, parent+"-pkgs")}
		w.made = map[string]bool{}
		if err := os.WriteFile(filepath.Join(w.acct, "cgroup.procs"), []byte(strconv.Itoa(w.cmd.Process.Pid)), 0o644); err != nil {
			removeAcct(w.acct)
			w.acct = ""
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !w.Client.Healthy(ctx) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			w.Stop()
			return nil, fmt.Errorf("worker did not start:\n%s", w.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The worker made its token before it served /healthz. A build from
	// before tokens (compared with --worker) has none: its API is open.
	t, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil && !(errors.Is(err, os.ErrNotExist) && hearth != self()) {
		w.Stop()
		return nil, fmt.Errorf("worker's API token: %w", err)
	}
	w.Token = strings.TrimSpace(string(t))
	w.Client = client.New(w.URL, w.Token)
	return w, nil
}

// Deploy deploys a function made of name -> source files.
func (w *Worker) Deploy(ctx context.Context, name string, files map[string]string) error {
	dir, err := tempDir("fn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for n, src := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(src), 0o644); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if err := client.PackDir(dir, &buf); err != nil {
		return err
	}
	_, err = w.Client.Deploy(ctx, name, &buf)
	return err
}

// Metric reads one unlabelled series from the worker's /metrics (0 if
// absent).
func (w *Worker) Metric(ctx context.Context, series string) (float64, error) {
	v, err := w.Metrics(ctx, series)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// Metrics reads several series, labelled ones spelled as /metrics
// prints them (name{label="value"}), from one scrape of /metrics: their
// values in order, 0 for those absent.
func (w *Worker) Metrics(ctx context.Context, series ...string) ([]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+w.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := make([]float64, len(series))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for i, s := range series {
			if v, ok := strings.CutPrefix(sc.Text(), s+" "); ok {
				if out[i], err = strconv.ParseFloat(v, 64); err != nil {
					return nil, fmt.Errorf("metric %s: %w", s, err)
				}
			}
		}
	}
	return out, sc.Err()
}

// Stop stops the worker with SIGTERM and removes its data dir.
func (w *Worker) Stop() error {
	w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		w.cmd.Process.Kill()
		err = <-done
	}
	os.RemoveAll(w.dir)
	removeAcct(w.acct)
	if err != nil {
		return fmt.Errorf("worker: %v\n%s", err, w.out.String())
	}
	return nil
}

// tempDir makes a temporary directory for kind, named after this
// process (hearth-bench-PID-KIND-*), so that what a benchmark killed
// outright left is told apart.
func tempDir(kind string) (string, error) {
	return os.MkdirTemp("", fmt.Sprintf("hearth-bench-%d-%s-", os.Getpid(), kind))
}

// sweepTemp removes the temporary dirs of benchmarks killed outright
// (hearth-bench-PID-*, PID no longer running), once their workers, told
// by their parent-death signal, are surely gone: a minute after the dir
// last changed, and only if nothing is mounted below it.
func sweepTemp() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "hearth-bench-*-*"))
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for _, d := range dirs {
		if !fsutil.Orphaned(d, "hearth-bench-", "-") || bytes.Contains(mounts, []byte(" "+d+"/")) || bytes.Contains(mounts, []byte(" "+d+" ")) {
			continue
		}
		os.RemoveAll(d)
	}
}

// self is this binary, or "" if it cannot be told.
func self() string {
	exe, _ := os.Executable()
	return exe
}
