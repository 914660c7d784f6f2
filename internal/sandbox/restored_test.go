package sandbox_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// TestRestoredDialChecksItsSocket checks that a restored sandbox
// (AdoptRestored), which has no connection made ahead, dials its
// runtime's socket through DialAt's checks on the scratch descriptor, as
// the worker's restoredBox did through DialIn before snapshots restored
// into a sandbox.Sandbox: a symlink or a socket the worker did not make
// in its /tmp is refused and reaches nothing, the worker's own socket is
// dialled.
func TestRestoredDialChecksItsSocket(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	target, accepted := decoy(t)
	scratch := t.TempDir()
	if err := os.Chmod(scratch, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(scratch, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.cg.Create("restored-dial", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(ctx)
	// The restored init: a child of this process, as CRIU's
	// --restore-sibling makes it.
	init := exec.Command("/bin/sleep", "600")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "sb")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sb := sandbox.AdoptRestored(sandbox.Restored{ID: "restored-dial", Dir: dir,
		Scratch: os.NewFile(uintptr(fd), "scratch"), Group: g, Init: init.Process})
	defer sb.Destroy(ctx)
	sock := filepath.Join(scratch, "s.sock")

	if err := os.Symlink(target, sock); err != nil {
		t.Fatal(err)
	}
	if c, err := sb.Dial("s.sock"); !errors.Is(err, sandbox.ErrUnsafeSocket) {
		if c != nil {
			c.Close()
		}
		t.Errorf("a symlink in the restored /tmp: Dial %v, want ErrUnsafeSocket", err)
	}
	if accepted() {
		t.Error("the dial reached the decoy outside the sandbox")
	}
	os.Remove(sock)

	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Lchown(sock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if c, err := sb.Dial("s.sock"); !errors.Is(err, sandbox.ErrUnsafeSocket) {
		if c != nil {
			c.Close()
		}
		t.Errorf("a socket of the sandbox's user: Dial %v, want ErrUnsafeSocket", err)
	}
	if err := os.Lchown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	c, err := sb.Dial("s.sock")
	if err != nil {
		t.Fatalf("the worker's own socket: %v", err)
	}
	c.Close()

	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := sb.Dial("s.sock"); err == nil {
		c.Close()
		t.Error("Dial after Destroy connected")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the sandbox's dir after Destroy: %v", err)
	}
}
