package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestZygoteBenchLive runs bench zygote with a few samples and checks what
// it measures, not how fast: every method took its start path (Zygote
// asserts that per call), each memory figure comes from the start it
// names, and a paused forked sandbox holds far less of its own than a
// fresh interpreter's.
func TestZygoteBenchLive(t *testing.T) {
	hearth, base := liveHearth(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out strings.Builder
	res, err := Zygote(ctx, ZygoteOptions{Hearth: hearth, Base: base, N: 3, Out: &out})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != 7 {
		t.Errorf("%d samples, want 7 methods", len(res.Samples))
	}
	mem := map[string]FrozenMemory{}
	for _, m := range res.Frozen {
		mem[m.Start] = m
	}
	fresh := mem["fresh interpreter"]
	for _, start := range []string{"forked on demand", "from a spare"} {
		m, ok := mem[start]
		if !ok {
			t.Errorf("no memory figure %q: %+v", start, res.Frozen)
			continue
		}
		if m.Private <= 0 || m.Private*4 > fresh.Private {
			t.Errorf("%s: %d bytes private, want (0, a quarter of a fresh interpreter's %d]", start, m.Private, fresh.Private)
		}
	}
}
