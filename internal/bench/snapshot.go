package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// SlowInitFn is the snapshot benchmark's handler: numpy plus a 1 s init
// at import, snapshotted always.
var SlowInitFn = map[string]string{
	"f.py": `import time
import numpy
time.sleep(1.0)
DATA = numpy.arange(1000000, dtype=numpy.int64)

def f(event):
    return {"sum": int(DATA.sum())}
`,
	"requirements.txt": "numpy\n",
	"function.yaml":    "memory_mb: 256\nsnapshot: always\n",
}

// SnapshotOptions configures Snapshot.
type SnapshotOptions struct {
	// Hearth is the hearth binary, Base the base image.
	Hearth, Base string
	// N is the number of samples of each snapshot method (default 50);
	// ColdN of cold starts, which take over a second each (default 10).
	N, ColdN int
	// S3Endpoint, if set, is an S3 store to use (with S3Access and
	// S3Secret); else a versitygw (VersityGW, or found on $PATH, in
	// $GOPATH/bin or ~/go/bin) is started on loopback.
	S3Endpoint, S3Access, S3Secret string
	VersityGW                      string
	Out                            io.Writer
}

// SnapshotResult is what Snapshot measured: end-to-end invoke latency of
// each start method.
type SnapshotResult struct {
	Samples []Sample
}

// Snapshot names of the methods, as in the thesis' Table 6.2.
const (
	SnapCold         = "cold (no snapshot)"
	SnapLocal        = "local snapshot"
	SnapRemote       = "remote snapshot (no local copy)"
	SnapRemoteCached = "remote, then cached"
)

// Snapshot compares, in one run, four ways to start the slow-init
// handler: a fresh interpreter running the init (no snapshots, zygotes or
// warm cache); a restore from the local snapshot cache; a restore on a
// second worker with its own data dir that fetches the snapshot from the
// shared S3 store each time (its local copy deleted before every call);
// and that second worker restoring its now-cached copy.
func Snapshot(ctx context.Context, o SnapshotOptions) (SnapshotResult, error) {
	var res SnapshotResult
	if o.N <= 0 {
		o.N = 50
	}
	if o.ColdN <= 0 {
		o.ColdN = 10
	}
	if o.S3Endpoint == "" {
		srv, err := startVersity(ctx, o.VersityGW)
		if err != nil {
			return res, err
		}
		defer srv.stop()
		o.S3Endpoint, o.S3Access, o.S3Secret = srv.endpoint, srv.access, srv.secret
	}
	dir, err := tempDir("snap")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "hearth.yaml")
	yaml := fmt.Sprintf("snapshot:\n  s3:\n    endpoint: %q\n    bucket: hearth-bench\n    prefix: bench-%d\n    access_key: %q\n    secret_key: %q\n",
		o.S3Endpoint, os.Getpid(), o.S3Access, o.S3Secret)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return res, err
	}
	const fn = "slow"

	// Cold: every call a fresh interpreter and the 1 s init.
	cold, err := StartWorker(ctx, o.Hearth, o.Base, "--no-snapshots", "--no-zygotes", "--no-warm-cache")
	if err != nil {
		return res, err
	}
	err = func() error {
		defer cold.Stop()
		if err := cold.Deploy(ctx, fn, SlowInitFn); err != nil {
			return err
		}
		s, err := invokeN(ctx, cold, SnapCold, fn, o.ColdN, "cold", false)
		res.Samples = append(res.Samples, s)
		return err
	}()
	if err != nil {
		return res, err
	}

	// Worker A creates the snapshot (stored locally and uploaded) and
	// restores it from its local cache.
	a, err := StartWorker(ctx, o.Hearth, o.Base, "--no-warm-cache", "--config", cfg,
		"--cgroup-parent", fmt.Sprintf("hearth-bench-%d-a", os.Getpid()))
	if err != nil {
		return res, err
	}
	defer a.Stop()
	if err := a.Deploy(ctx, fn, SlowInitFn); err != nil {
		return res, err
	}
	var info struct {
		Key string `json:"key"`
	}
	if err := post(ctx, a, "/v1/functions/"+fn+"/snapshot", &info); err != nil {
		return res, fmt.Errorf("creating the snapshot: %w", err)
	}
	s, err := invokeN(ctx, a, SnapLocal, fn, o.N, "snapshot", true)
	res.Samples = append(res.Samples, s)
	if err != nil {
		return res, err
	}

	// Worker B has its own data dir and the same store.
	b, err := StartWorker(ctx, o.Hearth, o.Base, "--no-warm-cache", "--config", cfg,
		"--cgroup-parent", fmt.Sprintf("hearth-bench-%d-b", os.Getpid()))
	if err != nil {
		return res, err
	}
	defer b.Stop()
	if err := b.Deploy(ctx, fn, SlowInitFn); err != nil {
		return res, err
	}
	remote := Sample{Name: SnapRemote}
	for i := 0; i < o.N; i++ {
		if i > 0 {
			if err := remove(ctx, b, "/v1/snapshots/"+info.Key); err != nil {
				return res, fmt.Errorf("dropping the local copy: %w", err)
			}
		}
		inv, err := b.Client.Invoke(ctx, fn, []byte("{}"))
		if err != nil {
			return res, fmt.Errorf("%s: %w", SnapRemote, err)
		}
		if inv.Path != "snapshot" {
			return res, fmt.Errorf("%s: call %d took path %q, want snapshot", SnapRemote, i, inv.Path)
		}
		remote.D = append(remote.D, inv.Latency)
	}
	res.Samples = append(res.Samples, remote)
	s, err = invokeN(ctx, b, SnapRemoteCached, fn, o.N, "snapshot", false)
	res.Samples = append(res.Samples, s)
	if err != nil {
		return res, err
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "hearth bench snapshot: numpy + 1 s init; %d cold and %d snapshot samples, end-to-end invoke over loopback HTTP, S3 on %s\n\n",
			o.ColdN, o.N, o.S3Endpoint)
		Table(o.Out, res.Samples, [][2]string{
			{SnapCold, SnapLocal}, {SnapCold, SnapRemote}, {SnapCold, SnapRemoteCached},
			{SnapRemote, SnapLocal}, {SnapRemoteCached, SnapLocal},
		})
		by := map[string]Sample{}
		for _, s := range res.Samples {
			by[s.Name] = s
		}
		check := func(ok bool, what string) {
			mark := "met"
			if !ok {
				mark = "MISSED"
			}
			fmt.Fprintf(o.Out, "target %-44s %s\n", what, mark)
		}
		fmt.Fprintln(o.Out)
		check(by[SnapLocal].P50() <= 60*time.Millisecond, "local restore p50 <= 60 ms")
		check(by[SnapRemote].P50() <= 150*time.Millisecond, "remote restore p50 <= 150 ms")
		check(by[SnapCold].P50() >= 10*by[SnapLocal].P50(), "local restore >= 10x faster than cold")
	}
	return res, nil
}

func post(ctx context.Context, w *Worker, path string, out any) error {
	return call(ctx, w, http.MethodPost, path, http.StatusOK, out)
}

func remove(ctx context.Context, w *Worker, path string) error {
	return call(ctx, w, http.MethodDelete, path, http.StatusNoContent, nil)
}

func call(ctx context.Context, w *Worker, method, path string, want int, out any) error {
	url := w.URL + path
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// versity is a versitygw serving a temp dir on loopback.
type versity struct {
	endpoint, access, secret string
	dir                      string
	cmd                      *exec.Cmd
}

// startVersity starts versitygw (bin, or found on $PATH, in $GOPATH/bin
// or ~/go/bin).
func startVersity(ctx context.Context, bin string) (*versity, error) {
	if bin == "" {
		bin = findVersity()
	}
	if bin == "" {
		return nil, errors.New("versitygw not found: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or pass an S3 endpoint")
	}
	dir, err := tempDir("s3")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	v := &versity{endpoint: addr, access: "hearthbench", secret: "hearthbenchsecret", dir: dir}
	for _, d := range []string{"meta", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	v.cmd = exec.Command(bin, "--access", v.access, "--secret", v.secret, "--port", addr,
		"posix", "--sidecar", filepath.Join(dir, "meta"), filepath.Join(dir, "data"))
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return v, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			v.stop()
			return nil, fmt.Errorf("versitygw did not come up on %s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func findVersity() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	var dirs []string
	if g := os.Getenv("GOPATH"); g != "" {
		dirs = append(dirs, filepath.Join(g, "bin"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func (v *versity) stop() {
	v.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { v.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		v.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(v.dir)
}
