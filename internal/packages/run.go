package packages

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// runner runs jobs in installer sandboxes. Each job gets a fresh sandbox
// (its own mount, pid, uts and ipc namespaces; the factory's unprivileged
// uid, no capabilities, no_new_privs; an init that dies with the worker)
// in its own cgroup below the runner's manager, with memory and pids
// limits and a deadline; both are gone when the job returns. A worker
// that dies mid-job leaves the group to its reaper, which sweeps the
// manager's parent. The pip runs of a Cache and the byte compiles of a
// Compiler share this code (and, in a worker, the same factory and
// cgroup parent). A runner is safe for concurrent use.
type runner struct {
	sandboxes *sandbox.Factory
	cgroups   *cgroup.Manager
	seq       atomic.Int64
}

// job is one sandboxed run.
type job struct {
	// kind prefixes the sandbox's and the cgroup's names ("pip",
	// "compile"); prog names the program in errors ("pip", "the
	// compiler").
	kind, prog string
	// argv, env and dir are the command, its whole environment and its
	// working directory inside the sandbox.
	argv []string
	env  []string
	dir  string
	// binds are mounted over the base image (the targets must exist in
	// it).
	binds []sandbox.Bind
	// limits are the cgroup's; timeout bounds the whole run (required).
	limits  cgroup.Limits
	timeout time.Duration
	// scratch is the size of the sandbox's /tmp, a tmpfs whose pages
	// are charged to the job's cgroup (zero: the factory's default).
	scratch int64
	// collect reads the results once the command has exited; its error
	// is the job's. It is not called when the command ran out of memory
	// or time.
	collect func(res result) error
}

// result is what a job's collect sees.
type result struct {
	// status is the command's exit status.
	status int
	// output is the tail of its stdout and stderr, interleaved.
	output string
	// scratch is the host path of the sandbox's /tmp: still mounted,
	// with every process of the sandbox gone.
	scratch string
}

// run runs j in a fresh sandbox and cgroup and removes both.
func (r *runner) run(ctx context.Context, j job) error {
	ctx, cancel := context.WithTimeoutCause(ctx, j.timeout, fmt.Errorf("%w (%v)", ErrTimeout, j.timeout))
	defer cancel()
	id := fmt.Sprintf("%s-%d-%d", j.kind, os.Getpid(), r.seq.Add(1))
	grp, err := r.cgroups.Create(id, j.limits)
	if err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	defer grp.Delete(context.Background())
	var output tailBuffer
	sb, err := r.sandboxes.Create(ctx, sandbox.Config{
		ID:           id,
		Binds:        j.binds,
		ScratchBytes: j.scratch,
		Group:        grp,
		Command:      j.argv,
		Env:          j.env,
		Dir:          j.dir,
		Stdout:       &output,
		Stderr:       &output,
	})
	if err != nil {
		return fmt.Errorf("installer: %w", err)
	}
	// Destroy kills the sandbox's init, and with it every process of its
	// pid namespace, and waits for it.
	defer sb.Destroy(context.Background())
	select {
	case <-sb.Done():
	case <-ctx.Done():
		sb.Destroy(context.Background())
		return fmt.Errorf("installer: %s did not finish: %w (output: %s)", j.prog, context.Cause(ctx), output.tail(10))
	}
	status := sb.ExitStatus()
	if n, _ := grp.OOMKills(); n > 0 {
		return fmt.Errorf("installer: %s %w (limit %d MiB)", j.prog, ErrOutOfMemory, j.limits.MemoryBytes>>20)
	}
	return j.collect(result{status: status, output: output.String(), scratch: sb.Scratch()})
}
