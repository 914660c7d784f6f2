// Package initproc is the code of hearth-init, pid 1 of a sandbox.
//
// The worker starts hearth-init in fresh mount, pid, uts and ipc namespaces.
// hearth-init builds the sandbox's file system (read-only base, read-only
// binds, the scratch file system moved onto /tmp, a minimal /dev, a fresh
// /proc), chroots into it, and then either starts the sandbox's main
// process or just waits, so that a zygote can fork a child into the
// namespaces it holds.
//
// The main process joins the sandbox cgroup; hearth-init itself does not
// stay there, so the sandbox is charged only for what its own processes use.
// It joins the cgroup through pre-opened cgroup.procs descriptors just long
// enough to fork, then returns to its home cgroup.
//
// An unprivileged main process runs under a seccomp filter (see
// internal/seccomp), which hearth-init reads from the file Args.Seccomp
// names before it builds the root, and installs once it has dropped
// privileges: on its own thread right before it execs the main process
// (Exec), or right before it forks it, which filters hearth-init's
// forking thread too (it then only reaps).
//
// The package imports only the standard library and x/sys/unix so that the
// binary stays small and starts fast. Everything it needs comes on the
// command line; see Args.
package initproc

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	// prctl and the bounding set are per thread; fork happens from the
	// thread that calls ForkExec. Keep main on one thread.
	runtime.LockOSThread()
}

// MaxFiles is every sandbox's limit on open files, soft and hard.
const MaxFiles = 1024

// RuntimeEnv tunes hearth-init's own Go runtime; Main removes it from the
// environment the main process gets.
var RuntimeEnv = []string{"GOMAXPROCS=1", "GOGC=off"}

// Bind is a bind mount into the sandbox root.
type Bind struct {
	Source, Target string
	Writable       bool
}

// Args is hearth-init's command line, parsed.
type Args struct {
	Root     string // empty host dir that becomes the sandbox root
	Base     string // tree bound read-only at /
	Binds    []Bind
	Hostname string
	UID, GID int
	Dir      string   // working dir of the main process
	JoinFDs  []int    // cgroup.procs of the sandbox, joined while forking
	HomeFDs  []int    // cgroup.procs of hearth-init's own cgroup
	Command  []string // main process; empty means wait for joiners
	Files    int      // descriptors 3..3+Files-1 are passed to the command
	// Ready, if positive, is a descriptor that gets one byte once the root
	// is built, so a joiner never enters a half-built mount namespace.
	Ready int
	// Zygote builds a sandbox for a zygote: the root is pivoted to (no
	// host tree left in the namespace: a zygote makes user namespaces for
	// its children, and with one any process could leave a chroot), and
	// /proc hides other users' processes (the functions forked from
	// zygotes, which run as their own users). The main process is
	// unprivileged, as any other, under the filter Seccomp names.
	// hearth-init exits only when every process of the pid namespace has
	// (see reap).
	Zygote bool
	// Exec makes the main process pid 1: hearth-init execs it after
	// joining the cgroup and dropping privileges (snapshots need it).
	Exec bool
	// NetNS, if positive, is a network namespace descriptor that
	// hearth-init enters first thing (instead of keeping the host's
	// network), and closes.
	NetNS int
	// Tmp, if positive, is a detached mount (fsmount or open_tree) that
	// hearth-init moves onto the root's /tmp after the binds, and closes:
	// the scratch file system, which is then in this mount namespace
	// only, never in the host's.
	Tmp int
	// Seccomp, if set, is a file holding the seccomp filter of an
	// unprivileged main process: struct sock_filter entries in native
	// byte order, as internal/seccomp writes them.
	Seccomp string
}

// Format renders a as hearth-init's command line.
func (a Args) Format() []string {
	out := []string{"-root", a.Root, "-base", a.Base, "-hostname", a.Hostname,
		"-uid", strconv.Itoa(a.UID), "-gid", strconv.Itoa(a.GID), "-dir", a.Dir,
		"-files", strconv.Itoa(a.Files)}
	if a.Ready > 0 {
		out = append(out, "-ready", strconv.Itoa(a.Ready))
	}
	if a.NetNS > 0 {
		out = append(out, "-netns", strconv.Itoa(a.NetNS))
	}
	if a.Tmp > 0 {
		out = append(out, "-tmp", strconv.Itoa(a.Tmp))
	}
	if a.Zygote {
		out = append(out, "-zygote")
	}
	if a.Exec {
		out = append(out, "-exec")
	}
	if a.Seccomp != "" {
		out = append(out, "-seccomp", a.Seccomp)
	}
	for _, b := range a.Binds {
		mode := "ro"
		if b.Writable {
			mode = "rw"
		}
		out = append(out, "-bind", b.Source+":"+b.Target+":"+mode)
	}
	if len(a.JoinFDs) > 0 {
		out = append(out, "-join", joinInts(a.JoinFDs))
	}
	if len(a.HomeFDs) > 0 {
		out = append(out, "-home", joinInts(a.HomeFDs))
	}
	if len(a.Command) > 0 {
		out = append(out, "--")
		out = append(out, a.Command...)
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Parse parses hearth-init's command line.
func Parse(argv []string) (Args, error) {
	var a Args
	var binds []string
	var join, home string
	fs := flag.NewFlagSet("hearth-init", flag.ContinueOnError)
	fs.StringVar(&a.Root, "root", "", "sandbox root dir")
	fs.StringVar(&a.Base, "base", "", "base image dir")
	fs.StringVar(&a.Hostname, "hostname", "sandbox", "hostname")
	fs.IntVar(&a.UID, "uid", 65534, "uid of the main process")
	fs.IntVar(&a.GID, "gid", 65534, "gid of the main process")
	fs.StringVar(&a.Dir, "dir", "/", "working dir of the main process")
	fs.IntVar(&a.Files, "files", 0, "extra descriptors for the main process")
	fs.IntVar(&a.Ready, "ready", 0, "descriptor told when the root is built")
	fs.BoolVar(&a.Zygote, "zygote", false, "a zygote's sandbox: pivot, hide other users' processes")
	fs.BoolVar(&a.Exec, "exec", false, "exec the main process as pid 1 (snapshots)")
	fs.IntVar(&a.NetNS, "netns", 0, "network namespace descriptor to enter")
	fs.IntVar(&a.Tmp, "tmp", 0, "detached mount to move onto /tmp")
	fs.StringVar(&a.Seccomp, "seccomp", "", "seccomp filter file for the main process")
	fs.Func("bind", "src:dst:ro|rw", func(s string) error { binds = append(binds, s); return nil })
	fs.StringVar(&join, "join", "", "cgroup.procs fds of the sandbox")
	fs.StringVar(&home, "home", "", "cgroup.procs fds of hearth-init")
	if err := fs.Parse(argv); err != nil {
		return a, err
	}
	for _, b := range binds {
		p := strings.Split(b, ":")
		if len(p) != 3 || (p[2] != "ro" && p[2] != "rw") {
			return a, fmt.Errorf("bad -bind %q", b)
		}
		a.Binds = append(a.Binds, Bind{Source: p[0], Target: p[1], Writable: p[2] == "rw"})
	}
	var err error
	if a.JoinFDs, err = parseInts(join); err != nil {
		return a, fmt.Errorf("bad -join: %w", err)
	}
	if a.HomeFDs, err = parseInts(home); err != nil {
		return a, fmt.Errorf("bad -home: %w", err)
	}
	if a.Root == "" || a.Base == "" {
		return a, errors.New("-root and -base are required")
	}
	if a.Zygote && a.Exec {
		return a, errors.New("-zygote and -exec exclude each other")
	}
	a.Command = fs.Args()
	return a, nil
}

// Main runs hearth-init and returns its exit code. With a command, the code
// is the command's (128+signal if it was killed).
func Main(argv []string) int {
	a, err := Parse(argv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth-init:", err)
		return 125
	}
	if a.NetNS > 0 {
		// Before anything else; this thread (locked in init) forks the
		// main process, which inherits the namespace.
		if err := unix.Setns(a.NetNS, unix.CLONE_NEWNET); err != nil {
			fmt.Fprintln(os.Stderr, "hearth-init: setns net:", err)
			return 125
		}
		unix.Close(a.NetNS)
	}
	// Open files: Lambda's 1024, hard. In a zygote it also bounds what
	// a node's packages can hold of what its uid shares with the
	// functions it forks (inotify instances: pids x files).
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: MaxFiles, Max: MaxFiles}); err != nil {
		fmt.Fprintln(os.Stderr, "hearth-init: open files limit:", err)
		return 125
	}
	// A session keyring of its own, empty: hearth-init inherits the
	// worker's (root's), and whatever it starts would otherwise possess
	// it, and with it root's keys, across the drop of privileges.
	if _, _, errno := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); errno != 0 {
		fmt.Fprintln(os.Stderr, "hearth-init: a new session keyring:", errno)
		return 125
	}
	var filter []unix.SockFilter
	if a.Seccomp != "" && len(a.Command) > 0 {
		// Before setup: the file is a host path, out of the new root.
		if filter, err = readFilter(a.Seccomp); err != nil {
			fmt.Fprintln(os.Stderr, "hearth-init:", err)
			return 125
		}
	}
	if err := setup(a); err != nil {
		fmt.Fprintln(os.Stderr, "hearth-init: setup:", err)
		return 125
	}
	if a.Ready > 0 {
		unix.Write(a.Ready, []byte{1})
		unix.Close(a.Ready)
	}
	if len(a.Command) == 0 {
		reap(-1, false)
		return 0
	}
	if a.Exec {
		err := execMain(a, filter)
		fmt.Fprintln(os.Stderr, "hearth-init: exec:", err)
		return 126
	}
	pid, err := spawn(a, filter)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth-init: start:", err)
		return 126
	}
	return reap(pid, a.Zygote)
}

// setup builds the root file system and pivots into it.
func setup(a Args) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
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
		dst := filepath.Join(a.Root, "tmp")
		if err := unix.MoveMount(a.Tmp, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("move scratch onto %s: %w", dst, err)
		}
		unix.Close(a.Tmp)
	}
	if err := makeDev(filepath.Join(a.Root, "dev")); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(a.Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	procOpts := ""
	if a.Zygote {
		procOpts = "hidepid=invisible"
	}
	if err := unix.Mount("proc", filepath.Join(a.Root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, procOpts); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := maskProc(filepath.Join(a.Root, "proc")); err != nil {
		return err
	}
	if a.Exec || a.Zygote {
		// Snapshot sources pivot: CRIU dumps a mount namespace only if it
		// is the task's root, and they are off the critical path.
		return pivot(a.Root)
	}
	// chroot, not pivot_root: detaching the old root makes the kernel wait
	// for an RCU grace period (several ms on the critical path). The host
	// tree stays in this namespace but out of reach: the main process has
	// no CAP_SYS_CHROOT and runs as another user.
	if err := unix.Chdir(a.Root); err != nil {
		return fmt.Errorf("chdir root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// MaskedFiles are the /proc files every sandbox sees empty. They list
// the host's block devices with their I/O counters: among them the loop
// device of every sandbox's on-disk /tmp, whose counters would tell a
// tenant when and how much other tenants' functions write.
var MaskedFiles = []string{"diskstats", "partitions"}

// maskProc hides what /proc tells of the host's disks. Each of
// MaskedFiles gets a read-only bind of an empty file, whose tmpfs is
// mounted nowhere else (so no path reaches it); /proc/fs, every file
// system's state (each sandbox's /tmp, its free space group by group),
// an empty, read-only tmpfs. A forked child's copies of these mounts are
// locked over what they hide. A snapshot's restore binds the files again
// (snapshot.FormatVersion 3).
func maskProc(proc string) error {
	fs := filepath.Join(proc, "fs")
	// First the empty file, in a tmpfs on /proc/fs for a moment.
	empty, err := MountEmpty(fs)
	if err != nil {
		return fmt.Errorf("mask /proc: %w", err)
	}
	for _, f := range MaskedFiles {
		if err := bind(empty, filepath.Join(proc, f), unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC); err != nil {
			return fmt.Errorf("mask /proc/%s: %w", f, err)
		}
	}
	if err := unix.Unmount(fs, 0); err != nil {
		return fmt.Errorf("mask /proc: %w", err)
	}
	if err := unix.Mount("tmpfs", fs, "tmpfs",
		unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,nr_inodes=1,mode=555"); err != nil {
		return fmt.Errorf("mask /proc/fs: %w", err)
	}
	return nil
}

// MountEmpty mounts on dir a small tmpfs (nosuid, nodev, noexec) that
// holds only an empty file, mode 0444, and returns the file's path: what
// is bound over MaskedFiles. No inode limit: with a security module a
// file's xattrs count against it (Linux 6.6).
func MountEmpty(dir string) (string, error) {
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=555"); err != nil {
		return "", fmt.Errorf("mount %s: %w", dir, err)
	}
	empty := filepath.Join(dir, "empty")
	fd, err := unix.Open(empty, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return "", err
	}
	unix.Close(fd)
	return empty, nil
}

func bind(src, dst string, flags uintptr) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", dst, err)
	}
	return nil
}

// makeDev mounts a tmpfs with only null, zero, random and urandom.
func makeDev(dev string) error {
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"random", 1, 8}, {"urandom", 1, 9}} {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
		// mknod obeys the umask; devices must be usable by the sandbox user.
		if err := unix.Chmod(p, 0o666); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := unix.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("symlink /dev/%s: %w", name, err)
		}
	}
	// Read-only from here: the sandbox user cannot add files to /dev.
	if err := unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return fmt.Errorf("remount /dev: %w", err)
	}
	return nil
}

// spawn starts the main process: it joins the sandbox cgroup, gets no
// capabilities, no_new_privs, an unprivileged uid and filter, if any.
func spawn(a Args, filter []unix.SockFilter) (int, error) {
	for _, fd := range a.JoinFDs {
		if _, err := unix.Write(fd, []byte("0")); err != nil {
			return 0, fmt.Errorf("join cgroup: %w", err)
		}
	}
	// Only descriptors 0..2+Files may reach the main process. The
	// cgroup.procs descriptors (sandbox and home) are writable: a process
	// holding one could move itself into hearth-init's unlimited home
	// group. ForkExec passes on every descriptor not marked close-on-exec.
	if err := unix.CloseRange(uint(3+a.Files), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		for fd := 3 + a.Files; fd < 1024; fd++ {
			unix.CloseOnExec(fd)
		}
	}
	if err := dropPrivileges(); err != nil {
		return 0, err
	}
	cred := &syscall.Credential{Uid: uint32(a.UID), Gid: uint32(a.GID), Groups: []uint32{}}
	// The child inherits this thread's filter; nothing this thread
	// does after the fork (cgroup writes, reaping) is denied.
	if err := confine(filter); err != nil {
		return 0, err
	}
	files := []uintptr{0, 1, 2}
	for i := 0; i < a.Files; i++ {
		files = append(files, uintptr(3+i))
	}
	var env []string
	for _, kv := range os.Environ() {
		keep := true
		for _, r := range RuntimeEnv {
			keep = keep && kv != r
		}
		if keep {
			env = append(env, kv)
		}
	}
	pid, err := syscall.ForkExec(a.Command[0], a.Command, &syscall.ProcAttr{
		Dir:   a.Dir,
		Env:   env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setsid:     true,
			Credential: cred,
		},
	})
	// Back home even if the fork failed: hearth-init must not be charged
	// to, or frozen with, the sandbox.
	for _, fd := range a.HomeFDs {
		if _, herr := unix.Write(fd, []byte("0")); herr != nil && err == nil {
			err = fmt.Errorf("leave cgroup: %w", herr)
		}
	}
	for _, fd := range append(a.JoinFDs, a.HomeFDs...) {
		unix.Close(fd)
	}
	return pid, err
}

// dropPrivileges empties the bounding set and sets no_new_privs on this
// thread; the main process inherits both, and setuid to a non-zero uid
// clears its permitted and effective sets.
func dropPrivileges() error {
	last := 40
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// reap waits for children. It returns when main exits, with main's status
// (128+signal when killed); with main < 0 it never returns normally. With
// linger it returns only once every other process of the pid namespace
// has exited too: a zygote's sandbox outlives its zygote while the spares
// and functions forked from it (orphans, which the kernel hands to this
// pid 1) still run, since pid 1's exit would kill them all.
func reap(main int, linger bool) int {
	status := -1
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if status >= 0 {
				return status // no children left after main's exit
			}
			if main < 0 {
				// No children: a joiner-only sandbox waits for signals.
				unix.Pause()
				continue
			}
			return 125
		}
		if pid == main {
			status = ws.ExitStatus()
			if ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
			if !linger {
				return status
			}
		}
	}
}

// execMain replaces hearth-init with the main process, which becomes the
// sandbox's pid 1 in its cgroup, unprivileged, under filter if any, with
// only descriptors 0..2+Files open. It returns only on failure.
func execMain(a Args, filter []unix.SockFilter) error {
	for _, fd := range a.JoinFDs {
		if _, err := unix.Write(fd, []byte("0")); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	for _, fd := range append(a.JoinFDs, a.HomeFDs...) {
		unix.Close(fd)
	}
	if err := dropPrivileges(); err != nil {
		return err
	}
	// Nothing else (the Go runtime's own files included) may survive the
	// exec: CRIU cannot dump descriptors of host files.
	for fd := 3 + a.Files; fd < 1024; fd++ {
		unix.CloseOnExec(fd)
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setresgid(a.GID, a.GID, a.GID); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := unix.Setresuid(a.UID, a.UID, a.UID); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if err := unix.Chdir(a.Dir); err != nil {
		return fmt.Errorf("chdir %s: %w", a.Dir, err)
	}
	if err := confine(filter); err != nil {
		return err
	}
	return unix.Exec(a.Command[0], a.Command, os.Environ())
}

// filterInsnSize is the size of a struct sock_filter.
const filterInsnSize = 8

// readFilter reads a seccomp filter file (see Args.Seccomp).
func readFilter(path string) ([]unix.SockFilter, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	n := len(b) / filterInsnSize
	if n == 0 || len(b)%filterInsnSize != 0 || n > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp filter %s: %d bytes is not a program", path, len(b))
	}
	f := make([]unix.SockFilter, n)
	if _, err := binary.Decode(b, binary.NativeEndian, f); err != nil {
		return nil, fmt.Errorf("seccomp filter %s: %w", path, err)
	}
	return f, nil
}

// confine installs filter on the calling thread, which must have
// no_new_privs set; a process it forks or execs keeps the filter. An
// empty filter installs nothing.
func confine(filter []unix.SockFilter) error {
	if len(filter) == 0 {
		return nil
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("installing the seccomp filter: %w", e)
	}
	runtime.KeepAlive(filter)
	return nil
}

// pivot makes root the root of this mount namespace and detaches the old
// root, so that no host mount stays in the namespace.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}
