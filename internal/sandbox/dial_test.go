package sandbox_test

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/sandbox"
)

// decoy listens on a unix socket outside any sandbox, as the socket an
// attacker would point the worker at; accepted reports whether anyone
// connected to it.
func decoy(t *testing.T) (path string, accepted func() bool) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "decoy.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return path, func() bool {
		l.(*net.UnixListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
		c, err := l.Accept()
		if err == nil {
			c.Close()
			return true
		}
		return false
	}
}

// TestDialInRefusesWhatTheWorkerDidNotMake checks DialIn's checks on a
// directory of its own: a symlink to a socket outside, a socket owned by
// someone else, a directory others could swap entries in.
func TestDialInRefusesWhatTheWorkerDidNotMake(t *testing.T) {
	target, accepted := decoy(t)
	sticky := func(t *testing.T) string {
		d := t.TempDir()
		if err := os.Chmod(d, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		return d
	}
	listen := func(t *testing.T, p string) {
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	for _, tc := range []struct {
		name string
		make func(t *testing.T) string // returns the dir holding s.sock
		ok   bool
	}{
		{"worker's socket", func(t *testing.T) string {
			d := sticky(t)
			listen(t, filepath.Join(d, "s.sock"))
			return d
		}, true},
		{"symlink to a socket outside", func(t *testing.T) string {
			d := sticky(t)
			if err := os.Symlink(target, filepath.Join(d, "s.sock")); err != nil {
				t.Fatal(err)
			}
			return d
		}, false},
		{"socket of another user", func(t *testing.T) string {
			d := sticky(t)
			listen(t, filepath.Join(d, "s.sock"))
			if err := os.Lchown(filepath.Join(d, "s.sock"), 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return d
		}, false},
		{"directory others may swap entries in", func(t *testing.T) string {
			d := t.TempDir()
			os.Chmod(d, 0o777)
			listen(t, filepath.Join(d, "s.sock"))
			return d
		}, false},
		{"directory is a symlink", func(t *testing.T) string {
			d := sticky(t)
			listen(t, filepath.Join(d, "s.sock"))
			link := filepath.Join(t.TempDir(), "link")
			if err := os.Symlink(d, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.make(t)
			c, err := sandbox.DialIn(dir, "s.sock")
			if c != nil {
				c.Close()
			}
			if tc.ok && err != nil {
				t.Fatalf("DialIn: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("DialIn connected")
			}
			if err != nil && strings.Contains(err.Error(), dir) {
				t.Errorf("error %q names the host path", err)
			}
			if accepted() {
				t.Error("the decoy outside got a connection")
			}
		})
	}
	if _, err := sandbox.DialIn(sticky(t), "../s.sock"); !errors.Is(err, sandbox.ErrUnsafeSocket) {
		t.Errorf("a name with a slash: %v", err)
	}
}

// TestSandboxCannotRedirectItsSocket runs untrusted code in a sandbox
// that tries to replace its socket in /tmp with a symlink to a socket
// outside; the worker's dial must reach the sandbox's own listener, and
// nothing else.
func TestSandboxCannotRedirectItsSocket(t *testing.T) {
	e := setup(t)
	target, accepted := decoy(t)
	var out lockedBuilder // the sandbox writes it while the test reads
	sb := e.create(t, "redirect", []string{"/usr/bin/python3", "-S", "-c", `
import os, socket, sys
for how in ("unlink", "rename"):
    try:
        if how == "unlink":
            os.unlink("/tmp/s.sock")
        else:
            os.symlink(sys.argv[1], "/tmp/evil")
            os.rename("/tmp/evil", "/tmp/s.sock")
        print(how, "succeeded", flush=True)
        if how == "unlink":
            os.symlink(sys.argv[1], "/tmp/s.sock")
        break
    except OSError as e:
        print(how, "refused", e.errno, flush=True)
print("ready", flush=True)
l = socket.socket(fileno=3)
c, _ = l.accept()
c.sendall(b"real\n")
`, target}, &out)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox did not get ready: %s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(out.String(), "succeeded") {
		t.Errorf("the sandbox's user replaced the worker's socket: %s", out.String())
	}
	c, err := sb.Dial("s.sock")
	if err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, rerr := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if line != "real\n" {
			t.Errorf("dialled something but the sandbox's listener: %q %v", line, rerr)
		}
	} else if !errors.Is(err, sandbox.ErrUnsafeSocket) {
		t.Errorf("Dial: %v", err)
	}
	if accepted() {
		t.Error("the worker's dial reached the decoy outside the sandbox")
	}
}

// lockedBuilder is a strings.Builder that a sandbox's output may write
// while a test reads it.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
