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
	// Report is what the probe found and measured.
	Report criu.Report
}

// ProbeTimeout bounds each step of Probe's dump and restore of a tiny
// process: well over what they take on a busy host (0.1-0.4 s), well under
// what a caller should wait for a CRIU that hangs.
const ProbeTimeout = 3 * time.Second

// Probe looks for CRIU (in criuRoot, default criu.DefaultRoot, then on
// PATH) and checks that it works here (see criu.Probe). It never fails: a
// host without snapshots is a normal configuration, reported as not
// available with a reason.
func Probe(ctx context.Context, criuRoot string) Availability {
	if os.Geteuid() != 0 {
		return Availability{Reason: "not running as root (CRIU needs root)"}
	}
	bin, rep, err := criu.Probe(ctx, criuRoot, ProbeTimeout)
	a := Availability{CRIU: bin, Report: rep}
	switch {
	case errors.Is(err, criu.ErrTooOld):
		a.Reason = fmt.Sprintf("%v (run scripts/criu.sh for a private CRIU >= %s)", err, criu.MinVersion)
	case err != nil:
		a.Reason = err.Error()
	default:
		a.Available = true
	}
	return a
}
