package function

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeExampleShowsDefaults: the function.yaml example in the README
// parses, and the limits it shows are the defaults a function gets
// without them, so a reader copying it changes nothing by accident.
func TestReadmeExampleShowsDefaults(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "an optional `function.yaml`")
	if !ok {
		t.Fatal("README: no function.yaml section")
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README: no yaml block in the function.yaml section")
	}
	s, err := Parse([]byte(example))
	if err != nil {
		t.Fatalf("README example does not parse: %v\n%s", err, example)
	}
	d, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryMB != d.MemoryMB || s.TimeoutS != d.TimeoutS || s.MaxConcurrency != d.MaxConcurrency {
		t.Errorf("README example shows memory_mb %d, timeout_s %d, max_concurrency %d; the defaults are %d, %d, %d",
			s.MemoryMB, s.TimeoutS, s.MaxConcurrency, d.MemoryMB, d.TimeoutS, d.MaxConcurrency)
	}
}
