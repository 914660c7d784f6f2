package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/hearth-run/hearth/internal/registry"
)

// TestChainCountsOnlyFallbacks checks that hearth_fork_fallbacks_total
// ("Zygote forks that failed and fell back to a fresh start") counts a
// failed path only when the start falls back to another path, as the
// start paths before the launch seam did: a failed cold start, the
// chain's last path, falls back to nothing.
func TestChainCountsOnlyFallbacks(t *testing.T) {
	plain := errors.New("zygote gone")
	cases := []struct {
		name      string
		chain     []fakeStarter
		fallbacks float64
	}{
		{"zygotes off, the cold start fails",
			[]fakeStarter{{id: "snapshot", p: PathSnapshot, err: errSkip}, {id: "spare", p: PathFork, err: errSkip},
				{id: "fork", p: PathFork, err: errSkip}, {id: "cold", p: PathCold, err: ErrStart}}, 0},
		{"the fork falls back, the cold start fails",
			[]fakeStarter{{id: "fork", p: PathFork, err: plain}, {id: "cold", p: PathCold, err: ErrStart}}, 1},
		{"spare and fork fall back, the cold start fails",
			[]fakeStarter{{id: "spare", p: PathFork, err: plain}, {id: "fork", p: PathFork, err: plain},
				{id: "cold", p: PathCold, err: ErrStart}}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := testWorker()
			var tried []string
			var chain []starter
			for _, s := range c.chain {
				s.tried = &tried
				chain = append(chain, s)
			}
			l := &launch{fn: registry.Function{Name: "f"}}
			if _, _, err := w.runChain(context.Background(), l, chain); !errors.Is(err, ErrStart) {
				t.Fatalf("runChain: %v, want ErrStart", err)
			}
			if got := counterValue(t, w.metrics.forkFallbacks); got != c.fallbacks {
				t.Errorf("%v fallbacks counted, want %v", got, c.fallbacks)
			}
		})
	}
}
