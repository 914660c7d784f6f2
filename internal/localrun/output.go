package localrun

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/runtime"
)

// collector parses one output pipe of a sandbox into lines. Every read
// of the pipe happens under mu, whether by its own goroutine or by
// sync: once sync has drained the pipe, every byte written to it before
// has been parsed and its lines passed on. The runtime flushes the
// handler's output before it answers a call, so a sync after the answer
// passes on all of the call's output before the caller prints its
// result.
type collector struct {
	f    *os.File
	rc   syscall.RawConn
	done chan struct{}

	mu  sync.Mutex
	out *runtime.Output // guarded by mu
	buf []byte          // guarded by mu
	eof bool            // guarded by mu
}

// newCollector starts parsing r, whose untagged writes belong to def,
// until every copy of its write end is closed; it then closes r.
func newCollector(r *os.File, def runtime.Stream, emit func(runtime.Stream, string)) *collector {
	c := &collector{f: r, done: make(chan struct{}), out: runtime.NewOutput(def, emit), buf: make([]byte, 32<<10)}
	rc, err := r.SyscallConn()
	if err != nil {
		// os.Pipe's files always have one; stay usable regardless.
		c.eof = true
		close(c.done)
		r.Close()
		return c
	}
	c.rc = rc
	go c.loop()
	return c
}

func (c *collector) loop() {
	defer close(c.done)
	c.rc.Read(func(fd uintptr) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.drainLocked(fd)
	})
	c.mu.Lock()
	c.out.Close()
	c.eof = true
	c.mu.Unlock()
	c.f.Close()
}

// drainLocked reads what the pipe holds; it reports whether the pipe
// has ended (end of file or an error).
func (c *collector) drainLocked(fd uintptr) bool {
	if c.eof {
		return true
	}
	for {
		n, err := unix.Read(int(fd), c.buf)
		switch {
		case n > 0:
			c.out.Write(c.buf[:n])
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
		default:
			c.eof = true
			return true
		}
	}
}

// sync passes on every line written to the pipe before it was called.
func (c *collector) sync() {
	if c.rc == nil {
		return
	}
	// Fails only once the loop has closed the file: it parsed everything.
	c.rc.Control(func(fd uintptr) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.drainLocked(fd)
	})
}

// wait waits for the pipe's end: the sandbox is gone.
func (c *collector) wait() { <-c.done }

// lineSink passes a sandbox's output lines on, with the sandbox's paths
// of the function's files (/code/...) shown as the user's, and without
// the runtime's own report of an unhandled error: the error is shown
// once, from the call's answer. That report starts with a stderr line
// "[ERROR] "; from such a line on, lines are held until the call ends
// (release), when the report, if that is what they are, is dropped.
type lineSink struct {
	emit func(runtime.Stream, string)
	dir  string

	mu   sync.Mutex
	held []outLine // guarded by mu
}

type outLine struct {
	stream runtime.Stream
	text   string
}

func (s *lineSink) line(stream runtime.Stream, text string) {
	if s.emit == nil {
		return
	}
	text = userPaths(text, s.dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.held) > 0 || (stream == runtime.Stderr && strings.HasPrefix(text, "[ERROR] ")) {
		s.held = append(s.held, outLine{stream, text})
		return
	}
	s.emit(stream, text)
}

// release passes the held lines on, less the runtime's report of err
// (nil: there was none).
func (s *lineSink) release(err *runtime.HandlerError) {
	if s.emit == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.held
	s.held = nil
	if err != nil {
		held = dropReport(held, reportLines(err))
	}
	for _, l := range held {
		s.emit(l.stream, l.text)
	}
}

// reportLines are the stderr lines of the runtime's report of err
// (_log_error in hearthrt.py).
func reportLines(err *runtime.HandlerError) []string {
	lines := strings.Split("[ERROR] "+err.Type+": "+err.Message, "\n")
	if len(err.StackTrace) > 0 {
		lines = append(lines, "Traceback (most recent call last):")
		lines = append(lines, strings.Split(strings.TrimSuffix(strings.Join(err.StackTrace, ""), "\n"), "\n")...)
	}
	return lines
}

// dropReport removes the last run of stderr lines equal to report.
func dropReport(held []outLine, report []string) []outLine {
	var errIdx []int
	for i, l := range held {
		if l.stream == runtime.Stderr {
			errIdx = append(errIdx, i)
		}
	}
	for start := len(errIdx) - len(report); start >= 0; start-- {
		match := true
		for j, want := range report {
			if held[errIdx[start+j]].text != want {
				match = false
				break
			}
		}
		if match {
			drop := errIdx[start : start+len(report)]
			out := make([]outLine, 0, len(held)-len(drop))
			for i, l := range held {
				if !slices.Contains(drop, i) {
					out = append(out, l)
				}
			}
			return out
		}
	}
	return held
}

// userPaths shows the function's files in a traceback line (File
// "/code/f.py") as the user's (File "DIR/f.py"). Other mentions of
// /code are left as they are: they are what the code saw.
func userPaths(s, dir string) string {
	const sandboxFile = `File "` + runtime.CodeDir + `/`
	if !strings.Contains(s, sandboxFile) {
		return s
	}
	prefix := ""
	if d := filepath.Clean(dir); d != "." {
		prefix = strings.TrimSuffix(d, "/") + "/"
	}
	return strings.ReplaceAll(s, sandboxFile, `File "`+prefix)
}

// fix returns err with the user's paths.
func (s *lineSink) fix(err *runtime.HandlerError) *runtime.HandlerError {
	e := *err
	e.Message = userPaths(e.Message, s.dir)
	e.StackTrace = make([]string, len(err.StackTrace))
	for i, f := range err.StackTrace {
		e.StackTrace[i] = userPaths(f, s.dir)
	}
	return &e
}
