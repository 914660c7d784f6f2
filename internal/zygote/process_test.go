package zygote

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"
)

// TestBackgroundRequestYields checks that a spare's request, queued first,
// lets a start's fork that queued after it reach the zygote first, and
// that it still goes once the fork is done. The zygote's end of the
// control socket is played here: it records the order of the requests.
func TestBackgroundRequestYields(t *testing.T) {
	ours, theirs, err := seqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := net.FileConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	p := &Process{ctl: c.(*net.UnixConn), dead: make(chan struct{})}

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
			time.Sleep(5 * time.Millisecond) // a clone
			peer.Write([]byte(`{"ok":true}`))
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A fork in flight holds the zygote.
	p.forking.Add(1)
	p.mu.Lock()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, err := p.backgroundRequest(ctx, map[string]any{"op": "spare"}, nil)
		errs <- err
	}()
	time.Sleep(20 * time.Millisecond) // the spare queues first
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.forking.Add(1) // as Fork counts itself before its request
		defer p.forking.Add(-1)
		_, _, err := p.request(ctx, map[string]any{"op": "fork"}, nil)
		errs <- err
	}()
	time.Sleep(20 * time.Millisecond)
	p.forking.Add(-1)
	p.mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != "fork" || order[1] != "spare" {
		t.Errorf("the zygote saw %v, want [fork spare]", order)
	}
}
