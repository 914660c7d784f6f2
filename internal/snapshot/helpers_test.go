package snapshot

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hearth-run/hearth/internal/snapshot/snaptest"
)

// env is the privileged fixture, set up once in TestMain; the cache tests
// do not need it.
var (
	env    *snaptest.Env
	engine *Engine
	envErr error
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		e, cleanup, err := snaptest.Setup("snaptest")
		defer cleanup()
		if err != nil {
			envErr = err
			return m.Run()
		}
		eng, err := NewEngine(context.Background(), EngineConfig{CRIU: e.CRIU, Base: e.Base, Dir: e.SbDir})
		if err != nil {
			envErr = err
			return m.Run()
		}
		defer eng.Close()
		env, engine = e, eng
		return m.Run()
	}())
}

func needEnv(t *testing.T) *snaptest.Env {
	t.Helper()
	if env == nil {
		snaptest.Skip(t, envErr)
	}
	return env
}

func nsPid(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			return f[len(f)-1]
		}
	}
	return ""
}

// procStatus returns the first field of each line of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) > 0 {
			out[k] = f[0]
		}
	}
	return out
}
