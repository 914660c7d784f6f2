package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/zygote"
)

func TestHomeKind(t *testing.T) {
	for _, k := range []homeKey{
		{node: "", fn: "f", gen: 1, uid: 1000010, gid: 1000010},
		{node: "numpy==2.2.4", fn: "a:b:c", gen: 1 << 40, uid: 7, gid: 8},
	} {
		got, ok := homeKeyOf(k.node, k.kind())
		if !ok || got != k {
			t.Errorf("homeKeyOf(%q, %q) = %+v %v, want %+v", k.node, k.kind(), got, ok, k)
		}
	}
	for _, kind := range []string{"", "isolated", netWired, "home:", "home:1:2:3", "home:x:1:2:f", "home:1:x:2:f", "home:1:2:y:f", "home:-1:2:3:f"} {
		if k, ok := homeKeyOf("n", kind); ok {
			t.Errorf("homeKeyOf(%q) = %+v, want no home kind", kind, k)
		}
	}
}

// testHome is a home of two open files, for the pool's bookkeeping.
func testHome(t *testing.T) *zygote.Home {
	t.Helper()
	var fs [2]*os.File
	for i := range fs {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fs[i] = f
	}
	return &zygote.Home{User: fs[0], Net: fs[1], UID: 1, GID: 1}
}

func closed(h *zygote.Home) bool { return h.User == nil && h.Net == nil }

func TestHomesPool(t *testing.T) {
	hs := newHomes()
	now := time.Now()
	a := homeKey{node: "", fn: "a", uid: 1, gid: 1}
	b := homeKey{node: "", fn: "b", uid: 2, gid: 2}
	if hs.take(a) != nil {
		t.Fatal("a home out of an empty pool")
	}
	h1, h2 := testHome(t), testHome(t)
	hs.put(a, h1, now)
	hs.put(a, h2, now)
	if hs.count(a) != 2 || hs.count(b) != 0 {
		t.Fatalf("counts %d %d, want 2 0", hs.count(a), hs.count(b))
	}
	if got := hs.take(b); got != nil {
		t.Fatal("b took a's home")
	}
	if got := hs.take(a); got != h2 {
		t.Fatal("take did not return the newest home")
	}
	hs.take(a)
	// Bounded per key, then in all; what is not kept is closed.
	var over []*zygote.Home
	for i := range homesPerKey + 1 {
		h := testHome(t)
		if !hs.put(a, h, now) {
			over = append(over, h)
			if i != homesPerKey {
				t.Fatalf("put %d refused, want %d kept", i, homesPerKey)
			}
		}
	}
	if len(over) != 1 || !closed(over[0]) {
		t.Fatalf("%d refused, closed %v: want one, closed", len(over), len(over) > 0 && closed(over[0]))
	}
	kept := homesPerKey
	for i := 0; kept < homesMax; i++ {
		k := homeKey{fn: "f", uid: 100 + i, gid: 100 + i}
		for range homesPerKey {
			if kept == homesMax {
				break
			}
			if !hs.put(k, testHome(t), now.Add(time.Duration(i)*time.Second)) {
				t.Fatalf("put refused with %d kept, want %d", kept, homesMax)
			}
			kept++
		}
	}
	extra := testHome(t)
	if hs.put(b, extra, now) || !closed(extra) {
		t.Fatalf("a put past %d homes was kept", homesMax)
	}
	// By age: the oldest go; by match: a's go.
	if n := hs.drop(nil, now.Add(time.Second)); n != homesPerKey*2 {
		t.Errorf("dropped %d by age, want %d (a's and the first key's)", n, homesPerKey*2)
	}
	if hs.count(a) != 0 {
		t.Errorf("a keeps %d homes past their age", hs.count(a))
	}
	hs.put(a, testHome(t), now.Add(time.Hour))
	if n := hs.drop(func(k homeKey) bool { return k.fn == "a" }, time.Time{}); n != 1 {
		t.Errorf("dropped %d of a's, want 1", n)
	}
	hs.close()
	if hs.n != 0 || len(hs.by) != 0 {
		t.Errorf("closed pool holds %d homes", hs.n)
	}
	late := testHome(t)
	if hs.put(a, late, now) || !closed(late) {
		t.Error("a closed pool kept a home")
	}
}

// TestSparesMakeHomeKindsFromHomes checks that the reserve of a home
// kind is made only into homes kept for it, and that running out of them
// backs off nothing.
func TestSparesMakeHomeKindsFromHomes(t *testing.T) {
	w := &Worker{homes: newHomes()}
	s := &spares{w: w, min: 2, max: 8, nodes: map[string]*spareNode{}}
	k := homeKey{node: "", fn: "f", uid: 5, gid: 5}
	s.prime(k.node, k.kind())
	if n, ok := s.short(); ok {
		t.Fatalf("a home kind with no home kept has %+v to make", n)
	}
	w.homes.put(k, testHome(t), time.Now())
	n, ok := s.short()
	if !ok || n.net != k.kind() {
		t.Fatalf("short = %+v %v, want the home kind once a home is kept", n, ok)
	}
	if w.homes.take(k) == nil { // as make does
		t.Fatal("the kept home is gone")
	}
	if m, ok := s.short(); ok {
		t.Fatalf("short = %+v again, want nothing: the one home is being made into a spare", m)
	}
	if retry, host := s.made(n, errNoHome, time.Now()); retry != 0 || host {
		t.Errorf("errNoHome backs off %v (host %v), want nothing", retry, host)
	}
	if n.failures != 0 || n.making != 0 {
		t.Errorf("after errNoHome: failures %d making %d, want 0 0", n.failures, n.making)
	}
	// A make into a home that fails backs off nothing: the fillers would
	// wake for a retry that short never makes.
	w.homes.put(k, testHome(t), time.Now())
	if n, ok = s.short(); !ok {
		t.Fatal("nothing to make with a home kept")
	}
	if retry, host := s.made(n, errors.New("spare: the child sent no listener"), time.Now()); retry != 0 || host || n.failures != 0 {
		t.Errorf("a failed make into a home: retry %v host %v failures %d, want none", retry, host, n.failures)
	}
	if d, ok := s.nextRetry(time.Now()); ok {
		t.Errorf("nextRetry = %v after a failed make into a home, want none", d)
	}
	w.homes.take(k)
	// Home spares take half of max at most.
	for i := range 4 {
		hk := homeKey{fn: "g", gen: 1, uid: 10 + i, gid: 10 + i}
		s.prime(hk.node, hk.kind())
		w.homes.put(hk, testHome(t), time.Now())
	}
	made := 0
	for {
		n, ok := s.short()
		if !ok {
			break
		}
		if _, home := homeKeyOf(n.node, n.net); !home {
			t.Fatalf("short = %+v, want only home kinds so far", n)
		}
		made++
	}
	if made != s.max/2 {
		t.Errorf("%d home spares being made, want max/2 = %d", made, s.max/2)
	}
	// A generic kind beside it is not bounded by homes.
	s.prime("", "isolated")
	if n, ok := s.short(); !ok || n.net != "isolated" {
		t.Fatalf("short = %+v %v, want the generic kind", n, ok)
	}
}

func TestNoteForkStart(t *testing.T) {
	st := &fnState{}
	t0 := time.Now()
	st.noteForkStart(t0)
	if st.startsAgain(t0) {
		t.Error("a first fork start counts as started again")
	}
	t1 := t0.Add(spareIdle / 2)
	st.noteForkStart(t1)
	if !st.startsAgain(t1) {
		t.Error("a start within spareIdle of the last does not count as started again")
	}
	if st.startsAgain(t1.Add(2 * spareIdle)) {
		t.Error("two starts close together long ago count as started again")
	}
	st.noteForkStart(t0.Add(3 * spareIdle))
	if st.startsAgain(t0.Add(3 * spareIdle)) {
		t.Error("a start spareIdle after the last counts as started again")
	}
}

func TestHomesOffAfterFailures(t *testing.T) {
	hs := newHomes()
	k := homeKey{fn: "f", gen: 1, uid: 1, gid: 1}
	boom := errors.New("spare: entering the home's user namespace: operation not permitted")
	now := time.Now()
	for range homesFailMax - 1 {
		if hs.made(boom, now) != 0 {
			t.Fatal("homes off before homesFailMax failures")
		}
	}
	hs.made(nil, now) // a success starts the count again
	for range homesFailMax - 1 {
		hs.made(boom, now)
	}
	// Not the home's fault: not counted.
	for _, err := range []error{fmt.Errorf("node: %w", zygote.ErrNoZygote), fmt.Errorf("zygote 7: %w", zygote.ErrDead), context.DeadlineExceeded} {
		if hs.made(err, now) != 0 {
			t.Fatalf("%v turned homes off", err)
		}
	}
	if !hs.put(k, testHome(t), now) {
		t.Fatal("homes off after failures that a success interrupted")
	}
	if d := hs.made(boom, now); d != homesOffMin {
		t.Fatalf("made = %v at the %dth failure in a row, want homes off for %v", d, homesFailMax, homesOffMin)
	}
	h := testHome(t)
	if hs.put(k, h, now.Add(homesOffMin/2)) || !closed(h) {
		t.Error("a home kept while homes are off")
	}
	if !hs.put(k, testHome(t), now.Add(homesOffMin)) {
		t.Error("homes still off after their pause")
	}
	later := now.Add(homesOffMin)
	for range homesFailMax - 1 {
		hs.made(boom, later)
	}
	if d := hs.made(boom, later); d != 2*homesOffMin {
		t.Errorf("second pause %v, want %v", d, 2*homesOffMin)
	}
	// Failures further apart than homesFailWindow are not in a row.
	at := later.Add(time.Hour)
	for i := range 2 * homesFailMax {
		if d := hs.made(boom, at.Add(time.Duration(i)*(homesFailWindow+time.Second))); d != 0 {
			t.Fatalf("failure %d, each more than %v after the last, turned homes off", i, homesFailWindow)
		}
	}
}

// TestShortPutsHomesFirst checks that the refill makes a spare into a
// home kept before plain spares, once the node's plain reserve has one.
func TestShortPutsHomesFirst(t *testing.T) {
	w := &Worker{homes: newHomes()}
	s := &spares{w: w, min: 4, max: 16, nodes: map[string]*spareNode{}}
	k := homeKey{node: "n", fn: "f", gen: 1, uid: 5, gid: 5}
	s.prime("n", "isolated")
	s.prime(k.node, k.kind())
	w.homes.put(k, testHome(t), time.Now())
	// The plain reserve is empty and further below its want than the
	// home's: it gets one first.
	n, ok := s.short()
	if !ok || n.net != "isolated" {
		t.Fatalf("short = %+v %v, want the empty plain reserve first", n, ok)
	}
	// Then the home, though the plain reserve is still further below.
	n, ok = s.short()
	if !ok || n.home == nil || *n.home != k {
		t.Fatalf("short = %+v %v, want the home kind once the plain reserve has one coming", n, ok)
	}
	// With no home left to make into, plain again.
	n, ok = s.short()
	if !ok || n.net != "isolated" {
		t.Fatalf("short = %+v %v, want the plain reserve with the home taken", n, ok)
	}
	// Never before another node's reserve, or another kind's, further
	// below its want.
	for _, other := range []struct{ node, kind string }{{"m", "isolated"}, {"n", "offline"}} {
		s := &spares{w: w, min: 4, max: 16, nodes: map[string]*spareNode{}}
		s.prime("n", "isolated")
		s.prime(k.node, k.kind())
		s.prime(other.node, other.kind)
		s.nodes[spareKey("n", "isolated")].making = 1 // its floor
		s.nodes[spareKey("n", "isolated")].peak = 1
		s.nodes[spareKey("n", "isolated")].peakAt = time.Now()
		s.min = 1
		s.nodes[spareKey(other.node, other.kind)].peak = 4
		s.nodes[spareKey(other.node, other.kind)].peakAt = time.Now()
		n, ok := s.short()
		if !ok || n.node != other.node || n.net != other.kind {
			t.Errorf("short = %+v %v, want %s/%s, further below its want than the home", n, ok, other.node, other.kind)
		}
	}
}
