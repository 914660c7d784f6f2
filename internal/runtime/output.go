package runtime

import "bytes"

// Stream names where a line of a runtime's output was written.
type Stream uint8

// The streams.
const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// The runtime frames the lines its sys.stdout and sys.stderr write as
// outputMark, a tag and the text up to "\n", all on fd 1, so that one pipe
// keeps their order (see tag_output in hearthrt.py). A lower-case tag is
// a whole line, an upper-case one a piece of a line whose end comes in a
// later record of the same stream.
const outputMark = 0x1e

// MaxLine bounds a line of output: a longer one is cut into lines of
// MaxLine bytes, so that an endless line still shows up and never holds
// more memory than that.
const MaxLine = 16 << 10

func tagStream(c byte) (s Stream, whole, ok bool) {
	switch c {
	case 'o':
		return Stdout, true, true
	case 'e':
		return Stderr, true, true
	case 'O':
		return Stdout, false, true
	case 'E':
		return Stderr, false, true
	}
	return 0, false, false
}

// Output splits what one pipe of a runtime receives into lines, each with
// the stream it was written to: tagged lines with their tag's stream,
// anything else (writes to the descriptor itself, from C code or a
// subprocess) with the pipe's own. Lines come out in the order they were
// written to this pipe. Make one Output per pipe; it is not safe for
// concurrent use, and Close passes on what an unfinished line holds.
type Output struct {
	def  Stream
	emit func(Stream, string)

	buf   []byte    // received, not yet parsed
	start bool      // buf begins a line (or a tagged record)
	raw   bool      // the line under way is untagged
	whole bool      // the tagged record under way ends its line
	cur   Stream    // the stream of the line under way
	part  [2][]byte // each stream's unfinished line
}

// NewOutput returns the Output of a pipe whose untagged writes belong to
// stream def; emit receives each line, without its newline.
func NewOutput(def Stream, emit func(stream Stream, line string)) *Output {
	return &Output{def: def, emit: emit, start: true}
}

// Write parses p; it never fails.
func (o *Output) Write(p []byte) (int, error) {
	o.buf = append(o.buf, p...)
	for len(o.buf) > 0 {
		if o.start {
			if o.buf[0] == outputMark {
				if len(o.buf) < 2 {
					break // the tag comes with the next write
				}
				if s, whole, ok := tagStream(o.buf[1]); ok {
					o.cur, o.whole, o.raw = s, whole, false
					o.buf = o.buf[2:]
					o.start = false
					continue
				}
			}
			o.cur, o.whole, o.raw = o.def, true, true
			o.start = false
		}
		nl := bytes.IndexByte(o.buf, '\n')
		if o.raw {
			// A record can follow raw text that has no newline yet: the
			// raw text is then an unfinished line of the pipe's stream.
			// (buf[0] was just looked at as a line start.)
			if m := bytes.IndexByte(o.buf[1:], outputMark) + 1; m > 0 && (nl < 0 || m < nl) {
				if m+1 == len(o.buf) {
					// Maybe a record: the byte after the mark decides.
					o.add(o.cur, o.buf[:m])
					o.buf = o.buf[m:]
					o.start = true
					break
				}
				if _, _, ok := tagStream(o.buf[m+1]); ok {
					o.add(o.cur, o.buf[:m])
					o.buf = o.buf[m:]
					o.start = true
					continue
				}
			}
		}
		if nl < 0 {
			o.add(o.cur, o.buf)
			o.buf = o.buf[:0]
			if o.raw {
				// Untagged text with no newline yet: the next write
				// continues it, unless it starts a record.
				o.start = true
			}
			break
		}
		o.add(o.cur, o.buf[:nl])
		o.buf = o.buf[nl+1:]
		if o.whole {
			o.flush(o.cur)
		}
		o.start = true
	}
	if len(o.buf) == 0 {
		o.buf = nil // a long-lived pipe holds no buffer between writes
	}
	return len(p), nil
}

// add appends b to stream s's unfinished line, passing on MaxLine bytes
// at a time.
func (o *Output) add(s Stream, b []byte) {
	for len(o.part[s])+len(b) >= MaxLine {
		n := MaxLine - len(o.part[s])
		o.part[s] = append(o.part[s], b[:n]...)
		b = b[n:]
		o.flush(s)
	}
	if len(b) > 0 {
		o.part[s] = append(o.part[s], b...)
	}
}

func (o *Output) flush(s Stream) {
	line := string(o.part[s])
	o.part[s] = o.part[s][:0]
	if cap(o.part[s]) > 4<<10 {
		o.part[s] = nil
	}
	o.emit(s, line)
}

// Close passes on the unfinished lines: the pipe is closed.
func (o *Output) Close() error {
	if len(o.buf) > 0 { // a lone mark
		o.add(o.def, o.buf)
		o.buf = nil
	}
	for s := range o.part {
		if len(o.part[s]) > 0 {
			o.flush(Stream(s))
		}
	}
	return nil
}
