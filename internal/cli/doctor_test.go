package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDoctor(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "hearth-init")
	if err := os.WriteFile(initBin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noExec := filepath.Join(dir, "not-exec")
	if err := os.WriteFile(noExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		cfg    doctorConfig
		failed int
		want   []string
	}{
		{
			name:   "no base, no criu",
			cfg:    doctorConfig{DataDir: dir, Init: initBin, CRIURoot: filepath.Join(dir, "no-criu"), Cgroups: "/sys/fs/cgroup"},
			failed: 1,
			want:   []string{"FAIL  base image", "ok    hearth-init", "ok    nftables", "ok    api token    none yet", "off   snapshots    disabled: "},
		},
		{
			name:   "bad init and cgroups",
			cfg:    doctorConfig{DataDir: dir, Init: noExec, CRIURoot: filepath.Join(dir, "no-criu"), Cgroups: dir},
			failed: 3,
			want:   []string{"FAIL  cgroups      no usable cgroup", "FAIL  hearth-init  " + noExec + " is not an executable"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			got := runDoctor(context.Background(), tc.cfg, &out)
			wantFailed := tc.failed
			if os.Geteuid() != 0 {
				wantFailed++
			}
			if got != wantFailed {
				t.Errorf("failed checks %d, want %d:\n%s", got, wantFailed, &out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, &out)
				}
			}
			if os.Geteuid() == 0 && !strings.Contains(out.String(), "ok    lazy network") {
				t.Errorf("output lacks the lazy network probe's success:\n%s", &out)
			}
			if os.Geteuid() == 0 && !strings.Contains(out.String(), "ok    homes") {
				t.Errorf("output lacks the homes probe's success:\n%s", &out)
			}
			if !regexp.MustCompile(`(?m)^(ok  |slow)  page faults  [0-9.]+ us to zero a page, [0-9.]+ us to copy one on write`).MatchString(out.String()) {
				t.Errorf("output lacks the page fault costs:\n%s", &out)
			}
			if !regexp.MustCompile(`(?m)^(ok  |slow)  kernel entry [0-9.]+ us per system call`).MatchString(out.String()) {
				t.Errorf("output lacks the kernel entry cost:\n%s", &out)
			}
		})
	}
}

// TestMeasureFaults checks that both fault probes time real faults: more
// than nothing, and per page rather than in all (under maxFault). A fault
// can take milliseconds: on a VM host that reclaims the memory its guest
// reported free (free page reporting), the first touch of such a page
// waits for the host to back it again, 1.4-6.8 ms per page measured on
// one such host.
const maxFault = 50 * time.Millisecond

func TestMeasureFaults(t *testing.T) {
	c, err := measureFaults()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("zero %v, copy %v per page; %d faults over %d pages and %d over %d", c.Zero, c.Copy, c.ZeroFaults, c.ZeroPages, c.CopyFaults, c.CopyPages)
	for name, d := range map[string]time.Duration{"zero": c.Zero, "copy": c.Copy} {
		if d <= 0 || d > maxFault {
			t.Errorf("%s fault %v per page, want (0, %v]", name, d, maxFault)
		}
	}
	// Each probe must have timed a fault per page, not writes to pages
	// mapped already.
	for name, p := range map[string][2]int64{"zero": {c.ZeroFaults, int64(c.ZeroPages)}, "copy": {c.CopyFaults, int64(c.CopyPages)}} {
		if n, pages := p[0], p[1]; pages < 64 || n < pages*9/10 || n > pages*2 {
			t.Errorf("%s probe took %d minor faults over %d pages, want about one per page", name, n, pages)
		}
	}
}

// TestMeasureEntry: the probe times a call, not nothing, and under a
// millisecond: a sanity check of the loop, which a busy host's
// preemptions do not move (the fastest batch counts).
func TestMeasureEntry(t *testing.T) {
	d := measureEntry()
	t.Logf("%v per system call", d)
	if d < 10*time.Nanosecond || d > time.Millisecond {
		t.Errorf("%v per system call, want [10ns, 1ms]", d)
	}
}

// TestEntryCause: the cause is named from the kernel's own report of
// Meltdown's mitigation and the CPU's flags, as files of those formats.
func TestEntryCause(t *testing.T) {
	dir := t.TempDir()
	vuln, info, cmdline := filepath.Join(dir, "vuln"), filepath.Join(dir, "cpuinfo"), filepath.Join(dir, "cmdline")
	if err := os.Mkdir(vuln, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cpus := func(flags string) string { // two processors, as /proc/cpuinfo lists them
		return "processor\t: 0\nflags\t\t: " + flags + "\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nflags\t\t: " + flags + "\n"
	}
	const noPCID = " without PCID: each entry and exit also empties the TLB"
	for _, c := range []struct{ name, meltdown, info, cmdline, want string }{
		{"pti without pcid", "Mitigation: PTI", cpus("fpu vme pti"), "quiet", "page-table isolation on (Mitigation: PTI)" + noPCID},
		{"pti with pcid", "Mitigation: PTI", cpus("fpu pcid invpcid pti"), "quiet", "page-table isolation on (Mitigation: PTI), with PCID"},
		{"forced on an unaffected cpu", "Not affected", cpus("fpu pti"), "console=ttyS0 pti=on quiet",
			"page-table isolation on (pti in the CPU flags, with pti=on on the kernel command line)" + noPCID},
		{"on the command line", "Mitigation: PTI", cpus("fpu pti"), "console=ttyS0 quiet pti=on no_timer_check",
			"page-table isolation on (Mitigation: PTI, with pti=on on the kernel command line)" + noPCID},
		{"not affected", "Not affected", cpus("fpu pcid"), "quiet", ""},
		{"vulnerable", "Vulnerable", cpus("fpu"), "quiet", ""},
		{"no flags line", "Mitigation: PTI", "processor\t: 0\nFeatures\t: fp asimd\n", "quiet", "page-table isolation on (Mitigation: PTI)"},
	} {
		write(filepath.Join(vuln, "meltdown"), c.meltdown+"\n")
		write(info, c.info)
		write(cmdline, c.cmdline+"\n")
		if got := entryCause(vuln, info, cmdline); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// Unreadable files: say what is known, and no more.
	write(filepath.Join(vuln, "meltdown"), "Mitigation: PTI\n")
	if got, want := entryCause(vuln, filepath.Join(dir, "none"), filepath.Join(dir, "none")), "page-table isolation on (Mitigation: PTI)"; got != want {
		t.Errorf("no cpuinfo: %q, want %q", got, want)
	}
	if got := entryCause(filepath.Join(dir, "none"), filepath.Join(dir, "none"), cmdline); got != "" {
		t.Errorf("nothing readable: %q, want nothing", got)
	}
}

// TestCgroupSummary: on v1, doctor says whether a sandbox's CPU has its
// own count (cpuacct) or is summed over its live processes. The tree is
// plain files standing for the mounts: the summary reads only names.
func TestCgroupSummary(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
		os.MkdirAll(filepath.Join(root, c), 0o755)
		os.WriteFile(filepath.Join(root, c, "cgroup.procs"), nil, 0o644)
	}
	if s, ok := cgroupSummary(root); !ok || !strings.Contains(s, "no cpuacct: a sandbox's CPU is summed") {
		t.Errorf("without cpuacct: %q, %v", s, ok)
	}
	os.MkdirAll(filepath.Join(root, "cpuacct"), 0o755)
	os.WriteFile(filepath.Join(root, "cpuacct", "cpuacct.usage"), []byte("0\n"), 0o644)
	want := "v1 (memory, cpu, pids, freezer, cpuacct; kills freeze the group first: no cgroup2 mount with cgroup.kill beside)"
	if s, ok := cgroupSummary(root); !ok || s != want {
		t.Errorf("with cpuacct: %q, %v; want %q", s, ok, want)
	}
	// This host's: a hybrid one kills through its cgroup2 mount, which
	// the probe finds by a group made there (as root) and removed.
	const hybrid = "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if os.Geteuid() != 0 || unix.Statfs(hybrid, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return
	}
	if s, _ := cgroupSummary("/sys/fs/cgroup"); strings.HasPrefix(s, "v1") && !strings.Contains(s, "kills through the hybrid cgroup2 mount") {
		t.Errorf("hybrid host as root: %q, want the kills through its cgroup2 mount", s)
	}
	if left, _ := filepath.Glob(filepath.Join(hybrid, "hearth-doctor-*")); len(left) > 0 {
		t.Errorf("probe groups left behind: %v", left)
	}
}
