package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// alternating prints n numbered lines to stdout and to stderr in turn.
const alternating = `import sys
def f(event):
    for i in range(event["n"]):
        print("out", event["call"], i)
        print("err", event["call"], i, file=sys.stderr)
    return event["n"]
`

// TestLogsOrder checks that `hearth logs` shows what a handler printed to
// stdout and stderr in the order it printed it, with each line's stream,
// for a sandbox forked from a zygote and one started cold.
func TestLogsOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		path  string
	}{
		{"fork", nil, "fork"},
		{"cold", []string{"--no-zygotes"}, "cold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startWorker(t, tc.flags...)
			w.deployDir("alt", fn(t, "f.py", alternating))
			const n = 150
			var want strings.Builder
			for call, path := range []string{tc.path, "warm"} {
				inv := w.mustInvoke("alt", fmt.Sprintf(`{"n": %d, "call": %d}`, n, call))
				if inv.Path != path {
					t.Errorf("call %d took path %s, want %s", call, inv.Path, path)
				}
				for i := range n {
					fmt.Fprintf(&want, "stdout | out %d %d\nstderr | err %d %d\n", call, i, call, i)
				}
			}
			// The lines are in the worker once the parsers have read the
			// pipes, which need not be before the answer.
			var out string
			for range 100 {
				var err error
				if out, err = w.hearth("logs", "alt", "-n", "0"); err != nil {
					t.Fatalf("hearth logs: %v\n%s", err, out)
				}
				if strings.Count(out, "\n") >= 4*n {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if out != want.String() {
				t.Errorf("hearth logs out of order or incomplete:\n%s", firstDiff(out, want.String()))
			}
		})
	}
}

// firstDiff shows where got first differs from want, line by line.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var a, b string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			lo := max(0, i-3)
			return fmt.Sprintf("line %d: got %q, want %q\ngot from line %d:\n%s", i+1, a, b, lo+1,
				strings.Join(g[lo:min(len(g), i+4)], "\n"))
		}
	}
	return "(same)"
}
