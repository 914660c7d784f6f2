package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/seccomp"
)

// newNetWatchProbeCmd is what doctor runs to see whether this host can
// give forked sandboxes their network at their first socket: it
// installs the network filter as a root zygote does, sends its listener
// on fd 3, then makes an internet socket, which waits for the answer.
func newNetWatchProbeCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "net-watch-probe",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			runtime.LockOSThread()
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				return fmt.Errorf("no_new_privs: %w", err)
			}
			l, err := seccomp.InstallNet()
			if err != nil {
				return err
			}
			if err := unix.Sendmsg(3, []byte("l"), unix.UnixRights(l), nil, 0); err != nil {
				return fmt.Errorf("sending the listener: %w", err)
			}
			unix.Close(l)
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return fmt.Errorf("socket after the answer: %w", err)
			}
			unix.Close(fd)
			return nil
		},
	}
}

// netWatchProbeEnv marks the probe's process.
const netWatchProbeEnv = "HEARTH_NET_WATCH_PROBE"

// probeNetWatch reports whether a process under the network filter stops
// in socket(2) until the listener lets it go on (seccomp user
// notification with SECCOMP_USER_NOTIF_FLAG_CONTINUE, Linux 5.5).
func probeNetWatch() error {
	// A probe that started another would multiply (it did: the test
	// binary, executed as the probe, ran the doctor's test again).
	if os.Getenv(netWatchProbeEnv) != "" {
		return errors.New("a probe may not start another")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "probe"), os.NewFile(uintptr(fds[1]), "probe-child")
	defer ours.Close()
	var out strings.Builder
	c := exec.Command(self, "net-watch-probe")
	c.Env = append(os.Environ(), netWatchProbeEnv+"=1")
	c.ExtraFiles = []*os.File{theirs}
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		theirs.Close()
		return err
	}
	theirs.Close()
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	fail := func(err error) error {
		c.Process.Kill()
		<-exited
		if s := strings.TrimSpace(out.String()); s != "" {
			return fmt.Errorf("%w (%s)", err, s)
		}
		return err
	}
	l, err := seccomp.ReceiveListener(ours, 10*time.Second)
	if err != nil {
		return fail(err)
	}
	defer l.Close()
	// The answer is given here, not in the goroutine: the process can
	// exit only after it, so exited cannot win a race against a
	// notification already received (it did under load, when the
	// goroutine answered and was preempted before reporting).
	type notified struct {
		n   seccomp.Notif
		err error
	}
	got := make(chan notified, 1)
	go func() {
		n, err := l.Next()
		got <- notified{n, err}
	}()
	select {
	case g := <-got:
		err := g.err
		if err == nil && (g.n.Nr != unix.SYS_SOCKET || g.n.Args[0] != unix.AF_INET) {
			err = fmt.Errorf("notified of call %d (%d), want socket(AF_INET)", g.n.Nr, g.n.Args[0])
		}
		if err == nil {
			err = l.Continue(g.n.ID)
		}
		if err != nil {
			return fail(err)
		}
	case err := <-exited:
		return fmt.Errorf("the filtered process's socket did not wait for the listener: %v (%s)", err, strings.TrimSpace(out.String()))
	case <-time.After(10 * time.Second):
		return fail(errors.New("no notification within 10 s"))
	}
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("the filtered process: %v (%s)", err, strings.TrimSpace(out.String()))
		}
	case <-time.After(10 * time.Second):
		return fail(errors.New("the filtered process did not go on after the answer"))
	}
	return nil
}
