package worker

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestBusyGate(t *testing.T) {
	g := newBusyGate()
	t0 := time.Now()
	g.wait(time.Second, nil)
	if d := time.Since(t0); d >= time.Second/2 {
		t.Fatalf("idle gate waited %v, near its bound of 1s", d)
	}
	g.enter()
	g.enter()
	done := make(chan struct{})
	go func() {
		g.wait(10*time.Second, nil)
		close(done)
	}()
	g.leave()
	select {
	case <-done:
		t.Fatal("wait returned with a start still under way")
	case <-time.After(50 * time.Millisecond):
	}
	g.leave()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return once the starts were over")
	}
	g.enter()
	t0 = time.Now()
	g.wait(50*time.Millisecond, nil)
	if d := time.Since(t0); d < 50*time.Millisecond || d > 2*time.Second {
		t.Fatalf("busy gate waited %v, want its bound of 50ms", d)
	}
}

// TestSparesForStartsOneAtATime checks that starts which each find the
// reserve refilled are no burst, however many come in a second: a node
// keeps the minimum.
func TestSparesForStartsOneAtATime(t *testing.T) {
	s := &spares{min: 2, max: 64, nodes: map[string]*spareNode{}}
	fill := func() {
		for {
			n, ok := s.short()
			if !ok {
				return
			}
			n.making--
			if !s.add(n.node, n.net, &spare{}) {
				t.Fatal("add to a live node failed")
			}
		}
	}
	for range 40 { // 40 starts 10 ms apart would be 40 in one 250 ms window
		if s.take("numpy", "") == nil && len(s.nodes[spareKey("numpy", "")].ready) > 0 {
			t.Fatal("no spare taken from a non-empty reserve")
		}
		s.finish("numpy", "")
		fill()
	}
	n := s.nodes[spareKey("numpy", "")]
	if got := n.want(s.min, s.max, time.Now()); got != 2 || len(n.ready) != 2 {
		t.Fatalf("after 40 starts one at a time want %d with %d ready, want the minimum 2", got, len(n.ready))
	}
	if s.add("gone", "", &spare{}) {
		t.Error("add to an unknown node succeeded")
	}
}

// TestSparesForAStreamSlightlyAhead checks that a stream of starts the
// refill nearly keeps up with counts as a burst of the spares it fell
// behind by, not of all its starts: a node that made nine spares for every
// ten taken wants ten after a hundred starts, not max.
func TestSparesForAStreamSlightlyAhead(t *testing.T) {
	s := &spares{min: 2, max: 64, nodes: map[string]*spareNode{}}
	s.prime("numpy", "")
	refill := func() {
		n, ok := s.short()
		if !ok {
			t.Fatal("a reserve below its want has nothing to make")
		}
		n.making--
		if !s.add(n.node, n.net, &spare{}) {
			t.Fatal("add to a live node failed")
		}
	}
	refill()
	refill()
	for i := range 100 {
		s.take("numpy", "")
		s.finish("numpy", "")
		if i%10 != 9 {
			refill()
		}
	}
	n := s.nodes[spareKey("numpy", "")]
	if got := n.want(s.min, s.max, time.Now()); got < 9 || got > 12 {
		t.Fatalf("after 100 starts with 90 refills want %d, want about the 10 the refill fell behind", got)
	}
	// A minute on, with the reserve never made up, the shortfall is
	// forgotten with its peak: one more start is no burst.
	n.want(s.min, s.max, time.Now().Add(2*spareIdle))
	s.take("numpy", "")
	s.finish("numpy", "")
	if got := n.want(s.min, s.max, time.Now()); got != 2 {
		t.Fatalf("one start a minute after an unmade shortfall: want %d, want the minimum 2", got)
	}
}

func TestSparesFollowBurstsWithinBounds(t *testing.T) {
	s := &spares{min: 2, max: 8, nodes: map[string]*spareNode{}}
	if sp := s.take("numpy", ""); sp != nil {
		t.Fatal("a spare out of an empty reserve")
	}
	s.finish("numpy", "")
	n := s.nodes[spareKey("numpy", "")]
	now := time.Now()
	if got := n.want(s.min, s.max, now); got != 2 {
		t.Fatalf("after one start want %d, want the minimum 2", got)
	}
	// A burst of 5 starts, some over before the last arrives.
	for i := range 5 {
		s.take("numpy", "")
		if i%2 == 0 {
			s.finish("numpy", "")
		}
	}
	if got := n.want(s.min, s.max, time.Now()); got != 6 {
		t.Fatalf("after a burst of 5 (6 starts since the reserve was full) want %d, want 6", got)
	}
	// Other network kinds keep their own reserve.
	s.take("numpy", "isolated")
	if got := s.nodes[spareKey("numpy", "isolated")].want(s.min, s.max, time.Now()); got != 2 {
		t.Fatalf("isolated reserve wants %d, want 2", got)
	}
	// A burst larger than max is counted up to max.
	for range 20 {
		s.take("big", "")
	}
	if got := s.nodes[spareKey("big", "")].want(s.min, s.max, time.Now()); got != 8 {
		t.Fatalf("burst of 20 wants %d, want max 8", got)
	}
	// short hands out work up to max spares in all, biggest gap first.
	var made []string
	for {
		n, ok := s.short()
		if !ok {
			break
		}
		made = append(made, n.node)
	}
	if len(made) != 8 || made[0] != "big" {
		t.Fatalf("short gave %v, want 8 spares in all, the first for big", made)
	}
	// A minute later the burst is forgotten: back to the minimum (the
	// starts of big are still under way, so they count, up to max).
	later := time.Now().Add(2 * spareIdle)
	if got := n.want(s.min, s.max, later); got != 2 {
		t.Fatalf("a minute on, want %d, want 2", got)
	}
	if got := s.nodes[spareKey("big", "")].want(s.min, s.max, later); got != 8 {
		t.Fatalf("with 20 starts under way, want %d, want max 8", got)
	}
}

// TestSparesBackOffPerNode checks that a node whose spares fail to be
// made is left alone for a back-off that doubles with each failure, while
// the other nodes are refilled, and that a spare made ends it.
func TestSparesBackOffPerNode(t *testing.T) {
	s := &spares{min: 2, max: 64, nodes: map[string]*spareNode{}}
	for range 5 {
		s.take("bad", "") // the biggest gap
	}
	s.prime("good", "")
	n, ok := s.short()
	if !ok || n.node != "bad" {
		t.Fatalf("short gave %v, want the furthest below its want, bad", n)
	}
	now := time.Now()
	n.making--
	if d := n.failed(now); d != spareRetryMin {
		t.Fatalf("first back-off %v, want %v", d, spareRetryMin)
	}
	for range 2 {
		m, ok := s.short()
		if !ok || m.node != "good" {
			t.Fatalf("with bad in back-off short gave %v, want good", m)
		}
		m.making--
		s.add(m.node, m.net, &spare{})
	}
	if m, ok := s.short(); ok {
		t.Fatalf("short gave %s, want nothing: good is full, bad in back-off", m.node)
	}
	if d, ok := s.nextRetry(now); !ok || d != spareRetryMin {
		t.Fatalf("next retry in %v (%v), want %v", d, ok, spareRetryMin)
	}
	// A second failure within the back-off (the other filler's make
	// failing with it) does not count.
	if d := n.failed(now.Add(time.Millisecond)); d != spareRetryMin-time.Millisecond || n.failures != 1 {
		t.Fatalf("a failure within the back-off: %v, %d failures; want the back-off's rest, 1", d, n.failures)
	}
	var ds []time.Duration
	for range 7 {
		ds = append(ds, n.failed(n.retryAt)) // each as the last back-off ends
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, spareRetryMax, spareRetryMax, spareRetryMax}
	for i := range want {
		if ds[i] != want[i] {
			t.Fatalf("back-offs %v, want %v", ds, want)
		}
	}
	// A failing node being made is left to that filler.
	n.retryAt = time.Now().Add(-time.Millisecond)
	n.making++
	if m, ok := s.short(); ok && m == n {
		t.Fatal("short gave a failing node already being made to a second filler")
	}
	n.making--
	if d, ok := s.nextRetry(time.Now()); !ok || d != 0 {
		t.Fatalf("a failing node whose back-off is over: next retry in %v (%v), want now", d, ok)
	}
	// A failure long after the last back-off starts over.
	late := n.retryAt.Add(2 * spareRetryMax)
	if d := n.failed(late); d != spareRetryMin || n.failures != 1 {
		t.Fatalf("a failure long after: back-off %v with %d failures, want %v and 1", d, n.failures, spareRetryMin)
	}
	// Once the back-off is over, the node is refilled, and a spare made
	// ends its back-off.
	n.retryAt = time.Now().Add(-time.Millisecond)
	if m, ok := s.short(); !ok || m != n {
		t.Fatalf("after its back-off short gave %v, want bad", m)
	}
	n.making--
	s.add("bad", "", &spare{})
	if n.failures != 0 || !n.retryAt.IsZero() {
		t.Fatalf("after a spare made: %d failures, retry at %v; want none", n.failures, n.retryAt)
	}
	if _, ok := s.nextRetry(time.Now()); ok {
		t.Fatal("a retry pending with no node in back-off")
	}
}

// TestSparesBackOffHost checks that a failure of the host's part of a
// spare (errSpareHost) backs off every make, blames no node, and ends
// with the first spare made; and that a zygote's failure blames its node.
func TestSparesBackOffHost(t *testing.T) {
	s := &spares{min: 2, max: 64, nodes: map[string]*spareNode{}}
	s.prime("a", "")
	s.prime("b", "")
	n, ok := s.short()
	if !ok {
		t.Fatal("short gave nothing with two empty reserves")
	}
	now := time.Now()
	herr := fmt.Errorf("%w: %w", errSpareHost, errors.New("no pre-made sandbox"))
	if d, host := s.made(n, herr, now); !host || d != spareRetryMin {
		t.Fatalf("a host failure: back-off %v, host %v; want %v, true", d, host, spareRetryMin)
	}
	if n.making != 0 {
		t.Errorf("a failed make still counted as being made: %d", n.making)
	}
	if m, ok := s.short(); ok {
		t.Fatalf("short gave %s during the host's back-off", m.node)
	}
	if d, ok := s.nextRetry(now); !ok || d != spareRetryMin {
		t.Fatalf("next retry in %v (%v), want the host's %v", d, ok, spareRetryMin)
	}
	for _, key := range []string{"a", "b"} {
		if f := s.nodes[spareKey(key, "")].failures; f != 0 {
			t.Errorf("node %s blamed for the host's failure: %d failures", key, f)
		}
	}
	s.host.retryAt = time.Now().Add(-time.Millisecond)
	m, ok := s.short()
	if !ok {
		t.Fatal("short gave nothing after the host's back-off")
	}
	if _, host := s.made(m, nil, time.Now()); host {
		t.Fatal("a make that did not fail reported as the host's failure")
	}
	s.add(m.node, m.net, &spare{})
	if s.host.failures != 0 || !s.host.retryAt.IsZero() {
		t.Errorf("a spare made left the host in back-off: %d failures", s.host.failures)
	}
	// A zygote's failure is its node's.
	m, _ = s.short()
	if d, host := s.made(m, fmt.Errorf("spare from zygote: %w", errors.New("broken pipe")), time.Now()); host || d != spareRetryMin || m.failures != 1 {
		t.Fatalf("a zygote's failure: back-off %v, host %v, node failures %d; want %v, false, 1", d, host, m.failures, spareRetryMin)
	}
	if !s.host.retryAt.IsZero() {
		t.Error("a zygote's failure backed off the host")
	}
}
