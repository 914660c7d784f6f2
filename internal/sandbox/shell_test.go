package sandbox_test

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// TestShellJoinHandle checks the join handle a shell hands out: only
// once it has a cgroup, once, with a scratch mount and a listening
// socket.
func TestShellJoinHandle(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	sb, err := e.f.Shell(ctx, sandbox.Config{ID: "shell-join", ScratchBytes: 8 << 20, Socket: "s.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(ctx)
	if j, err := sb.Join(); err == nil {
		j.Close()
		t.Fatal("a shell without a cgroup handed out its join handle")
	}
	g, err := e.cg.Create("shell-join", cgroup.Limits{MemoryBytes: 64 << 20, Pids: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Delete(ctx)
	sb.SetGroup(g)
	j, err := sb.Join()
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.Group != g {
		t.Error("the handle's cgroup is not the shell's")
	}
	if typ, err := unix.GetsockoptInt(int(j.Listener.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || typ != 1 {
		t.Errorf("listener: accepting %d, %v; want a listening socket", typ, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(j.Scratch.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("scratch: mode %o, %v; want a directory", st.Mode, err)
	}
	if again, err := sb.Join(); err == nil {
		again.Close()
		t.Error("the join handle was handed out twice")
	}
}
