package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSimFaasCache(t *testing.T) {
	out := t.TempDir()
	cmd := newSimCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--faascache", "--trace", "/work/shared/data/azure2019/extremes3-min540-689",
		"--policies", "lru,gd,ttl", "--mem", "0.25,1", "--out", out})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("sim --faascache: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "FaasCache's rules") {
		t.Errorf("stderr: %q", stderr.String())
	}
	csv, err := os.ReadFile(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// 3 policies x 2 sizes, unified only, plus a header.
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 7 {
		t.Fatalf("results.csv has %d lines:\n%s", len(lines), csv)
	}
	for _, l := range lines[1:] {
		if !strings.Contains(l, ",unified,") {
			t.Errorf("row not unified: %s", l)
		}
	}
}

func TestSimFaasCacheErrors(t *testing.T) {
	tr := "/work/shared/data/azure2019/extremes3-min540-689"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"split", []string{"--trace", tr, "--split", "80/20"}, "does not take --split"},
		{"arrival", []string{"--trace", tr, "--arrival", "uniform"}, "does not take --arrival"},
		{"cold", []string{"--trace", tr, "--cold", "1s"}, "does not take --cold"},
		{"2021 trace", []string{"--trace2021", "x.csv"}, "does not take --trace2021"},
		{"no trace", []string{}, "needs a 2019 trace"},
		{"policy", []string{"--trace", tr, "--policies", "hist"}, "FaasCache policy"},
		{"memory", []string{"--trace", tr, "--mem", "-1"}, "--mem"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newSimCmd()
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetArgs(append([]string{"--faascache", "--quiet", "--out", t.TempDir()}, tc.args...))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSimFaasCacheApps runs the command on a trace whose apps have several
// functions and checks one point against FaasCache's own figures (see
// TestFaasCacheGoldenApps in internal/sim): the command must divide memory
// and order ties as FaasCache does.
func TestSimFaasCacheApps(t *testing.T) {
	out := t.TempDir()
	cmd := newSimCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--faascache", "--trace", "../sim/testdata/faascache/apps-perfunc",
		"--policies", "gd", "--mem", strconv.FormatFloat(900.0/1024, 'g', -1, 64), "--out", out, "--quiet"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// policy,split,borrow,memory_mb,memory_gb,all_invocations,all_hits,all_misses,all_drops
	if !strings.Contains(string(csv), "gd,unified,false,900,0.8789,698,549,134,15,") {
		t.Errorf("results.csv:\n%s\nwant gd at 900 MB: 549 hits, 134 misses, 15 drops as FaasCache", csv)
	}
}
