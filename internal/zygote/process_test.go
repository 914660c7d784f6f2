package zygote

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeZygote plays the zygote's end of p's control socket: it records
// each request's op and answers it after a short while (a clone).
func fakeZygote(t *testing.T) (*Process, func() []string) {
	t.Helper()
	ours, theirs, err := seqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.FileConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	var mu sync.Mutex
	var order []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			var m struct{ Op string }
			json.Unmarshal(buf[:n], &m)
			mu.Lock()
			order = append(order, m.Op)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			peer.Write([]byte(`{"ok":true}`))
		}
	}()
	return &Process{ctl: c.(*net.UnixConn), dead: make(chan struct{})}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), order...)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestBackgroundRequestYields checks that a spare's request, queued first,
// lets a start's fork that queued after it reach the zygote first, and
// still goes once the fork is done.
func TestBackgroundRequestYields(t *testing.T) {
	defer func(d time.Duration) { yieldFor = d }(yieldFor)
	yieldFor = time.Minute // only the order is under test here
	p, order := fakeZygote(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.mu.Lock() // a request in flight holds the zygote
	errs := make(chan error, 2)
	go func() {
		_, _, err := p.backgroundRequest(ctx, map[string]any{"op": "spare"}, nil)
		errs <- err
	}()
	waitFor(t, "the spare to queue", func() bool { return p.Inflight() == 1 })
	var queued time.Duration
	go func() {
		var err error
		_, _, queued, err = p.timedRequest(ctx, map[string]any{"op": "fork"}, nil)
		errs <- err
	}()
	waitFor(t, "the fork to queue", func() bool { return p.queued.Load() == 1 })
	const held = 20 * time.Millisecond
	time.Sleep(held)
	p.mu.Unlock()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The fork reports its wait: at least as long as it was held up.
	if queued < held {
		t.Errorf("the fork says it waited %v for the zygote, held for %v", queued, held)
	}
	if got := order(); len(got) != 2 || got[0] != "fork" || got[1] != "spare" {
		t.Errorf("the zygote saw %v, want [fork spare]", got)
	}
}

// TestBackgroundRequestYieldsForAWhile checks that a spare goes after
// yieldFor even while requests keep waiting: refills are not starved.
func TestBackgroundRequestYieldsForAWhile(t *testing.T) {
	defer func(d time.Duration) { yieldFor = d }(yieldFor)
	yieldFor = 30 * time.Millisecond
	p, order := fakeZygote(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.queued.Add(1) // a request that stays queued throughout
	defer p.queued.Add(-1)
	t0 := time.Now()
	if _, _, err := p.backgroundRequest(ctx, map[string]any{"op": "spare"}, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < yieldFor {
		t.Errorf("the spare went after %v, before its %v of yielding", d, yieldFor)
	}
	if got := order(); len(got) != 1 || got[0] != "spare" {
		t.Errorf("the zygote saw %v, want [spare]", got)
	}
}
