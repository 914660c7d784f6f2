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
	seed, _ := s.quickestLocked(s.now())
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
	q, _ := s.quickestLocked(s.now())
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

// TestPreferExpires checks that restore times expire: a function
// measured once as restoring slowly is tried again after restoreTTL, and
// after each retry that finds it still slow the wait doubles.
func TestPreferExpires(t *testing.T) {
	now := time.Unix(1e9, 0)
	// The probe's restore is slow too: a key never restored expects it.
	s := &Service{restore: map[string]*restoreTime{}, now: func() time.Time { return now },
		probeRestore: time.Second, probeDump: time.Second}
	fork := 50 * time.Millisecond
	slow, quick := time.Second, 10*time.Millisecond
	if s.Prefer("b", fork, false) {
		t.Fatal("a key never restored ignores the probe's slow restore")
	}
	s.Restored("a", slow)
	if s.Prefer("a", fork, false) || s.Prefer("b", fork, false) {
		t.Fatal("a fresh slow restore is preferred to a fork")
	}
	now = now.Add(restoreTTL)
	// Expired, with no fresh figure of any key: a measures again, though
	// the probe says no; b, never restored, still goes by the probe.
	if !s.Prefer("a", fork, false) || !s.Prefer("a", fork, true) {
		t.Fatal("an expired restore time still decides")
	}
	if s.Prefer("b", fork, false) {
		t.Fatal("a key never restored retries as if it had expired")
	}
	// The retry replaces the figure rather than averaging it in, and as
	// it lost again, the next wait is twice as long.
	s.Restored("a", slow)
	now = now.Add(restoreTTL)
	if s.Prefer("a", fork, false) {
		t.Fatal("retried slow restore trusted for less than twice restoreTTL")
	}
	now = now.Add(restoreTTL)
	if !s.Prefer("a", fork, false) {
		t.Fatal("retried slow restore trusted for more than twice restoreTTL")
	}
	s.Restored("a", quick)
	if !s.Prefer("a", fork, false) {
		t.Fatal("a retry that found a quick restore is averaged with the expired slow one")
	}
	if ttl := s.restore["a"].ttl; ttl != restoreTTL {
		t.Errorf("a retry that won: trusted for %v, want %v", ttl, restoreTTL)
	}
	// A fresh slow restore of another key keeps an expired key from
	// retrying; a fresh quick one invites it.
	now = now.Add(restoreTTLMax)
	s.Restored("c", slow)
	if s.Prefer("a", fork, false) {
		t.Fatal("an expired key retries though a fresh restore of another key says no")
	}
	s.Restored("d", quick)
	if !s.Prefer("a", fork, false) {
		t.Fatal("an expired key ignores another key's fresh quick restore")
	}
	// Retries that keep losing double the wait up to restoreTTLMax.
	for range 10 {
		r := s.restore["a"]
		r.at = now
		s.Prefer("a", fork, false)
		r.at = now.Add(-r.ttl)
		s.Restored("a", slow)
	}
	if ttl := s.restore["a"].ttl; ttl != restoreTTLMax {
		t.Errorf("ttl after many lost retries %v, want %v", ttl, restoreTTLMax)
	}
	// An expiry of a key not called meanwhile (it lost nothing) does not
	// double.
	s.Restored("e", quick)
	s.restore["e"].at = now.Add(-restoreTTL)
	s.Restored("e", slow)
	if ttl := s.restore["e"].ttl; ttl != restoreTTL {
		t.Errorf("a retry after an expiry that lost nothing: trusted for %v, want %v", ttl, restoreTTL)
	}
	s.Forget("a")
	if _, ok := s.restore["a"]; ok {
		t.Error("Forget left a's restore time")
	}
}

// quickestLocked is what Prefer expects of a key never restored: the
// host's quickest fresh function restore at now, or without one the
// estimate (estimateLocked).
func (s *Service) quickestLocked(now time.Time) (time.Duration, bool) {
	if q, ok := s.freshestLocked(now); ok {
		return q, true
	}
	return s.estimateLocked()
}
