package criu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// newRunner starts a runner on the private CRIU (scripts/criu.sh); it is
// closed at clean-up (closing twice is harmless).
func newRunner(t *testing.T) *Runner {
	t.Helper()
	b, err := Find(context.Background(), os.Getenv("HEARTH_CRIU_ROOT"))
	if err != nil {
		t.Fatalf("no CRIU (run scripts/criu.sh): %v", err)
	}
	r, err := NewRunner(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestRunner needs root and the private CRIU (scripts/criu.sh).
func TestRunner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	ctx := context.Background()
	r := newRunner(t)
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
	err := r.Run(ctx, Job{Args: []string{"restore", "-D", t.TempDir()}})
	if err == nil || !strings.Contains(err.Error(), "criu restore") {
		t.Fatalf("restore from an empty dir: %v", err)
	}
	r.Close()
	if err := r.Run(ctx, Job{Args: []string{"check"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("run after close: %v, want ErrClosed", err)
	}
}

// TestRunnerIntoKilledV2Group runs criu in a cgroup2 group that was
// emptied through cgroup.kill before, as every pooled group is: kernels
// that kill a child cloned into such a group (CLONE_INTO_CGROUP, see
// joinCgroup) must not take criu down with it. It uses a hybrid host's
// cgroup2 mount, or a v2 host's.
func TestRunnerIntoKilledV2Group(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	root := "/sys/fs/cgroup"
	if !isCgroup2(root) {
		root = "/sys/fs/cgroup/unified"
		if !isCgroup2(root) {
			t.Skip("no cgroup2 mount on this host (neither /sys/fs/cgroup nor /sys/fs/cgroup/unified)")
		}
	}
	dir := filepath.Join(root, fmt.Sprintf("hearth-test-criu-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		t.Skipf("no cgroup.kill (Linux 5.14) on this host: %v", err)
	}
	// A member, killed through cgroup.kill.
	sleep := exec.Command("/bin/sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(sleep.Process.Pid)), 0); err != nil {
		sleep.Process.Kill()
		sleep.Wait()
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := sleep.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("member after cgroup.kill: %v, want killed", err)
	}
	ctx := context.Background()
	r := newRunner(t)
	dirs := []string{dir}
	// On a hybrid host, as a restore runs: a v1 group besides, which the
	// runner's thread joins around the fork.
	mem := "/sys/fs/cgroup/memory"
	var v1 string
	var st unix.Statfs_t
	if unix.Statfs(mem, &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
		v1 = filepath.Join(mem, filepath.Base(dir))
		if err := os.Mkdir(v1, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(v1) })
		dirs = append(dirs, v1)
	}
	before := cpuUsec(t, dir)
	if err := r.Run(ctx, Job{Args: []string{"check"}, Cgroup: dirs}); err != nil {
		t.Fatalf("criu check in a group killed before: %v", err)
	}
	// It ran there: the group's CPU count (core, no controller needed) grew.
	if after := cpuUsec(t, dir); after <= before {
		t.Errorf("group's usage_usec %d -> %d: criu did not run in it", before, after)
	}
	if v1 != "" {
		if b, err := os.ReadFile(filepath.Join(v1, "memory.max_usage_in_bytes")); err != nil || strings.TrimSpace(string(b)) == "0" {
			t.Errorf("v1 group's peak %q (%v): criu was not charged there", b, err)
		}
		// The runner's thread went back: nothing of the test's is left.
		if b, err := os.ReadFile(filepath.Join(v1, "cgroup.procs")); err != nil || len(b) != 0 {
			t.Errorf("v1 group lists %q (%v) after the run, want none", b, err)
		}
	}
}

func isCgroup2(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

func cpuUsec(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no usage_usec in %s/cpu.stat", dir)
	return 0
}
