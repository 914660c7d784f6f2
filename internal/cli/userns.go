package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/ident"
)

// newUsernsProbeCmd is what doctor runs as the zygotes' unprivileged
// user: it starts /bin/true in new user, pid, mount and network
// namespaces, as a zygote does for each child it forks.
func newUsernsProbeCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "userns-probe",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c := exec.Command("/bin/true")
			c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWNET}
			return c.Run()
		},
	}
}

// probeUserns reports whether the zygotes' user can make user
// namespaces, which zygotes need for every child they fork.
func probeUserns() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	z := uint32(ident.Default.Zygote())
	c := exec.Command(self, "userns-probe")
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: z, Gid: z, Groups: []uint32{}}}
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("an unprivileged user cannot make user namespaces (%v: %s); check kernel.unprivileged_userns_clone, user.max_user_namespaces and the security module's policy", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// probeHomes reports whether a process of the zygotes' user, forked
// plainly, can enter the user and network namespaces that another of its
// processes made (setns) and make its mount, uts and ipc namespaces
// there (unshare), as a spare does in a home (worker/homes.go). It uses
// util-linux's unshare and nsenter, single-threaded as a zygote child is
// (a Go process cannot enter a user namespace).
func probeHomes() error {
	z := uint32(ident.Default.Zygote())
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: z, Gid: z, Groups: []uint32{}}}
	// Its user namespace maps the zygotes' uid to root, so that the
	// unshare nsenter executes keeps its capabilities there, as a zygote
	// child, which executes nothing, does in a home.
	holder := exec.Command("unshare", "--user", "--map-root-user", "--net", "sleep", "30")
	holder.SysProcAttr = cred
	if err := holder.Start(); err != nil {
		return fmt.Errorf("not probed: %w", err)
	}
	defer func() {
		holder.Process.Kill()
		holder.Wait()
	}()
	own, err := os.Stat("/proc/self/ns/user")
	if err != nil {
		return fmt.Errorf("not probed: %w", err)
	}
	proc := fmt.Sprintf("/proc/%d/", holder.Process.Pid)
	if err := awaitMapped(proc, own, 5*time.Second); err != nil {
		return fmt.Errorf("not probed: %w", err)
	}
	ns := proc + "ns/"
	c := exec.Command("nsenter", "--preserve-credentials", "--user="+ns+"user", "--net="+ns+"net", "--",
		"unshare", "--mount", "--uts", "--ipc", "true")
	c.SysProcAttr = cred
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("a zygote child could not enter another's user and network namespaces (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// awaitMapped waits until the process at proc (a /proc/PID/ directory)
// is in a user namespace other than the one own names, with its uid and
// gid maps written. unshare writes the maps after it made the namespace:
// entered before that, the zygotes' uid maps to no one there, and what
// nsenter executes loses its capabilities (an EPERM, seen under load).
func awaitMapped(proc string, own os.FileInfo, within time.Duration) error {
	for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
		if st, err := os.Stat(proc + "ns/user"); err == nil && !os.SameFile(st, own) && written(proc+"uid_map") && written(proc+"gid_map") {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no user namespace with its ids mapped was made to enter")
		}
	}
}

// written reports whether the id map at path has a line.
func written(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && len(strings.TrimSpace(string(b))) > 0
}
