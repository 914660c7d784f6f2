package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/client"
)

// Record is the outcome of one call, one row of the per-invocation CSV.
type Record struct {
	// Func indexes Plan.Funcs; Name is its deployed name.
	Func int
	Name string
	// At is the trace time of the call; Scheduled and Fired are wall
	// times since the replay started.
	At, Scheduled, Fired time.Duration
	// Response is the response time the generator saw.
	Response time.Duration
	// Exec is the execution time the call asked for.
	Exec time.Duration
	// Path is the start path the worker reported (warm, fork, snapshot,
	// cold), or empty when it reported none (throttled, not found, a
	// transport error).
	Path string
	// InitMs and RunMs are the worker's start and run times; WaitMs is
	// how long the call waited, before its start, for a concurrency slot,
	// for memory and for a turn to start; TurnWaitMs the part of it spent
	// waiting for the turn.
	InitMs, RunMs, WaitMs, TurnWaitMs float64
	// Status is the HTTP status, or 0 when there was no response.
	Status int
	// Err is the error message, empty on success.
	Err string
	// Waited reports that the call found the in-flight bound full.
	Waited bool
}

// Late returns how late the call fired.
func (r Record) Late() time.Duration { return r.Fired - r.Scheduled }

// OK reports whether the call succeeded.
func (r Record) OK() bool { return r.Status == 200 && r.Err == "" }

// Options control Run.
type Options struct {
	// MaxInFlight bounds the calls outstanding at once; 0 means 64.
	MaxInFlight int
	// LateTolerance is how late a call may fire before the replay counts
	// as behind; 0 means 50 ms.
	LateTolerance time.Duration
	// Progress, if not nil, receives a progress bar redrawn a few times
	// a second.
	Progress io.Writer
}

// Stats describe how faithfully the generator kept to the schedule.
type Stats struct {
	// Calls is the number of scheduled calls; Fired of them were sent.
	Calls, Fired int
	// MaxInFlight is the bound; BoundHits counts calls that found it
	// full and waited for a slot.
	MaxInFlight, BoundHits int
	// Late counts calls fired more than LateTolerance after their time;
	// MaxLate is the worst lateness.
	Late          int
	LateTolerance time.Duration
	MaxLate       time.Duration
	// Wall is the replay's wall time, from the first scheduled call to
	// the last answer.
	Wall time.Duration
}

// Behind reports whether the generator fell behind its schedule: a call
// fired late or waited for the in-flight bound.
func (s Stats) Behind() bool { return s.Late > 0 || s.BoundHits > 0 }

// String describes the stats in one sentence.
func (s Stats) String() string {
	msg := fmt.Sprintf("%d of %d calls fired in %v; max lateness %v", s.Fired, s.Calls,
		s.Wall.Round(time.Millisecond), s.MaxLate.Round(10*time.Microsecond))
	if s.Behind() {
		msg += fmt.Sprintf("; GENERATOR FELL BEHIND: %d calls fired more than %v late, in-flight bound (%d) hit %d times",
			s.Late, s.LateTolerance, s.MaxInFlight, s.BoundHits)
	}
	return msg
}

// Result is a finished (or interrupted) replay.
type Result struct {
	Plan    *Plan
	Records []Record // in schedule order; only the fired calls
	Stats   Stats
}

// Deploy deploys every function of the plan to the worker.
func Deploy(ctx context.Context, c *client.Client, p *Plan) error {
	for _, f := range p.Funcs {
		if err := deployOne(ctx, c, f); err != nil {
			return fmt.Errorf("deploying %s: %w", f.Name, err)
		}
	}
	return nil
}

func deployOne(ctx context.Context, c *client.Client, f Func) error {
	dir, err := os.MkdirTemp("", "hearth-replay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for name, src := range f.Files() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if err := client.PackDir(dir, &buf); err != nil {
		return err
	}
	_, err = c.Deploy(ctx, f.Name, &buf)
	return err
}

// Remove deletes the plan's functions from the worker, returning the first
// error.
func Remove(ctx context.Context, c *client.Client, p *Plan) error {
	var first error
	for _, f := range p.Funcs {
		if err := c.Delete(ctx, f.Name); err != nil && first == nil {
			first = fmt.Errorf("removing %s: %w", f.Name, err)
		}
	}
	return first
}

// Run replays the plan's calls open loop against the worker, whose
// functions must already be deployed (Deploy). It returns when every fired
// call has answered. If ctx ends first, no further calls fire, the
// outstanding ones are cancelled, and Run returns the partial result with
// ctx's error.
func Run(ctx context.Context, c *client.Client, p *Plan, o Options) (*Result, error) {
	bound := cmpOr(o.MaxInFlight, 64)
	tol := cmpOr(o.LateTolerance, 50*time.Millisecond)
	if bound < 0 || tol < 0 {
		return nil, fmt.Errorf("negative in-flight bound or tolerance: %w", ErrBadConfig)
	}
	res := &Result{Plan: p, Records: make([]Record, len(p.Calls))}
	res.Stats = Stats{Calls: len(p.Calls), MaxInFlight: bound, LateTolerance: tol}
	events := make([][]byte, len(p.Calls))
	for i, call := range p.Calls {
		events[i] = p.Funcs[call.Func].Event(call.Exec)
	}

	var done, inflight atomic.Int64
	stopBar := startBar(o.Progress, len(p.Calls), &done, &inflight)
	defer stopBar()

	slots := make(chan struct{}, bound)
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	start := time.Now()
	fired := 0
	var err error
loop:
	for i, call := range p.Calls {
		if d := time.Until(start.Add(call.Wall)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				err = ctx.Err()
				break loop
			}
		}
		rec := &res.Records[i]
		select {
		case slots <- struct{}{}:
		default:
			// Open loop with a bound: wait, but say so.
			rec.Waited = true
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				err = ctx.Err()
				break loop
			}
		}
		f := p.Funcs[call.Func]
		rec.Func, rec.Name, rec.At, rec.Scheduled, rec.Exec = call.Func, f.Name, call.At, call.Wall, call.Exec
		rec.Fired = time.Since(start)
		fired++
		inflight.Add(1)
		wg.Add(1)
		go func(ev []byte) {
			defer wg.Done()
			inv, ierr := c.Invoke(ctx, f.Name, ev)
			rec.Response = inv.Latency
			rec.Path, rec.InitMs, rec.RunMs, rec.WaitMs, rec.TurnWaitMs = inv.Path, inv.InitMs, inv.RunMs, inv.WaitMs, inv.TurnWaitMs
			var ce *client.Error
			switch {
			case ierr == nil:
				rec.Status = 200
			case errors.As(ierr, &ce):
				rec.Status = ce.Status
				rec.Err = ce.Error()
			default:
				rec.Err = ierr.Error()
			}
			<-slots
			inflight.Add(-1)
			done.Add(1)
		}(events[i])
	}
	wg.Wait()
	res.Stats.Wall = time.Since(start)
	res.Records = res.Records[:fired]
	res.Stats.Fired = fired
	for _, r := range res.Records {
		if r.Waited {
			res.Stats.BoundHits++
		}
		if l := r.Late(); l > tol {
			res.Stats.Late++
		}
		res.Stats.MaxLate = max(res.Stats.MaxLate, r.Late())
	}
	return res, err
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// startBar draws a progress bar on w until the returned func is called.
func startBar(w io.Writer, total int, done, inflight *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	draw := func() {
		n := int(done.Load())
		const width = 30
		fill := width
		if total > 0 {
			fill = n * width / total
		}
		bar := bytes.Repeat([]byte{'='}, fill)
		bar = append(bar, bytes.Repeat([]byte{' '}, width-fill)...)
		fmt.Fprintf(w, "\r[%s] %d/%d calls, %d in flight, %v", bar, n, total, inflight.Load(),
			time.Since(start).Round(time.Second))
	}
	go func() {
		defer wg.Done()
		// Redraw often on a terminal; into a file or pipe, where every
		// redraw stays, rarely.
		every := 10 * time.Second
		if isTerminal(w) {
			every = 250 * time.Millisecond
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				draw()
			case <-stop:
				draw()
				fmt.Fprintln(w)
				return
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}
