package localrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hearth-run/hearth/internal/archive"
	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/function"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// socketName is the runtime's listening socket in the sandbox's /tmp, as
// the worker names it.
const socketName = ".hearth.sock"

// Options say what to run.
type Options struct {
	// Dir is the function's directory, as the user named it: tracebacks
	// show the function's files below it.
	Dir string
	// Name is the function's name (context.function_name; default Dir's
	// base name).
	Name string
	// Requirements, if not nil, replace the requirement lines of Dir's
	// requirements.txt.
	Requirements []string
	// Output receives each line the function writes, with its stream,
	// as it comes; nil drops them. The runtime's own report of an
	// unhandled error (the one a worker's log gets) is left out: the
	// call's error carries it.
	Output func(stream runtime.Stream, line string)
}

// Start is how an Instance started.
type Start struct {
	// Path is the start path: always "cold" (no zygotes, no snapshots).
	Path string
	// Sandbox is the time to create the cgroup and the sandbox.
	Sandbox time.Duration
	// Ready is the time from the sandbox's creation to the runtime
	// having loaded the handler.
	Ready time.Duration
	// Load is the handler's import time, measured by the runtime.
	Load time.Duration
}

// Call is the outcome of one invocation that reached the handler.
type Call struct {
	// N counts the instance's calls from 1.
	N int
	// Path is "cold" for an instance's first call, "warm" after.
	Path string
	// Latency is the call's round trip from this process.
	Latency time.Duration
	// Run is the handler's run time, measured by the runtime.
	Run time.Duration
	// Body is the JSON result, when Err is nil.
	Body []byte
	// Err is the handler's error, its paths the user's (see Options.Dir).
	Err *runtime.HandlerError
}

// Instance is one sandbox running a function's handler. The caller must
// Close it.
type Instance struct {
	s        *Session
	opts     Options
	spec     function.Spec
	warnings []string
	code     string
	group    *cgroup.Group
	sb       *sandbox.Sandbox
	conn     *runtime.Conn
	out      *lineSink
	outs     []*collector
	calls    int
	closed   bool
}

// Prepare copies opts.Dir and reads its function.yaml and requirements
// as a deploy does, and checks that the base image satisfies the
// requirements. The caller must Close the Instance; Start starts it.
func (s *Session) Prepare(opts Options) (_ *Instance, err error) {
	if opts.Name == "" {
		abs, _ := filepath.Abs(opts.Dir)
		opts.Name = filepath.Base(abs)
	}
	s.seq++
	inst := &Instance{s: s, opts: opts, code: filepath.Join(s.dir, "code-"+strconv.Itoa(s.seq))}
	inst.out = &lineSink{emit: opts.Output, dir: opts.Dir}
	defer func() {
		if err != nil {
			inst.Close(context.Background())
		}
	}()
	if err := archive.CopyDir(opts.Dir, inst.code, archive.Limits{}); err != nil {
		return nil, fmt.Errorf("copying %s: %w", opts.Dir, err)
	}
	spec, warnings, err := function.Load(inst.code)
	if err != nil {
		return nil, err
	}
	if opts.Requirements != nil {
		spec.Requirements = opts.Requirements
	}
	if err := function.CheckRequirements(s.cfg.Base, spec.Requirements); err != nil {
		return nil, fmt.Errorf("%w: hearth run uses the base image's packages only and installs none; deploy the function to a worker to have the rest installed:\n%v", ErrPackages, err)
	}
	if spec.Network != "" && spec.Network != function.NetworkNone {
		warnings = append(warnings, fmt.Sprintf("network: %s is not applied by hearth run: the function runs in the host's network (as network: none)", spec.Network))
	}
	inst.spec, inst.warnings = spec, warnings
	return inst, nil
}

// Spec returns the function's configuration, as a deploy would read it.
func (inst *Instance) Spec() function.Spec { return inst.spec }

// Warnings returns what of the function's configuration has no effect:
// ol.yaml keys without an equivalent, and what hearth run does not apply.
func (inst *Instance) Warnings() []string { return inst.warnings }

// Start starts the handler in a new sandbox, as a worker's cold start
// does, and waits for it to load. A handler that fails to load is a
// *LoadFailure (matching ErrLoad), its paths the user's; the sandbox is
// then gone, and every line the function wrote has been passed on.
// Start returns the timings up to the failure too.
func (inst *Instance) Start(ctx context.Context) (st Start, err error) {
	s := inst.s
	st.Path = "cold"
	ctx, cancel := context.WithTimeout(ctx, s.cfg.InitTimeout)
	defer cancel()
	t0 := time.Now()
	if err := inst.create(ctx); err != nil {
		return st, err
	}
	t1 := time.Now()
	st.Sandbox = t1.Sub(t0)
	ready, at, err := inst.connect(ctx)
	st.Ready, st.Load = at.Sub(t1), ready.Load
	return st, err
}

// create makes the instance's cgroup and sandbox, running a fresh
// runtime, as a worker's cold start does.
func (inst *Instance) create(ctx context.Context) error {
	s, spec := inst.s, inst.spec
	id := "sb-" + strconv.Itoa(s.seq)
	grp, err := s.cg.Create(id, cgroup.Limits{
		MemoryBytes: int64(spec.MemoryMB) << 20,
		Pids:        s.cfg.PidsLimit,
		CPUWeight:   100,
		CPUs:        spec.CPULimit(),
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	inst.group = grp
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	inst.outs = []*collector{
		newCollector(outR, runtime.Stdout, inst.out.line),
		newCollector(errR, runtime.Stderr, inst.out.line),
	}
	env := runtime.Env(runtime.Options{
		Handler:  spec.Handler,
		Function: inst.opts.Name,
		Revision: "local",
		MemoryMB: spec.MemoryMB,
		Timeout:  time.Duration(spec.TimeoutS) * time.Second,
	})
	env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8")
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	tmpBytes := int64(cmp.Or(spec.TmpMB, function.DefaultTmpMB)) << 20
	sb, err := s.factory.Create(ctx, sandbox.Config{
		ID: id,
		Binds: []sandbox.Bind{
			{Source: inst.code, Target: runtime.CodeDir},
			{Source: s.runtime, Target: runtime.MountPoint},
		},
		ScratchBytes: tmpBytes,
		ScratchDisk:  s.disks != nil && spec.TmpStorage != function.TmpMemory,
		Group:        grp,
		Command:      runtime.Argv(s.cfg.Python),
		Env:          env,
		Dir:          runtime.CodeDir,
		Socket:       socketName,
		Stdout:       outW,
		Stderr:       errW,
	})
	// The sandbox holds its copies; the collectors end when it is gone.
	outW.Close()
	errW.Close()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStart, err)
	}
	inst.sb = sb
	return nil
}

// connect dials the runtime and waits for the handler to load; at is
// when it answered (or failed to).
func (inst *Instance) connect(ctx context.Context) (_ runtime.Ready, at time.Time, _ error) {
	c, err := inst.sb.Dial(socketName)
	if err != nil {
		return runtime.Ready{}, time.Now(), fmt.Errorf("%w: cannot connect to the runtime: %v", ErrStart, err)
	}
	inst.conn = runtime.NewConn(c)
	// A dead sandbox must not leave WaitReady hanging.
	stopDone := make(chan struct{})
	defer close(stopDone)
	go func() {
		select {
		case <-inst.sb.Done():
			c.SetDeadline(time.Now())
		case <-stopDone:
		}
	}()
	ready, err := inst.conn.WaitReady(ctx)
	at = time.Now()
	inst.sync()
	if err == nil {
		c.SetDeadline(time.Time{})
		return ready, at, nil
	}
	var herr *runtime.HandlerError
	if errors.As(err, &herr) {
		// The runtime's report can end in a line without its newline,
		// which only the pipe's end passes on.
		herr = inst.out.fix(herr)
		inst.stop(ctx)
		inst.out.release(herr)
		return ready, at, &LoadFailure{Err: herr}
	}
	inst.out.release(nil)
	switch {
	case ctx.Err() != nil:
		if n, _ := inst.group.OOMKills(); n > 0 {
			return ready, at, fmt.Errorf("%w: out of memory while loading the handler (memory_mb %d)", ErrStart, inst.spec.MemoryMB)
		}
		return ready, at, fmt.Errorf("%w: the handler was not loaded within %v: %w", ErrStart, inst.s.cfg.InitTimeout, ctx.Err())
	default:
		return ready, at, fmt.Errorf("%w: the runtime exited while loading the handler (%s)", ErrStart, inst.exit())
	}
}

// LoadFailure is the error of a handler that failed to load.
type LoadFailure struct {
	// Err is the runtime's report, with the user's paths.
	Err *runtime.HandlerError
}

func (e *LoadFailure) Error() string { return "handler failed to load: " + e.Err.Error() }

// Unwrap matches ErrLoad and the handler's error.
func (e *LoadFailure) Unwrap() []error { return []error{ErrLoad, e.Err} }

// Invoke calls the handler once with event (JSON; empty is None) and
// waits for its result, the function's timeout_s at most. A handler
// error is Call.Err with a nil error. A call the handler does not finish
// (a timeout, a crash, ctx's end) is an error, and the instance is
// broken: the caller closes it.
func (inst *Instance) Invoke(ctx context.Context, event []byte) (Call, error) {
	inst.calls++
	c := Call{N: inst.calls, Path: "warm"}
	if c.N == 1 {
		c.Path = "cold"
	}
	timeout := time.Duration(inst.spec.TimeoutS) * time.Second
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	resp, err := inst.conn.Invoke(rctx, runtime.Request{
		ID:       inst.opts.Name + "-" + strconv.Itoa(c.N),
		Event:    event,
		Deadline: t0.Add(timeout),
	})
	c.Latency = time.Since(t0)
	inst.sync()
	if err != nil {
		inst.out.release(nil)
		switch {
		case ctx.Err() != nil:
			return c, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return c, fmt.Errorf("%w after %d s (timeout_s)", ErrTimeout, inst.spec.TimeoutS)
		}
		if n, _ := inst.group.OOMKills(); n > 0 {
			return c, fmt.Errorf("%w: out of memory (memory_mb %d)", ErrCrashed, inst.spec.MemoryMB)
		}
		return c, fmt.Errorf("%w: %s", ErrCrashed, inst.exit())
	}
	c.Run, c.Body = resp.Run, resp.Body
	if resp.Err != nil {
		c.Err = inst.out.fix(resp.Err)
	}
	inst.out.release(c.Err)
	return c, nil
}

// sync waits until every line the runtime wrote before now has been
// passed on.
func (inst *Instance) sync() {
	for _, c := range inst.outs {
		c.sync()
	}
}

// exit describes how the sandbox's main process ended, waiting a little
// for it.
func (inst *Instance) exit() string {
	select {
	case <-inst.sb.Done():
	case <-time.After(time.Second):
		return "it stopped answering"
	}
	code := inst.sb.ExitStatus()
	if code > 128 {
		return fmt.Sprintf("it was killed by signal %d", code-128)
	}
	return fmt.Sprintf("it exited with status %d", code)
}

// stop destroys the sandbox and waits for the end of its output.
func (inst *Instance) stop(ctx context.Context) error {
	var err error
	if inst.conn != nil {
		inst.conn.Close()
	}
	if inst.sb != nil {
		err = inst.sb.Destroy(ctx)
	}
	for _, c := range inst.outs {
		c.wait()
	}
	return err
}

// Close destroys the sandbox, its cgroup and the copy of the code.
// Close is idempotent.
func (inst *Instance) Close(ctx context.Context) error {
	if inst.closed {
		return nil
	}
	inst.closed = true
	errs := []error{inst.stop(ctx)}
	inst.out.release(nil)
	if inst.group != nil {
		if err := inst.group.Delete(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(inst.code); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
