package runtime

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// python is Debian's interpreter; the PATH one may be a slow pyenv shim.
const python = "/usr/bin/python3"

// rtDir holds the runtime installed and compiled once by TestMain; it is
// read-only after that.
var rtDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hearth-rt-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := Install(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Compile(ctx, []string{python}, nil, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rtDir = dir
	return m.Run()
}

// syncBuf is a bytes.Buffer safe to read while exec's copier writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a runtime process on the host, standing in for a sandbox.
type proc struct {
	cmd  *exec.Cmd
	sock string
	// stdout and stderr are the lines written to each stream, as the
	// worker parses them from the two pipes (Output); lines has them all
	// in the order they were parsed, as "stdout: text".
	stdout, stderr, lines *syncBuf
	done                  chan struct{}
}

// output returns the Output of a pipe of p whose untagged writes belong
// to def.
func (p *proc) output(def Stream) *Output {
	return NewOutput(def, func(s Stream, line string) {
		b := p.stdout
		if s == Stderr {
			b = p.stderr
		}
		b.Write([]byte(line + "\n"))
		p.lines.Write([]byte(s.String() + ": " + line + "\n"))
	})
}

// writeCode writes files into a fresh code directory.
func writeCode(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// start runs the runtime on files with o, on a listening socket passed as
// fd 3, the way the sandbox does. o is not validated, so tests can pass
// bad handlers through. Everything is torn down at cleanup.
func start(t testing.TB, files map[string]string, o Options) *proc {
	t.Helper()
	argv := Argv(python)
	argv[len(argv)-1] = filepath.Join(rtDir, Script)
	return startArgv(t, files, o, argv)
}

// startArgv is start with a custom command line.
func startArgv(t testing.TB, files map[string]string, o Options, argv []string) *proc {
	t.Helper()
	code := writeCode(t, files)
	o.CodeDir = code
	// Short path: unix socket names are limited to 108 bytes.
	sdir, err := os.MkdirTemp("", "hrt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sdir) })
	sock := filepath.Join(sdir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	// Like the worker, keep no copy of the listener once the runtime has
	// it: a runtime that dies before accepting then resets the pending
	// connection instead of leaving it queued.
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	p := &proc{sock: sock, stdout: &syncBuf{}, stderr: &syncBuf{}, lines: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = code
	p.cmd.Env = Env(o)
	p.cmd.ExtraFiles = []*os.File{f}
	p.cmd.Stdout = p.output(Stdout)
	p.cmd.Stderr = p.output(Stderr)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("runtime stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// dial connects to p and closes the Conn at cleanup.
func (p *proc) dial(t testing.TB) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, p.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ready dials p and waits for a successful load.
func (p *proc) ready(t testing.TB) *Conn {
	t.Helper()
	c := p.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return c
}

// call invokes event on c with a generous timeout.
func call(t testing.TB, c *Conn, id, event string) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Invoke(ctx, Request{ID: id, Event: []byte(event)})
	if err != nil {
		t.Fatalf("Invoke(%s): %v", event, err)
	}
	return r
}

// waitFor polls s until it contains want or a second passes.
func waitFor(s interface{ String() string }, want string) bool {
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(s.String(), want) {
			return true
		}
	}
	return false
}
