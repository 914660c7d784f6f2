package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/runtime"
	"golang.org/x/sys/unix"
)

func seqs(ls []LogLine) []uint64 {
	out := []uint64{}
	for _, l := range ls {
		out = append(out, l.Seq)
	}
	return out
}

func span(lo, hi uint64) []uint64 {
	out := []uint64{}
	for s := lo; s <= hi; s++ {
		out = append(out, s)
	}
	return out
}

// TestLogRingQuery reads a ring of 10 lines that saw 25: the newest n,
// or the lines from a seq on, and what each answer says it left out.
func TestLogRingQuery(t *testing.T) {
	r := newLogStore(10, 1<<30).ring()
	for i := 1; i <= 25; i++ {
		s := runtime.Stdout
		if i%2 == 0 {
			s = runtime.Stderr
		}
		r.add(s, fmt.Sprintf("line %d", i))
	}
	tests := []struct {
		name    string
		n       int
		since   uint64
		want    []uint64
		older   int
		dropped uint64
		next    uint64
		newer   int
	}{
		{"all kept", 0, 0, span(16, 25), 0, 15, 26, 0},
		{"newest 4", 4, 0, span(22, 25), 6, 15, 26, 0},
		{"more than kept", 50, 0, span(16, 25), 0, 15, 26, 0},
		{"since a kept line", 0, 20, span(20, 25), 0, 0, 26, 0},
		{"since a kept line, 3 of them", 3, 20, span(20, 22), 0, 0, 23, 3},
		{"since a dropped line", 0, 12, span(16, 25), 0, 4, 26, 0},
		{"since the first", 2, 1, span(16, 17), 0, 15, 18, 8},
		{"since the next", 0, 26, []uint64{}, 0, 0, 26, 0},
		{"since beyond the log", 0, 90, []uint64{}, 0, 0, 26, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.query(tt.n, tt.since)
			if fmt.Sprint(seqs(got.Lines)) != fmt.Sprint(tt.want) {
				t.Errorf("lines %v, want %v", seqs(got.Lines), tt.want)
			}
			if got.Older != tt.older || got.Dropped != tt.dropped || got.Next != tt.next || got.Newer != tt.newer {
				t.Errorf("older %d dropped %d next %d newer %d, want %d %d %d %d",
					got.Older, got.Dropped, got.Next, got.Newer, tt.older, tt.dropped, tt.next, tt.newer)
			}
			if got.Limit != 10 || got.LimitBytes != 1<<30 || got.Epoch != r.epoch || got.Epoch == "" {
				t.Errorf("limit %d epoch %q", got.Limit, got.Epoch)
			}
			for _, l := range got.Lines {
				if l.Text != fmt.Sprintf("line %d", l.Seq) || (l.Stream == "stderr") != (l.Seq%2 == 0) || l.Time.IsZero() {
					t.Errorf("line %+v", l)
				}
			}
		})
	}
}

// TestLogStoreBound has many functions print, some a lot: the store never
// holds more than its byte bound, the quiet functions keep all their
// lines while the noisy ones lose their oldest, and dropping a function's
// ring frees what it held.
func TestLogStoreBound(t *testing.T) {
	const maxBytes = 256 << 10
	s := newLogStore(1000, maxBytes)
	line := strings.Repeat("x", 100)
	quiet := make([]*logRing, 20)
	for i := range quiet {
		quiet[i] = s.ring()
		for range 10 {
			quiet[i].add(runtime.Stdout, line)
		}
	}
	var noisy []*logRing
	for range 50 {
		r := s.ring()
		noisy = append(noisy, r)
		for i := range 2000 {
			r.add(runtime.Stderr, fmt.Sprintf("%s %d", line, i))
			if b, _ := s.usage(); b > maxBytes {
				t.Fatalf("store holds %d bytes, bound %d", b, maxBytes)
			}
		}
	}
	for i, r := range quiet {
		if tl := r.query(0, 0); len(tl.Lines) != 10 || tl.Dropped != 0 {
			t.Errorf("quiet function %d: %d lines kept, %d dropped; want all 10", i, len(tl.Lines), tl.Dropped)
		}
	}
	for i, r := range noisy {
		tl := r.query(0, 0)
		if len(tl.Lines) == 0 || tl.Lines[len(tl.Lines)-1].Text != line+" 1999" || tl.Dropped+uint64(len(tl.Lines)) != 2000 {
			t.Errorf("noisy function %d: %d lines kept, %d dropped; want the newest kept and 2000 in all", i, len(tl.Lines), tl.Dropped)
		}
	}
	// Recount what the rings hold: the store's total must match.
	var sum int64
	for _, r := range append(quiet, noisy...) {
		for _, l := range r.query(0, 0).Lines {
			sum += lineCost(l.Text)
		}
	}
	if b, _ := s.usage(); b != sum {
		t.Errorf("store charges %d bytes, its lines cost %d", b, sum)
	}
	// Functions come and go: dropping frees, and a dropped ring takes no
	// more lines.
	for _, r := range append(quiet, noisy...) {
		s.drop(r)
	}
	if b, n := s.usage(); b != 0 || n != 0 || len(s.rings) != 0 {
		t.Errorf("after dropping every ring: %d bytes, %d lines, %d rings", b, n, len(s.rings))
	}
	quiet[0].add(runtime.Stdout, "late line from an exiting sandbox")
	if b, _ := s.usage(); b != 0 {
		t.Errorf("a dropped ring took a line: %d bytes", b)
	}
}

// TestLogRingLineBound keeps at most maxLines per function, and a ring's
// slice stays near its kept lines however many go through it.
func TestLogRingLineBound(t *testing.T) {
	s := newLogStore(100, 1<<30)
	r := s.ring()
	for i := range 100000 {
		r.add(runtime.Stdout, strconv.Itoa(i))
	}
	tl := r.query(0, 0)
	if len(tl.Lines) != 100 || tl.Lines[0].Text != "99900" || tl.Dropped != 99900 {
		t.Errorf("%d lines from %q, %d dropped", len(tl.Lines), tl.Lines[0].Text, tl.Dropped)
	}
	if c := cap(r.lines); c > 400 {
		t.Errorf("ring slice has capacity %d for 100 lines", c)
	}
}

// slowHandler is a slog handler that takes its time over each record
// until fast is set: a parser that lags behind the pipe, as on a busy
// host.
type slowHandler struct {
	d    time.Duration
	fast *atomic.Bool
}

func (h slowHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h slowHandler) Handle(context.Context, slog.Record) error {
	if h.fast == nil || !h.fast.Load() {
		time.Sleep(h.d)
	}
	return nil
}
func (h slowHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h slowHandler) WithGroup(string) slog.Handler      { return h }

// TestDrainOutputWaitsForTheParser writes lines to a sandbox's pipe whose
// parser lags (5 ms a line): drainOutput returns only once every line
// is in the function's log, and the log is complete right after.
func TestDrainOutputWaitsForTheParser(t *testing.T) {
	ring := newLogStore(100, 1<<20).ring()
	sink := &logSink{ring: ring, log: slog.New(slowHandler{5 * time.Millisecond, nil}), def: runtime.Stdout}
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	inst := &instance{out: []*outPipe{copyLines(sink, r)}}
	for round := 1; round <= 3; round++ {
		for i := 0; i < 5; i++ {
			fmt.Fprintf(wr, "round %d line %d\n", round, i)
		}
		inst.drainOutput()
		if got := len(ring.query(0, 0).Lines); got != 5*round {
			t.Fatalf("round %d: %d lines in the log after the drain, want %d", round, got, 5*round)
		}
	}
}

// TestDrainOutputGivesUp: a parser that lags far behind (a pipe full of
// lines at 1 ms each) costs the call drainLimit, not forever.
func TestDrainOutputGivesUp(t *testing.T) {
	var fast atomic.Bool
	sink := &logSink{ring: newLogStore(10, 1<<20).ring(), log: slog.New(slowHandler{time.Millisecond, &fast}), def: runtime.Stdout}
	took, inst := drainBesideWriter(t, sink, true, func() { fast.Store(true) })
	if took < drainLimit || took > drainLimit+2*time.Second {
		t.Errorf("drain behind a lagging parser took %v, want about %v", took, drainLimit)
	}
	// Once the writers are gone there is nothing to wait for.
	<-inst.out[0].done
	t0 := time.Now()
	inst.drainOutput()
	if d := time.Since(t0); d >= drainLimit {
		t.Errorf("drain of a closed pipe took %v: it waited for its limit", d)
	}
}

// TestDrainOutputIgnoresLaterLines: a thread that never stops printing
// does not hold its call's answer: the drain waits for what was written
// before it began, not for the pipe to empty.
func TestDrainOutputIgnoresLaterLines(t *testing.T) {
	sink := &logSink{ring: newLogStore(10, 1<<20).ring(), log: slog.New(slowHandler{0, nil}), def: runtime.Stdout}
	took, _ := drainBesideWriter(t, sink, false, func() {})
	// A drain that waited for the later lines ends at its limit; one that
	// did not took what parsing the backlog took (a small pipe's worth).
	if took >= drainLimit {
		t.Errorf("drain beside a writer that never stops took %v: it waited for its limit", took)
	}
}

// drainBesideWriter drains a pipe parsed into sink while a goroutine
// writes lines to it without pause, and returns how long the drain took.
// The drain begins once the pipe is full (full: for a parser that lags)
// or once 100 lines are written. settle runs after the drain, before the
// writer is stopped.
func drainBesideWriter(t *testing.T, sink *logSink, full bool, settle func()) (time.Duration, *instance) {
	t.Helper()
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The smallest pipe: the backlog a drain must parse stays a few
	// hundred lines, quick even under the race detector on a busy host.
	var ferr error
	if err := rawControl(wr, func(fd int) { _, ferr = unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, 4096) }); err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	inst := &instance{out: []*outPipe{copyLines(sink, r)}}
	fmt.Fprintln(wr, "first") // the pipe is not empty when the drain starts
	stop := make(chan struct{})
	done := make(chan struct{})
	var written atomic.Int64
	go func() {
		defer close(done)
		defer wr.Close()
		for {
			select {
			case <-stop:
				return
			default:
				fmt.Fprintln(wr, "again")
				written.Add(1)
			}
		}
	}()
	// The writer is under way: a fixed pause let a writer not yet run on
	// a busy host leave the drain nothing to wait for.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		inq := 0
		if err := rawControl(r, func(fd int) { inq, _ = unix.IoctlGetInt(fd, unix.TIOCINQ) }); err != nil {
			t.Fatal(err)
		}
		if full && inq >= 4000 || !full && written.Load() >= 100 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after 10 s the writer has written %d lines, the pipe holds %d bytes", written.Load(), inq)
		}
	}
	t0 := time.Now()
	inst.drainOutput()
	took := time.Since(t0)
	settle()
	close(stop)
	<-done
	return took, inst
}

// rawControl runs fn on f's descriptor without taking it out of the
// runtime's poller (as f.Fd would, making it blocking).
func rawControl(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}
