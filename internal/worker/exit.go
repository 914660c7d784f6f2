package worker

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/pidfd"
)

// exitWait bounds how long a failed call waits for its runtime process's
// exit status: the connection reports the death a moment before the
// process is reaped.
const exitWait = 2 * time.Second

// oomWait bounds how long the OOM-kill count of a group whose runtime
// died of SIGKILL is watched for the kill.
const oomWait = 500 * time.Millisecond

// oomKilled reports whether the kernel's OOM killer ended the runtime of
// a sandbox in group g, which ended as exit says. The group's OOM-kill
// count says so, but only for a victim the killer picked in the group;
// for a runtime that died of SIGKILL (or whose status is unknown) the
// count is watched for a moment, and a group whose memory use reached its
// limit counts as well: nothing else in a sandbox SIGKILLs it there.
func oomKilled(g *cgroup.Group, exit exitInfo) bool {
	if n, _ := g.OOMKills(); n > 0 {
		return true
	}
	if exit.known && !exit.killed() {
		return false
	}
	if hit, _ := g.ReachedLimit(); hit {
		return true
	}
	for deadline := time.Now().Add(oomWait); time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		if n, _ := g.OOMKills(); n > 0 {
			return true
		}
	}
	return false
}

// exitInfo is how a sandbox's runtime process ended.
type exitInfo struct {
	known  bool
	code   int         // exit status, when signal is 0
	signal unix.Signal // the signal that killed it, if one did
}

// String completes "the function's process ...".
func (e exitInfo) String() string {
	switch {
	case !e.known:
		return "ended (its exit status is unknown)"
	case e.signal != 0:
		return fmt.Sprintf("was killed by signal %d (%s)", int(e.signal), unix.SignalName(e.signal))
	default:
		return fmt.Sprintf("exited with status %d", e.code)
	}
}

// killed reports whether the process died of SIGKILL, as the OOM killer
// kills.
func (e exitInfo) killed() bool { return e.known && e.signal == unix.SIGKILL }

// exitFromCode reads an exit code in the shell's convention, which
// hearth-init follows: 128+N for a process killed by signal N, -1 for
// none yet. (A process that exits with 129 through 192 by itself reads as
// killed; the init of a sandbox cannot tell them apart.)
func exitFromCode(code int) exitInfo {
	switch {
	case code < 0:
		return exitInfo{}
	case code > 128 && code <= 128+64:
		return exitInfo{known: true, signal: unix.Signal(code - 128)}
	default:
		return exitInfo{known: true, code: code}
	}
}

// exitFromWaitStatus reads a wait(2) status.
func exitFromWaitStatus(ws unix.WaitStatus) exitInfo {
	if ws.Signaled() {
		return exitInfo{known: true, signal: ws.Signal()}
	}
	return exitInfo{known: true, code: ws.ExitStatus()}
}

// proc is a pidfd on a runtime process the worker did not start: a zygote
// forks it, and reaps it. The kernel keeps the exit status of a reaped
// process for whoever holds a pidfd on it (PIDFD_INFO_EXIT, Linux 6.15);
// on older kernels the status stays unknown.
type proc struct {
	fd int
}

// procOf watches the process of pidfd f through a duplicate of it; nil
// if it cannot be duplicated. Not a pidfd opened by pid: a zygote's
// child can be reaped by its zygote at any time, and its pid then be
// another's.
func procOf(f *os.File) *proc {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return &proc{fd: fd}
}

// exit waits until the process has exited and been reaped, or ctx ends.
func (p *proc) exit(ctx context.Context) exitInfo {
	ws, ok := pidfd.Exit(ctx, p.fd)
	if !ok {
		return exitInfo{}
	}
	return exitFromWaitStatus(ws)
}

func (p *proc) close() {
	if p != nil {
		unix.Close(p.fd)
	}
}
