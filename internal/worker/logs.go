package worker

import (
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hearth-run/hearth/internal/runtime"
)

// LogLine is one line a function's sandboxes printed.
type LogLine struct {
	// Seq numbers the function's lines from 1, in the order they reached
	// the worker.
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // "stdout" or "stderr"
	Text   string    `json:"text"`
}

// LogTail is a slice of a function's log, and where it sits in all the
// lines the function printed.
type LogTail struct {
	// Epoch names this log: a function deleted and deployed again, or a
	// restarted worker, starts a new one with Seq from 1.
	Epoch string    `json:"epoch"`
	Lines []LogLine `json:"lines"`
	// Older counts the kept lines before Lines that n left out.
	Older int `json:"older"`
	// Dropped counts the lines before Lines (since Since, if given) that
	// the worker no longer keeps.
	Dropped uint64 `json:"dropped"`
	// Next is the Seq after the last line of Lines (or of the log, if
	// Lines is empty): Since to ask for what follows.
	Next uint64 `json:"next"`
	// Newer counts the kept lines after Lines that n left out.
	Newer int `json:"newer"`
	// Limit is how many lines the worker keeps of a function.
	Limit int `json:"limit"`
}

// logRing keeps the last lines a function's sandboxes printed.
type logRing struct {
	epoch string
	mu    sync.Mutex
	max   int
	lines []LogLine // oldest first, from head
	head  int
	seq   uint64 // of the newest line
}

func newLogRing(n int) *logRing {
	if n <= 0 {
		n = 1000
	}
	return &logRing{max: n, epoch: strconv.FormatInt(time.Now().UnixNano(), 36)}
}

func (r *logRing) add(s runtime.Stream, text string) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.lines = append(r.lines, LogLine{Seq: r.seq, Time: now, Stream: s.String(), Text: text})
	if len(r.lines)-r.head > r.max {
		r.lines[r.head] = LogLine{}
		r.head++
	}
	if r.head > len(r.lines)/2 && r.head >= 64 {
		// Compact: the kept lines move to the front, so the slice never
		// holds much more than max lines.
		n := copy(r.lines, r.lines[r.head:])
		clear(r.lines[n:])
		r.lines, r.head = r.lines[:n], 0
	}
}

// query returns up to n lines (all if n <= 0), oldest first: the newest
// ones if since is 0, else the first ones from Seq since on.
func (r *logRing) query(n int, since uint64) LogTail {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := LogTail{Epoch: r.epoch, Limit: r.max, Next: r.seq + 1}
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

// copyLines parses r into s until r's writers are gone, then closes r.
func copyLines(s *logSink, r *os.File) {
	o := s.pipe()
	io.Copy(o, r)
	o.Close()
	r.Close()
}

// outputPipes makes the stdout and stderr pipes of a new sandbox of st's
// function: the caller passes the write ends to the sandbox and closes
// them once it has its copies; the read ends are parsed by goroutines
// that end when every copy of the write ends is closed.
func outputPipes(st *fnState) (outW, errW *os.File, err error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, err
	}
	go copyLines(st.stdout, outR)
	go copyLines(st.stderr, errR)
	return outW, errW, nil
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
