package criu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ProbeDirPrefix names the temporary directories SelfTest dumps into, so
// that a worker starting after a crash can sweep them.
const ProbeDirPrefix = "hearth-criu-probe-"

// SelfTestResult is what SelfTest measured.
type SelfTestResult struct {
	Dump, Restore time.Duration
}

// SelfTest dumps and restores a tiny process (a sleep, as pid 1 of its own
// pid namespace, in the runner's mount namespace) with criu as r runs it,
// each step bounded by timeout. `criu check` probes kernel features but
// never runs a parasite; this does, so a criu that would hang on every
// dump (see ProbeBreakpoints) fails here, in bounded time, instead of in
// the first real snapshot. Nothing it starts outlives it.
func (r *Runner) SelfTest(ctx context.Context, timeout time.Duration) (SelfTestResult, error) {
	var res SelfTestResult
	dir, err := os.MkdirTemp("", ProbeDirPrefix)
	if err != nil {
		return res, fmt.Errorf("criu self-test: %w", err)
	}
	defer os.RemoveAll(dir)
	images := filepath.Join(dir, "images")
	if err := os.Mkdir(images, 0o700); err != nil {
		return res, fmt.Errorf("criu self-test: %w", err)
	}
	// Descriptors this process inherited without close-on-exec would
	// pass into the test process, and criu cannot dump files of another
	// mount namespace. Go opens every descriptor of its own close-on-exec,
	// so this changes only inherited ones, which no child should get.
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	var cmd *exec.Cmd
	// Started on the runner thread: its files (/dev/null) and mounts are
	// criu's, as a sandbox's would be, and it is a child criu may restore
	// a sibling of.
	err = r.Do(ctx, func() error {
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer null.Close()
		cmd = exec.Command("/bin/sleep", "1000")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
		cmd.Env = []string{}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWPID,
			Setsid:     true,
			Pdeathsig:  syscall.SIGKILL,
		}
		return cmd.Start()
	})
	if err != nil {
		return res, fmt.Errorf("criu self-test: starting a process to dump: %w", err)
	}
	pid := cmd.Process.Pid
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	t0 := time.Now()
	err = r.Run(ctx, Job{Timeout: timeout, Args: []string{"dump", "-t", strconv.Itoa(pid), "-D", images,
		"-W", dir, "-o", "dump.log"}})
	res.Dump = time.Since(t0)
	if err != nil {
		return res, fmt.Errorf("criu self-test: %w%s", err, fileTail(filepath.Join(dir, "dump.log")))
	}
	// The dump killed it (no --leave-running).
	cmd.Wait()
	pidfile := filepath.Join(dir, "pid")
	t0 = time.Now()
	err = r.Run(ctx, Job{Timeout: timeout, Args: []string{"restore", "-D", images, "-W", dir, "-o", "restore.log",
		"--restore-detached", "--restore-sibling", "--pidfile", pidfile}})
	res.Restore = time.Since(t0)
	// A restore cut short may still have made the process: kill it
	// whichever way the restore ended.
	if b, rerr := os.ReadFile(pidfile); rerr == nil {
		if rp, cerr := strconv.Atoi(string(bytes.TrimSpace(b))); cerr == nil && rp > 1 {
			if p, ferr := os.FindProcess(rp); ferr == nil {
				p.Kill()
				p.Wait() // restored as our child (--restore-sibling)
			}
		}
	}
	if err != nil {
		return res, fmt.Errorf("criu self-test: %w%s", err, fileTail(filepath.Join(dir, "restore.log")))
	}
	return res, nil
}

// fileTail returns "; criu log: " and the last lines of a criu log, or
// nothing if it cannot be read.
func fileTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return "; criu log: " + tail(b, 400)
}
