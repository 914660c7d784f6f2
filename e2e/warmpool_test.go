package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memTotal reads the machine's MemTotal in bytes.
func memTotal(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// Functions of 512 MB and 1 GB run: by default the budget follows the
// machine's memory, and under a small budget a function larger than its
// pool uses the biggest pool and borrows the rest. Only a function that
// could never fit the whole budget is refused, at deploy, with a 4xx.
func TestLargeFunctionsRun(t *testing.T) {
	big := func(mb string) string {
		return fn(t, "f.py", "def f(e):\n    return "+mb+"\n", "function.yaml", "memory_mb: "+mb+"\n")
	}
	t.Run("default budget", func(t *testing.T) {
		w := startWorker(t)
		st := w.status()
		if half := memTotal(t) / 2; st.WarmBudget <= 0 || st.WarmBudget > half {
			t.Errorf("default warm budget %d MB, want half the machine's memory (%d MB) or less under a cgroup limit",
				st.WarmBudget>>20, half>>20)
		}
		for _, mb := range []string{"512", "1024"} {
			w.deployDir("m"+mb, big(mb))
			if inv := w.mustInvoke("m"+mb, "{}"); string(inv.Body) != mb {
				t.Errorf("m%s: body %s", mb, inv.Body)
			}
		}
	})
	t.Run("small budget", func(t *testing.T) {
		// 80/20 of 1024 MB: the large pool holds 204 MB.
		w := startWorker(t, "--config", writeConfig(t, "warm_budget_mb: 1024\n"))
		w.deployDir("small", fn(t, "f.py", "def f(e):\n    return 1\n"))
		w.mustInvoke("small", "{}")
		for _, mb := range []string{"512", "1024"} {
			w.deployDir("m"+mb, big(mb))
			// Twice: the second call is served warm.
			for range 2 {
				if inv := w.mustInvoke("m"+mb, "{}"); string(inv.Body) != mb {
					t.Errorf("m%s: body %s", mb, inv.Body)
				}
			}
		}
		// The 1 GB start took the whole budget, evicting the paused
		// sandboxes of both pools: the small function starts again.
		w.mustInvoke("small", "{}")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := w.c.Deploy(ctx, "m1025", bytes.NewReader(tarGz(t,
			entry{name: "f.py", body: "def f(e):\n    return 1\n"}, entry{name: "function.yaml", body: "memory_mb: 1025\n"})))
		if !isStatus(err, 422) || !strings.Contains(err.Error(), "memory_mb 1025") || !strings.Contains(err.Error(), "warm budget of 1024 MB") {
			t.Fatalf("deploying 1025 MB under a 1024 MB budget: %v, want a 422 naming memory_mb and the budget", err)
		}
		if strings.Contains(err.Error(), w.dataDir) {
			t.Errorf("error exposes a host path: %v", err)
		}
		if _, err := w.invoke("m1025", "{}"); !isStatus(err, 404) {
			t.Errorf("the refused function: %v, want 404", err)
		}
	})
}
