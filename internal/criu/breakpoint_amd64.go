package criu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// debugRegs is offsetof(struct user, u_debugreg) on x86-64: DR0 is the
// first word, DR7 the eighth.
const debugRegs = 848

// ProbeBreakpoints reports whether hardware breakpoints set through
// ptrace trap on this host. CRIU stops its parasite with one (it writes
// the debug registers with PTRACE_POKEUSER and waits for the trap); on
// some nested virtual machines the trap never comes and every dump hangs.
// The probe sets an execute breakpoint on the next instruction of a
// spinning child and waits up to timeout for the trap. It returns nil when
// the trap came, an error wrapping ErrNoBreakpoints when it did not, and
// another error when the probe itself could not run.
func ProbeBreakpoints(ctx context.Context, timeout time.Duration) error {
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		// ptrace requests must come from the thread that attached; the
		// thread is not reused afterwards (a tracer that exits detaches).
		runtime.LockOSThread()
		done <- result{probeBreakpoints(ctx, timeout)}
	}()
	r := <-done
	return r.err
}

func probeBreakpoints(ctx context.Context, timeout time.Duration) (err error) {
	// A shell loop runs in user space only, so the instruction at the
	// interrupted pc is one the child executes again and again.
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("breakpoint probe: %w", err)
	}
	pid := cmd.Process.Pid
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
	}()
	// Each wait below has the whole timeout: on a starved host the first
	// must not leave the next too little to tell.
	deadline := time.Now().Add(timeout)
	// Interrupted while still starting (the loader, the shell's set-up),
	// it would stop at an instruction it never runs again, and the probe
	// would find no trap where there is one: 2 probes in 60 did on one
	// host. 20 ms of CPU is far past a shell's start.
	for cpuTicks(pid) < 2 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("breakpoint probe: the child ran %d ms of CPU in %v", cpuTicks(pid)*10, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	if err := unix.PtraceSeize(pid); err != nil {
		return fmt.Errorf("breakpoint probe: seize: %w", err)
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		return fmt.Errorf("breakpoint probe: interrupt: %w", err)
	}
	if _, err := waitStop(ctx, pid, time.Now().Add(timeout), nil); err != nil {
		return fmt.Errorf("breakpoint probe: waiting for the interrupt: %w", err)
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &regs); err != nil {
		return fmt.Errorf("breakpoint probe: regs: %w", err)
	}
	word := make([]byte, 8)
	binary.LittleEndian.PutUint64(word, regs.Rip)
	if _, err := unix.PtracePokeUser(pid, debugRegs, word); err != nil {
		return fmt.Errorf("breakpoint probe: DR0: %w", err)
	}
	// DR7: L0 enabled, R/W0 = 00 (execute), LEN0 = 00 (one byte).
	binary.LittleEndian.PutUint64(word, 1)
	if _, err := unix.PtracePokeUser(pid, debugRegs+7*8, word); err != nil {
		return fmt.Errorf("breakpoint probe: DR7: %w", err)
	}
	if err := unix.PtraceCont(pid, 0); err != nil {
		return fmt.Errorf("breakpoint probe: cont: %w", err)
	}
	// The spinning child passes the breakpoint millions of times a
	// millisecond: 50 ms of its CPU without a trap settles it, however
	// busy the host.
	cpu0 := cpuTicks(pid)
	ran := func() bool { return cpuTicks(pid)-cpu0 >= 5 }
	sig, err := waitStop(ctx, pid, time.Now().Add(timeout), ran)
	if errors.Is(err, errTimeout) && !ran() {
		// Starved, not shown a missing trap: say so, not ErrNoBreakpoints.
		return fmt.Errorf("breakpoint probe: the child ran only %d ms of CPU past the breakpoint in %v", (cpuTicks(pid)-cpu0)*10, timeout)
	}
	if errors.Is(err, errTimeout) {
		// The child kept running past the breakpoint: say how long, so
		// that a child starved of CPU is not mistaken for a missing trap.
		return fmt.Errorf("no trap from an execute breakpoint while the child ran %d ms of CPU past it: %w",
			(cpuTicks(pid)-cpu0)*10, ErrNoBreakpoints)
	}
	if err != nil {
		return fmt.Errorf("breakpoint probe: %w", err)
	}
	if sig != unix.SIGTRAP {
		return fmt.Errorf("breakpoint probe: stopped by %v, not SIGTRAP: %w", sig, ErrNoBreakpoints)
	}
	return nil
}

var errTimeout = errors.New("timed out")

// cpuTicks returns pid's user and system time in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces: state is the 3rd
	// field, utime the 14th and stime the 15th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// waitStop polls for pid's next stop until deadline, or until enough
// reports true, and returns its signal.
func waitStop(ctx context.Context, pid int, deadline time.Time, enough func() bool) (unix.Signal, error) {
	for pause := 50 * time.Microsecond; ; pause = min(2*pause, 10*time.Millisecond) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil && err != unix.EINTR {
			return 0, err
		}
		if got == pid {
			switch {
			case ws.Stopped():
				return ws.StopSignal(), nil
			case ws.Exited() || ws.Signaled():
				return 0, fmt.Errorf("child ended: %v", ws)
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) || enough != nil && enough() {
			return 0, errTimeout
		}
		time.Sleep(pause)
	}
}
