package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	for _, f := range []string{"results.csv", "memory.csv", "coldstart.png", "drops.png", "coldstart-lru.png", "coldstart-gd.png"} {
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
