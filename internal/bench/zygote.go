package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hearth-run/hearth/internal/zygote"
)

// NumpyRequestsFn imports numpy and requests from the base image.
var NumpyRequestsFn = map[string]string{
	"f.py":             "import numpy as np\nimport requests\n\ndef f(event):\n    return {'mean': float(np.mean([1.0, 2.0])), 'requests': requests.__version__}\n",
	"requirements.txt": "numpy\nrequests\n",
	"function.yaml":    "memory_mb: 256\n",
}

// ZygoteOptions configures Zygote.
type ZygoteOptions struct {
	Hearth string
	Base   string
	N      int
	Out    io.Writer
}

// ZygoteResult is what Zygote measured.
type ZygoteResult struct {
	Samples []Sample
	// FrozenForkBytes is the memory charged to a paused sandbox forked
	// from the numpy zygote (its private pages; shared ones stay with the
	// zygote).
	FrozenForkBytes int64
	// FrozenColdBytes is the same for a fresh interpreter.
	FrozenColdBytes int64
}

// Zygote compares, in one run, three ways to serve the numpy and the
// numpy+requests handlers: a fresh interpreter that imports on start
// (Installed+Imported), a fork from a zygote that already imported the
// packages, and the warm handler cache.
func Zygote(ctx context.Context, o ZygoteOptions) (ZygoteResult, error) {
	var res ZygoteResult
	if o.N <= 0 {
		o.N = 50
	}
	// A planned tree, so the zygotes exist before the first call.
	r := &zygote.BaseResolver{Base: o.Base}
	np, err := r.PackageSet([]string{"numpy"})
	if err != nil {
		return res, err
	}
	npr, err := r.PackageSet([]string{"numpy", "requests"})
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "hearth-bench-plan-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	plan := filepath.Join(dir, "tree.json")
	b, _ := json.Marshal(zygote.Plan{Nodes: []zygote.PlanNode{{Packages: np}, {Packages: npr}}})
	if err := os.WriteFile(plan, b, 0o644); err != nil {
		return res, err
	}
	fns := []struct {
		name  string
		files map[string]string
	}{{"numpy", NumpyFn}, {"numpy-requests", NumpyRequestsFn}}

	type cfg struct {
		label string
		flags []string
		path  string
		warm  bool
	}
	for _, c := range []cfg{
		// Snapshots off throughout: numpy's import is slow enough to earn
		// one, and this benchmark compares imports with forks.
		{"Installed+Imported", []string{"--no-warm-cache", "--no-zygotes", "--no-snapshots"}, "cold", false},
		{"Zygote", []string{"--no-warm-cache", "--no-snapshots", "--zygote-tree", plan}, "fork", false},
		{"Warm", []string{"--zygote-tree", plan}, "warm", true},
	} {
		w, err := StartWorker(ctx, o.Hearth, o.Base, c.flags...)
		if err != nil {
			return res, err
		}
		err = func() error {
			defer w.Stop()
			for _, f := range fns {
				if err := w.Deploy(ctx, f.name, f.files); err != nil {
					return err
				}
				s, err := invokeN(ctx, w, fmt.Sprintf("%s (%s)", c.label, f.name), f.name, o.N, c.path, c.warm)
				if err != nil {
					return err
				}
				res.Samples = append(res.Samples, s)
				if c.path == "fork" && f.name == "numpy" {
					// Starts with no pause between them: the spare reserve
					// and teardown compete with the next start.
					s, err := invokeSeq(ctx, w, "Zygote (numpy), back to back", f.name, o.N, c.path, false, 0)
					if err != nil {
						return err
					}
					res.Samples = append(res.Samples, s)
				}
			}
			if c.warm {
				// The warm worker forked the sandboxes it keeps; they are
				// paused now. Measure one.
				res.FrozenForkBytes, err = pausedMemory(ctx, w, "numpy")
				return err
			}
			return nil
		}()
		if err != nil {
			return res, err
		}
	}
	// And a paused fresh-interpreter sandbox, for comparison.
	w, err := StartWorker(ctx, o.Hearth, o.Base, "--no-zygotes", "--no-snapshots")
	if err != nil {
		return res, err
	}
	err = func() error {
		defer w.Stop()
		if err := w.Deploy(ctx, "numpy", NumpyFn); err != nil {
			return err
		}
		if _, err := w.Client.Invoke(ctx, "numpy", []byte("{}")); err != nil {
			return err
		}
		res.FrozenColdBytes, err = pausedMemory(ctx, w, "numpy")
		return err
	}()
	if err != nil {
		return res, err
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "hearth bench zygote: %d samples each, end-to-end invoke over loopback HTTP;\n"+
			"starts %v apart (teardown and refills off the clock) unless back to back\n\n", o.N, settle)
		Table(o.Out, res.Samples, [][2]string{
			{"Installed+Imported (numpy)", "Zygote (numpy)"},
			{"Installed+Imported (numpy-requests)", "Zygote (numpy-requests)"},
			{"Zygote (numpy)", "Warm (numpy)"},
		})
		fmt.Fprintf(o.Out, "\nmemory charged to a paused sandbox: forked %.2f MiB, fresh interpreter %.2f MiB\n",
			float64(res.FrozenForkBytes)/(1<<20), float64(res.FrozenColdBytes)/(1<<20))
	}
	return res, nil
}

// pausedMemory waits for fn's sandbox to be paused and returns its memory.
func pausedMemory(ctx context.Context, w *Worker, fn string) (int64, error) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := w.Client.Status(ctx)
		if err != nil {
			return 0, err
		}
		for _, s := range st.Sandboxes {
			if s.Function == fn && s.State == "paused" {
				return s.Memory, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("no paused sandbox of %s", fn)
}
