// Package sandbox creates Hearth's lean sandboxes.
//
// A sandbox is a set of fresh mount, pid, uts and ipc namespaces (no network
// namespace by default, as in SOCK) held by a tiny init (cmd/hearth-init),
// a root made of read-only bind mounts over a read-only base image, a
// size-capped scratch file system at /tmp (ext4 on disk from Disks, or a
// tmpfs), and its own cgroup. Its main process, if any, runs as an
// unprivileged user with no capabilities, no_new_privs and the
// factory's seccomp filter.
//
// The scratch file system is made detached (fsmount) and init moves it
// onto /tmp: it is in no mount namespace but the sandbox's, so no other
// sandbox's copy of the host's mounts holds it once the sandbox is gone.
// The worker reaches the runtime's socket in it through the descriptor it
// keeps (/proc/self/fd). Every mount of a sandbox lives in its own
// namespace and vanishes with it; Sweep and SweepDisks remove what a
// crashed worker left.
//
// A Sandbox is safe for concurrent use; its owner must call Destroy.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/sandbox/initproc"
)

// Bind is a bind mount from the host into the sandbox.
type Bind = initproc.Bind

// Config describes a sandbox. The zero values of optional fields are
// usable defaults.
type Config struct {
	// ID names the sandbox; it must be unique among live sandboxes.
	ID string
	// Binds are mounted over the base, read-only unless Writable. Targets
	// must exist as directories in the base image.
	Binds []Bind
	// ScratchBytes caps /tmp (default 64 MiB).
	ScratchBytes int64
	// ScratchDisk puts /tmp on disk, in a file system from Factory.Disks
	// (which must be set), so that its files are page cache the kernel can
	// write back and reclaim, not memory charged for good to the
	// sandbox's cgroup. False: a tmpfs.
	ScratchDisk bool
	// Group is the sandbox's cgroup, owned by the caller. The main process
	// and everything it forks run in it. A holder (no Command) may get it
	// later, with SetGroup.
	Group *cgroup.Group
	// Command is the main process. Empty means the sandbox only holds its
	// namespaces, for a zygote to fork into.
	Command []string
	// Env is the main process's environment.
	Env []string
	// Dir is the main process's working directory (default /).
	Dir string
	// Socket, if set, names a listening unix socket created in the scratch
	// dir before the main process starts and passed to it as fd 3.
	Socket string
	// Stdout and Stderr receive the main process's output (default discard).
	Stdout, Stderr io.Writer
	// Files are passed to the main process after the socket (from fd 3,
	// or fd 4 with a Socket). Create does not close them.
	Files []*os.File
	// Zygote makes the sandbox of a root zygote: its own empty network
	// namespace (unless ZygoteHostNet), a pivoted root and a /proc that
	// hides other users' processes (see initproc.Args.Zygote). The main process runs
	// unprivileged under Factory.ZygoteSeccomp instead of Seccomp: it
	// must make the user and other namespaces of the children it forks.
	// Those children live in the sandbox's pid namespace, so its init
	// outlives the main process until they have all exited too: Done
	// closes then, and Destroy kills them with it.
	Zygote bool
	// ZygoteHostNet keeps a zygote in the host's network namespace, for
	// functions the operator lets use the host's network: children that
	// ask for no namespace of their own share their zygote's.
	ZygoteHostNet bool
	// UID and GID, if not zero, run the main process instead of the
	// Factory's.
	UID, GID int
	// Exec makes the main process the sandbox's pid 1: hearth-init execs
	// it instead of forking it. Snapshots need this: CRIU dumps a pid
	// namespace from its init, whose executable must be inside the
	// sandbox. The main process then reaps its own orphans.
	Exec bool
	// NetNS, if set, is a network namespace (from internal/netns) that
	// the sandbox's init enters before anything else, so the sandbox
	// leaves the host's network. Nil keeps the host's network, as in
	// SOCK. Create does not close it.
	NetNS *os.File
}

// Factory creates sandboxes. Its fields are fixed after construction.
type Factory struct {
	// InitPath is the hearth-init binary.
	InitPath string
	// Base is the read-only root image.
	Base string
	// Dir holds one directory per live sandbox.
	Dir string
	// UID and GID run the main process (default 65534, nobody).
	UID, GID int
	// Home is the cgroup hearth-init lives in, outside every sandbox.
	Home *cgroup.Group
	// Disks makes the on-disk /tmp of sandboxes with ScratchDisk; nil
	// means none can have one. The Factory does not own it.
	Disks *Disks
	// Seccomp is a file holding the seccomp filter (as
	// internal/seccomp.WriteFile writes it) that every unprivileged main
	// process, and all it forks, runs under. A privileged one (a zygote)
	// filters its children itself. Empty runs them unfiltered: only
	// tests of the sandbox itself should leave it so.
	Seccomp string
	// ZygoteSeccomp is the filter of zygotes' main processes (see
	// Config.Zygote); empty runs them unfiltered.
	ZygoteSeccomp string
}

// Sandbox is one live sandbox.
type Sandbox struct {
	id      string
	dir     string
	tmp     *os.File // the scratch file system's root (a detached mount, then /tmp's)
	disk    *Scratch // tmp's, if from Disks
	scratch string   // tmp as a path, through /proc/self/fd
	group   *cgroup.Group
	cmd     *exec.Cmd // hearth-init; nil for a shell (see Shell)
	pidfd   *os.File  // a shell's main process, once adopted
	pid     int       // its host pid (a shell's or a restored sandbox's)
	// restored is the init of a restored sandbox (see AdoptRestored),
	// restoredState its state once done, and mnt the host path of its
	// scratch mount; nil and "" otherwise.
	restored      *os.Process
	restoredState *os.ProcessState
	mnt           string
	pre           net.Conn // the runtime connection made ahead (preDial), until Dial takes it
	preName       string
	lis           *os.File      // listening socket kept for a joiner, if any
	ownNet        bool          // entered Config.NetNS
	done          chan struct{} // closed when init has exited
	exitErr       error         // valid after done

	mu        sync.Mutex
	destroyed bool
	paused    bool
}

// Create starts a sandbox. On error nothing is left behind.
func (f *Factory) Create(ctx context.Context, cfg Config) (_ *Sandbox, err error) {
	if cfg.ID == "" || filepath.Base(cfg.ID) != cfg.ID {
		return nil, fmt.Errorf("sandbox: bad id %q", cfg.ID)
	}
	if cfg.Group == nil && len(cfg.Command) > 0 {
		return nil, fmt.Errorf("sandbox %s: no cgroup", cfg.ID)
	}
	s := &Sandbox{
		id:    cfg.ID,
		dir:   filepath.Join(f.Dir, cfg.ID),
		group: cfg.Group,
		done:  make(chan struct{}),
	}
	root := filepath.Join(s.dir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	defer func() {
		if err != nil {
			s.cleanupFS(false)
		}
	}()
	if s.tmp, s.disk, err = f.scratch(ctx, cfg); err != nil {
		return nil, fmt.Errorf("sandbox %s: scratch: %w", s.id, err)
	}
	s.scratch = fdPath(s.tmp)
	uid, gid := f.ids()
	if cfg.UID != 0 {
		uid, gid = cfg.UID, cfg.GID
	}

	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	args := initproc.Args{
		Root:     root,
		Base:     f.Base,
		Binds:    cfg.Binds,
		Hostname: "hearth-" + shortID(s.id),
		UID:      uid,
		GID:      gid,
		Dir:      cfg.Dir,
		Command:  cfg.Command,
	}
	if args.Dir == "" {
		args.Dir = "/"
	}
	if cfg.Socket != "" {
		l, err := listenUnix(filepath.Join(s.scratch, cfg.Socket), cfg.NetNS)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		if err := s.preDial(cfg.Socket); err != nil {
			l.Close()
			return nil, err
		}
		if len(cfg.Command) > 0 {
			files = append(files, l)
			args.Files = 1
		} else {
			s.lis = l // for the process that joins (TakeListener)
			defer func() {
				if err != nil {
					l.Close()
				}
			}()
		}
	}
	if len(cfg.Command) > 0 && len(cfg.Files) > 0 {
		// Dup them: everything in files is closed when Create returns.
		for _, f := range cfg.Files {
			fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
			}
			files = append(files, os.NewFile(uintptr(fd), f.Name()))
		}
		args.Files += len(cfg.Files)
	}
	// A dup for init, which moves the scratch onto /tmp: everything in
	// files is closed when Create returns.
	tmpFD, err := unix.FcntlInt(s.tmp.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: scratch: %w", s.id, err)
	}
	args.Tmp = 3 + len(files)
	files = append(files, os.NewFile(uintptr(tmpFD), "tmp"))
	var readyR *os.File
	if len(cfg.Command) == 0 {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		readyR = r
		defer r.Close()
		args.Ready = 3 + len(files)
		files = append(files, w)
	}
	args.Zygote = cfg.Zygote
	if len(cfg.Command) > 0 {
		args.Seccomp = f.Seccomp
		if cfg.Zygote {
			args.Seccomp = f.ZygoteSeccomp
		}
	}
	if cfg.Exec {
		if len(cfg.Command) == 0 || cfg.Zygote {
			return nil, fmt.Errorf("sandbox %s: Exec needs a Command, and is not for a zygote", s.id)
		}
		args.Exec = true
	}
	if cfg.Zygote && (len(cfg.Command) == 0 || cfg.NetNS != nil) {
		return nil, fmt.Errorf("sandbox %s: a zygote's sandbox needs a Command and makes its own network namespace", s.id)
	}
	s.ownNet = cfg.NetNS != nil
	if cfg.NetNS != nil {
		// A dup: everything in files is closed when Create returns.
		fd, err := unix.FcntlInt(cfg.NetNS.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: netns: %w", s.id, err)
		}
		args.NetNS = 3 + len(files)
		files = append(files, os.NewFile(uintptr(fd), "netns"))
	}
	if len(cfg.Command) > 0 {
		join, err := cfg.Group.ProcsFiles()
		if err != nil {
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		for _, j := range join {
			args.JoinFDs = append(args.JoinFDs, 3+len(files))
			files = append(files, j)
		}
		if f.Home != nil {
			home, err := f.Home.ProcsFiles()
			if err != nil {
				return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
			}
			for _, h := range home {
				args.HomeFDs = append(args.HomeFDs, 3+len(files))
				files = append(files, h)
			}
		}
	}

	cmd := &exec.Cmd{
		Path:       f.InitPath,
		Args:       append([]string{"hearth-init"}, args.Format()...),
		Env:        cfg.Env,
		Stdout:     cfg.Stdout,
		Stderr:     cfg.Stderr,
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: cloneFlags(cfg.Zygote && !cfg.ZygoteHostNet),
			// A dead worker takes its sandboxes with it; the next one sweeps.
			Pdeathsig: syscall.SIGKILL,
		},
	}
	// hearth-init is short-lived work then a sleeper: one P and no GC keep
	// it from competing for the CPUs during a start. It drops these
	// before starting the main process.
	cmd.Env = append(append([]string{}, cfg.Env...), initproc.RuntimeEnv...)
	if f.Home != nil && len(cfg.Command) == 0 {
		// A holder-only init never forks; it can live in Home from the start.
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("sandbox %s: start init: %w", s.id, err)
		}
		if err := f.Home.Add(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
	} else if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox %s: start init: %w", s.id, err)
	}
	s.cmd = cmd
	s.watchExit(cmd.Process.Pid, func() { s.exitErr = cmd.Wait() })
	if readyR != nil {
		// Joiners must not enter the mount namespace before the pivot.
		files[args.Ready-3].Close()
		if dl, ok := ctx.Deadline(); ok {
			readyR.SetReadDeadline(dl)
		}
		if _, rerr := readyR.Read(make([]byte, 1)); rerr != nil {
			cmd.Process.Kill()
			<-s.done
			return nil, fmt.Errorf("sandbox %s: init did not get ready: %w", s.id, rerr)
		}
	}
	return s, nil
}

// scratch makes the sandbox's /tmp, detached: a file system from f.Disks
// (ScratchDisk), also returned, or a new tmpfs, cfg.ScratchBytes large,
// root mode 1777.
func (f *Factory) scratch(ctx context.Context, cfg Config) (*os.File, *Scratch, error) {
	size := cfg.ScratchBytes
	if size <= 0 {
		size = 64 << 20
	}
	if cfg.ScratchDisk {
		if f.Disks == nil {
			return nil, nil, fmt.Errorf("on disk: %w", ErrNoDisks)
		}
		sc, err := f.Disks.Take(ctx, size)
		if err != nil {
			return nil, nil, err
		}
		return sc.Mount, sc, nil
	}
	fs, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fs)
	for k, v := range map[string]string{"size": strconv.FormatInt(size, 10), "mode": "1777"} {
		if err := unix.FsconfigSetString(fs, k, v); err != nil {
			return nil, nil, fmt.Errorf("tmpfs %s=%s: %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fs); err != nil {
		return nil, nil, fmt.Errorf("tmpfs: %w", err)
	}
	m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return nil, nil, fmt.Errorf("fsmount tmpfs: %w", err)
	}
	return os.NewFile(uintptr(m), "tmp"), nil, nil
}

func cloneFlags(newNet bool) uintptr {
	f := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID)
	if newNet {
		f |= unix.CLONE_NEWNET
	}
	return f
}

// TakeListener hands over the listening socket of a sandbox created
// without a command, for the process that will join it. The caller owns
// the file and must close it once handed on.
func (s *Sandbox) TakeListener() *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lis
	s.lis = nil
	return l
}

// Namespaces opens the sandbox's pid, mnt, uts and ipc namespaces, in
// that order, and its net namespace last if it has its own, for a process
// that joins it with setns. The caller closes them.
func (s *Sandbox) Namespaces() ([]*os.File, error) {
	var out []*os.File
	kinds := []string{"pid", "mnt", "uts", "ipc"}
	if s.ownNet {
		kinds = append(kinds, "net")
	}
	for _, ns := range kinds {
		if s.cmd == nil {
			return nil, fmt.Errorf("sandbox %s: a shell has no namespaces of its own", s.id)
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", s.cmd.Process.Pid, ns))
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		out = append(out, f)
	}
	return out, nil
}

func (f *Factory) ids() (int, int) {
	uid, gid := f.UID, f.GID
	if uid == 0 {
		uid = 65534
	}
	if gid == 0 {
		gid = 65534
	}
	return uid, gid
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-12:]
	}
	return id
}

// listenUnix makes a listening socket at path and returns it as a file.
// The socket file stays when the returned file is closed. It stays the
// worker's (root's): the sandbox's user only accepts on the descriptor,
// and in the sticky /tmp it can then neither remove nor replace the file
// (see DialIn). With netNS, the socket belongs to that network namespace,
// the sandbox's (a path reaches it from any): CRIU, dumping a sandbox
// whose namespace is external, finds its sockets there.
func listenUnix(path string, netNS *os.File) (*os.File, error) {
	fd, err := socketIn(netNS)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	err = viaDir(path, func(short string) error {
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: short}); err != nil {
			return fmt.Errorf("bind %s: %w", filepath.Base(path), err)
		}
		return nil
	})
	if err == nil {
		err = unix.Listen(fd, 16)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// socketIn makes a unix stream socket in network namespace ns (nil: this
// thread's), on a locked thread that goes back to its own namespace; one
// that cannot stays locked and ends with its goroutine.
func socketIn(ns *os.File) (int, error) {
	if ns == nil {
		return unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, err}
			return
		}
		defer own.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("setns: %w", err)}
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if serr := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); serr != nil {
			ch <- result{fd, err} // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// viaDir calls f with a short name for path: socket addresses hold at most
// 107 bytes, and data dirs can be deep, so the directory is reached
// through a descriptor's /proc/self/fd link.
func viaDir(path string, f func(short string) error) error {
	if len(path) < 100 {
		return f(path)
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(dir)
	return f(fmt.Sprintf("/proc/self/fd/%d/%s", dir, filepath.Base(path)))
}

// Dial returns the connection to the runtime's socket that the sandbox
// made before any of its processes ran (see preDial), the first time;
// later, it connects to the named socket in the sandbox's /tmp, where a
// symlink or a socket the worker did not make is refused (see DialAt).
func (s *Sandbox) Dial(name string) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock() // Destroy closes the descriptor the dial goes through
	if s.destroyed {
		return nil, fmt.Errorf("sandbox %s: %w", s.id, ErrExited)
	}
	if c := s.pre; c != nil && name == s.preName {
		s.pre = nil
		return c, nil
	}
	return DialAt(s.tmp, name)
}

// preDial connects to the runtime's listening socket as soon as the
// worker has made it, while no process of the sandbox has been in its
// /tmp: the connection waits in the socket's backlog until the runtime
// accepts it. So a start never goes to the socket by a path in a
// directory the function writes.
func (s *Sandbox) preDial(name string) error {
	c, err := DialAt(s.tmp, name)
	if err != nil {
		return fmt.Errorf("sandbox %s: %w", s.id, err)
	}
	s.pre, s.preName = c, name
	return nil
}

// Root returns the sandbox's root dir. Inside the sandbox's mount
// namespace, a joiner chroots there after setns.
func (s *Sandbox) Root() string { return filepath.Join(s.dir, "root") }

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// Group returns the sandbox's cgroup.
func (s *Sandbox) Group() *cgroup.Group { return s.group }

// SetGroup gives a sandbox made without a cgroup (a pre-made holder) the
// cgroup its joiner will join. It must be called before Pause, Unpause or
// the join.
func (s *Sandbox) SetGroup(g *cgroup.Group) { s.group = g }

// Scratch returns a path to the sandbox's /tmp for this process
// (/proc/self/fd/N), valid until Destroy; "" after.
func (s *Sandbox) Scratch() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed {
		return ""
	}
	return s.scratch
}

// SocketPath returns a path for this process to the named socket in the
// sandbox's /tmp, valid until Destroy; "" after.
func (s *Sandbox) SocketPath(name string) string {
	if dir := s.Scratch(); dir != "" {
		return filepath.Join(dir, name)
	}
	return ""
}

// InitPid returns the host pid of the sandbox's init; its /proc/PID/ns/*
// files are the sandbox's namespaces.
func (s *Sandbox) InitPid() int {
	if s.cmd == nil { // a shell or a restored sandbox
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.pid
	}
	return s.cmd.Process.Pid
}

// Done is closed when the sandbox's init has exited: its main process ended
// or was killed.
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// ExitStatus returns the main process's exit code (128+signal if killed),
// or -1 while it runs or if it is not known. For a shell's adopted
// process it waits (up to a second) for its parent to reap it.
func (s *Sandbox) ExitStatus() int {
	select {
	case <-s.done:
		if s.restored != nil {
			return s.restoredExit()
		}
		if s.cmd == nil {
			return shellExit(s.pidfd)
		}
		// With Exec the main process is init itself, which a signal may
		// kill: ExitCode says -1 for that.
		if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return s.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Pause freezes every process of the sandbox.
func (s *Sandbox) Pause(ctx context.Context) error {
	s.setPaused(true)
	if err := s.group.Freeze(ctx); err != nil {
		return fmt.Errorf("pause %s: %w", s.id, err)
	}
	return nil
}

func (s *Sandbox) setPaused(p bool) {
	s.mu.Lock()
	s.paused = p
	s.mu.Unlock()
}

// Unpause thaws the sandbox.
func (s *Sandbox) Unpause(ctx context.Context) error {
	if err := s.group.Thaw(ctx); err != nil {
		return fmt.Errorf("unpause %s: %w", s.id, err)
	}
	s.setPaused(false)
	return nil
}

// Destroy kills every process of the sandbox and removes its mounts and
// directories. The cgroup is killed but not deleted: it belongs to the
// caller. Destroy is idempotent.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.destroyed {
		return nil
	}
	s.destroyed = true
	if s.lis != nil {
		s.lis.Close()
		s.lis = nil
	}
	if s.pre != nil {
		s.pre.Close()
		s.pre = nil
	}
	var errs []error
	// Killing pid 1 kills everything in its pid namespace, and init's
	// exit waits for all of it, so a sandbox with its own pid namespace
	// needs no cgroup-wide kill: that one freezes the group, and the
	// first freeze on the machine patches kernel code (a static key) with
	// a stall of every CPU, on each teardown. Frozen tasks only die when
	// thawed, so a paused sandbox gets the cgroup kill first; a group that still
	// lists a process after init's exit gets it too. A holder nobody
	// joined has no cgroup: killing init empties it.
	groupKill := func() {
		if err := s.group.Kill(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.restored != nil {
		return s.destroyRestored(ctx, errs)
	}
	if s.cmd == nil {
		return s.destroyShell(ctx, groupKill, errs)
	}
	early := s.group != nil && s.paused
	if early {
		groupKill()
	}
	s.cmd.Process.Kill()
	if err := s.waitExit(ctx, "init"); err != nil {
		errs = append(errs, err)
	}
	if s.group != nil && !early {
		if pids, err := s.group.Pids(); err != nil || len(pids) > 0 {
			groupKill()
		}
	}
	if err := s.cleanupFS(len(errs) == 0); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroy %s: %w", s.id, err)
	}
	return nil
}

// waitExit waits, after a kill, for the sandbox's main process (what
// names it) to exit: until ctx ends, or 5 s at most.
func (s *Sandbox) waitExit(ctx context.Context, what string) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s did not exit", what)
	}
}

// cleanupFS drops the worker's hold on the scratch file system, which
// goes with the sandbox's mount namespace (its loop device and image
// with it) or, with gone set once the sandbox's processes were killed
// and waited for, back to Disks, which reuses it only if nothing holds
// any of it anymore (see Scratch.Release); and it removes the sandbox's
// directory.
func (s *Sandbox) cleanupFS(gone bool) error {
	if s.disk != nil {
		s.disk.Release(gone)
		s.disk = nil
	} else if s.tmp != nil {
		s.tmp.Close()
	}
	if s.mnt != "" {
		// A restored sandbox's scratch is mounted on the host: removing
		// the directory first would empty it.
		if err := unmountScratch(s.mnt); err != nil {
			return err
		}
	}
	return os.RemoveAll(s.dir)
}
