package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-run/hearth/internal/trace"
)

func TestSimCommand(t *testing.T) {
	out := t.TempDir()
	cmd := newSimCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--trace", "/work/shared/data/azure2019/extremes3-min540-689",
		"--policies", "lru,GD", "--mem", "0.25,1", "--split", "unified,80/20", "--out", out, "--parallel", "2"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("sim: %v\n%s", err, stderr.String())
	}
	// 2 policies x 2 splits x 2 sizes = 8 rows plus a header.
	if rows := strings.Count(stdout.String(), "\n     lru") + strings.Count(stdout.String(), "\n      gd"); rows != 8 {
		t.Fatalf("table has %d rows:\n%s", rows, stdout.String())
	}
	if !strings.Contains(stderr.String(), "100%") {
		t.Fatalf("no progress bar on stderr: %q", stderr.String())
	}
	for _, f := range []string{"results.csv", "memory.csv", "coldstart.png", "coldstart-lru.png", "coldstart-gd.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v", f, err)
		}
	}
}

func TestSimCommand2021(t *testing.T) {
	out := t.TempDir()
	cmd := newSimCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--trace2021", "/work/shared/data/azure2021/Azure2021_200.csv", "--func-mb", "128",
		"--policies", "ttl,hist", "--mem", "0.5", "--split", "unified", "--out", out, "--quiet"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("sim: %v", err)
	}
	if !strings.Contains(stdout.String(), "ttl") || !strings.Contains(stdout.String(), "hist") {
		t.Fatalf("output:\n%s", stdout.String())
	}
}

func TestSimCommandErrors(t *testing.T) {
	trace := "/work/shared/data/azure2019/extremes3-min540-689"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no trace", []string{}, "no trace"},
		{"both traces", []string{"--trace", trace, "--trace2021", "x.csv"}, "not both"},
		{"missing dir", []string{"--trace", "/nonexistent"}, "loading trace"},
		{"bad policy", []string{"--trace", trace, "--policies", "arc"}, "unknown policy"},
		{"bad mem", []string{"--trace", trace, "--mem", "1,-2"}, "--mem"},
		{"bad split", []string{"--trace", trace, "--split", "70/20"}, "--split"},
		{"split needs thresholds", []string{"--trace", trace, "--split", "60/30/10"}, "thresholds"},
		{"bad threshold", []string{"--trace", trace, "--threshold", "abc"}, "--threshold"},
		{"bad arrival", []string{"--trace", trace, "--arrival", "bursty"}, "arrival"},
		{"negative cold", []string{"--trace", trace, "--cold", "-1s"}, "--cold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newSimCmd()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append(tc.args, "--out", t.TempDir(), "--quiet"))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// damagedTrace writes a copy of the extremes3 excerpt whose busiest
// function (46 of 48 invocations) has a -1 in one minute, and whose
// invocations.csv lacks its final newline.
func damagedTrace(t *testing.T) string {
	t.Helper()
	src := "/work/shared/data/azure2019/extremes3-min540-689"
	dir := t.TempDir()
	for _, name := range []string{"invocations.csv", "durations.csv", "memory.csv"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "invocations.csv" {
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(lines) != 4 {
				t.Fatalf("extremes3 invocations.csv has %d lines, want 4", len(lines))
			}
			// The third function (line 4) is the busy one; put a -1 in the
			// first minute that has invocations, and drop the final newline
			// of the file.
			fields := strings.Split(lines[3], ",")
			for i := 4; i < len(fields); i++ {
				if fields[i] != "0" {
					fields[i] = "-1"
					break
				}
			}
			lines[3] = strings.Join(fields, ",")
			b = []byte(strings.Join(lines, "\n"))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSimDamagedTrace: a trace whose skipped rows hold most of its
// invocations is refused with the rows named, in both engines; with
// --max-skipped 100 it is simulated, and the rows are still listed.
func TestSimDamagedTrace(t *testing.T) {
	dir := damagedTrace(t)
	for _, mode := range [][]string{nil, {"--faascache"}} {
		t.Run(strings.Join(append([]string{"sim"}, mode...), " "), func(t *testing.T) {
			args := append([]string{"--trace", dir, "--policies", "lru", "--mem", "1", "--quiet"}, mode...)
			if mode == nil {
				args = append(args, "--split", "unified")
			}
			var stderr bytes.Buffer
			cmd := newSimCmd()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&stderr)
			cmd.SetArgs(append(args, "--out", t.TempDir()))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), "trace damaged") || !strings.Contains(err.Error(), "--max-skipped 100") {
				t.Fatalf("err %v, want a refusal naming --max-skipped", err)
			}
			for _, w := range []string{"bad-invocations: 1", "invocations.csv line 4: minute", `count "-1"`, "(last line, no final newline)", "45 of 47 invocations"} {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}

			stderr.Reset()
			out := t.TempDir()
			cmd = newSimCmd()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&stderr)
			cmd.SetArgs(append(args, "--out", out, "--max-skipped", "100"))
			if mode != nil {
				// Only two invocations are left, of two functions invoked
				// once each: FaasCache's rules leave nothing.
				if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "no function invoked twice") {
					t.Fatalf("err %v, want no function invoked twice", err)
				}
			} else if err := cmd.Execute(); err != nil {
				t.Fatalf("with --max-skipped 100: %v", err)
			}
			if !strings.Contains(stderr.String(), "invocations.csv line 4") {
				t.Errorf("with --max-skipped 100 the rows are not listed:\n%s", stderr.String())
			}
		})
	}
	cmd := newSimCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--trace", dir, "--max-skipped", "101", "--quiet", "--out", t.TempDir()})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--max-skipped") {
		t.Errorf("--max-skipped 101: %v", err)
	}
}

// TestSimSuspectRow2021: the real 2021 excerpt ends without a newline; its
// last row is kept, listed as suspect, and within the default 1 %.
func TestSimSuspectRow2021(t *testing.T) {
	var stderr, stdout bytes.Buffer
	cmd := newSimCmd()
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--trace2021", "/work/shared/data/azure2021/Azure2021_200.csv", "--policies", "lru", "--mem", "0.5",
		"--split", "unified", "--quiet", "--out", t.TempDir()})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("sim: %v\n%s", err, stderr.String())
	}
	for _, w := range []string{"kept 1 suspect", "no-final-newline: 1", "Azure2021_200.csv line 200: last line of the file", "199 invocations"} {
		if !strings.Contains(stderr.String()+stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s\n%s", w, stderr.String(), stdout.String())
		}
	}
}

// TestSimPlotInfo: the plots' titles carry the trace's name (not its
// path), the threshold and the cold-cost rule, so that runs at 100 and
// 225 MB do not look alike.
func TestSimPlotInfo(t *testing.T) {
	c := simConfig{traceDir: "/some/where/sample100-min480-959", thresholds: "100", cold: 500 * time.Millisecond, arrival: trace.Uniform}
	if in := plotInfo(c); in.Trace != "sample100-min480-959" || in.Threshold != "threshold 100 MB" ||
		in.Cold != "cold cost 500ms" || in.Extra != "uniform arrivals" {
		t.Errorf("plotInfo = %+v", in)
	}
	c.cold = 0
	if in := plotInfo(c); in.Cold != "cold cost = max - avg duration" {
		t.Errorf("default cold rule: %+v", in)
	}
	c.faascache = true
	if in := plotInfo(c); !strings.Contains(in.Cold, "FaasCache") || in.Extra != "hearth sim --faascache" {
		t.Errorf("faascache: %+v", in)
	}
	c = simConfig{trace2021: "/a/Azure2021_200.csv", thresholds: "225", funcMB: 128}
	if in := plotInfo(c); in.Trace != "Azure2021_200.csv" || in.Extra != "exact replay, 128 MB per function" {
		t.Errorf("2021: %+v", in)
	}
}
