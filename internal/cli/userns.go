package cli

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

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
