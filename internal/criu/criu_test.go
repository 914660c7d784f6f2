package criu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out, want string
		ok        bool
	}{
		{"Version: 4.1.1\n", "4.1.1", true},
		{"Version: 3.17.1\nGitID: v3.17.1\n", "3.17.1", true},
		{"Version: 4.1\n", "4.1", true},
		{"criu: command not found", "", false},
		{"Version: x.y", "", false},
	} {
		got, ok := parseVersion(tc.out)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseVersion(%q) = %q, %v; want %q, %v", tc.out, got, ok, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		v, min string
		want   bool
	}{
		{"4.1.1", "4.1", true}, {"4.1", "4.1", true}, {"4.0.9", "4.1", false},
		{"3.17.1", "4.1", false}, {"10.0", "4.1", true}, {"bad", "4.1", false},
	} {
		if got := atLeast(tc.v, tc.min); got != tc.want {
			t.Errorf("atLeast(%q, %q) = %v", tc.v, tc.min, got)
		}
	}
}

func TestFindMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Find(context.Background(), filepath.Join(t.TempDir(), "none"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find: %v, want ErrNotFound", err)
	}
	// A fake criu that reports an old version.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "criu"), []byte("#!/bin/sh\necho 'Version: 3.17.1'\n"), 0o755)
	t.Setenv("PATH", dir)
	_, err = Find(context.Background(), filepath.Join(t.TempDir(), "none"))
	if !errors.Is(err, ErrTooOld) {
		t.Fatalf("Find old criu: %v, want ErrTooOld", err)
	}
}

// TestRunner needs root and the private CRIU (scripts/criu.sh).
func TestRunner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	ctx := context.Background()
	b, err := Find(ctx, os.Getenv("HEARTH_CRIU_ROOT"))
	if err != nil {
		t.Fatalf("no CRIU (run scripts/criu.sh): %v", err)
	}
	r, err := NewRunner(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The runner's /run is a private tmpfs holding the probe cache.
	var st unix.Statfs_t
	var kdat error
	if err := r.Do(ctx, func() error {
		if err := unix.Statfs("/run", &st); err != nil {
			return err
		}
		_, kdat = os.Stat("/run/criu.kdat")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Errorf("runner /run is fs type %x, want tmpfs", st.Type)
	}
	if kdat != nil {
		t.Errorf("no kdat cache after check: %v", kdat)
	}
	if _, err := os.Stat("/run/criu.kdat"); err == nil {
		t.Error("kdat cache leaked into the host's /run")
	}
	err = r.Run(ctx, Job{Args: []string{"restore", "-D", t.TempDir()}})
	if err == nil || !strings.Contains(err.Error(), "criu restore") {
		t.Fatalf("restore from an empty dir: %v", err)
	}
	r.Close()
	if err := r.Run(ctx, Job{Args: []string{"check"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("run after close: %v, want ErrClosed", err)
	}
}
