package worker

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// What a zygote child (forked on demand or as a spare) joins of the
// sandbox the worker made for it.

// attachNet gives the network namespace a zygote child made (process
// pid, pidfd) an isolated network from the pool's bridges.
func (w *Worker) attachNet(ctx context.Context, pid int, pidfd *os.File) (*netns.NS, error) {
	p, err := w.netPool(ctx)
	if err != nil {
		return nil, err
	}
	f, err := childNetNS(pid, pidfd)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	defer f.Close()
	return p.Attach(ctx, f)
}

// childNetNS opens the network namespace of zygote child pid, checked
// against its pidfd once open: its zygote can reap it at any time, and
// the pid could have been another's when opened; a veth or a watch must
// not go to another's namespace.
func childNetNS(pid int, pidfd *os.File) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, err
	}
	if unix.PidfdSendSignal(int(pidfd.Fd()), 0, nil, 0) != nil {
		f.Close()
		return nil, errors.New("the child is gone")
	}
	return f, nil
}

// shortID is the tail of a sandbox id that names its host.
func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-12:]
	}
	return id
}

// join holds what a zygote child needs to build its sandbox around a
// shell: the shell's join handle (its scratch, runtime listener and
// cgroup) and the write ends of pipes for the child's stdout and stderr,
// whose read ends (outR, errR) the caller keeps.
type join struct {
	*sandbox.Join
	outR, outW *os.File
	errR, errW *os.File
}

func openJoin(sb *sandbox.Sandbox) (_ *join, err error) {
	j := &join{}
	defer func() {
		if err != nil {
			j.close()
			closeAll([]*os.File{j.outR, j.errR})
		}
	}()
	if j.Join, err = sb.Join(); err != nil {
		return nil, err
	}
	if j.outR, j.outW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if j.errR, j.errW, err = os.Pipe(); err != nil {
		return nil, err
	}
	return j, nil
}

// close closes everything but the read ends, once the child has its own
// copies.
func (j *join) close() {
	if j.Join != nil {
		j.Join.Close()
	}
	closeAll([]*os.File{j.outW, j.errW})
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
