package cli

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
)

func TestSetProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	runtime.SetDefaultGOMAXPROCS()
	old := runtime.GOMAXPROCS(0) // the CPUs, whatever $GOMAXPROCS says
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Setenv("GOMAXPROCS", "")

	cpus, err := setProcs(0, log)
	if err != nil {
		t.Fatal(err)
	}
	if cpus != old {
		t.Errorf("cpus %d, want the runtime's default %d", cpus, old)
	}
	if got, want := runtime.GOMAXPROCS(0), max(1, old/2); got != want {
		t.Errorf("default: GOMAXPROCS %d, want %d", got, want)
	}
	if got := maxStarts(0, cpus); got != 2*old {
		t.Errorf("default max_starts %d, want 2 per CPU (%d)", got, 2*old)
	}
	if got := maxStarts(-1, cpus); got != -1 {
		t.Errorf("max_starts -1 became %d", got)
	}

	runtime.GOMAXPROCS(old)
	if _, err := setProcs(3, log); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("procs 3: GOMAXPROCS %d", got)
	}
	if _, err := setProcs(-1, log); err == nil {
		t.Error("procs -1 accepted")
	}

	// An operator's $GOMAXPROCS stands when procs is not set (the
	// runtime read it at start: here it is set by hand), and the CPUs
	// are still counted as the runtime's default does.
	runtime.GOMAXPROCS(5)
	t.Setenv("GOMAXPROCS", "5")
	if cpus, err = setProcs(0, log); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 5 {
		t.Errorf("$GOMAXPROCS=5: GOMAXPROCS %d", got)
	}
	if cpus != old {
		t.Errorf("$GOMAXPROCS=5: cpus %d, want %d", cpus, old)
	}
	// procs wins over it.
	runtime.GOMAXPROCS(5)
	if _, err := setProcs(2, log); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("$GOMAXPROCS=5 and procs 2: GOMAXPROCS %d", got)
	}
	// A value the runtime ignores is ignored here too.
	t.Setenv("GOMAXPROCS", "abc")
	runtime.SetDefaultGOMAXPROCS()
	if _, err := setProcs(0, log); err != nil {
		t.Fatal(err)
	}
	if got, want := runtime.GOMAXPROCS(0), max(1, old/2); got != want {
		t.Errorf("$GOMAXPROCS=abc: GOMAXPROCS %d, want %d", got, want)
	}
	for _, d := range []struct{ cpus, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {64, 32}} {
		if got := defaultProcs(d.cpus); got != d.want {
			t.Errorf("defaultProcs(%d) = %d, want %d", d.cpus, got, d.want)
		}
	}
}
