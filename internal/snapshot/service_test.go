package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

func TestServiceDisabled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := OpenService(context.Background(), ServiceConfig{DataDir: t.TempDir(), Base: "/", SandboxDir: t.TempDir(),
		CRIURoot: filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, ErrDisabled) {
		t.Fatalf("OpenService without CRIU: %v, want ErrDisabled", err)
	}
	if _, err := OpenService(context.Background(), ServiceConfig{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("OpenService without dirs: %v, want ErrInvalid", err)
	}
}

func TestService(t *testing.T) {
	e := needEnv(t)
	ctx := context.Background()
	s, err := OpenService(ctx, ServiceConfig{DataDir: t.TempDir(), Base: e.Base, BaseID: "base-1", SandboxDir: e.SbDir,
		CRIURoot: os.Getenv("HEARTH_CRIU_ROOT")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Worth(50*time.Millisecond, false) || !s.Worth(50*time.Millisecond, true) || !s.Worth(time.Second, false) {
		t.Error("Worth: wrong threshold decisions")
	}
	src := e.StartSource(t, e.CodeDir(t))
	first, _ := src.Invoke(t)
	key := Key("slow", "r1")
	spec := DumpSpec{Pid: src.SB.InitPid(), Scratch: src.SB.Scratch(), Socket: snaptest.Socket,
		Key: key, Function: "slow", Revision: "r1", BaseImage: "base-1"}

	s.mu.Lock()
	s.creating[key] = true
	s.mu.Unlock()
	if _, err := s.Create(ctx, spec); !errors.Is(err, ErrBusy) {
		t.Fatalf("second create: %v, want ErrBusy", err)
	}
	s.mu.Lock()
	delete(s.creating, key)
	s.mu.Unlock()
	if _, err := s.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}

	// Before any function has been restored, a key expects the quickest
	// dump scaled by the probe's restore over its dump (the probe's
	// restore at least); a function that asks for snapshots tries its
	// first.
	s.mu.Lock()
	seed, _ := s.quickestLocked()
	pd, pr, qd := s.probeDump, s.probeRestore, s.quickDump
	s.mu.Unlock()
	if pd <= 0 || pr <= 0 || qd <= 0 {
		t.Fatalf("probe dump %v, restore %v, quickest dump %v: want all measured", pd, pr, qd)
	}
	if want := max(pr, time.Duration(float64(qd)*float64(pr)/float64(pd))); seed != want {
		t.Fatalf("expected restore before any %v, want %v (probe dump %v, restore %v, quickest dump %v)", seed, want, pd, pr, qd)
	}
	if s.Prefer(key, seed, false) || !s.Prefer(key, seed+time.Millisecond, false) {
		t.Errorf("Prefer before any restore ignores the probe's restore time %v", seed)
	}
	if !s.Prefer(key, 0, true) {
		t.Error("Prefer without a measurement of its own, for a function that asks for snapshots: false")
	}
	id := fmt.Sprintf("svc-%d", e.Seq())
	t0 := time.Now()
	sb, err := s.Restore(ctx, key, RestoreSpec{ID: id, Group: e.NewGroup(t, id), Binds: e.Binds(src.Code)})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	r, _ := snaptest.Invoke(t, sb.SocketPath(snaptest.Socket))
	if r.InitS != first.InitS || r.N != 2 {
		t.Fatalf("restored %+v, source %+v", r, first)
	}
	// Compare against the time this restore actually took: a fixed bound
	// (a second) is exceeded when the host is busy.
	took := time.Since(t0)
	s.Restored(key, took)
	for _, always := range []bool{false, true} {
		if s.Prefer(key, took, always) || !s.Prefer(key, took+time.Millisecond, always) {
			t.Errorf("Prefer (always %v) ignores the measured restore time (%v)", always, took)
		}
	}
	// A key never restored expects the host's quickest function restore,
	// no longer the probe's.
	other, third := Key("other", "r1"), Key("third", "r1")
	if s.Prefer(other, took, false) || !s.Prefer(other, took+time.Millisecond, false) {
		t.Errorf("Prefer for a key not yet restored ignores the host's restore time (%v)", took)
	}
	// A slower function's restores neither change a key's own nor raise
	// what an unrestored key expects; a quicker one's lowers it.
	s.Restored(other, 3*took)
	s.Restored(other, 3*took)
	if !s.Prefer(key, took+time.Millisecond, false) || s.Prefer(other, 2*took, false) {
		t.Error("Prefer mixes a key's own restore time with another's")
	}
	if !s.Prefer(third, took+time.Millisecond, false) {
		t.Error("a slower function's restores raised what an unrestored key expects")
	}
	s.Restored(Key("quick", "r1"), took/2)
	s.mu.Lock()
	q, _ := s.quickestLocked()
	s.mu.Unlock()
	if q >= took || s.Prefer(third, q, false) || !s.Prefer(third, q+time.Millisecond, false) {
		t.Errorf("after quicker restores of another function, an unrestored key expects %v, want below %v", q, took)
	}
	if _, err := s.Restore(ctx, "absent", RestoreSpec{ID: "x", Group: sb.Group()}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("restore of a missing snapshot: %v", err)
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			name := mf.GetName()
			for _, l := range m.Label {
				name += "/" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[name] = m.Counter.GetValue()
			case m.Gauge != nil:
				got[name] = m.Gauge.GetValue()
			case m.Histogram != nil:
				got[name] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"hearth_snapshot_dump_seconds":       1,
		"hearth_snapshot_restore_seconds":    1,
		"hearth_snapshot_hits_total/local":   1,
		"hearth_snapshot_misses_total/local": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
	if got["hearth_snapshot_cache_bytes"] <= 0 {
		t.Errorf("cache bytes %v", got["hearth_snapshot_cache_bytes"])
	}
}
