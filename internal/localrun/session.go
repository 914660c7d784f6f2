package localrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/cgroup"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/mountinfo"
	"github.com/hearth-run/hearth/internal/runtime"
	"github.com/hearth-run/hearth/internal/sandbox"
)

// Config configures a Session. Zero values mean the documented defaults.
type Config struct {
	// DataDir is the data dir the session lives in (default
	// /var/lib/hearth); it may be a running worker's.
	DataDir string
	// Base is the base image (default <DataDir>/base).
	Base string
	// InitPath is the hearth-init binary (required).
	InitPath string
	// Python is the interpreter inside the base (default /usr/bin/python3).
	Python string
	// PidsLimit caps processes per sandbox (default 64, as the worker's).
	PidsLimit int64
	// InitTimeout bounds a start up to the handler being loaded
	// (default 60 s, as the worker's).
	InitTimeout time.Duration
	// Logger receives what the session swept and what it could not
	// clean up (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = image.DefaultDataDir
	}
	if c.Base == "" {
		c.Base = image.Dir(c.DataDir)
	}
	if c.Python == "" {
		c.Python = "/usr/bin/python3"
	}
	if c.PidsLimit <= 0 {
		c.PidsLimit = 64
	}
	if c.InitTimeout <= 0 {
		c.InitTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// lockGrace is how old a session's directory without a lock file must
// be to be swept: a live session makes its lock right after the
// directory.
const lockGrace = time.Minute

// runDir is the directory below the data dir that holds sessions.
const runDir = "run"

// CgroupPrefix starts the name of every session's cgroup parent,
// followed by the session's id (its pid).
const CgroupPrefix = "hearth-run-"

// Session is the host side of `hearth run`: a cgroup parent, a sandbox
// factory, the runtime files. The caller must Close it.
type Session struct {
	cfg     Config
	id      string
	dir     string
	lock    *os.File
	cg      *cgroup.Manager
	home    *cgroup.Group
	factory *sandbox.Factory
	disks   *sandbox.Disks // nil: /tmp in memory
	runtime string
	seq     int
	log     *slog.Logger
}

// Open checks that it runs as root and that the base image is usable,
// sweeps what killed sessions left on the data dir, and sets a new
// session up. On error nothing is left behind.
func Open(ctx context.Context, cfg Config) (_ *Session, err error) {
	cfg.setDefaults()
	if err := CheckRoot(); err != nil {
		return nil, err
	}
	if cfg.InitPath == "" {
		return nil, errors.New("hearth run: no hearth-init binary")
	}
	if err := image.Validate(cfg.Base); err != nil {
		return nil, fmt.Errorf("%w: %v (build one with `hearth image build`, or pass --base)", ErrNoBase, err)
	}
	if err := image.Prepare(cfg.Base); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoBase, err)
	}
	s := &Session{cfg: cfg, id: strconv.Itoa(os.Getpid()), log: cfg.Logger}
	root := filepath.Join(cfg.DataDir, runDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	if n, err := SweepStale(ctx, cfg.DataDir); err != nil {
		s.log.Warn("sweeping what killed runs left", "err", err)
	} else if n > 0 {
		s.log.Info("swept what killed runs left", "runs", n)
	}
	s.dir = filepath.Join(root, s.id)
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	// A dead session of the same pid (another data dir's, or one this
	// sweep could not take) may have left the directory or cgroups.
	if err := sweepRun(ctx, s.dir, s.id); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	if s.lock, err = os.OpenFile(filepath.Join(s.dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	if err := unix.Flock(int(s.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("hearth run: locking %s: %w", s.dir, err)
	}
	if _, err := cgroup.FavorDynMods(); err != nil {
		s.log.Debug("cgroup moves stay slow", "err", err)
	}
	if s.cg, err = cgroup.NewManager(CgroupPrefix + s.id); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	if s.home, err = s.cg.Create("init", cgroup.Limits{}); err != nil {
		return nil, fmt.Errorf("hearth run: init cgroup: %w", err)
	}
	s.runtime = filepath.Join(s.dir, "runtime")
	if err := runtime.Install(s.runtime); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	// As the worker: a bytecode cache saves each start compiling the
	// runtime. Best effort.
	if argv, env, err := image.Python(cfg.Base); err != nil {
		s.log.Debug("runtime bytecode not precompiled", "err", err)
	} else if err := runtime.Compile(ctx, argv, env, s.runtime); err != nil {
		s.log.Debug("runtime bytecode not precompiled", "err", err)
	}
	s.factory = &sandbox.Factory{
		InitPath: cfg.InitPath,
		Base:     cfg.Base,
		Dir:      filepath.Join(s.dir, "sandboxes"),
		Home:     s.home,
		Seccomp:  filepath.Join(s.runtime, runtime.SeccompFile),
	}
	if err := os.MkdirAll(s.factory.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("hearth run: %w", err)
	}
	disks, err := sandbox.OpenDisks(filepath.Join(s.dir, "scratch"), sandbox.DisksConfig{Ready: -1, Logger: s.log})
	if err != nil {
		s.log.Debug("sandbox /tmp in memory (tmpfs)", "err", err)
	} else {
		s.disks = disks
		s.factory.Disks = disks
	}
	return s, nil
}

// CheckRoot returns an error matching ErrNotRoot unless this process
// runs as root.
func CheckRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w (it makes namespaces, cgroups and mounts, as the worker does); try sudo", ErrNotRoot)
	}
	return nil
}

// Dir returns the session's directory.
func (s *Session) Dir() string { return s.dir }

// CgroupParent returns the session's cgroup parent.
func (s *Session) CgroupParent() string { return CgroupPrefix + s.id }

// Close removes everything the session made: its cgroups (killing what
// is left in them), its /tmp images, its directory. An Instance still
// open is destroyed with it. Close is idempotent.
func (s *Session) Close(ctx context.Context) error {
	var errs []error
	if s.cg != nil {
		if err := s.cg.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		s.cg = nil
	}
	if s.disks != nil {
		if err := s.disks.Close(); err != nil {
			errs = append(errs, err)
		}
		s.disks = nil
	}
	if s.dir != "" {
		if err := removeRun(s.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return errors.Join(errs...)
}

// SweepStale removes what sessions on dataDir that were killed before
// they could clean up left: their cgroups, mounts, /tmp images and
// directories. A live session holds its lock and is left alone. It
// returns how many it swept.
func SweepStale(ctx context.Context, dataDir string) (int, error) {
	root := filepath.Join(dataDir, runDir)
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
		if err == nil {
			if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
				f.Close()
				continue // a live session's
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		} else if fi, err := os.Stat(dir); err != nil || time.Since(fi.ModTime()) < lockGrace {
			continue // a session making its lock, or gone meanwhile
		}
		// Held until the directory is gone, so that no other sweep
		// works on it meanwhile.
		err = sweepRun(ctx, dir, e.Name())
		if f != nil {
			f.Close()
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// sweepRun removes a dead session's cgroups, mounts, /tmp images and
// directory.
func sweepRun(ctx context.Context, dir, id string) error {
	var errs []error
	parent := CgroupPrefix + id
	if cgroupExists(parent) {
		m, err := cgroup.NewManager(parent)
		if err != nil {
			errs = append(errs, err)
		} else {
			if _, err := m.Sweep(ctx); err != nil {
				errs = append(errs, err)
			}
			if err := m.Close(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := removeRun(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeRun unmounts what is mounted below a session's directory (its
// sandboxes' mounts live in their own namespaces; this is for safety),
// releases its /tmp images' loop devices and removes it.
func removeRun(dir string) error {
	var errs []error
	mounts, err := mountinfo.Under(dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if _, err := sandbox.SweepDisks(filepath.Join(dir, "scratch")); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cgroupExists reports whether a group named parent exists in any
// hierarchy, so that a sweep does not make one only to delete it.
func cgroupExists(parent string) bool {
	if _, err := os.Stat(filepath.Join(cgroup.DefaultRoot, parent)); err == nil {
		return true
	}
	ms, _ := filepath.Glob(filepath.Join(cgroup.DefaultRoot, "*", parent))
	return len(ms) > 0
}
