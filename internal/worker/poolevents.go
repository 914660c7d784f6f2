package worker

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hearth-run/hearth/internal/pool"
)

// eventLog is the file of PoolConfig.Events: the warm pool's events as
// pool.EventWriter writes them, which `hearth bench replay` lays beside
// the simulator's to see where a live pool and a simulated one part. The
// engine calls it under warmCache.mu, which guards it too. Events are
// written a second's worth at a time (a write per event would cost the
// lock a syscall each), all of them by the time the worker stops.
type eventLog struct {
	f       *os.File
	w       *pool.EventWriter
	flushed time.Time
}

func openEventLog(path string) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pool events: %w", err)
	}
	return &eventLog{f: f, w: pool.NewEventWriter(f), flushed: time.Now()}, nil
}

// write appends ev, of the function revision k. Names and revisions hold
// no commas (registry.ValidName; hex).
func (l *eventLog) write(ev pool.Event, k fnKey) {
	l.w.Write(ev, k.name, k.rev)
	if time.Since(l.flushed) >= time.Second {
		l.w.Flush() // an error sticks: close reports it
		l.flushed = time.Now()
	}
}

// close flushes and closes the file, reporting the first error.
func (l *eventLog) close() error {
	if err := errors.Join(l.w.Flush(), l.f.Close()); err != nil {
		return fmt.Errorf("pool events: %w", err)
	}
	return nil
}
