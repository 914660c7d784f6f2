package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hearth-run/hearth/internal/mountinfo"

	"golang.org/x/sys/unix"
)

// DefaultSuite is the Debian release the base image is built from. Its
// Python (3.13) has immortal objects, which the zygotes use to keep a
// forked child's copied pages few (see the runtime's zygote.py).
const DefaultSuite = "trixie"

// BaseDir is the image's directory name under the data directory.
const BaseDir = "base"

// DefaultPackages returns the packages installed on top of minbase.
func DefaultPackages() []string {
	return []string{
		"python3", "python3-numpy", "python3-requests", "python3-pil",
		"python3-pip", "python3-setuptools", "python3-wheel", "python3-six", "ca-certificates",
	}
}

// BuildOptions configure Build and Ensure. Only DataDir is required.
type BuildOptions struct {
	// DataDir holds the image, at DataDir/base.
	DataDir string
	// Mirror is the Debian mirror URL. If empty, the one the host's apt
	// sources use for Suite is taken (see HostMirror).
	Mirror string
	// Suite is the Debian release (default DefaultSuite).
	Suite string
	// Packages are installed on top of minbase (default DefaultPackages).
	Packages []string
	// Debootstrap is the debootstrap command (default "debootstrap",
	// looked up in PATH).
	Debootstrap string
	// AptDir is where the host's apt sources are read (default
	// DefaultAptDir).
	AptDir string
	// Progress receives progress lines. If nil, there is no progress
	// output.
	Progress io.Writer
}

func (o *BuildOptions) fill() error {
	if o.DataDir == "" {
		return fmt.Errorf("%w: no data directory", ErrBadOptions)
	}
	o.Suite, o.Packages = o.wanted()
	for _, p := range o.Packages {
		if p == "" || strings.ContainsAny(p, ", \t\n") {
			return fmt.Errorf("%w: bad package name %q", ErrBadOptions, p)
		}
	}
	if o.Debootstrap == "" {
		o.Debootstrap = "debootstrap"
	}
	if o.AptDir == "" {
		o.AptDir = DefaultAptDir
	}
	if o.Mirror == "" {
		m, err := HostMirror(o.AptDir, o.Suite)
		if err != nil {
			return err
		}
		o.Mirror = m
	}
	if !usableURI(o.Mirror) {
		return fmt.Errorf("%w: mirror %q is not an http, https, ftp or file URL", ErrBadOptions, o.Mirror)
	}
	return nil
}

// Dir returns where the base image lives under dataDir.
func Dir(dataDir string) string { return filepath.Join(dataDir, BaseDir) }

// Ensure returns the base image under opts.DataDir, building it first if
// there is none, or if Build made the one there from another suite or
// package list (an upgrade of Hearth changed them). An existing tree that
// fails Validate is an error, not rebuilt: it may be a user's.
func Ensure(ctx context.Context, opts BuildOptions) (string, error) {
	if opts.DataDir == "" {
		return "", fmt.Errorf("%w: no data directory", ErrBadOptions)
	}
	dir := Dir(opts.DataDir)
	if _, err := os.Lstat(dir); err == nil && !stale(dir, opts) {
		return dir, Validate(dir)
	}
	unlock, err := lock(ctx, opts.DataDir, opts.Progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if _, err := os.Lstat(dir); err == nil && !stale(dir, opts) {
		return dir, Validate(dir)
	}
	return build(ctx, opts)
}

// stale reports whether dir was made by Build from another suite or
// package list than opts asks for (defaults filled in). A tree without a
// marker is not Build's and never stale.
func stale(dir string, opts BuildOptions) bool {
	m, err := ReadMarker(dir)
	if err != nil {
		return false
	}
	suite, pkgs := opts.wanted()
	return m.Suite != suite || !slices.Equal(m.Packages, pkgs)
}

// wanted returns the suite and packages o asks for, defaults filled in.
func (o BuildOptions) wanted() (suite string, pkgs []string) {
	suite, pkgs = o.Suite, o.Packages
	if suite == "" {
		suite = DefaultSuite
	}
	if len(pkgs) == 0 {
		pkgs = DefaultPackages()
	}
	return suite, pkgs
}

// Build builds the base image with debootstrap and puts it in place under
// opts.DataDir, replacing any image there. It builds in a temporary
// directory next to the final one and swaps it in with one rename, so
// readers see either the old tree or the complete new one. Sandboxes
// still running on a replaced image lose it: rebuild with the worker
// stopped.
func Build(ctx context.Context, opts BuildOptions) (string, error) {
	if opts.DataDir == "" {
		return "", fmt.Errorf("%w: no data directory", ErrBadOptions)
	}
	unlock, err := lock(ctx, opts.DataDir, opts.Progress)
	if err != nil {
		return "", err
	}
	defer unlock()
	return build(ctx, opts)
}

// build does the work; the caller holds the lock.
func build(ctx context.Context, opts BuildOptions) (_ string, err error) {
	if err := opts.fill(); err != nil {
		return "", err
	}
	bin, err := exec.LookPath(opts.Debootstrap)
	if err != nil {
		return "", fmt.Errorf("%w: %w (install it with apt-get install debootstrap)", ErrDebootstrap, err)
	}
	prog := newProgress(opts.Progress, isTerminal(opts.Progress))
	// With the lock held, any build directory is a crashed build's.
	stale, _ := filepath.Glob(filepath.Join(opts.DataDir, ".base-build-*"))
	for _, d := range stale {
		fmt.Fprintf(prog.w, "image: removing %s left by an interrupted build\n", d)
		if err := removeTree(d); err != nil {
			return "", fmt.Errorf("building image: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(opts.DataDir, ".base-build-")
	if err != nil {
		return "", fmt.Errorf("building image: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := removeTree(tmp); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	// The tree's root becomes the sandbox's /: readable by everyone.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("building image: %w", err)
	}
	fmt.Fprintf(prog.w, "image: building Debian %s minbase with %s from %s\n",
		opts.Suite, strings.Join(opts.Packages, " "), opts.Mirror)
	start := time.Now()
	if err := runDebootstrap(ctx, bin, opts, tmp, prog); err != nil {
		return "", err
	}
	if err := Validate(tmp); err != nil {
		return "", fmt.Errorf("built image: %w", err)
	}
	if err := Prepare(tmp); err != nil {
		return "", err
	}
	// Downloaded .debs and package lists are not needed at run time.
	cleanCaches(tmp)
	m := Marker{Suite: opts.Suite, Mirror: opts.Mirror, Packages: opts.Packages,
		Built: time.Now().UTC().Format(time.RFC3339Nano)}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, MarkerFile), append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("writing image marker: %w", err)
	}
	dir := Dir(opts.DataDir)
	if err := swapIn(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(prog.w, "image: built %s in %s\n", dir, time.Since(start).Round(time.Second))
	return dir, nil
}

// runDebootstrap runs debootstrap into target, feeding its output to prog.
// On cancellation the whole process group gets SIGTERM, which lets
// debootstrap unmount what it mounted in the target, then SIGKILL.
func runDebootstrap(ctx context.Context, bin string, opts BuildOptions, target string, prog *progress) error {
	args := []string{
		"--variant=minbase",
		"--include=" + strings.Join(opts.Packages, ","),
		opts.Suite, target, opts.Mirror,
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout = prog
	cmd.Stderr = prog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	prog.Close()
	if cmd.Process != nil {
		// Leftover children (wget, dpkg) of a killed run.
		unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("building image: %w", ctx.Err())
	}
	if err != nil {
		msg := prog.Tail()
		if log := logTail(filepath.Join(target, "debootstrap", "debootstrap.log")); log != "" {
			msg += "\n--- debootstrap.log ---\n" + log
			saved := filepath.Join(opts.DataDir, "base-build.log")
			if copyFile(filepath.Join(target, "debootstrap", "debootstrap.log"), saved) == nil {
				msg += "\n(full log in " + saved + ")"
			}
		}
		return fmt.Errorf("%w: %w\n%s", ErrDebootstrap, err, msg)
	}
	return nil
}

// swapIn moves the new tree tmp to dir. If dir exists the two are
// exchanged atomically and the old tree, now at tmp, is removed.
func swapIn(tmp, dir string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("putting image in place: %w", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("replacing image: %w", err)
	}
	if err := removeTree(tmp); err != nil {
		return fmt.Errorf("removing old image: %w", err)
	}
	return nil
}

// removeTree removes a build directory after making sure nothing is
// mounted below it: a killed debootstrap can leave /proc or a bind of the
// host's /dev there, and RemoveAll would walk into them.
func removeTree(dir string) error {
	mps, err := mountinfo.Under(dir)
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	if mps, err := mountinfo.Under(dir); err != nil || len(mps) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %v %v", dir, mps, err)
	}
	return os.RemoveAll(dir)
}

// lock takes the data directory's build lock, waiting (and saying so)
// while another process builds.
func lock(ctx context.Context, dataDir string, progress io.Writer) (func(), error) {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, ".base.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("image: locking %s: %w", dataDir, err)
		}
		if !said && progress != nil {
			fmt.Fprintln(progress, "image: waiting for another build to finish")
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("image: waiting for build lock: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cleanCaches removes downloaded packages and package lists from a tree.
func cleanCaches(dir string) {
	debs, _ := filepath.Glob(filepath.Join(dir, "var/cache/apt/archives/*.deb"))
	lists, _ := filepath.Glob(filepath.Join(dir, "var/lib/apt/lists/*_*"))
	for _, f := range append(debs, lists...) {
		os.Remove(f)
	}
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// isTerminal reports whether w is a terminal, for in-place progress.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
