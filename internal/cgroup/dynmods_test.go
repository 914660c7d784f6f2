package cgroup

import (
	"os"
	"strings"
	"testing"
)

func TestFavorDynMods(t *testing.T) {
	on, err := FavorDynMods()
	if err != nil || !on {
		t.Fatalf("FavorDynMods: %v %v", on, err)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " - cgroup2 ") {
			found = found || strings.Contains(l, "favordynmods")
		}
	}
	if !found {
		t.Error("no cgroup2 mount shows favordynmods")
	}
	if on, err := FavorDynMods(); err != nil || !on { // idempotent
		t.Errorf("second call: %v %v", on, err)
	}
}
