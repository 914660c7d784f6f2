// Command execinit is a test stand-in for hearth-init with the "exec"
// mode snapshots need (see the package report): it builds the sandbox
// root exactly as hearth-init does, then execs the main process instead of
// forking it, so that the sandbox's pid 1 is the runtime itself, whose
// executable lives inside the sandbox and can be checkpointed.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/sandbox/initproc"
)

func init() { runtime.LockOSThread() }

func main() {
	a, err := initproc.Parse(os.Args[1:])
	if err != nil || len(a.Command) == 0 {
		fmt.Fprintln(os.Stderr, "execinit: bad args:", err)
		os.Exit(125)
	}
	if err := setup(a); err != nil {
		fmt.Fprintln(os.Stderr, "execinit: setup:", err)
		os.Exit(125)
	}
	if err := execMain(a); err != nil {
		fmt.Fprintln(os.Stderr, "execinit: exec:", err)
		os.Exit(126)
	}
}

func setup(a initproc.Args) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	const ro = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
	if err := bind(a.Base, a.Root, ro); err != nil {
		return err
	}
	for _, b := range a.Binds {
		flags := uintptr(ro)
		if b.Writable {
			flags = unix.MS_NOSUID | unix.MS_NODEV
		}
		if err := bind(b.Source, filepath.Join(a.Root, b.Target), flags); err != nil {
			return err
		}
	}
	if a.Tmp > 0 {
		// As hearth-init: the scratch file system comes detached.
		dst := filepath.Join(a.Root, "tmp")
		if err := unix.MoveMount(a.Tmp, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move scratch onto %s: %w", dst, err)
		}
		unix.Close(a.Tmp)
	}
	dev := filepath.Join(a.Root, "dev")
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return err
	}
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"random", 1, 8}, {"urandom", 1, 9}} {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return err
		}
		if err := unix.Chmod(p, 0o666); err != nil {
			return err
		}
	}
	if err := unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(a.Hostname)); err != nil {
		return err
	}
	if err := unix.Chdir(a.Root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	return unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

func bind(src, dst string, flags uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|flags, "")
}

// execMain joins the sandbox cgroup, drops privileges and execs the main
// process as pid 1. Only descriptors 0..2+Files survive the exec.
func execMain(a initproc.Args) error {
	for _, fd := range a.JoinFDs {
		if _, err := unix.Write(fd, []byte("0")); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	for _, fd := range append(a.JoinFDs, a.HomeFDs...) {
		unix.Close(fd)
	}
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return err
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	for fd := 3 + a.Files; fd < 1024; fd++ {
		unix.CloseOnExec(fd)
	}
	if _, err := unix.Setsid(); err != nil {
		return err
	}
	if err := unix.Setgroups(nil); err != nil {
		return err
	}
	if err := unix.Setresgid(a.GID, a.GID, a.GID); err != nil {
		return err
	}
	if err := unix.Setresuid(a.UID, a.UID, a.UID); err != nil {
		return err
	}
	if err := unix.Chdir(a.Dir); err != nil {
		return err
	}
	return unix.Exec(a.Command[0], a.Command, os.Environ())
}
