package snapshot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSweepDumps: the dump work dirs of processes gone, a minute old,
// go; this process's, a live one's and a young one's stay.
func TestSweepDumps(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		live.Process.Kill()
		live.Wait()
	}()
	old := time.Now().Add(-2 * time.Minute)
	mk := func(name string, mtime time.Time) string {
		d := filepath.Join(tmp, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "dump.log"), []byte("log"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return d
	}
	goneOld := mk(fmt.Sprintf("%s%d-1", dumpPrefix, gone.Process.Pid), old)
	legacy := mk(dumpPrefix+"4230670435", old) // before the pid was in the name
	goneYoung := mk(fmt.Sprintf("%s%d-2", dumpPrefix, gone.Process.Pid), time.Now())
	liveOld := mk(fmt.Sprintf("%s%d-3", dumpPrefix, live.Process.Pid), old)
	ownOld := mk(fmt.Sprintf("%s%d-4", dumpPrefix, os.Getpid()), old)
	other := mk("hearth-replay-1", old)
	sweepDumps()
	for _, c := range []struct {
		dir  string
		kept bool
	}{{goneOld, false}, {legacy, false}, {goneYoung, true}, {liveOld, true}, {ownOld, true}, {other, true}} {
		_, err := os.Stat(c.dir)
		if kept := err == nil; kept != c.kept {
			t.Errorf("%s: kept %v, want %v", filepath.Base(c.dir), kept, c.kept)
		}
	}
}
