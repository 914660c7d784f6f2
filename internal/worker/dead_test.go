package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
)

// procBox is a sandbox reduced to what the cache uses of one: a real
// process (the runtime) in a real cgroup, paused with the cgroup freezer.
// Its init (Done) lives on, as a holder's does when a forked runtime
// dies.
type procBox struct {
	g    *cgroup.Group
	cmd  *exec.Cmd
	done chan struct{}
}

func (b *procBox) ID() string                         { return "proc" }
func (b *procBox) Group() *cgroup.Group               { return b.g }
func (b *procBox) InitPid() int                       { return b.cmd.Process.Pid }
func (b *procBox) Done() <-chan struct{}              { return b.done }
func (b *procBox) ExitStatus() int                    { return -1 }
func (b *procBox) Pause(ctx context.Context) error    { return b.g.Freeze(ctx) }
func (b *procBox) Unpause(ctx context.Context) error  { return b.g.Thaw(ctx) }
func (b *procBox) Destroy(ctx context.Context) error  { return b.g.Kill(ctx) }
func (b *procBox) Dial(name string) (net.Conn, error) { return nil, errors.New("no socket") }

// A paused sandbox whose runtime was killed (or has a kill pending, as a
// frozen process in a cgroup v1 freezer does) is never handed out: take
// replaces it by a reservation for a new start.
func TestCacheReplacesDeadPausedSandbox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	// On a hybrid host's cgroup2 side a frozen process dies at once when
	// killed.
	for _, m := range cgroupModes() {
		t.Run(m.name, func(t *testing.T) {
			cm, err := cgroup.NewManager(fmt.Sprintf("hearth-test-%d-dead-%s", os.Getpid(), m.name), m.opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cm.Close(context.Background()) })
			c := newTestCache(t, 300*mib, PoolConfig{})
			f := testFn("a", 128)
			park := func(name string) (*instance, *procBox) {
				t.Helper()
				g, err := cm.Create(name, cgroup.Limits{})
				if err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command("sleep", "1000")
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan struct{})
				go func() { cmd.Wait(); close(exited) }()
				t.Cleanup(func() {
					cmd.Process.Kill()
					<-exited
					g.Delete(context.Background())
				})
				if err := g.Add(cmd.Process.Pid); err != nil {
					t.Fatal(err)
				}
				b := &procBox{g: g, cmd: cmd, done: make(chan struct{})}
				inst := fakeStart(t, c, f)
				inst.sb, inst.group = b, g
				fakePark(t, c, inst, 10*mib)
				// As freeze does, without reading the memory usage (a
				// hybrid host's cgroup2 side has no memory controller).
				inst.mu.Lock()
				err = inst.pauseLocked(context.Background())
				inst.mu.Unlock()
				if err != nil || len(inst.pids) != 1 {
					t.Fatalf("pause: %v, pids %v", err, inst.pids)
				}
				return inst, b
			}

			// Alive: taken warm and thawed.
			live, _ := park("live")
			got, id, err := c.take(context.Background(), f)
			if err != nil || got != live || id != 0 {
				t.Fatalf("take of a live paused sandbox: %v %v %v", got, id, err)
			}
			if live.stateName() != "busy" {
				t.Errorf("state %s after take", live.stateName())
			}
			c.forget(live)

			// Killed while frozen: not handed out.
			dead, b := park("dead")
			if err := unix.Kill(b.cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// A cgroup v2 freezer lets a killed process run at once to
			// exit. For a few microseconds, longer if it is preempted, it
			// shows no trace of the kill: probed on kernel 6.18, /proc
			// read "State: R", empty SigPnd and ShdPnd and no PF_EXITING
			// in 1 of about 200 kills. A call that takes it then is one
			// the kill hit mid-call. This test is about a kill that
			// landed before the take, so wait until /proc shows it.
			for deadline := time.Now().Add(5 * time.Second); procDead(b.cmd.Process.Pid) == ""; {
				if time.Now().After(deadline) {
					t.Fatal("the killed process shows no kill after 5 s")
				}
				time.Sleep(time.Millisecond)
			}
			got, id, err = c.take(context.Background(), f)
			if err != nil || got != nil || id == 0 {
				t.Fatalf("take after the kill: %v %v %v, want a reservation for a new start", got, id, err)
			}
			if _, ok := c.ids[dead]; ok {
				t.Error("the dead sandbox is still in the pool")
			}
			// Thawed, the killed process is gone.
			deadline := time.Now().Add(5 * time.Second)
			for {
				pids, err := b.g.Pids()
				if err == nil && len(pids) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("killed process still in its cgroup: %v %v", pids, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// cgroupMode is a cgroup manager's mode for a test: its name and options.
type cgroupMode struct {
	name string
	opts []cgroup.Option
}

// cgroupModes returns the detected mode and, on a hybrid host, the mode
// of its cgroup2 side.
func cgroupModes() []cgroupMode {
	modes := []cgroupMode{{"detected", nil}}
	if st, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil && !st.IsDir() {
		modes = append(modes, cgroupMode{"v2-hybrid", []cgroup.Option{cgroup.WithMode(cgroup.V2), cgroup.WithRoot("/sys/fs/cgroup/unified")}})
	}
	return modes
}
