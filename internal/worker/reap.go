package worker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/criu"
	"github.com/hearth-run/hearth/internal/mountinfo"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Host names what a worker owns on the host, outside its data files:
// cgroups, mounts, network objects and temporary files. A worker, a
// worker's reaper and `hearth up` after a crash all sweep the same set.
type Host struct {
	// DataDir is the worker's data dir (required).
	DataDir string
	// CgroupParent is the worker's cgroup parent (default
	// DefaultCgroupParent(DataDir)); the install cache's groups live in
	// CgroupParent-pkgs.
	CgroupParent string
	// NetPrefix names the worker's bridges and veths (default derived
	// from CgroupParent, see NetPrefix).
	NetPrefix string
}

// Resolve fills in the defaults.
func (h Host) Resolve() Host {
	if h.CgroupParent == "" {
		h.CgroupParent = DefaultCgroupParent(h.DataDir)
	}
	if h.NetPrefix == "" {
		h.NetPrefix = NetPrefix(h.CgroupParent)
	}
	return h
}

// NetPrefix is the default prefix of the network objects of a worker with
// cgroup parent parent, so that a restarted worker sweeps what it left.
func NetPrefix(parent string) string {
	h := fnv.New32a()
	h.Write([]byte(parent))
	return "h" + strconv.FormatUint(uint64(h.Sum32()), 36)
}

// Swept counts what Sweep removed.
type Swept struct {
	Cgroups, Mounts, Net, Files int
}

func (s Swept) String() string {
	return fmt.Sprintf("%d cgroups, %d mounts, %d network objects, %d files", s.Cgroups, s.Mounts, s.Net, s.Files)
}

// Empty reports whether nothing was swept.
func (s Swept) Empty() bool { return s == Swept{} }

// probeDirAge is how old a CRIU probe's temporary directory must be to be
// swept: a live probe lasts seconds, and another worker's may be running.
const probeDirAge = time.Minute

// Sweep removes what a worker of h left behind, for example when it was
// killed: it kills every process in its cgroups (thawing frozen ones) and
// deletes the groups, unmounts what it mounted below its sandbox dirs,
// deletes its bridges, veths and NAT rules, detaches and removes its /tmp
// images, and removes temporary upload and probe files. It must not run while that worker runs.
func Sweep(ctx context.Context, h Host) (Swept, error) {
	h = h.Resolve()
	var s Swept
	var errs []error
	for _, parent := range []string{h.CgroupParent, h.CgroupParent + "-pkgs"} {
		if !cgroupExists(parent) {
			continue
		}
		m, err := cgroup.NewManager(parent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := m.Sweep(ctx)
		s.Cgroups += n
		if err != nil {
			errs = append(errs, err)
		}
		if err := m.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	// Only below the sandbox dirs: the data dir itself may be a mount of
	// the operator's.
	for _, sub := range []string{"sandboxes", "installer"} {
		dir := filepath.Join(h.DataDir, sub)
		mounts, err := mountinfo.Under(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range mounts {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
				continue
			}
			s.Mounts++
		}
	}
	// /tmp images on loop devices: their mounts went with the sandboxes'
	// mount namespaces, now that every process is dead.
	n, err := sandbox.SweepDisks(filepath.Join(h.DataDir, "scratch"))
	s.Files += n
	if err != nil {
		errs = append(errs, err)
	}
	n, err = netns.Sweep(h.NetPrefix)
	s.Net += n
	if err != nil {
		errs = append(errs, err)
	}
	uploads, _ := filepath.Glob(filepath.Join(h.DataDir, "hearth-upload-*"))
	for _, f := range uploads {
		if os.RemoveAll(f) == nil {
			s.Files++
		}
	}
	probes, _ := filepath.Glob(filepath.Join(os.TempDir(), criu.ProbeDirPrefix+"*"))
	for _, d := range probes {
		// Not counted: any process's probe may have left these.
		if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > probeDirAge {
			os.RemoveAll(d)
		}
	}
	return s, errors.Join(errs...)
}

// cgroupExists reports whether a group named parent exists in any
// hierarchy, so that Sweep does not make one only to delete it.
func cgroupExists(parent string) bool {
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", parent)); err == nil {
		return true
	}
	ms, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	return len(ms) > 0
}

// Lock is a worker's exclusive hold on its data dir: one worker per data
// dir, and a reaper sweeps only for the worker it guards.
type Lock struct {
	f *os.File
}

// lockFile is the lock's file in the data dir; it holds the owner's pid.
const lockFile = "worker.lock"

// AcquireLock takes the data dir's lock, waiting up to wait for a holder
// (a reaper still sweeping after its worker, say) to let go, and records
// this process as the owner.
func AcquireLock(ctx context.Context, dataDir string, wait time.Duration) (*Lock, error) {
	l, err := lock(ctx, dataDir, wait)
	if err != nil {
		return nil, err
	}
	if err := l.f.Truncate(0); err != nil {
		l.f.Close()
		return nil, err
	}
	if _, err := l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		l.f.Close()
		return nil, err
	}
	return l, nil
}

func lock(ctx context.Context, dataDir string, wait time.Duration) (*Lock, error) {
	// A reaper sweeping after its worker holds the lock for as long as
	// the sweep takes.
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dataDir, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("locking the data dir: %w", err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			f.Close()
			return nil, fmt.Errorf("another worker (pid %d) uses this data dir: %w", lockOwner(f), ErrDataDirBusy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockOwner returns the pid recorded in the lock file, or 0.
func lockOwner(f *os.File) int {
	b := make([]byte, 16)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid
}

// Release lets go of the lock.
func (l *Lock) Release() error { return l.f.Close() }

// Reap guards the worker with pid owner: it blocks until alive reaches
// end of file, which happens when every copy of its write end is closed,
// that is when the worker has exited, however it ended. If the worker
// wrote CleanExit first, there is nothing to do. It then takes the
// data dir's lock and sweeps what the worker left, unless a new worker
// took the data dir first (it swept at its start, and has a reaper of its
// own). Run it in a process of its own, so that it outlives the worker.
func Reap(ctx context.Context, h Host, owner int, alive io.Reader) (Swept, error) {
	b, _ := io.ReadAll(alive)
	if string(b) == CleanExit {
		return Swept{}, nil // the worker cleaned up after itself
	}
	f, err := os.OpenFile(filepath.Join(h.DataDir, lockFile), os.O_RDWR, 0)
	if err != nil {
		return Swept{}, err
	}
	defer f.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if lockOwner(f) != owner {
			return Swept{}, nil // a successor holds, or held, the data dir
		}
		if err == nil {
			return Sweep(ctx, h)
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			return Swept{}, fmt.Errorf("locking the data dir: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CleanExit is what a worker writes to its reaper's pipe after a clean
// shutdown: there is nothing to sweep, and the reaper must not touch the
// data dir its owner's caller may be removing.
const CleanExit = "clean"

// ReapLog is the file in the data dir where a reaper notes what it swept;
// the next worker logs and removes it.
const ReapLog = "reap.log"
