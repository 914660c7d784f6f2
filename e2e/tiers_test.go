package e2e

import (
	"context"
	"testing"
)

// TestTierSwitchesRemoveTheirPaths checks that each switch really takes
// its start path away, and that /v1/status reports it.
func TestTierSwitchesRemoveTheirPaths(t *testing.T) {
	cases := []struct {
		name      string
		flags     []string
		forbidden []string
		warm      bool
		zygotes   bool
		pools     bool
	}{
		{"default", nil, nil, true, true, true},
		{"no zygotes", []string{"--no-zygotes"}, []string{"fork"}, true, false, true},
		{"no warm cache", []string{"--no-warm-cache"}, []string{"warm"}, false, true, true},
		{"fresh", []string{"--fresh"}, []string{"warm", "fork"}, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := startWorker(t, tc.flags...)
			w.deployDir("np", fn(t, "f.py", "import numpy\ndef f(e):\n    return 1\n", "requirements.txt", "numpy\n"))
			w.deployDir("hello", "../examples/hello")
			seen := map[string]int{}
			for i := 0; i < 5; i++ { // enough to promote numpy to a zygote node
				for _, name := range []string{"np", "hello"} {
					seen[w.mustInvoke(name, "{}").Path]++
				}
			}
			for _, p := range tc.forbidden {
				if seen[p] > 0 {
					t.Errorf("%d calls took the %s path with it switched off (%v)", seen[p], p, seen)
				}
			}
			if tc.warm && seen["warm"] == 0 || tc.zygotes && seen["fork"] == 0 {
				t.Errorf("an enabled tier was never used: %v", seen)
			}
			st, err := w.c.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Tiers.Warm != tc.warm || st.Tiers.Zygotes != tc.zygotes || st.Tiers.Pools != tc.pools {
				t.Errorf("status tiers %+v, want warm %v zygotes %v pools %v", st.Tiers, tc.warm, tc.zygotes, tc.pools)
			}
			z, err := w.c.Zygotes(context.Background())
			if err != nil || z.Enabled != tc.zygotes {
				t.Errorf("/v1/zygotes enabled=%v, want %v (%v)", z.Enabled, tc.zygotes, err)
			}
		})
	}
}
