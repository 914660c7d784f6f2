package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/netns"
	"github.com/hearth-run/hearth/internal/sandbox"
	"github.com/hearth-run/hearth/internal/snapshot"
	"github.com/hearth-run/hearth/internal/zygote"
)

// doctorConfig is what `hearth doctor` checks.
type doctorConfig struct {
	DataDir  string
	Base     string // default: the data dir's base image
	Init     string // default: findInit
	CRIURoot string // default: criu.DefaultRoot
	Cgroups  string // cgroup file system root
}

func newDoctorCmd() *cobra.Command {
	cfg := doctorConfig{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run Hearth, and whether snapshots are available",
		Long: "doctor checks what `hearth up` needs (root, cgroups, nftables, the base image with Python, hearth-init)\n" +
			"and the optional function snapshots (CRIU >= 4.1; scripts/criu.sh installs it).\n" +
			"It exits non-zero only when a required check fails: without CRIU, Hearth runs with snapshots disabled.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			if n := runDoctor(ctx, cfg, cmd.OutOrStdout()); n > 0 {
				return fmt.Errorf("doctor: %d required check(s) failed", n)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", image.DefaultDataDir, "data directory")
	f.StringVar(&cfg.Base, "base", "", "base image tree (default: the data dir's)")
	f.StringVar(&cfg.Init, "init", "", "hearth-init binary (default: next to hearth, then $PATH)")
	f.StringVar(&cfg.CRIURoot, "criu-root", "", "private CRIU root made by scripts/criu.sh (default /var/lib/hearth/criu-root)")
	f.StringVar(&cfg.Cgroups, "cgroup-root", "/sys/fs/cgroup", "cgroup file system root")
	return cmd
}

// runDoctor prints one line per check and returns how many required
// checks failed.
func runDoctor(ctx context.Context, cfg doctorConfig, w io.Writer) int {
	failed := 0
	report := func(ok, required bool, what, detail string) {
		mark := "ok  "
		switch {
		case !ok && required:
			mark = "FAIL"
			failed++
		case !ok:
			mark = "off "
		}
		fmt.Fprintf(w, "%s  %-12s %s\n", mark, what, detail)
	}
	// slow reports what works but costs a fork start more than elsewhere:
	// not a failure.
	slow := func(what, detail string) {
		fmt.Fprintf(w, "slow  %-12s %s\n", what, detail)
	}

	if os.Geteuid() == 0 {
		report(true, true, "root", "running as root")
	} else {
		report(false, true, "root", "Hearth creates namespaces, cgroups and mounts: run as root")
	}

	if detail, ok := cgroupSummary(cfg.Cgroups); ok {
		report(true, true, "cgroups", detail)
	} else {
		report(false, true, "cgroups", detail)
	}

	base := cfg.Base
	if base == "" {
		base = image.Dir(cfg.DataDir)
	}
	if err := image.Validate(base); err != nil {
		report(false, true, "base image", fmt.Sprintf("%s: %v (build it with: hearth image build --data-dir %s)", base, err, cfg.DataDir))
	} else if _, err := os.Stat(filepath.Join(base, "usr/bin/python3")); err != nil {
		report(false, true, "base image", fmt.Sprintf("%s has no usr/bin/python3", base))
	} else {
		report(true, true, "base image", fmt.Sprintf("%s (id %.12s)", base, strings.TrimPrefix(image.ID(base), "sha256:")))
	}

	if p, err := findInit(cfg.Init); err != nil {
		report(false, true, "hearth-init", err.Error())
	} else if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		report(false, true, "hearth-init", fmt.Sprintf("%s is not an executable file", p))
	} else {
		report(true, true, "hearth-init", p)
	}

	// The worker's network pool is not optional: its nftables table keeps
	// every sandbox off the host (isolated ones, the default, and
	// host-network ones alike).
	if err := netns.Probe(); err != nil {
		report(false, true, "nftables", "sandboxes cannot be kept off the host: "+err.Error())
	} else {
		report(true, true, "nftables", "inet tables with reject: sandboxes are kept off the host's addresses and each other")
	}
	tok := filepath.Join(cfg.DataDir, api.TokenFile)
	if fi, err := os.Stat(tok); err != nil {
		report(true, false, "api token", "none yet: the worker makes "+tok+" at its first start")
	} else if fi.Mode().Perm() != 0o600 {
		report(false, false, "api token", fmt.Sprintf("%s has mode %v: the worker sets it back to 0600 when it starts", tok, fi.Mode().Perm()))
	} else {
		report(true, false, "api token", tok+" (0600; the CLI on this host reads it)")
	}

	if err := sandbox.ProbeDisks(); err != nil {
		report(false, false, "disk /tmp", "off: sandboxes' /tmp is a tmpfs, counted against each function's memory: "+err.Error())
	} else {
		report(true, false, "disk /tmp", "ext4 images on loop devices")
		if err := sandbox.ProbeReuse(); err != nil {
			report(false, false, "/tmp reuse", "off: each sandbox's /tmp file system is made for it and dropped after (about 1.2 ms of CPU each): "+err.Error())
		} else {
			report(true, false, "/tmp reuse", "a sandbox's /tmp file system, emptied, serves the next")
		}
	}

	if err := probeUserns(); err != nil {
		report(false, false, "zygotes", "off: every start without a snapshot is cold: "+err.Error())
	} else {
		report(true, false, "zygotes", "unprivileged zygotes can fork children into user namespaces of their own")
	}

	if err := probeHomes(); err != nil {
		report(false, false, "homes", "off: each forked sandbox makes a network namespace and the kernel tears it down (about 1 ms of CPU per start); the worker's spares into homes would fail, and it turns homes off after five: "+err.Error())
	} else {
		report(true, false, "homes", "a forked sandbox's user and network namespaces, unused, can serve its function's next")
	}

	if err := probeNetWatch(); err != nil {
		report(false, false, "lazy network", "off: forked sandboxes of network: isolated get their veth pair at start, whether they use it or not (about 1 ms of the worker's CPU each, and the kernel's teardown): "+err.Error())
	} else {
		report(true, false, "lazy network", "a forked sandbox gets its veth pair at its first internet or netlink socket (seccomp user notification)")
	}

	if mode, err := zygote.ProbeHugeCode(); err != nil {
		report(false, false, "huge code", "off: zygotes keep their code on 4 KiB pages of its files, and each forked child faults in, page by page, the code it runs: "+err.Error())
	} else {
		report(true, false, "huge code", "zygotes move the code they run most onto transparent huge pages of their own (THP "+mode+"), which their children share: a child takes no page fault on it (zygote.small_code turns it off)")
	}

	// Kernel entries first: a fault is one too, and its line says so.
	entry := measureEntry()
	entryDetail := fmt.Sprintf("%.2f us per system call", us(entry))
	if c := entryCause("/sys/devices/system/cpu/vulnerabilities", "/proc/cpuinfo", "/proc/cmdline"); c != "" {
		entryDetail += "; " + c
	}
	if entry > slowEntry {
		slow("kernel entry", fmt.Sprintf("%s: over %.1f us; a fork start enters the kernel about %d times (system calls and page faults in the worker, zygote and child), about %.1f ms of its CPU in entries and exits alone",
			entryDetail, us(slowEntry), forkEntries, float64(forkEntries)*us(entry)/1000))
	} else {
		report(true, false, "kernel entry", entryDetail)
	}

	if fc, err := measureFaults(); err != nil {
		report(false, false, "page faults", "not measured: "+err.Error())
	} else {
		detail := fmt.Sprintf("%.1f us to zero a page, %.1f us to copy one on write", us(fc.Zero), us(fc.Copy))
		if fc.Copy > slowCopy {
			slow("page faults", fmt.Sprintf("%s: over %.0f us (of which %.1f us is the fault's kernel entry), as in a VM that shadows page tables; a forked child pays one per page it writes, so fork starts and first calls take milliseconds more than elsewhere",
				detail, us(slowCopy), us(entry)))
		} else {
			report(true, false, "page faults", detail)
		}
	}

	a := snapshot.Probe(ctx, cfg.CRIURoot)
	if a.CRIU != nil {
		if a.Report.Breakpoints == "" {
			report(true, false, "breakpoints", "hardware breakpoints trap: CRIU stops its parasite with one")
		} else {
			report(false, false, "breakpoints", a.Report.Breakpoints+"; CRIU runs in mode "+a.CRIU.Mode())
		}
	}
	if a.Available {
		report(true, false, "snapshots", fmt.Sprintf("available: CRIU %s (%s), mode %s; test dump %.0f ms, restore %.0f ms",
			a.CRIU.Version, a.CRIU.Path, a.CRIU.Mode(), ms(a.Report.SelfTest.Dump), ms(a.Report.SelfTest.Restore)))
	} else {
		report(false, false, "snapshots", "disabled: "+a.Reason)
	}
	return failed
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// cgroupSummary describes the cgroup setup Hearth would use.
func cgroupSummary(root string) (string, bool) {
	var v1 []string
	for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
		if _, err := os.Stat(filepath.Join(root, c, "cgroup.procs")); err == nil {
			v1 = append(v1, c)
		}
	}
	if len(v1) == 4 {
		kill := "; kills freeze the group first: no cgroup2 mount with cgroup.kill beside"
		switch ok, err := unifiedKill(filepath.Join(root, "unified")); {
		case err != nil:
			kill = "; how kills work unknown: " + err.Error()
		case ok:
			kill = "; kills through the hybrid cgroup2 mount's cgroup.kill"
		}
		// Without cpuacct, first-come's 300 ms rule sums the CPU of a
		// sandbox's live processes, which children left unreaped escape.
		_, err := os.Stat(filepath.Join(root, "cpuacct", "cpuacct.usage"))
		if _, cerr := os.Stat(filepath.Join(root, "cpu", "cpuacct.usage")); err != nil && cerr != nil {
			return "v1 (" + strings.Join(v1, ", ") + "; no cpuacct: a sandbox's CPU is summed over its live processes" + kill + ")", true
		}
		return "v1 (" + strings.Join(v1, ", ") + ", cpuacct" + kill + ")", true
	}
	for _, p := range []string{root, filepath.Join(root, "unified")} {
		b, err := os.ReadFile(filepath.Join(p, "cgroup.controllers"))
		if err == nil && strings.Contains(string(b), "memory") {
			return "v2 (" + strings.TrimSpace(string(b)) + ")", true
		}
	}
	if len(v1) > 0 {
		return fmt.Sprintf("v1 with only %s mounted; Hearth needs memory, cpu, pids and freezer", strings.Join(v1, ", ")), false
	}
	return "no usable cgroup file system under " + root, false
}

// unifiedKill reports whether dir is a cgroup2 mount whose groups have
// cgroup.kill (Linux 5.14), as the worker's cgroup manager checks: by a
// group made there for the look. The error says why it could not look.
func unifiedKill(dir string) (bool, error) {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return false, nil
	}
	probe := filepath.Join(dir, fmt.Sprintf("hearth-doctor-%d", os.Getpid()))
	if err := os.Mkdir(probe, 0o755); err != nil {
		return false, fmt.Errorf("cannot make a group on the cgroup2 mount to look (%w)", err)
	}
	defer unix.Rmdir(probe)
	_, err := os.Stat(filepath.Join(probe, "cgroup.kill"))
	return err == nil, nil
}
