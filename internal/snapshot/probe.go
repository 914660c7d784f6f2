package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/hearth-run/hearth/internal/criu"
)

// Availability says whether this host can take and restore snapshots.
type Availability struct {
	// Available is true when a working CRIU was found.
	Available bool
	// Reason explains why not, when not available.
	Reason string
	// CRIU is the binary found, if any.
	CRIU *criu.Binary
}

// Probe looks for CRIU (in criuRoot, default criu.DefaultRoot, then on
// PATH) and runs `criu check`. It never fails: a host without snapshots
// is a normal configuration, reported as not available with a reason.
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
	// Through a runner: `criu check` writes its probe cache into /run,
	// which must be the runner's private tmpfs, not the host's.
	r, err := criu.NewRunner(ctx, bin)
	if err != nil {
		return Availability{CRIU: bin, Reason: err.Error()}
	}
	r.Close()
	return Availability{Available: true, CRIU: bin}
}
