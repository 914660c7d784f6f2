package image

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// feed writes the recorded debootstrap log to p in random chunks.
func feed(t *testing.T, p *progress, seed uint64) {
	t.Helper()
	b, err := os.ReadFile("testdata/debootstrap.log")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	for len(b) > 0 {
		n := min(1+r.IntN(300), len(b))
		p.Write(b[:n])
		b = b[n:]
	}
	p.Close()
}

func TestProgressFromRecordedLog(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		var out strings.Builder
		p := newProgress(&out, false)
		feed(t, p, seed)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		// The recorded run: 162 packages, 88 of them in the required set.
		// Five of the other 74 (python3-minimal and its dependencies) are
		// installed without a line of their own, so the base stages end
		// short of their totals.
		want := []string{
			"image: downloading package index",
			"image: resolving dependencies",
			"image: retrieving",
			"image: retrieving 25 packages",
			"image: retrieving 162 packages",
			"image: extracting 88 packages",
			"image: unpacking required 0/88 packages",
			"image: unpacking required 88/88 packages",
			"image: configuring required 88/88 packages",
			"image: unpacking base 69/74 packages",
			"image: configuring base 50/74 packages",
			"image: configuring base 71/74 packages",
			"image: done",
		}
		last := -1
		for _, w := range want {
			i := slices.Index(lines, w)
			if i < 0 {
				t.Fatalf("seed %d: no line %q in\n%s", seed, w, out.String())
			}
			if i < last {
				t.Errorf("seed %d: %q out of order", seed, w)
			}
			last = i
		}
		if lines[len(lines)-1] != "image: done" {
			t.Errorf("last line %q, want image: done", lines[len(lines)-1])
		}
		// Condensed: far fewer lines than debootstrap printed.
		if n := strings.Count(out.String(), "configuring required 88/88"); n != 1 {
			t.Errorf("final count of a stage shown %d times", n)
		}
		if len(lines) > 40 {
			t.Errorf("%d progress lines for a 745-line log; not condensed", len(lines))
		}
		if got := p.Tail(); !strings.HasSuffix(got, "I: Base system installed successfully.") || strings.Count(got, "\n") != tailLines-1 {
			t.Errorf("Tail() = %q", got)
		}
	}
}

func TestProgressTerminal(t *testing.T) {
	var out strings.Builder
	p := newProgress(&out, true)
	feed(t, p, 7)
	s := out.String()
	if !strings.Contains(s, "\r\033[Kimage: retrieving 162 packages\n") {
		t.Errorf("no in-place final retrieving line in terminal output")
	}
	if !strings.HasSuffix(s, "image: done\n") {
		t.Errorf("terminal output does not end with the done line: %q", s[max(0, len(s)-80):])
	}
}

func TestProgressPassesWarningsAndErrors(t *testing.T) {
	var out strings.Builder
	p := newProgress(&out, false)
	p.Write([]byte("I: Retrieving InRelease \nW: Cannot check Release signature\nI: Retrieving libc6 2.36\nE: Couldn't download packages: libc6\n"))
	p.Close()
	want := "image: downloading package index\nW: Cannot check Release signature\nimage: retrieving\nE: Couldn't download packages: libc6\n"
	if got := out.String(); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if !strings.Contains(p.Tail(), "E: Couldn't download") {
		t.Errorf("Tail() = %q", p.Tail())
	}
}
