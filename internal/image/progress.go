package image

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// progress condenses debootstrap's "I:" lines into short progress lines
// on w: one line per stage, then the package count every few packages (or,
// on a terminal, a single line rewritten in place). Warnings and errors
// are passed through. It also keeps the last lines for error messages.
type progress struct {
	w   io.Writer
	tty bool

	buf   []byte
	stage string
	n     int // packages done in this stage
	total int // packages expected in this stage, 0 if unknown
	shown int // n when a line was last written

	debs     int // packages retrieved
	required int // packages extracted: the required set
	tail     []string
}

// every is how many packages pass between two progress lines when not on a
// terminal.
const every = 25

// tailLines is how many output lines an error message quotes.
const tailLines = 15

func newProgress(w io.Writer, tty bool) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w, tty: tty}
}

// Write takes debootstrap output, in any chunks.
func (p *progress) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.buf[:i]))
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// Close ends the progress output (the in-place line needs a newline).
func (p *progress) Close() error {
	if len(p.buf) > 0 {
		p.line(string(p.buf))
		p.buf = nil
	}
	if p.tty && p.stage != "" {
		fmt.Fprintln(p.w)
	}
	return nil
}

// Tail returns the last lines of output.
func (p *progress) Tail() string { return strings.Join(p.tail, "\n") }

func (p *progress) line(l string) {
	l = strings.TrimRight(l, " \r")
	if l == "" {
		return
	}
	if len(p.tail) == tailLines {
		p.tail = p.tail[1:]
	}
	p.tail = append(p.tail, l)

	msg, ok := strings.CutPrefix(l, "I: ")
	if !ok {
		// W:, E: and anything unexpected is worth showing as is.
		p.passthrough(l)
		return
	}
	word, arg, _ := strings.Cut(msg, " ")
	switch {
	case word == "Retrieving" && (arg == "InRelease" || arg == "Release" || arg == "Release.gpg" || arg == "Packages"):
		p.set("downloading package index", 0)
	case word == "Resolving":
		p.set("resolving dependencies", 0)
	case word == "Retrieving":
		if p.stage != "retrieving" {
			p.set("retrieving", 0)
		}
		p.debs++
		p.step()
	case word == "Extracting":
		if p.stage != "extracting" {
			p.set("extracting", 0)
		}
		p.required++
		p.step()
	case msg == "Unpacking required packages...":
		p.set("unpacking required", p.required)
	case msg == "Configuring required packages...":
		p.set("configuring required", p.required)
	case msg == "Unpacking the base system...":
		p.set("unpacking base", p.debs-p.required)
	case msg == "Configuring the base system...":
		p.set("configuring base", p.debs-p.required)
	case msg == "Base system installed successfully.":
		p.set("done", 0)
	case word == "Unpacking" || word == "Configuring":
		p.step()
	}
}

// set starts a stage.
func (p *progress) set(stage string, total int) {
	if stage == p.stage {
		return
	}
	if !p.tty && p.n != p.shown {
		p.show() // the stage's final count
	}
	if p.tty && p.stage != "" {
		fmt.Fprintln(p.w)
	}
	p.stage, p.n, p.total = stage, 0, max(total, 0)
	p.show()
}

// step counts one package in the current stage.
func (p *progress) step() {
	if p.total > 0 && p.n == p.total {
		return // a package can be configured twice
	}
	p.n++
	if p.tty || p.n%every == 0 || p.n == p.total {
		p.show()
	}
}

func (p *progress) show() {
	p.shown = p.n
	var s string
	switch {
	case p.total > 0:
		s = fmt.Sprintf("image: %s %d/%d packages", p.stage, p.n, p.total)
	case p.n > 0:
		s = fmt.Sprintf("image: %s %d packages", p.stage, p.n)
	default:
		s = "image: " + p.stage
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
		return
	}
	fmt.Fprintln(p.w, s)
}

func (p *progress) passthrough(l string) {
	if p.tty && p.stage != "" {
		fmt.Fprintf(p.w, "\r\033[K%s\n", l)
		p.show()
		return
	}
	fmt.Fprintln(p.w, l)
}
