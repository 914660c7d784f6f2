package localrun

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/runtime"
)

func TestUserPaths(t *testing.T) {
	tests := []struct {
		line, dir, want string
	}{
		{`  File "/code/f.py", line 3, in f`, "fn", `  File "fn/f.py", line 3, in f`},
		{`  File "/code/pkg/m.py", line 1, in <module>`, "a/b/", `  File "a/b/pkg/m.py", line 1, in <module>`},
		{`  File "/code/f.py" Line 2`, ".", `  File "f.py" Line 2`},
		{`  File "/code/f.py", line 3, in f`, "/abs/fn", `  File "/abs/fn/f.py", line 3, in f`},
		// What the code itself saw stays as it was.
		{`FileNotFoundError: '/code/data.txt'`, "fn", `FileNotFoundError: '/code/data.txt'`},
		{`  File "/usr/lib/python3.13/json/__init__.py", line 1`, "fn", `  File "/usr/lib/python3.13/json/__init__.py", line 1`},
	}
	for _, tt := range tests {
		if got := userPaths(tt.line, tt.dir); got != tt.want {
			t.Errorf("userPaths(%q, %q) = %q, want %q", tt.line, tt.dir, got, tt.want)
		}
	}
}

// TestSinkDropsReport: the runtime's report of an unhandled error is left
// out of the function's output, and only that: a line of the handler's
// that looks like it, and lines around it, are kept, in order.
func TestSinkDropsReport(t *testing.T) {
	herr := &runtime.HandlerError{
		Type:    "ValueError",
		Message: "bad\nvalue",
		StackTrace: []string{
			"  File \"/code/f.py\", line 4, in f\n    raise ValueError(\"bad\\nvalue\")\n",
		},
	}
	var mu sync.Mutex
	var got []string
	s := &lineSink{dir: "fn", emit: func(st runtime.Stream, line string) {
		mu.Lock()
		got = append(got, st.String()+": "+line)
		mu.Unlock()
	}}
	fixed := s.fix(herr)
	if want := "  File \"fn/f.py\", line 4, in f\n    raise ValueError(\"bad\\nvalue\")\n"; fixed.StackTrace[0] != want {
		t.Errorf("fixed trace %q, want %q", fixed.StackTrace[0], want)
	}
	in := []struct {
		st   runtime.Stream
		line string
	}{
		{runtime.Stdout, "before"},
		{runtime.Stderr, "[ERROR] mine, not the runtime's"},
		{runtime.Stdout, "between"},
		{runtime.Stderr, "[ERROR] ValueError: bad"},
		{runtime.Stderr, "value"},
		{runtime.Stderr, "Traceback (most recent call last):"},
		{runtime.Stderr, `  File "/code/f.py", line 4, in f`},
		{runtime.Stderr, `    raise ValueError("bad\nvalue")`},
	}
	for _, l := range in {
		s.line(l.st, l.line)
	}
	if want := []string{"stdout: before"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("before release: %q, want %q (lines from an [ERROR] line on are held)", got, want)
	}
	s.release(fixed)
	want := []string{"stdout: before", "stderr: [ERROR] mine, not the runtime's", "stdout: between"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}

	// Without an error (or another one) everything held is passed on.
	got = nil
	s.line(runtime.Stderr, "[ERROR] ValueError: bad")
	s.line(runtime.Stderr, "value")
	s.release(&runtime.HandlerError{Type: "KeyError", Message: "k"})
	if want := []string{"stderr: [ERROR] ValueError: bad", "stderr: value"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestCollectorSync: after sync, every line written to the pipe before
// has been passed on, though the collector's own goroutine reads it too.
func TestCollectorSync(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	c := newCollector(r, runtime.Stdout, func(_ runtime.Stream, line string) {
		mu.Lock()
		lines = append(lines, line)
		mu.Unlock()
	})
	for i := range 200 {
		want := strings.Repeat("x", i%50) + "!"
		if _, err := w.WriteString(want + "\n"); err != nil {
			t.Fatal(err)
		}
		c.sync()
		mu.Lock()
		n, last := len(lines), ""
		if n > 0 {
			last = lines[n-1]
		}
		mu.Unlock()
		if n != i+1 || last != want {
			t.Fatalf("after write %d and sync: %d lines, last %q; want %d, %q", i, n, last, i+1, want)
		}
	}
	w.WriteString("no newline")
	w.Close()
	c.wait()
	if lines[len(lines)-1] != "no newline" {
		t.Errorf("the unfinished last line was not passed on at the end: %q", lines[len(lines)-1])
	}
	c.sync() // after the end: a no-op
}

// TestWatch: a change below the directory, in a directory made after
// the watch began too, is reported once per burst; caches and hidden
// files are not changes.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.py"), []byte("x = 1\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Long enough that a burst's writes fall within it on a busy host
	// (100 ms was exceeded under test.sh --busy).
	const debounce = time.Second
	ch, err := Watch(ctx, dir, debounce)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the watch ended", what)
			}
			if !want {
				t.Errorf("%s: reported as a change", what)
			}
		case <-time.After(debounce + 2*time.Second):
			if want {
				t.Errorf("%s: no change reported", what)
			}
		}
	}
	// A burst: several writes, one report.
	for i := range 5 {
		os.WriteFile(filepath.Join(dir, "f.py"), []byte(strings.Repeat("y", i)), 0o644)
	}
	expect("a burst of writes", true)
	expect("the same burst again", false)

	os.MkdirAll(filepath.Join(dir, "__pycache__"), 0o755)
	os.WriteFile(filepath.Join(dir, "__pycache__", "f.cpython-313.pyc"), []byte("c"), 0o644)
	os.WriteFile(filepath.Join(dir, ".f.py.swp"), []byte("s"), 0o644)
	expect("a bytecode cache and a swap file", false)

	os.MkdirAll(filepath.Join(dir, "pkg"), 0o755)
	expect("a new directory", true)
	os.WriteFile(filepath.Join(dir, "pkg", "m.py"), []byte("m\n"), 0o644)
	expect("a file in the new directory", true)

	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Error("a change reported after the end")
		}
	case <-time.After(5 * time.Second):
		t.Error("the channel did not close when ctx ended")
	}
}
