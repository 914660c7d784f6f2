package bench

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// Handlers used by the benchmarks; the same code as examples/.
var (
	HelloFn = map[string]string{"f.py": "def f(event):\n    return {'greeting': 'hello'}\n"}
	NumpyFn = map[string]string{
		"f.py":             "import numpy as np\n\ndef f(event):\n    return {'mean': float(np.mean([1.0, 2.0, 3.0]))}\n",
		"requirements.txt": "numpy\n",
		"function.yaml":    "memory_mb: 256\n",
	}
)

// StartupOptions configures Startup.
type StartupOptions struct {
	Hearth string // the hearth binary
	Base   string // the base image
	N      int    // samples per method
	Out    io.Writer
}

// Startup measures warm and cold invoke latency end to end over loopback,
// and, in the same run, a bare python3 start and a numpy import in the
// same base image (chroot, no sandbox) as baselines.
func Startup(ctx context.Context, o StartupOptions) ([]Sample, error) {
	if o.N <= 0 {
		o.N = 50
	}
	var samples []Sample

	// Warm: one worker with the handler cache.
	w, err := StartWorker(ctx, o.Hearth, o.Base)
	if err != nil {
		return nil, err
	}
	warm, err := func() ([]Sample, error) {
		defer w.Stop()
		if err := w.Deploy(ctx, "hello", HelloFn); err != nil {
			return nil, err
		}
		a, err := invokeN(ctx, w, "warm invoke (hello)", "hello", o.N, "warm", true)
		if err != nil {
			return nil, err
		}
		// The same with the sandbox frozen between calls: a thaw on the
		// path, as for any call that comes after a pause.
		b := Sample{Name: "warm invoke, thawed (hello)"}
		for i := 0; i < o.N; i++ {
			time.Sleep(20 * time.Millisecond)
			inv, err := w.Client.Invoke(ctx, "hello", []byte("{}"))
			if err != nil {
				return nil, err
			}
			if inv.Path != "warm" {
				return nil, fmt.Errorf("thawed warm call %d took path %q", i, inv.Path)
			}
			b.D = append(b.D, inv.Latency)
		}
		return []Sample{a, b}, nil
	}()
	if err != nil {
		return nil, err
	}
	samples = append(samples, warm...)

	// Cold: every call gets a new sandbox and a fresh interpreter.
	w, err = StartWorker(ctx, o.Hearth, o.Base, "--no-warm-cache", "--no-zygotes", "--no-snapshots")
	if err != nil {
		return nil, err
	}
	cold, err := func() ([]Sample, error) {
		defer w.Stop()
		if err := w.Deploy(ctx, "hello", HelloFn); err != nil {
			return nil, err
		}
		if err := w.Deploy(ctx, "numpy", NumpyFn); err != nil {
			return nil, err
		}
		a, err := invokeN(ctx, w, "cold invoke (hello)", "hello", o.N, "cold", false)
		if err != nil {
			return nil, err
		}
		b, err := invokeN(ctx, w, "cold invoke (numpy-stats)", "numpy", o.N, "cold", false)
		return []Sample{a, b}, err
	}()
	if err != nil {
		return nil, err
	}
	samples = append(samples, cold...)

	for _, b := range []struct {
		name, code string
		flags      []string
	}{
		{"host python3 -S -c pass", "pass", []string{"-S"}},
		{"host python3 -c 'import numpy'", "import numpy", nil},
	} {
		s, err := pythonN(ctx, o.Base, b.name, b.flags, b.code, o.N)
		if err != nil {
			return nil, err
		}
		samples = append(samples, s)
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "hearth bench startup: %d samples each, end-to-end over loopback HTTP\n\n", o.N)
		Table(o.Out, samples, [][2]string{
			{"cold invoke (hello)", "host python3 -S -c pass"},
			{"cold invoke (numpy-stats)", "host python3 -c 'import numpy'"},
			{"warm invoke (hello)", "host python3 -S -c pass"},
			{"warm invoke, thawed (hello)", "warm invoke (hello)"},
		})
	}
	return samples, nil
}

// invokeN calls fn n times and checks every call took the wanted path.
// With warmup, one call is made first and not counted.
func invokeN(ctx context.Context, w *Worker, name, fn string, n int, path string, warmup bool) (Sample, error) {
	gap := time.Duration(0)
	if path != "warm" {
		gap = settle
	}
	return invokeSeq(ctx, w, name, fn, n, path, warmup, gap)
}

// settle separates the starts a benchmark measures one by one, so that
// each sample is one start on a quiet worker: the previous sandbox's
// teardown and the refill of pre-made resources finish off the clock.
// Starts back to back, or all at once, are measured by name (bench
// zygote's back-to-back row, bench concurrency).
const settle = 10 * time.Millisecond

// invokeSeq invokes fn n times in a row, gap apart, checking that each
// call took path.
func invokeSeq(ctx context.Context, w *Worker, name, fn string, n int, path string, warmup bool, gap time.Duration) (Sample, error) {
	s := Sample{Name: name}
	if warmup {
		if _, err := w.Client.Invoke(ctx, fn, []byte("{}")); err != nil {
			return s, err
		}
	}
	for i := 0; i < n; i++ {
		inv, err := w.Client.Invoke(ctx, fn, []byte("{}"))
		if err != nil {
			return s, fmt.Errorf("%s: %w", name, err)
		}
		if inv.Path != path {
			return s, fmt.Errorf("%s: call %d took path %q, want %q", name, i, inv.Path, path)
		}
		s.D = append(s.D, inv.Latency)
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return s, nil
}

// pythonN starts the base image's python3 n times in a plain chroot: the
// same interpreter and packages as the sandboxes, without a sandbox.
func pythonN(ctx context.Context, base, name string, flags []string, code string, n int) (Sample, error) {
	s := Sample{Name: name}
	args := append(append([]string{}, flags...), "-c", code)
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, "/usr/bin/python3", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: base}
		cmd.Dir = "/"
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return s, fmt.Errorf("%s: %v: %s", name, err, out)
		}
		s.D = append(s.D, time.Since(t0))
	}
	return s, nil
}
