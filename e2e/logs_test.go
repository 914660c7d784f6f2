package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/bench"
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
		// No snapshots: this is about the output of fork and cold starts
		// (and a restore's start path depends on measured init times).
		{"fork", []string{"--no-snapshots"}, "fork"},
		{"cold", []string{"--no-snapshots", "--no-zygotes"}, "cold"},
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

// TestLogsLimitAndFollow checks that `hearth logs` says what it leaves
// out: older lines beyond -n, and lines past the worker's limit that are
// gone; and that -f prints lines as they come and ends cleanly on SIGINT.
func TestLogsLimitAndFollow(t *testing.T) {
	w := startWorker(t, "--log-lines", "50", "--no-snapshots")
	w.deployDir("alt", fn(t, "f.py", alternating))
	w.mustInvoke("alt", `{"n": 60, "call": 0}`) // 120 lines
	for _, q := range []struct {
		path string
		code int
		want string
	}{
		{"alt/logs?since=x", 400, "since must be"},
		{"alt/logs?n=-1", 400, "n must be"},
		{"nope/logs", 404, "not found"},
	} {
		resp, err := w.get("/v1/functions/" + q.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != q.code || !strings.Contains(string(body), q.want) {
			t.Errorf("GET %s: %d %s, want %d with %q", q.path, resp.StatusCode, body, q.code, q.want)
		}
	}
	var stdout, stderr string
	for range 100 {
		stdout, stderr = w.logs(t, "alt", "-n", "0")
		if strings.Contains(stdout, "err 0 59\n") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(stdout, "\n"); n != 50 || !strings.HasPrefix(stdout, "stdout | out 0 35\n") {
		t.Errorf("-n 0: %d lines, want the newest 50, from out 0 35:\n%s", n, stdout)
	}
	if !strings.Contains(stderr, "70 older lines were dropped: the worker keeps 50 lines per function") {
		t.Errorf("-n 0: no note of the dropped lines: %q", stderr)
	}
	stdout, stderr = w.logs(t, "alt", "-n", "4")
	if stdout != "stdout | out 0 58\nstderr | err 0 58\nstdout | out 0 59\nstderr | err 0 59\n" {
		t.Errorf("-n 4:\n%s", stdout)
	}
	if !strings.Contains(stderr, "showing the newest 4 of 50 lines kept") || !strings.Contains(stderr, "70 older lines were dropped") {
		t.Errorf("-n 4: note %q", stderr)
	}

	// Follow: lines printed after it started, then a clean end on SIGINT.
	cmd := exec.Command(filepath.Join(binDir, "hearth"), "logs", "-f", "--interval", "50ms", "-n", "1", "alt")
	cmd.Env = append(os.Environ(), "HEARTH_URL="+w.url, "HEARTH_TOKEN_FILE="+filepath.Join(w.dataDir, api.TokenFile))
	var out, errOut bench.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && out.String() == ""; {
		time.Sleep(20 * time.Millisecond) // until it has read the log once
	}
	w.mustInvoke("alt", `{"n": 10, "call": 1}`)
	var want strings.Builder
	want.WriteString("stderr | err 0 59\n")
	for i := range 10 {
		fmt.Fprintf(&want, "stdout | out 1 %d\nstderr | err 1 %d\n", i, i)
	}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && out.String() != want.String(); {
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != want.String() {
		t.Fatalf("hearth logs -f:\n%s\nstderr: %s", firstDiff(out.String(), want.String()), errOut.String())
	}
	// More lines at once than the worker keeps: those it could not show
	// in time are counted in a note, none are lost silently.
	w.mustInvoke("alt", `{"n": 60, "call": 2}`)
	// The note goes to stderr, the lines to stdout: two pipes, copied
	// apart, so the note may come in after the last line.
	var shown, dropped int
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		shown, dropped = strings.Count(out.String(), " 2 "), 0
		for _, l := range strings.Split(errOut.String(), "\n") {
			var d int
			if _, err := fmt.Sscanf(l, "hearth: %d lines were dropped before they could be shown", &d); err == nil {
				dropped += d
			}
		}
		if strings.HasSuffix(out.String(), "err 2 59\n") && shown+dropped >= 120 {
			break
		}
	}
	if shown+dropped != 120 || shown < 50 {
		t.Errorf("hearth logs -f: %d lines of the last call shown and %d noted as dropped, want 120 with at least the 50 kept:\n%s\nstderr: %s",
			shown, dropped, out.String(), errOut.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("hearth logs -f ended with %v on SIGINT: %s", err, errOut.String())
	}
}

// logs runs `hearth logs` and returns its stdout and stderr apart.
func (w *worker) logs(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "hearth"), append([]string{"logs"}, args...)...)
	cmd.Env = append(os.Environ(), "HEARTH_URL="+w.url, "HEARTH_TOKEN_FILE="+filepath.Join(w.dataDir, api.TokenFile))
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("hearth logs %v: %v\n%s%s", args, err, o.String(), e.String())
	}
	return o.String(), e.String()
}
