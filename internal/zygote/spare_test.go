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
			ours, peer, err := seqpacketPair()
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			c, err := net.FileConn(ours)
			ours.Close()
			if err != nil {
				t.Fatal(err)
			}
			s := &Spare{child: Child{Pid: 1}, ctl: c.(*net.UnixConn)}
			defer s.Close()
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
			err = s.watchFrom(ctx)
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
func sendMsg(t *testing.T, peer *os.File, msg string, fds ...*os.File) {
	t.Helper()
	if err := unix.Sendmsg(int(peer.Fd()), []byte(msg), rights(fds), nil, 0); err != nil && !errors.Is(err, unix.EPIPE) {
		t.Fatal(err)
	}
	for _, f := range fds {
		f.Close()
	}
}
