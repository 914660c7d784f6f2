package criu

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Report is what Probe found.
type Report struct {
	// Breakpoints is empty when hardware breakpoints trap on this host;
	// otherwise it says why criu runs without them (or why the probe
	// could not tell).
	Breakpoints string
	// SelfTest is what the dump and restore of a tiny process took.
	SelfTest SelfTestResult
}

// Probe finds criu (see Find), finds whether hardware breakpoints trap on
// this host (criu then runs without them when they do not: see
// Binary.NoBreakpoints), runs `criu check` and dumps and restores a tiny
// process, each step within timeout. The Binary it returns is set up for
// this host. Its errors wrap ErrNotFound or ErrTooOld (no usable criu),
// ErrCheck (the kernel lacks what criu needs) or ErrSelfTest (criu cannot
// dump or restore here, hung or failed).
func Probe(ctx context.Context, root string, timeout time.Duration) (*Binary, Report, error) {
	var rep Report
	bin, err := Find(ctx, root)
	if err != nil {
		return nil, rep, err
	}
	if err := ProbeBreakpoints(ctx, timeout); err != nil {
		// A probe that could not run says nothing either way: keep
		// breakpoints, and let the self-test decide.
		rep.Breakpoints = err.Error()
		bin.NoBreakpoints = errors.Is(err, ErrNoBreakpoints)
	}
	// Through a runner: `criu check` writes its probe cache into /run,
	// which must be the runner's private tmpfs, not the host's.
	r, err := NewRunner(ctx, bin)
	if err != nil {
		return bin, rep, err
	}
	defer r.Close()
	rep.SelfTest, err = r.SelfTest(ctx, timeout)
	if err != nil {
		return bin, rep, fmt.Errorf("CRIU %s could not dump and restore a test process (mode %s): %w: %w", bin.Version, bin.Mode(), err, ErrSelfTest)
	}
	return bin, rep, nil
}
