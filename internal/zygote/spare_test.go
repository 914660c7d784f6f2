package zygote

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/sandbox"
)

// TestWatchFrom has a peer play the spare child's end of its control
// socket and checks what the worker's side makes of each thing the child
// (whose zygote's packages may be hostile) could send, or not send.
func TestWatchFrom(t *testing.T) {
	defer func(w time.Duration) { watchWait = w }(watchWait)
	watchWait = 200 * time.Millisecond
	pipe := func() *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		return r
	}
	for _, tc := range []struct {
		name    string
		send    func(peer *os.File) // nil: send nothing
		hangUp  bool
		cancel  bool
		wantErr string // in watchFrom's error
		wantFD  bool
		wantWhy string // in WatchErr
	}{
		{name: "listener", send: func(p *os.File) { sendMsg(t, p, `{"ok": true}`, pipe()) }, wantFD: true},
		{name: "two descriptors", send: func(p *os.File) { sendMsg(t, p, `{"ok": true}`, pipe(), pipe()) }, wantFD: true},
		{name: "why not", send: func(p *os.File) { sendMsg(t, p, `{"error": "no user notification"}`) }, wantWhy: "no user notification"},
		{name: "neither", send: func(p *os.File) { sendMsg(t, p, `{"ok": true}`) }, wantWhy: "sent no listener"},
		{name: "garbage", send: func(p *os.File) { sendMsg(t, p, `{"ok`, pipe()) }, wantErr: "bad reply"},
		{name: "hung up", hangUp: true, wantErr: "closed its control socket"},
		{name: "silent", wantErr: "timeout"},
		{name: "canceled", cancel: true, wantErr: "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, peer := spareOnPair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if tc.send != nil {
				tc.send(peer)
			}
			if tc.hangUp {
				peer.Close()
			}
			if tc.cancel {
				watchWait = 10 * time.Second
				defer func() { watchWait = 200 * time.Millisecond }()
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			t0 := time.Now()
			err := s.watchFrom(ctx)
			if d := time.Since(t0); d > 2*time.Second {
				t.Errorf("watchFrom took %v", d)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("watchFrom: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("watchFrom: %v", err)
			}
			l, why := s.Watch()
			if tc.wantFD != (l != nil) {
				t.Errorf("listener %v, want one: %v", l, tc.wantFD)
			}
			if l != nil {
				l.Close()
			}
			if tc.wantWhy == "" && why != nil || tc.wantWhy != "" && (why == nil || !strings.Contains(why.Error(), tc.wantWhy)) {
				t.Errorf("why %v, want %q", why, tc.wantWhy)
			}
			// The read deadline is cleared for Go and Err.
			if err := s.ctl.SetWriteDeadline(time.Time{}); err != nil {
				t.Fatal(err)
			}
			sendMsg(t, peer, `{"error": "later"}`)
			if err := s.Err(time.Second); err == nil || !strings.Contains(err.Error(), "later") {
				t.Errorf("Err after watchFrom: %v, want the later message", err)
			}
		})
	}
}

// sendMsg sends one packet with descriptors fds (closed after) on peer.
// spareOnPair is a Spare whose control socket's other end, peer, plays
// the child; both close when the test ends.
func spareOnPair(t *testing.T) (*Spare, *os.File) {
	t.Helper()
	ours, peer, err := seqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := &Spare{child: Child{Pid: 1}, ctl: c.(*net.UnixConn)}
	t.Cleanup(func() { s.Close() })
	return s, peer
}

func sendMsg(t *testing.T, peer *os.File, msg string, fds ...*os.File) {
	t.Helper()
	if err := unix.Sendmsg(int(peer.Fd()), []byte(msg), rights(fds), nil, 0); err != nil && !errors.Is(err, unix.EPIPE) {
		t.Fatal(err)
	}
	for _, f := range fds {
		f.Close()
	}
}

// TestPreparedSpare plays a prepared spare's end of its control socket:
// Prepare sends the whole start once, and Go then sends a bare go for
// that start only; a spare made to be prepared takes no Go before, and
// one made plainly takes no Prepare.
func TestPreparedSpare(t *testing.T) {
	s, peer := spareOnPair(t)
	s.home, s.prepare = &Home{UID: 1000, GID: 1000}, true
	next := func() string {
		t.Helper()
		unix.SetNonblock(int(peer.Fd()), true)
		buf := make([]byte, 4096)
		n, _, err := unix.Recvfrom(int(peer.Fd()), buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	st := Start{UID: 1000, GID: 1000, Env: map[string]string{"A": "1"}}
	if err := s.Go(st); err == nil || !strings.Contains(err.Error(), "waits for Prepare") {
		t.Errorf("Go before Prepare: %v", err)
	}
	if err := s.Prepare(Start{UID: 7, GID: 7}); err == nil || s.prepared != nil {
		t.Errorf("Prepare for ids other than its home's: %v, prepared %v", err, s.prepared)
	}
	if m := next(); m != "" {
		t.Fatalf("sent %s before a Prepare that succeeded", m)
	}
	if err := s.Prepare(st); err != nil {
		t.Fatal(err)
	}
	if m, want := next(), `{"env":{"A":"1"},"gid":1000,"mounts":[],"op":"prepare","uid":1000}`; m != want {
		t.Errorf("prepare sent %s, want %s", m, want)
	}
	if err := s.Prepare(st); err == nil {
		t.Error("a second Prepare was taken")
	}
	other := Start{UID: 1000, GID: 1000, Env: map[string]string{"A": "2"}}
	if err := s.Go(other); err == nil || !strings.Contains(err.Error(), "prepared for another start") {
		t.Errorf("Go with another environment: %v", err)
	}
	if m := next(); m != "" {
		t.Fatalf("sent %s for another start", m)
	}
	if err := s.Go(st); err != nil {
		t.Fatal(err)
	}
	if m := next(); m != `{"op":"go"}` {
		t.Errorf("go sent %s, want a bare go", m)
	}
	plain := &Spare{child: Child{Pid: 1}, ctl: s.ctl}
	if err := plain.Prepare(st); err == nil {
		t.Error("a spare not made to be prepared took Prepare")
	}
}

func TestStartEqual(t *testing.T) {
	a := sandbox.Bind{Source: "/a", Target: "/code"}
	b := sandbox.Bind{Source: "/b", Target: "/pkgs"}
	base := Start{Mounts: []sandbox.Bind{a, b}, UID: 1, GID: 2, Env: map[string]string{"K": "v"}}
	for _, tc := range []struct {
		name string
		o    Start
		want bool
	}{
		{"same", Start{Mounts: []sandbox.Bind{a, b}, UID: 1, GID: 2, Env: map[string]string{"K": "v"}}, true},
		{"mount order", Start{Mounts: []sandbox.Bind{b, a}, UID: 1, GID: 2, Env: map[string]string{"K": "v"}}, false},
		{"mount missing", Start{Mounts: []sandbox.Bind{a}, UID: 1, GID: 2, Env: map[string]string{"K": "v"}}, false},
		{"uid", Start{Mounts: []sandbox.Bind{a, b}, UID: 3, GID: 2, Env: map[string]string{"K": "v"}}, false},
		{"gid", Start{Mounts: []sandbox.Bind{a, b}, UID: 1, GID: 3, Env: map[string]string{"K": "v"}}, false},
		{"env value", Start{Mounts: []sandbox.Bind{a, b}, UID: 1, GID: 2, Env: map[string]string{"K": "w"}}, false},
		{"env extra", Start{Mounts: []sandbox.Bind{a, b}, UID: 1, GID: 2, Env: map[string]string{"K": "v", "L": ""}}, false},
	} {
		if got := base.Equal(tc.o); got != tc.want {
			t.Errorf("%s: Equal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSpareFailed checks what Failed makes of a spare's control socket:
// nothing there is a healthy spare (and Failed does not wait); an error
// the child sent, anything else it sent, or its end closed is a failure.
func TestSpareFailed(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer func(p *os.File)
		want string // in Failed's error; "" for none
	}{
		{name: "waiting", peer: func(*os.File) {}},
		{name: "error", peer: func(p *os.File) { sendMsg(t, p, `{"error": "OSError: move_mount on /code: EPERM"}`) }, want: "move_mount on /code"},
		{name: "other", peer: func(p *os.File) { sendMsg(t, p, `{"ok": true}`) }, want: "before its start"},
		{name: "exited", peer: func(p *os.File) { p.Close() }, want: "exited before its start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, peer := spareOnPair(t)
			tc.peer(peer)
			t0 := time.Now()
			err := s.Failed()
			if d := time.Since(t0); d > time.Second {
				t.Errorf("Failed took %v", d)
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Failed: %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Failed: %v, want %q", err, tc.want)
			}
			// A peek: asked again, it says the same.
			if err2 := s.Failed(); err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Failed again: %v, want %v", err2, err)
			}
		})
	}
}
