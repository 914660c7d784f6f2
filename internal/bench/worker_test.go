package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSweepTemp: a benchmark removes the temporary dirs that benchmarks
// killed outright left, once they are a minute old, and no other: not a
// running benchmark's, not a fresh one's, not one with a mount below.
func TestSweepTemp(t *testing.T) {
	exited := exec.Command("/bin/true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	dead, live := exited.Process.Pid, os.Getppid()
	old := time.Now().Add(-2 * time.Minute)
	mk := func(pid int, kind string, mtime time.Time) string {
		d, err := os.MkdirTemp("", fmt.Sprintf("hearth-bench-%d-%s-", pid, kind))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return d
	}
	gone := mk(dead, "worker", old)
	keep := []string{mk(live, "worker", old), mk(dead, "plan", time.Now())}
	sweepTemp()
	if _, err := os.Stat(gone); err == nil {
		t.Errorf("%s (dead benchmark %d, 2 min old) was not removed", gone, dead)
	}
	for _, d := range keep {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
}
