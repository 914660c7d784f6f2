package worker

import (
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/api/types"
	"github.com/hearth-run/hearth/internal/runtime"
)

// LogLine is one line a function's sandboxes printed.
type LogLine = types.LogLine

// LogTail is a slice of a function's log, and where it sits in all the
// lines the function printed.
type LogTail = types.LogTail

// lineCost is what a kept line is charged against logStore.maxBytes: its
// text and the LogLine that holds it.
func lineCost(text string) int64 { return int64(len(text)) + int64(unsafe.Sizeof(LogLine{})) }

// logStore keeps the newest output lines of every function, at most
// maxLines per function and about maxBytes for all of them, so that the
// worker's memory stays bounded however many functions print and however
// much: past maxBytes it drops the oldest lines of the functions that
// hold the most (see trimLocked). A function's ring is freed with drop.
// It is safe for concurrent use.
type logStore struct {
	maxLines int
	maxBytes int64

	mu    sync.Mutex
	bytes int64                 // charged by every ring; guarded by mu
	rings map[*logRing]struct{} // live rings; guarded by mu
}

func newLogStore(maxLines int, maxBytes int64) *logStore {
	return &logStore{maxLines: maxLines, maxBytes: maxBytes, rings: map[*logRing]struct{}{}}
}

// logRing is one function's lines in a logStore. Its fields are guarded
// by the store's mu.
type logRing struct {
	store *logStore
	epoch string
	lines []LogLine // oldest first, from head
	head  int
	seq   uint64 // of the newest line
	bytes int64  // charged for the kept lines
	gone  bool   // dropped: lines still coming from exiting sandboxes are ignored
}

// ring returns a new, empty ring.
func (s *logStore) ring() *logRing {
	r := &logRing{store: s, epoch: strconv.FormatInt(time.Now().UnixNano(), 36)}
	s.mu.Lock()
	s.rings[r] = struct{}{}
	s.mu.Unlock()
	return r
}

// drop frees r: its function is gone.
func (s *logStore) drop(r *logRing) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.gone {
		return
	}
	r.gone = true
	delete(s.rings, r)
	s.bytes -= r.bytes
	r.lines, r.head, r.bytes = nil, 0, 0
}

// usage returns the bytes charged and the number of lines kept, for tests.
func (s *logStore) usage() (bytes int64, lines int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.rings {
		lines += len(r.lines) - r.head
	}
	return s.bytes, lines
}

func (r *logRing) add(st runtime.Stream, text string) {
	now := time.Now()
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.gone {
		return
	}
	r.seq++
	r.lines = append(r.lines, LogLine{Seq: r.seq, Time: now, Stream: st.String(), Text: text})
	c := lineCost(text)
	r.bytes += c
	s.bytes += c
	if len(r.lines)-r.head > s.maxLines {
		r.dropOldestLocked()
	}
	if s.bytes > s.maxBytes {
		s.trimLocked()
	}
	r.compactLocked()
}

// dropOldestLocked drops r's oldest line.
func (r *logRing) dropOldestLocked() {
	c := lineCost(r.lines[r.head].Text)
	r.bytes -= c
	r.store.bytes -= c
	r.lines[r.head] = LogLine{}
	r.head++
}

// compactLocked moves the kept lines to the front once the dropped ones
// take half the slice, so that it never holds much more than its lines.
func (r *logRing) compactLocked() {
	if r.head >= 64 && r.head > len(r.lines)/2 {
		n := copy(r.lines, r.lines[r.head:])
		clear(r.lines[n:])
		r.lines, r.head = r.lines[:n], 0
		if cap(r.lines) > 4*max(n, 64) {
			r.lines = append([]LogLine(nil), r.lines...)
		}
	}
}

// trimLocked brings the store down to 7/8 of maxBytes (not to just under
// it, so that trims are rare), fairly: it finds the largest share q such
// that no ring holding more than q keeps more, and drops the oldest lines
// of those rings until each holds at most q. Functions that print little
// keep all their lines; the noisy ones lose their oldest first.
func (s *logStore) trimLocked() {
	target := s.maxBytes / 8 * 7
	sizes := make([]int64, 0, len(s.rings))
	for r := range s.rings {
		sizes = append(sizes, r.bytes)
	}
	slices.Sort(sizes)
	// Water-fill: the rings below q keep all; those above get q each.
	q, left := int64(0), target
	for i, b := range sizes {
		share := left / int64(len(sizes)-i)
		if b > share {
			q = share
			break
		}
		left -= b
		q = b
	}
	for r := range s.rings {
		for r.bytes > q && r.head < len(r.lines) {
			r.dropOldestLocked()
		}
		r.compactLocked()
	}
}

// query returns up to n lines (all if n <= 0), oldest first: the newest
// ones if since is 0, else the first ones from Seq since on.
func (r *logRing) query(n int, since uint64) LogTail {
	s := r.store
	s.mu.Lock()
	defer s.mu.Unlock()
	t := LogTail{Epoch: r.epoch, Limit: s.maxLines, LimitBytes: s.maxBytes, Next: r.seq + 1}
	kept := r.lines[r.head:]
	first := r.seq + 1 // Seq of the oldest kept line
	if len(kept) > 0 {
		first = kept[0].Seq
	}
	if since == 0 {
		t.Dropped = first - 1
		if n > 0 && len(kept) > n {
			t.Older = len(kept) - n
			kept = kept[t.Older:]
		}
	} else {
		if since < first {
			t.Dropped = first - since
		} else {
			kept = kept[min(since-first, uint64(len(kept))):]
		}
		if n > 0 && len(kept) > n {
			t.Newer = len(kept) - n
			kept = kept[:n]
		}
	}
	if len(kept) > 0 {
		t.Next = kept[len(kept)-1].Seq + 1
	}
	t.Lines = append([]LogLine{}, kept...)
	return t
}

// logSink receives the output of a function's sandboxes, one pipe per
// sandbox and stream, for its ring and the worker's debug log.
type logSink struct {
	ring *logRing
	log  *slog.Logger
	def  runtime.Stream // the stream of the pipes' untagged output
}

// pipe returns the parser of one pipe's output. Each pipe needs its
// own: a line is only whole within its pipe.
func (s *logSink) pipe() *runtime.Output {
	return runtime.NewOutput(s.def, func(st runtime.Stream, line string) {
		s.ring.add(st, line)
		s.log.Debug("sandbox output", "stream", st.String(), "line", line)
	})
}

// outPipe is the read end of one of a sandbox's output pipes, and its
// parser. The runtime writes a call's lines to the pipe before it sends
// the answer, but the parser may read them later: drainOutput waits
// until all that was written before it was called has been parsed, so
// that a call's lines are in its function's log when the call returns.
type outPipe struct {
	rc syscall.RawConn
	// mu is held across each read of the pipe, so that mark never sees
	// data gone from the pipe and not yet counted in read.
	mu       sync.Mutex
	read     uint64 // bytes read; guarded by mu
	parsed   atomic.Uint64
	progress chan struct{} // a token after each parsed read (capacity 1)
	done     chan struct{} // closed when the pipe's writers are gone
}

// copyLines parses r, a pipe made by os.Pipe, into s until r's writers
// are gone, then closes r.
func copyLines(s *logSink, r *os.File) *outPipe {
	p := &outPipe{progress: make(chan struct{}, 1), done: make(chan struct{})}
	rc, err := r.SyscallConn()
	if err != nil { // not for a pipe from os.Pipe: copy without the count
		go func() {
			defer close(p.done)
			o := s.pipe()
			io.Copy(o, r)
			o.Close()
			r.Close()
		}()
		return p
	}
	p.rc = rc
	go p.copy(s, r)
	return p
}

func (p *outPipe) copy(s *logSink, r *os.File) {
	defer close(p.done)
	defer r.Close()
	o := s.pipe()
	defer o.Close()
	buf := make([]byte, 32<<10)
	for {
		var n int
		var rerr error
		err := p.rc.Read(func(fd uintptr) bool {
			p.mu.Lock()
			n, rerr = unix.Read(int(fd), buf)
			if n > 0 {
				p.read += uint64(n)
			}
			p.mu.Unlock()
			return rerr != unix.EAGAIN
		})
		if n > 0 {
			o.Write(buf[:n])
			p.parsed.Add(uint64(n))
			select {
			case p.progress <- struct{}{}:
			default:
			}
			continue
		}
		if err != nil || (rerr != nil && rerr != unix.EINTR) || (rerr == nil && n == 0) {
			return // closed, failed, or every writer is gone
		}
	}
}

// mark returns how many bytes have been written to the pipe so far:
// those the parser read and those still in the pipe. ok is false when
// the pipe is closed (the parser is ending).
func (p *outPipe) mark() (n uint64, ok bool) {
	var pending int // FIONREAD, which Linux spells TIOCINQ
	var ierr error
	p.mu.Lock()
	defer p.mu.Unlock()
	cerr := p.rc.Control(func(fd uintptr) { pending, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
	if cerr != nil || ierr != nil {
		return 0, false
	}
	return p.read + uint64(pending), true
}

// drainLimit bounds how long a call's answer waits for its output to be
// parsed: the parser may be slow (a busy host, a flood of lines).
const drainLimit = 250 * time.Millisecond

// drainOutput waits, at most drainLimit, until what inst's sandbox
// wrote to its pipes before now is parsed into its function's log. A
// pipe is first in, first out: what is written after the mark (a
// thread that goes on printing) is not waited for.
func (inst *instance) drainOutput() {
	var timeout <-chan time.Time
	for _, p := range inst.out {
		if p.rc == nil {
			continue // uncounted: nothing to wait for
		}
		target, ok := p.mark()
		if !ok {
			continue
		}
	wait:
		for p.parsed.Load() < target {
			if timeout == nil {
				t := time.NewTimer(drainLimit)
				defer t.Stop()
				timeout = t.C
			}
			select {
			case <-p.progress:
			case <-p.done:
				break wait
			case <-timeout:
				return
			}
		}
	}
}

// awaitOutputEnd waits, at most drainLimit, for the parsers of inst's
// pipes to end: after its sandbox is destroyed, so that the lines of a
// call that failed (the sandbox crashed or ran out of time) are all in
// the log when it returns.
func (inst *instance) awaitOutputEnd() {
	t := time.NewTimer(drainLimit)
	defer t.Stop()
	for _, p := range inst.out {
		select {
		case <-p.done:
		case <-t.C:
			return
		}
	}
}

// outputPipes makes the stdout and stderr pipes of a new sandbox of st's
// function: the caller passes the write ends to the sandbox and closes
// them once it has its copies; the read ends are parsed by goroutines
// that end when every copy of the write ends is closed.
func outputPipes(st *fnState) (outW, errW *os.File, out []*outPipe, err error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, nil, err
	}
	return outW, errW, []*outPipe{copyLines(st.stdout, outR), copyLines(st.stderr, errR)}, nil
}

// zygoteLog passes the zygotes' own output to the worker's debug log. A
// root zygote that is replaced can still be writing while the new one
// starts, so writes are serialised.
type zygoteLog struct {
	mu  sync.Mutex
	out *runtime.Output
}

func newZygoteLog(log *slog.Logger) *zygoteLog {
	return &zygoteLog{out: runtime.NewOutput(runtime.Stderr, func(_ runtime.Stream, line string) {
		log.Debug("zygote output", "line", line)
	})}
}

func (z *zygoteLog) Write(p []byte) (int, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.out.Write(p)
}
