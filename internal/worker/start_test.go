package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/packages"
	"github.com/hearth-run/hearth/internal/registry"
	"github.com/hearth-run/hearth/internal/runtime"
)

// fakeStarter is a start path of the chain's own seam that answers with
// a fixed result and records that it was tried: the chain's rules need
// no sandbox.
type fakeStarter struct {
	id, p string
	err   error // nil: it starts the sandbox
	tried *[]string
}

func (f fakeStarter) name() string { return f.id }
func (f fakeStarter) path() string { return f.p }
func (f fakeStarter) start(ctx context.Context, l *launch) (*instance, error) {
	*f.tried = append(*f.tried, f.id)
	if f.err != nil {
		return nil, f.err
	}
	return &instance{id: f.id}, nil
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// histCount returns how many observations h holds.
func histCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func testWorker() *Worker {
	return &Worker{metrics: newMetrics(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestChainFallbackRules(t *testing.T) {
	load := &LoadError{Function: "f", Err: &runtime.HandlerError{Type: "ImportError", Message: "no module"}}
	plain := errors.New("zygote gone")
	oom := fmt.Errorf("f: out of memory while loading the handler: %w", ErrOOM)
	skipped := fmt.Errorf("%w: %w", errSkip, errors.New("restore failed"))
	type step struct {
		id, path string
		err      error
	}
	cases := []struct {
		name      string
		chain     []step
		cancel    bool
		want      string // the instance's starter; "" for a failed start
		wantPath  string
		wantErr   error
		tried     []string
		fallbacks float64
	}{
		{name: "first serves",
			chain: []step{{"snapshot", PathSnapshot, nil}, {"cold", PathCold, nil}},
			want:  "snapshot", wantPath: PathSnapshot, tried: []string{"snapshot"}},
		{name: "skips are not fallbacks",
			chain: []step{{"snapshot", PathSnapshot, skipped}, {"spare", PathFork, errSkip}, {"fork", PathFork, nil}, {"cold", PathCold, nil}},
			want:  "fork", wantPath: PathFork, tried: []string{"snapshot", "spare", "fork"}},
		{name: "a failure falls back and is counted",
			chain: []step{{"spare", PathFork, plain}, {"fork", PathFork, plain}, {"cold", PathCold, nil}},
			want:  "cold", wantPath: PathCold, tried: []string{"spare", "fork", "cold"}, fallbacks: 2},
		{name: "a handler that does not load ends the start",
			chain:    []step{{"spare", PathFork, load}, {"fork", PathFork, nil}, {"cold", PathCold, nil}},
			wantPath: PathFork, wantErr: load, tried: []string{"spare"}},
		{name: "out of memory loading ends the start",
			chain:    []step{{"fork", PathFork, oom}, {"cold", PathCold, nil}},
			wantPath: PathFork, wantErr: ErrOOM, tried: []string{"fork"}},
		{name: "the deadline ends the start",
			chain:  []step{{"fork", PathFork, plain}, {"cold", PathCold, nil}},
			cancel: true, wantPath: PathFork, wantErr: plain, tried: []string{"fork"}},
		{name: "the last failure is the start's",
			chain:    []step{{"fork", PathFork, plain}, {"cold", PathCold, ErrStart}},
			wantPath: PathCold, wantErr: ErrStart, tried: []string{"fork", "cold"}, fallbacks: 1},
		{name: "nothing serves",
			chain:    []step{{"snapshot", PathSnapshot, errSkip}, {"fork", PathFork, errSkip}},
			wantPath: PathCold, wantErr: ErrStart, tried: []string{"snapshot", "fork"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := testWorker()
			var tried []string
			var chain []starter
			for _, s := range c.chain {
				chain = append(chain, fakeStarter{id: s.id, p: s.path, err: s.err, tried: &tried})
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancel {
				cancel()
			}
			l := &launch{fn: registry.Function{Name: "f"}}
			inst, path, err := w.runChain(ctx, l, chain)
			if c.want != "" {
				if err != nil || inst == nil || inst.id != c.want {
					t.Fatalf("runChain = %v, %v; want the sandbox of %s", inst, err, c.want)
				}
			} else if inst != nil || !errors.Is(err, c.wantErr) {
				t.Fatalf("runChain = %v, %v; want no sandbox and %v", inst, err, c.wantErr)
			}
			if path != c.wantPath {
				t.Errorf("path %q, want %q", path, c.wantPath)
			}
			if !slices.Equal(tried, c.tried) {
				t.Errorf("tried %v, want %v", tried, c.tried)
			}
			if got := counterValue(t, w.metrics.forkFallbacks); got != c.fallbacks {
				t.Errorf("%v fallbacks counted, want %v", got, c.fallbacks)
			}
		})
	}
}

func TestFinal(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	load := &LoadError{Function: "f", Err: &runtime.HandlerError{Type: "SyntaxError"}}
	cases := []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"load error", live, load, true},
		{"wrapped load error", live, fmt.Errorf("spare: %w", load), true},
		{"out of memory", live, fmt.Errorf("f: %w", ErrOOM), true},
		{"start failure", live, fmt.Errorf("f: cgroup: %w", ErrStart), false},
		{"other", live, errors.New("zygote died"), false},
		{"deadline passed", done, errors.New("zygote died"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := final(c.ctx, c.err); got != c.want {
				t.Errorf("final = %v, want %v", got, c.want)
			}
		})
	}
}

func TestCleanup(t *testing.T) {
	var ran []int
	var cu cleanup
	cu.Add(func() { ran = append(ran, 1) })
	cu.Add(func() { ran = append(ran, 2) })
	cu.Clean()
	if !slices.Equal(ran, []int{2, 1}) {
		t.Fatalf("Clean ran %v, want the last added first: [2 1]", ran)
	}
	cu.Clean()
	if len(ran) != 2 {
		t.Fatalf("a second Clean ran again: %v", ran)
	}
	ran = nil
	cu.Add(func() { ran = append(ran, 3) })
	cu.Add(func() { ran = append(ran, 4) })
	later := cu.Release()
	cu.Clean()
	if len(ran) != 0 {
		t.Fatalf("Clean after Release ran %v", ran)
	}
	later()
	if !slices.Equal(ran, []int{4, 3}) {
		t.Fatalf("the released clean-up ran %v, want [4 3]", ran)
	}
}

// TestLaunch checks that a start's mounts, identity, environment and
// limits are computed the same for every path, and that what no path
// could start fails before any is tried.
func TestLaunch(t *testing.T) {
	w := testWorker()
	w.runtime = "/srv/runtime"
	w.cfg.ScratchBytes = 512 << 20
	w.cfg.PidsLimit = 64
	fn := registry.Function{Name: "f", Revision: "r1", CodeDir: "/srv/code/f", Slot: 3,
		Spec: function.Spec{Handler: "main.handler", MemoryMB: 256, TimeoutS: 3, Network: function.NetworkOffline,
			Env: map[string]string{"COLOUR": "blue"}}}
	l, err := w.newLaunch(fn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.binds) != 2 || l.binds[0].Source != fn.CodeDir || l.binds[0].Target != runtime.CodeDir ||
		l.binds[1].Source != w.runtime || l.binds[1].Target != runtime.MountPoint {
		t.Errorf("binds %+v, want the code, then the runtime", l.binds)
	}
	if len(l.mounts) != 1 || l.mounts[0].Source != fn.CodeDir || l.mounts[0].Target != runtime.CodeDir {
		t.Errorf("zygote mounts %+v, want the code alone", l.mounts)
	}
	uid, gid, _ := w.ids(fn)
	if l.uid != uid || l.gid != gid || uid == 0 {
		t.Errorf("identity %d:%d, want the function's own %d:%d", l.uid, l.gid, uid, gid)
	}
	if l.declared != 256<<20 || l.limits.MemoryBytes != 256<<20 || l.limits.Pids != 64 {
		t.Errorf("declared %d, limits %+v", l.declared, l.limits)
	}
	if l.net != function.NetworkOffline {
		t.Errorf("network %q", l.net)
	}
	if !l.premade || l.scratchDisk || l.scratchBytes != 512<<20 {
		t.Errorf("scratch %d (disk %v), premade %v: want the pre-made 512 MB in memory", l.scratchBytes, l.scratchDisk, l.premade)
	}
	if env := l.envMap(); env["COLOUR"] != "blue" || env["HOME"] != "/tmp" {
		t.Errorf("environment %v", env)
	}
	fn.Spec.TmpMB = 64
	if l, err := w.newLaunch(fn, nil); err != nil || l.premade {
		t.Errorf("a /tmp of 64 MB: premade %v, %v; want no pre-made sandbox", l != nil && l.premade, err)
	}

	noID := fn
	noID.Slot = 0
	if _, err := w.newLaunch(noID, nil); !errors.Is(err, ErrStart) {
		t.Errorf("a function without identity: %v, want ErrStart", err)
	}
	installed := fn
	installed.Packages = []packages.Package{{Name: "numpy", Version: "2.0.0"}}
	if _, err := w.newLaunch(installed, nil); !errors.Is(err, ErrStart) {
		t.Errorf("installed packages without the install cache: %v, want ErrStart", err)
	}
}

// TestChainOrderAndSkips checks the chain's order, fastest first, and
// that the paths a worker has switched off skip without a fallback.
func TestChainOrderAndSkips(t *testing.T) {
	w := testWorker()
	var names, paths []string
	for _, s := range w.starters() {
		names, paths = append(names, s.name()), append(paths, s.path())
	}
	if want := []string{"snapshot", "spare", "fork", "cold"}; !slices.Equal(names, want) {
		t.Fatalf("chain %v, want %v", names, want)
	}
	if want := []string{PathSnapshot, PathFork, PathFork, PathCold}; !slices.Equal(paths, want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	l := &launch{fn: registry.Function{Name: "f"}, premade: true}
	// Snapshots and zygotes off: all but the cold start skip.
	for _, s := range w.starters()[:3] {
		if inst, err := s.start(context.Background(), l); inst != nil || !errors.Is(err, errSkip) {
			t.Errorf("%s with its path off: %v, %v; want errSkip", s.name(), inst, err)
		}
	}
	if l.spareDone != nil {
		t.Error("a skipped spare path counted a start")
	}
}
