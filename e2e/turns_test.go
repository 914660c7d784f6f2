package e2e

import (
	"sync"
	"testing"

	"github.com/hearth-run/hearth/internal/client"
)

// TestStartTurnWait: with one start at a time (--max-starts 1), of two
// calls that start at once the second waits for the first's start (an
// import that takes half a second), and says so: X-Hearth-Turn-Wait-Ms,
// part of X-Hearth-Wait-Ms. The first waits for no turn.
func TestStartTurnWait(t *testing.T) {
	w := startWorker(t, "--max-starts", "1", "--no-zygotes", noSnapshots)
	slow := "import time\ntime.sleep(0.5)\n\ndef f(e):\n    return 1\n"
	w.deployDir("slow-a", fn(t, "f.py", slow))
	w.deployDir("slow-b", fn(t, "f.py", slow))

	var wg sync.WaitGroup
	invs := make([]client.Invocation, 2)
	errs := make([]error, 2)
	for i, name := range []string{"slow-a", "slow-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			invs[i], errs[i] = w.invoke(name, "{}")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	first, second := invs[0], invs[1]
	if first.TurnWaitMs > second.TurnWaitMs {
		first, second = second, first
	}
	t.Logf("turn waits %.1f and %.1f ms; waits %.1f and %.1f ms", first.TurnWaitMs, second.TurnWaitMs, first.WaitMs, second.WaitMs)
	for _, inv := range invs {
		if inv.Path != "cold" {
			t.Fatalf("start path %q, want cold", inv.Path)
		}
		if inv.TurnWaitMs > inv.WaitMs {
			t.Errorf("turn wait %.1f ms above the whole wait %.1f ms", inv.TurnWaitMs, inv.WaitMs)
		}
	}
	if second.TurnWaitMs < 300 {
		t.Errorf("the second start waited %.1f ms for its turn, want at least 300 (the first's import sleeps 500)", second.TurnWaitMs)
	}
	if first.TurnWaitMs >= 300 {
		t.Errorf("the first start waited %.1f ms for its turn with none under way", first.TurnWaitMs)
	}
}
