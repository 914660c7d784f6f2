package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hearth-run/hearth/internal/criu"
)

// Availability says whether this host can take and restore snapshots.
type Availability struct {
	// Available is true when a working CRIU was found and dumped and
	// restored a process within the probe's deadline.
	Available bool
	// Reason explains why not, when not available.
	Reason string
	// CRIU is the binary found, if any, set up for this host (see
	// criu.Binary.NoBreakpoints).
	CRIU *criu.Binary
	// Breakpoints says what the hardware-breakpoint probe found: empty
	// when they trap, else why criu runs without them.
	Breakpoints string
	// SelfTest is what the probe's dump and restore took.
	SelfTest criu.SelfTestResult
}

// ProbeTimeout bounds each step of Probe's dump and restore of a tiny
// process: well over what they take on a busy host (0.1-0.4 s), well under
// what a caller should wait for a CRIU that hangs.
const ProbeTimeout = 3 * time.Second

// Probe looks for CRIU (in criuRoot, default criu.DefaultRoot, then on
// PATH), runs `criu check`, finds whether hardware breakpoints trap on
// this host (criu then runs without them if they do not), and dumps and
// restores a tiny process, each step within ProbeTimeout. It never fails:
// a host without snapshots is a normal configuration, reported as not
// available with a reason.
func Probe(ctx context.Context, criuRoot string) Availability {
	if os.Geteuid() != 0 {
		return Availability{Reason: "not running as root (CRIU needs root)"}
	}
	bin, err := criu.Find(ctx, criuRoot)
	if err != nil {
		if errors.Is(err, criu.ErrTooOld) {
			return Availability{Reason: fmt.Sprintf("%v (run scripts/criu.sh for a private CRIU >= %s)", err, criu.MinVersion)}
		}
		return Availability{Reason: err.Error()}
	}
	a := Availability{CRIU: bin}
	if err := criu.ProbeBreakpoints(ctx, ProbeTimeout); err != nil {
		// A probe that could not run says nothing either way: keep
		// breakpoints, and let the self-test decide.
		a.Breakpoints = err.Error()
		bin.NoBreakpoints = errors.Is(err, criu.ErrNoBreakpoints)
	}
	// Through a runner: `criu check` writes its probe cache into /run,
	// which must be the runner's private tmpfs, not the host's.
	r, err := criu.NewRunner(ctx, bin)
	if err != nil {
		a.Reason = err.Error()
		return a
	}
	defer r.Close()
	a.SelfTest, err = r.SelfTest(ctx, ProbeTimeout)
	if err != nil {
		a.Reason = fmt.Sprintf("CRIU %s could not dump and restore a test process (mode %s): %v", bin.Version, bin.Mode(), err)
		return a
	}
	a.Available = true
	return a
}
