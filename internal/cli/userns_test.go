package cli

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/ident"
)

// TestAwaitMapped checks that the homes probe enters a holder's user
// namespace only once its ids are mapped: entered before, what nsenter
// executes has no capabilities there.
func TestAwaitMapped(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("util-linux's unshare is not installed: %v", err)
	}
	own, err := os.Stat("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	z := uint32(ident.Default.Zygote())
	hold := func(t *testing.T, args ...string) string {
		c := exec.Command("unshare", append(args, "sleep", "30")...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: z, Gid: z, Groups: []uint32{}}}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Process.Kill()
			c.Wait()
		})
		return fmt.Sprintf("/proc/%d/", c.Process.Pid)
	}
	t.Run("mapped", func(t *testing.T) {
		if err := awaitMapped(hold(t, "--user", "--map-root-user"), own, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unmapped", func(t *testing.T) {
		start := time.Now()
		err := awaitMapped(hold(t, "--user"), own, 300*time.Millisecond)
		if err == nil {
			t.Fatal("a user namespace without maps passed")
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("gave up after %v, before its bound", d)
		}
	})
	t.Run("none", func(t *testing.T) {
		if err := awaitMapped("/proc/self/", own, 100*time.Millisecond); err == nil {
			t.Fatal("the test's own user namespace passed")
		}
	})
}
