package criu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hearth-run/hearth/internal/image"
)

// DefaultRoot is where scripts/criu.sh installs the private trixie root.
const DefaultRoot = image.DefaultDataDir + "/criu-root"

// MinVersion is the oldest CRIU that works on current kernels.
const MinVersion = "4.1"

// Binary is one criu executable and, for a private root, the loader and
// library path it runs with.
type Binary struct {
	// Path is the criu executable.
	Path string
	// Loader and LibPath are set for a criu from a private root: the
	// root's ld-linux and its library directories. Empty for a host criu.
	Loader, LibPath string
	// Version is criu's version, such as "4.1.1".
	Version string
	// NoBreakpoints runs criu in its mode for hosts whose hardware
	// breakpoints do not trap (see ProbeBreakpoints): CRIU_FAULT=130,
	// CRIU's FI_NO_BREAKPOINTS, makes it stop its parasite by stepping
	// through system calls instead of at a breakpoint.
	NoBreakpoints bool
}

// noBreakpointsEnv is CRIU's fault-injection switch for FI_NO_BREAKPOINTS.
const noBreakpointsEnv = "CRIU_FAULT=130"

// Mode names how criu stops its parasite: "breakpoints" or
// "no-breakpoints".
func (b *Binary) Mode() string {
	if b.NoBreakpoints {
		return "no-breakpoints"
	}
	return "breakpoints"
}

// Find locates criu: first the private root (root, or DefaultRoot when
// empty), then criu on PATH. It returns ErrNotFound when there is none and
// ErrTooOld when the one found is older than MinVersion. It does not run
// `criu check`; see Check.
func Find(ctx context.Context, root string) (*Binary, error) {
	if root == "" {
		root = DefaultRoot
	}
	var tried []string
	if b, err := fromRoot(ctx, root); err == nil {
		return b, nil
	} else {
		tried = append(tried, err.Error())
	}
	if p, err := exec.LookPath("criu"); err == nil {
		b := &Binary{Path: p}
		if err := b.probeVersion(ctx); err != nil {
			return nil, err
		}
		return b, nil
	}
	tried = append(tried, "no criu on PATH")
	return nil, fmt.Errorf("%s: %w", strings.Join(tried, "; "), ErrNotFound)
}

func fromRoot(ctx context.Context, root string) (*Binary, error) {
	b := &Binary{
		Path:   filepath.Join(root, "usr/sbin/criu"),
		Loader: filepath.Join(root, "lib64/ld-linux-x86-64.so.2"),
		LibPath: strings.Join([]string{
			filepath.Join(root, "usr/lib/x86_64-linux-gnu"),
			filepath.Join(root, "lib/x86_64-linux-gnu"),
		}, ":"),
	}
	for _, p := range []string{b.Path, b.Loader} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("private root %s: %w", root, err)
		}
	}
	if err := b.probeVersion(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Binary) probeVersion(ctx context.Context) error {
	out, err := b.Command(ctx, "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --version: %v: %s", b.Path, err, bytes.TrimSpace(out))
	}
	v, ok := parseVersion(string(out))
	if !ok {
		return fmt.Errorf("%s --version: unexpected output %q", b.Path, out)
	}
	b.Version = v
	if !atLeast(v, MinVersion) {
		return fmt.Errorf("%s is %s, need >= %s: %w", b.Path, v, MinVersion, ErrTooOld)
	}
	return nil
}

// Argv returns the command line that runs criu with args.
func (b *Binary) Argv(args ...string) []string {
	if b.Loader == "" {
		return append([]string{b.Path}, args...)
	}
	return append([]string{b.Loader, "--library-path", b.LibPath, b.Path}, args...)
}

// Command returns an exec.Cmd running criu with args, in its own process
// group: when ctx ends the whole group is killed, since a criu cut short
// may have helpers of its own.
func (b *Binary) Command(ctx context.Context, args ...string) *exec.Cmd {
	argv := b.Argv(args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if b.NoBreakpoints {
		cmd.Env = append(cmd.Env, noBreakpointsEnv)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// The group's id is criu's pid. Killing criu, its tracer, also
		// detaches every task it had seized.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// Output pipes held open by a surviving grandchild must not block
	// Wait forever.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Check runs `criu check`, which probes the kernel features CRIU needs.
// Run here, in the caller's mount namespace, criu may leave
// /run/criu.kdat.tmp behind when /run is not a tmpfs; NewRunner runs the
// same check in its private namespace.
func (b *Binary) Check(ctx context.Context) error {
	out, err := b.Command(ctx, "check").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s: %w", err, bytes.TrimSpace(out), ErrCheck)
	}
	return nil
}

// parseVersion finds "Version: X.Y[.Z]" in criu --version output.
func parseVersion(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			v = strings.TrimSpace(v)
			if _, ok := versionParts(v); ok {
				return v, true
			}
		}
	}
	return "", false
}

func versionParts(v string) ([]int, bool) {
	f := strings.Split(v, ".")
	if len(f) < 2 {
		return nil, false
	}
	out := make([]int, len(f))
	for i, s := range f {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// atLeast reports whether version v >= min; both must parse.
func atLeast(v, min string) bool {
	a, ok1 := versionParts(v)
	b, ok2 := versionParts(min)
	if !ok1 || !ok2 {
		return false
	}
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x > y
		}
	}
	return true
}
