package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/fsutil"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/sandbox/initproc"
)

// Layout of a snapshot directory.
const (
	imagesDir   = "images"
	scratchFile = "scratch.tar"
)

// scratchKey is the CRIU external-mount key of the sandbox's /tmp.
const scratchKey = "scratch"

// ReseedSignal is sent to a restored runtime that handles it, so that it
// reseeds its random generators and runs its after-restore hooks (see
// internal/snapshot/python).
const ReseedSignal = unix.SIGUSR2

// rndReseedCRNG is RNDRESEEDCRNG, _IO('R', 0x07) in linux/random.h.
const rndReseedCRNG = 0x5207

// rekeyKernelRNG makes the kernel re-key its random generator, which
// starts a new generation. glibc >= 2.41 serves getrandom(3) from the
// vDSO with per-thread state that is valid only within the generation it
// was keyed in; a restored copy holds the checkpointed process's state,
// so without a new generation every copy restored before the kernel's
// next scheduled re-key (up to a minute) would draw the same bytes from
// os.urandom. A copy then re-keys its state from the kernel on its first
// draw. Needs CAP_SYS_ADMIN.
func rekeyKernelRNG() error {
	f, err := os.Open("/dev/urandom")
	if err != nil {
		return fmt.Errorf("re-keying the kernel's random generator: %w", err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), rndReseedCRNG, 0); err != nil {
		return fmt.Errorf("re-keying the kernel's random generator: %w", err)
	}
	return nil
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// CRIU is the criu to run; required (see criu.Find).
	CRIU *criu.Binary
	// Base is the base image directory; restored sandboxes get it as
	// their read-only root. Required.
	Base string
	// Dir holds one directory per restored sandbox (its scratch mount);
	// usually the worker's sandboxes directory, so one sweep covers
	// both. Required.
	Dir string
	// BaseID, if set, is the base image's id (internal/image.ID);
	// Restore refuses snapshots taken on another base image.
	BaseID string
}

// Engine checkpoints sandboxes with CRIU and restores them into fresh
// ones. It is safe for concurrent use; the caller must Close it.
//
// NewEngine turns Dir into a shared mount (a bind mount of itself, if it
// is not a mount point yet) so that scratch mounts made there later reach
// criu's private mount namespace.
type Engine struct {
	run    *criu.Runner
	baseID string
	root   string // read-only bind of the base, in criu's namespace
	dir    string
	shared bool // Dir was bind-mounted by NewEngine
}

// privateRoot is where the runner thread mounts the base read-only: under
// its private /run, invisible to the rest of the host.
const privateRoot = "/run/hearth-root"

// privateEmpty is an empty, read-only file in the runner's private /run
// (its name is initproc.MountEmpty's): what a restore binds over
// initproc.MaskedFiles, as the sandbox had.
const privateEmpty = "/run/hearth-mask/empty"

// NewEngine checks cfg, starts a criu runner (running `criu check`) and
// returns an engine. A failing check returns an error wrapping
// criu.ErrCheck and ErrDisabled.
func NewEngine(ctx context.Context, cfg EngineConfig) (_ *Engine, err error) {
	if cfg.CRIU == nil {
		return nil, fmt.Errorf("snapshot engine: no criu: %w", ErrDisabled)
	}
	if cfg.Base == "" || cfg.Dir == "" {
		return nil, fmt.Errorf("snapshot engine: Base and Dir are required: %w", ErrInvalid)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot engine: %w", err)
	}
	sweepDumps()
	e := &Engine{dir: cfg.Dir, root: privateRoot, baseID: cfg.BaseID}
	if e.shared, err = makeShared(cfg.Dir); err != nil {
		return nil, fmt.Errorf("snapshot engine: %w", err)
	}
	defer func() {
		if err != nil && e.shared {
			unix.Unmount(cfg.Dir, unix.MNT_DETACH)
		}
	}()
	if e.run, err = criu.NewRunner(ctx, cfg.CRIU); err != nil {
		return nil, fmt.Errorf("snapshot engine: %w: %w", err, ErrDisabled)
	}
	// CRIU mounts --root as the restored root but drops its flags: give it
	// a read-only bind so restored sandboxes cannot write to the base.
	err = e.run.Do(ctx, func() error {
		if err := os.MkdirAll(privateRoot, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(cfg.Base, privateRoot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", cfg.Base, err)
		}
		if err := unix.Mount("", privateRoot, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return err
		}
		return makeEmpty()
	})
	if err != nil {
		e.run.Close()
		return nil, fmt.Errorf("snapshot engine: read-only base: %w", err)
	}
	return e, nil
}

// Close stops the criu runner. Restored sandboxes keep running.
func (e *Engine) Close() error {
	e.run.Close()
	if e.shared {
		// Lazily: sandboxes may still have scratch mounts below.
		if err := unix.Unmount(e.dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("snapshot engine: unmount %s: %w", e.dir, err)
		}
	}
	return nil
}

// makeEmpty makes privateEmpty, in a read-only tmpfs of its own
// (initproc.MountEmpty).
func makeEmpty() error {
	dir := filepath.Dir(privateEmpty)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p, err := initproc.MountEmpty(dir)
	if err != nil {
		return err
	}
	if p != privateEmpty {
		return fmt.Errorf("empty file at %s, want %s", p, privateEmpty)
	}
	return unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// CRIUVersion returns the version of the criu in use.
func (e *Engine) CRIUVersion() string { return e.run.Binary().Version }

// makeShared makes dir a shared mount, bind-mounting it on itself first
// unless it is a mount point. It reports whether it made the bind.
func makeShared(dir string) (bool, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return false, err
	}
	mounts, err := readMountinfo(os.Getpid())
	if err != nil {
		return false, err
	}
	bound := false
	isMount := false
	for _, m := range mounts {
		if m.point == dir {
			isMount = true
		}
	}
	if !isMount {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return false, fmt.Errorf("bind %s on itself: %w", dir, err)
		}
		bound = true
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		if bound {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		return false, fmt.Errorf("make %s shared: %w", dir, err)
	}
	return bound, nil
}

// DumpSpec says what to checkpoint.
type DumpSpec struct {
	// Pid is the sandbox's pid 1 (on the host), whose tree and
	// namespaces are dumped. It must be the runtime itself (a sandbox
	// whose init execs its main process), idle: no open connection.
	Pid int
	// Scratch is the host path of the sandbox's /tmp.
	Scratch string
	// Socket names the runtime's listening socket in the scratch dir.
	Socket string
	// ListenFD is the socket's descriptor number in the process
	// (default 3).
	ListenFD int
	// ScratchBytes is the scratch tmpfs size to restore with.
	ScratchBytes int64
	// LeaveRunning keeps the process running after the dump; by default
	// CRIU kills it.
	LeaveRunning bool
	// Identity of the snapshot, copied into the descriptor.
	Key, Function, Revision, BaseImage string
	Packages                           []string
}

// Dump checkpoints spec.Pid's tree into dir, which must exist and be
// empty, and returns the descriptor without Files (see Seal). The images
// go to dir/images, the scratch contents to dir/scratch.tar.
func (e *Engine) Dump(ctx context.Context, spec DumpSpec, dir string) (*Descriptor, error) {
	if err := ValidKey(spec.Key); err != nil {
		return nil, err
	}
	if spec.Pid <= 1 || spec.Scratch == "" || spec.Socket == "" {
		return nil, fmt.Errorf("dump %s: Pid, Scratch and Socket are required: %w", spec.Key, ErrInvalid)
	}
	if spec.ListenFD == 0 {
		spec.ListenFD = 3
	}
	t0 := time.Now()
	d := &Descriptor{
		Format: FormatVersion, Key: spec.Key, Function: spec.Function, Revision: spec.Revision,
		BaseImage: spec.BaseImage, Packages: spec.Packages, Created: t0.UTC(),
		Socket: spec.Socket, ScratchBytes: spec.ScratchBytes,
	}
	var err error
	if d.UID, d.GID, err = procIDs(spec.Pid); err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	mounts, err := readMountinfo(spec.Pid)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	if err := waitIdle(ctx, spec.Pid, spec.ListenFD); err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	// Logs and stats go to a work dir outside the snapshot.
	work, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dumpPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	defer os.RemoveAll(work)
	logfile := filepath.Join(work, "dump.log")
	args := []string{"dump", "-t", strconv.Itoa(spec.Pid), "-D", filepath.Join(dir, imagesDir),
		"-W", work, "--manage-cgroups=ignore", "-o", logfile}
	if spec.LeaveRunning {
		args = append(args, "--leave-running")
	}
	inside := map[int]bool{}
	for _, m := range mounts {
		inside[m.id] = true
		switch {
		case m.point == "/" || m.fstype == "proc" || m.fstype == "tmpfs" && (m.point == "/dev" || m.point == "/proc/fs"):
			// The root comes from --root; proc, /dev and the mask on
			// /proc/fs (see initproc) are CRIU's.
		case m.point == "/tmp":
			args = append(args, "--external", "mnt["+m.point+"]:"+scratchKey)
		case slices.Contains(maskPoints, m.point):
			args = append(args, "--external", "mnt["+m.point+"]:"+maskKey(m.point))
		default:
			k := fmt.Sprintf("m%d", len(d.Mounts))
			d.Mounts = append(d.Mounts, Mount{Target: m.point, Key: k})
			args = append(args, "--external", "mnt["+m.point+"]:"+k)
		}
	}
	// A network namespace of the sandbox's own (isolated, offline) is
	// external: the restore joins a fresh one from the caller's pool.
	// The runtime holds no socket in it but its unix listener (waitIdle).
	own, hostNet, err := netnsInodes(spec.Pid)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	if own != hostNet {
		d.Net = true
		// No TCP connection to freeze (waitIdle): no network lock, which
		// would need iptables in the namespace.
		args = append(args, "--external", fmt.Sprintf("net[%d]:%s", own, netKey), "--network-lock", "skip")
	}
	fds, ext, err := outsideFDs(spec.Pid, spec.ListenFD, inside)
	if err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	d.FDs = fds
	for _, x := range ext {
		args = append(args, "--external", x)
	}
	if err := os.Mkdir(filepath.Join(dir, imagesDir), 0o700); err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	if err := e.run.Run(ctx, criu.Job{Args: args, UID: d.UID, GID: d.GID}); err != nil {
		return nil, fmt.Errorf("dump %s: %w%s", spec.Key, err, logTail(logfile))
	}
	// The runtime only waits in accept(2) now (or is gone): /tmp is quiet.
	if err := packScratch(spec.Scratch, filepath.Join(dir, scratchFile)); err != nil {
		return nil, fmt.Errorf("dump %s: %w", spec.Key, err)
	}
	d.DumpTime = time.Since(t0)
	return d, nil
}

// maskPoints are the mounts of initproc.MaskedFiles: restored as binds
// of privateEmpty.
var maskPoints = func() (p []string) {
	for _, f := range initproc.MaskedFiles {
		p = append(p, "/proc/"+f)
	}
	return p
}()

// maskKey is the CRIU external key of mask point p.
func maskKey(p string) string { return "mask-" + filepath.Base(p) }

// netKey is the CRIU external key of a sandbox's network namespace.
const netKey = "hearth-net"

// netnsInodes returns the inodes of pid's network namespace and of this
// process's.
func netnsInodes(pid int) (own, host uint64, err error) {
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		return 0, 0, err
	}
	if err := unix.Stat("/proc/self/ns/net", &b); err != nil {
		return 0, 0, err
	}
	return a.Ino, b.Ino, nil
}

// waitIdle waits until pid holds no socket but its listener: a worker
// that just closed its connection may be faster than the runtime noticing,
// and CRIU cannot dump a socket whose peer is outside the sandbox.
func waitIdle(ctx context.Context, pid, listenFD int) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		busy := -1
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return err
		}
		for _, ent := range ents {
			n, err := strconv.Atoi(ent.Name())
			if err != nil || n == listenFD {
				continue
			}
			if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n)); err == nil && strings.HasPrefix(link, "socket:[") {
				busy = n
				break
			}
		}
		if busy < 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fd %d is a socket other than the listener (an open connection?): %w", busy, ErrUnsupported)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// outsideFDs finds pid's descriptors that refer to objects outside the
// sandbox: stdio pipes, the listening socket and host files (only
// /dev/null is allowed). It returns them and CRIU --external entries.
func outsideFDs(pid, listenFD int, inside map[int]bool) ([]FD, []string, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, nil, err
	}
	var fds []FD
	var ext []string
	for _, ent := range ents {
		n, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, n))
		if err != nil {
			continue // closed meanwhile
		}
		switch {
		case strings.HasPrefix(link, "pipe:["):
			if n <= 2 {
				fds = append(fds, FD{Num: n, Kind: FDPipe, Key: link})
			}
		case strings.HasPrefix(link, "socket:["):
			if n == listenFD {
				fds = append(fds, FD{Num: n, Kind: FDListen, Key: link})
			}
		case strings.HasPrefix(link, "/"):
			mnt, err := fdMount(pid, n)
			if err != nil {
				return nil, nil, err
			}
			if inside[mnt] {
				continue
			}
			if link != "/dev/null" {
				return nil, nil, fmt.Errorf("fd %d is host file %s: %w", n, link, ErrUnsupported)
			}
			var st unix.Stat_t
			if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", pid, n), &st); err != nil {
				return nil, nil, err
			}
			key := fmt.Sprintf("file[%x:%x]", mnt, st.Ino)
			fds = append(fds, FD{Num: n, Kind: FDNull, Key: key})
			ext = append(ext, key)
		}
	}
	seen := map[string]bool{}
	out := ext[:0]
	for _, x := range ext {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return fds, out, nil
}

func fdMount(pid, fd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("fd %d: no mnt_id", fd)
}

type mountEntry struct {
	id     int
	point  string
	fstype string
}

func readMountinfo(pid int) ([]mountEntry, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, s := range fields {
			if s == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			return nil, fmt.Errorf("mountinfo: bad line %q", sc.Text())
		}
		id, err := strconv.Atoi(fields[0])
		if err != nil {
			return nil, fmt.Errorf("mountinfo: bad line %q", sc.Text())
		}
		out = append(out, mountEntry{id: id, point: unescape(fields[4]), fstype: fields[sep+1]})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func procIDs(pid int) (uid, gid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, err = strconv.Atoi(strings.Fields(v)[0])
		} else if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			gid, err = strconv.Atoi(strings.Fields(v)[0])
		}
		if err != nil {
			return 0, 0, fmt.Errorf("status of %d: %w", pid, err)
		}
	}
	return uid, gid, nil
}

// catches reports whether pid has a handler for sig.
func catches(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

func logTail(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	var errs []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "Error") && !strings.Contains(line, "RLIMIT_NOFILE for self") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	if len(errs) > 4 {
		errs = errs[len(errs)-4:]
	}
	if len(errs) == 0 {
		return ""
	}
	return "; criu log: " + strings.Join(errs, " | ")
}

// RestoreTimeout bounds a CRIU restore. Restores are on the invocation
// path and take well under a second; one that takes this long is stuck,
// and the caller is better off forking or starting cold.
const RestoreTimeout = 10 * time.Second

// RestoreSpec says where to restore a snapshot.
type RestoreSpec struct {
	// ID names the restored sandbox; its directory is Dir/ID.
	ID string
	// Binds give the host source of every mount target the descriptor
	// lists (function code, runtime, packages); they are read-only, as
	// they were at the dump.
	Binds []sandbox.Bind
	// Group is the sandbox's cgroup, owned by the caller; the restored
	// process is created in it, so its memory is charged there.
	Group *cgroup.Group
	// Stdout and Stderr replace the process's stdio pipes (default
	// /dev/null). Restore does not close them.
	Stdout, Stderr *os.File
	// NoReseed skips the reseed signal.
	NoReseed bool
	// NetNS is the network namespace to restore into, required for a
	// snapshot taken in one of its own (Descriptor.Net) and refused for
	// one taken in the host's. Restore does not close it.
	NetNS *os.File
}

// Restored is a restored sandbox (a sandbox.Sandbox, whose owner must
// call Destroy) and how its restore went.
type Restored struct {
	*sandbox.Sandbox
	// Reseeded reports whether the reseed signal was sent.
	Reseeded bool
	// RestoreTime is how long the CRIU restore took.
	RestoreTime time.Duration
	// Download is how long fetching the snapshot from the remote store
	// took (Service.Restore on a local miss), 0 if it was local: a cost
	// of this restore, not of restoring.
	Download time.Duration
}

// Restore restores the snapshot in dir (verified by the caller) into a
// fresh sandbox. On error nothing is left behind but the caller's cgroup.
func (e *Engine) Restore(ctx context.Context, dir string, d *Descriptor, spec RestoreSpec) (_ *Restored, err error) {
	if spec.ID == "" || filepath.Base(spec.ID) != spec.ID || spec.Group == nil {
		return nil, fmt.Errorf("restore %s: bad id %q or no cgroup: %w", d.Key, spec.ID, ErrInvalid)
	}
	if e.baseID != "" && d.BaseImage != e.baseID {
		return nil, fmt.Errorf("restore %s: taken on base image %q, this one is %q: %w", d.Key, d.BaseImage, e.baseID, ErrInvalid)
	}
	sources := make(map[string]string, len(spec.Binds))
	for _, b := range spec.Binds {
		if b.Writable {
			return nil, fmt.Errorf("restore %s: mount %s: writable: %w", d.Key, b.Target, ErrInvalid)
		}
		sources[b.Target] = b.Source
	}
	var args []string
	for _, m := range d.Mounts {
		src, ok := sources[m.Target]
		if !ok {
			return nil, fmt.Errorf("restore %s: no source for mount %s: %w", d.Key, m.Target, ErrInvalid)
		}
		args = append(args, "--external", "mnt["+m.Key+"]:"+src)
	}
	for _, p := range maskPoints {
		args = append(args, "--external", "mnt["+maskKey(p)+"]:"+privateEmpty)
	}
	sdir := filepath.Join(e.dir, spec.ID)
	scratch := filepath.Join(sdir, "scratch")
	socket := filepath.Join(scratch, d.Socket)
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return nil, fmt.Errorf("restore %s: %w", d.Key, err)
	}
	var tmp *os.File // the scratch's root; the sandbox owns it once made
	adopted := false
	defer func() {
		if err != nil && !adopted {
			if tmp != nil {
				tmp.Close()
			}
			unix.Unmount(scratch, unix.MNT_DETACH)
			os.RemoveAll(sdir)
		}
	}()
	size := d.ScratchBytes
	if size <= 0 {
		size = 64 << 20
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("size=%d,mode=1777,uid=0,gid=0", size)); err != nil {
		return nil, fmt.Errorf("restore %s: mount scratch: %w", d.Key, err)
	}
	// Opened before any process of the sandbox runs: what the worker
	// dials through (sandbox.DialAt) is this file system's root.
	fd, err := unix.Open(scratch, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("restore %s: scratch: %w", d.Key, err)
	}
	tmp = os.NewFile(uintptr(fd), "scratch")
	if err := unpackScratch(filepath.Join(dir, scratchFile), scratch); err != nil {
		return nil, fmt.Errorf("restore %s: %w", d.Key, err)
	}
	// The worker's own socket, whatever the scratch held under its name.
	os.Remove(socket)
	lis, err := listenUnix(socket)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", d.Key, err)
	}
	defer lis.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", d.Key, err)
	}
	defer null.Close()
	var files []*os.File
	inherited := map[string]bool{}
	for _, fd := range d.FDs {
		if inherited[fd.Key] {
			continue // stdout and stderr on one pipe
		}
		inherited[fd.Key] = true
		var f *os.File
		switch fd.Kind {
		case FDNull:
			f = null
		case FDListen:
			f = lis
		case FDPipe:
			f = null
			if fd.Num == 1 && spec.Stdout != nil {
				f = spec.Stdout
			} else if fd.Num == 2 && spec.Stderr != nil {
				f = spec.Stderr
			}
		default:
			return nil, fmt.Errorf("restore %s: fd %d of kind %q: %w", d.Key, fd.Num, fd.Kind, ErrInvalid)
		}
		args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", 3+len(files), fd.Key))
		files = append(files, f)
	}
	switch {
	case d.Net && spec.NetNS == nil:
		return nil, fmt.Errorf("restore %s: taken in a network namespace of its own, and none given: %w", d.Key, ErrInvalid)
	case !d.Net && spec.NetNS != nil:
		return nil, fmt.Errorf("restore %s: taken in the host's network namespace, and a namespace given: %w", d.Key, ErrInvalid)
	case d.Net:
		args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", 3+len(files), netKey), "--network-lock", "skip")
		files = append(files, spec.NetNS)
	}
	pidfile := filepath.Join(sdir, "pid")
	logfile := filepath.Join(sdir, "restore.log")
	// -W: logs and stats go to the sandbox's dir, never into the shared,
	// verified snapshot.
	args = append([]string{"restore", "-D", filepath.Join(dir, imagesDir), "-W", sdir, "--root", e.root,
		"--external", "mnt[" + scratchKey + "]:" + scratch,
		"--manage-cgroups=ignore", "--restore-detached", "--restore-sibling",
		"--pidfile", pidfile, "-o", logfile}, args...)
	t0 := time.Now()
	if err := e.run.Run(ctx, criu.Job{Args: args, Files: files, Cgroup: spec.Group.Dirs(), Timeout: RestoreTimeout}); err != nil {
		return nil, fmt.Errorf("restore %s: %w%s", d.Key, err, logTail(logfile))
	}
	took := time.Since(t0)
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return nil, fmt.Errorf("restore %s: pidfile: %w", d.Key, err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("restore %s: bad pidfile %q: %w", d.Key, b, ErrInvalid)
	}
	os.Remove(pidfile)
	os.Remove(logfile)
	// --restore-sibling made the restored init our child: the sandbox
	// reaps it.
	proc, err := os.FindProcess(pid)
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return nil, fmt.Errorf("restore %s: %w", d.Key, err)
	}
	r := &Restored{RestoreTime: took, Sandbox: sandbox.AdoptRestored(sandbox.Restored{
		ID: spec.ID, Dir: sdir, Scratch: tmp, ScratchMount: scratch, Group: spec.Group, Init: proc,
	})}
	adopted = true
	if err := rekeyKernelRNG(); err != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return nil, errors.Join(fmt.Errorf("restore %s: %w", d.Key, err), r.Destroy(dctx))
	}
	if !spec.NoReseed && catches(pid, ReseedSignal) {
		// Pending before the worker connects: the runtime runs its
		// handler before it accepts (and answers) the connection.
		if err := proc.Signal(ReseedSignal); err == nil {
			r.Reseeded = true
		}
	}
	return r, nil
}

// listenUnix makes a listening socket at path. It stays root's: the
// restored runtime only accepts on the descriptor, and in the sticky
// /tmp its user can then neither remove nor replace the file, which the
// worker dials (see sandbox.DialAt).
func listenUnix(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// dumpPrefix begins the name of a dump's work dir (its log) in the
// temporary directory, followed by the dumping process's pid: a worker
// killed during a dump leaves it behind, and the next engine removes
// those of processes gone (sweepDumps).
const dumpPrefix = "hearth-dump-"

// sweepDumps removes the dump work dirs of processes gone.
func sweepDumps() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dumpPrefix+"*"))
	for _, d := range dirs {
		if fsutil.Orphaned(d, dumpPrefix, "-") {
			os.RemoveAll(d)
		}
	}
}
