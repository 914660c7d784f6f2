package seccomp

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// decoded is Filter's output turned back into instructions, so that the
// tests run the very bytes the kernel gets.
func decoded(t *testing.T) []bpf.Instruction {
	t.Helper()
	return decode(t, Filter)
}

func decode(t *testing.T, filter func() ([]byte, error)) []bpf.Instruction {
	t.Helper()
	b, err := filter()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 || len(b)%InstructionSize != 0 {
		t.Fatalf("filter is %d bytes, want a positive multiple of %d", len(b), InstructionSize)
	}
	var out []bpf.Instruction
	for i := 0; i < len(b); i += InstructionSize {
		var f unix.SockFilter
		if _, err := binary.Decode(b[i:], binary.NativeEndian, &f); err != nil {
			t.Fatal(err)
		}
		out = append(out, bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble())
	}
	return out
}

// seccompData lays out struct seccomp_data for x/net/bpf's VM, which
// loads words big-endian where the kernel loads them in native order:
// each 32-bit word goes where the kernel has it, big-endian.
func seccompData(nr int, auditArch uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], uint32(nr))
	binary.BigEndian.PutUint32(b[offArch:], auditArch)
	little := binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	for i, a := range args {
		lo, hi := 16+8*i, 16+8*i+4
		if !little {
			lo, hi = hi, lo
		}
		binary.BigEndian.PutUint32(b[lo:], uint32(a))
		binary.BigEndian.PutUint32(b[hi:], uint32(a>>32))
	}
	return b
}

const (
	retAllow  = uint32(unix.SECCOMP_RET_ALLOW)
	retEPERM  = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.EPERM)
	retENOSYS = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.ENOSYS)
)

func retName(r uint32) string {
	switch r {
	case retAllow:
		return "allow"
	case retEPERM:
		return "EPERM"
	case retENOSYS:
		return "ENOSYS"
	}
	return fmt.Sprintf("%#x", r)
}

// TestDecisions runs the program in a BPF interpreter on the calls of
// every rule and on calls it must let through.
func TestDecisions(t *testing.T) {
	info, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("no syscall table for %s: %v", runtime.GOARCH, err)
	}
	vm, err := bpf.NewVM(decoded(t))
	if err != nil {
		t.Fatal(err)
	}
	nr := func(name string) int {
		n, ok := info.SyscallNames[name]
		if !ok {
			t.Fatalf("no system call %s on %s", name, info.Name)
		}
		return n
	}
	type call struct {
		name string
		nr   int
		arch uint32
		args []uint64
		want uint32
	}
	native := uint32(info.ID)
	var calls []call
	for _, n := range denied {
		calls = append(calls, call{name: n, nr: nr(n), arch: native, want: retEPERM})
	}
	legacy := 0
	for _, n := range deniedLegacy {
		if k, ok := info.SyscallNames[n]; ok {
			calls = append(calls, call{name: n, nr: k, arch: native, want: retEPERM})
			legacy++
		}
	}
	if runtime.GOARCH == "amd64" && legacy != len(deniedLegacy)-2 {
		t.Errorf("%d legacy calls found in the x86-64 table, want all but i386's vm86 and vm86old", legacy)
	}
	for _, n := range []string{"read", "write", "openat", "close", "mmap", "munmap", "futex", "getpid",
		"execve", "wait4", "exit_group", "socketpair", "bind", "connect", "sendmsg", "recvmsg", "prctl", "seccomp",
		"rt_sigaction", "sched_getaffinity", "get_mempolicy", "memfd_create", "landlock_create_ruleset"} {
		calls = append(calls, call{name: n, nr: nr(n), arch: native, args: []uint64{unix.AF_UNIX}, want: retAllow})
	}
	clone, socket, pers := nr("clone"), nr("socket"), nr("personality")
	for _, ns := range []uint64{unix.CLONE_NEWNS, unix.CLONE_NEWCGROUP, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC,
		unix.CLONE_NEWUSER, unix.CLONE_NEWPID, unix.CLONE_NEWNET} {
		calls = append(calls, call{name: fmt.Sprintf("clone %#x", ns), nr: clone, arch: native,
			args: []uint64{ns | uint64(unix.SIGCHLD)}, want: retEPERM})
	}
	const threadFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD |
		unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	calls = append(calls,
		call{"clone thread", clone, native, []uint64{threadFlags}, retAllow},
		call{"clone fork", clone, native, []uint64{uint64(unix.SIGCHLD)}, retAllow},
		call{"clone vfork", clone, native, []uint64{unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)}, retAllow},
		call{"clone3", nr("clone3"), native, nil, retENOSYS},
		call{"socket unix", socket, native, []uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		call{"socket inet", socket, native, []uint64{unix.AF_INET, unix.SOCK_DGRAM}, retAllow},
		call{"socket inet6", socket, native, []uint64{unix.AF_INET6, unix.SOCK_STREAM}, retAllow},
		call{"socket netlink route", socket, native, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE}, retAllow},
		call{"socket netlink audit", socket, native, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT}, retEPERM},
		call{"socket netlink generic", socket, native, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_GENERIC}, retEPERM},
		call{"socket vsock", socket, native, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, retEPERM},
		call{"socket packet", socket, native, []uint64{unix.AF_PACKET, unix.SOCK_RAW}, retEPERM},
		call{"socket alg", socket, native, []uint64{unix.AF_ALG, unix.SOCK_SEQPACKET}, retEPERM},
		// The kernel reads an int: stray upper bits must not pass for
		// an allowed family, nor hide a netlink protocol.
		call{"socket inet, upper bits", socket, native, []uint64{1<<32 | unix.AF_INET}, retEPERM},
		call{"socket netlink audit, upper bits", socket, native, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, 1<<32 | unix.NETLINK_AUDIT}, retEPERM},
		call{"socketpair inet", nr("socketpair"), native, []uint64{unix.AF_INET}, retEPERM},
		call{"personality query", pers, native, []uint64{0xffffffff}, retAllow},
		call{"personality linux", pers, native, []uint64{0}, retAllow},
		call{"personality ADDR_NO_RANDOMIZE", pers, native, []uint64{0x0040000}, retEPERM},
		call{"personality READ_IMPLIES_EXEC", pers, native, []uint64{0x0400000}, retEPERM},
		call{"past the table", 1000, native, nil, retENOSYS},
	)
	if runtime.GOARCH == "amd64" {
		calls = append(calls,
			call{"i386 getpid", 20, uint32(arch.I386.ID), nil, retEPERM},
			call{"i386 read", 3, uint32(arch.I386.ID), nil, retEPERM},
			call{"x32 getpid", 0x40000000 | nr("getpid"), native, nil, retENOSYS},
			call{"x32 read", 0x40000000, native, nil, retENOSYS},
		)
	}
	if runtime.GOARCH == "arm64" {
		calls = append(calls, call{"arm getpid", 20, uint32(arch.ARM.ID), nil, retEPERM})
	}
	for _, c := range calls {
		got, err := vm.Run(seccompData(c.nr, c.arch, c.args...))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if uint32(got) != c.want {
			t.Errorf("%s (nr %d, args %#x): %s, want %s", c.name, c.nr, c.args, retName(uint32(got)), retName(c.want))
		}
	}
}

// TestZygoteDecisions checks the zygote's filter: what it allows of the
// tenant's denied calls (setns and unshare among them, for a child that
// enters a home) and that it still refuses the rest.
func TestZygoteDecisions(t *testing.T) {
	info, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("no syscall table for %s: %v", runtime.GOARCH, err)
	}
	vm, err := bpf.NewVM(decode(t, ZygoteFilter))
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		name string
		args []uint64
		want uint32
	}
	var calls []call
	for _, n := range denied {
		want := uint32(retEPERM)
		if slices.Contains([]string{"mount", "umount2", "move_mount", "sethostname"}, n) {
			want = retAllow
		}
		if n != "setns" && n != "unshare" {
			calls = append(calls, call{n, nil, want})
		}
	}
	nsCalls := len(calls)
	calls = append(calls,
		call{"setns", []uint64{3, unix.CLONE_NEWUSER}, retAllow},
		call{"setns", []uint64{3, unix.CLONE_NEWNET}, retAllow},
		call{"setns", []uint64{3, 0}, retEPERM},
		call{"setns", []uint64{3, unix.CLONE_NEWNS}, retEPERM},
		call{"setns", []uint64{3, unix.CLONE_NEWPID}, retEPERM},
		call{"setns", []uint64{3, 1<<32 | unix.CLONE_NEWNET}, retEPERM},
		call{"setns", []uint64{3, unix.CLONE_NEWUSER | unix.CLONE_NEWNET}, retEPERM}, // a pidfd's, several at once
		call{"unshare", []uint64{unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC}, retAllow},
		call{"unshare", []uint64{unix.CLONE_NEWNS}, retAllow},
		call{"unshare", []uint64{0}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_NEWUSER}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_NEWNS | unix.CLONE_NEWUSER}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_NEWNET}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_NEWPID}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_NEWCGROUP}, retEPERM},
		call{"unshare", []uint64{unix.CLONE_FILES}, retEPERM},
		call{"unshare", []uint64{1<<32 | unix.CLONE_NEWNS}, retEPERM},
	)
	for _, c := range calls {
		got, err := vm.Run(seccompData(info.SyscallNames[c.name], uint32(info.ID), c.args...))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if uint32(got) != c.want {
			t.Errorf("zygote filter: %s %#x: %s, want %s", c.name, c.args, retName(uint32(got)), retName(c.want))
		}
	}
	// The tenant's filter refuses both whatever the arguments.
	tenant, err := bpf.NewVM(decoded(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range calls[nsCalls:] {
		if got, _ := tenant.Run(seccompData(info.SyscallNames[c.name], uint32(info.ID), c.args...)); uint32(got) != retEPERM {
			t.Errorf("tenant filter: %s %#x: %s, want EPERM", c.name, c.args, retName(uint32(got)))
		}
	}
}

func TestWriteFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "seccomp.bpf")
	if err := WriteFile(p); err != nil {
		t.Fatal(err)
	}
	want, _ := Filter()
	got, err := os.ReadFile(p)
	if err != nil || string(got) != string(want) {
		t.Fatalf("file holds %d bytes (%v), want the filter's %d", len(got), err, len(want))
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode())
	}
	// Unchanged: left alone.
	before := st.ModTime()
	if err := WriteFile(p); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); !st.ModTime().Equal(before) {
		t.Errorf("an identical filter was rewritten")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "missing", "seccomp.bpf")); err == nil {
		t.Errorf("writing into a missing dir succeeded")
	}
}

// childEnv makes the test binary a filtered child (see TestMain).
const childEnv = "HEARTH_SECCOMP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	if os.Getenv(netChildEnv) == "1" {
		os.Exit(netChild())
	}
	os.Exit(m.Run())
}

// child installs the filter on every thread of this process, makes some
// calls and prints their errnos as JSON.
func child() int {
	b, err := Filter()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "no_new_privs:", err)
		return 2
	}
	prog := unix.SockFprog{Len: uint16(len(b) / InstructionSize), Filter: (*unix.SockFilter)(unsafe.Pointer(&b[0]))}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC,
		uintptr(unsafe.Pointer(&prog))); e != 0 {
		fmt.Fprintln(os.Stderr, "seccomp:", e)
		return 2
	}
	out := map[string]int{}
	errno := func(name string, trap uintptr, a ...uintptr) {
		a = append(a, 0, 0, 0, 0, 0, 0)
		r, _, e := unix.Syscall6(trap, a[0], a[1], a[2], a[3], a[4], a[5])
		if e == 0 && (name == "socket inet" || name == "socket vsock" || name == "io_uring_setup") {
			unix.Close(int(r))
		}
		out[name] = int(e)
	}
	buf := make([]byte, 4096)
	errno("keyctl", unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, ^uintptr(1)) // KEY_SPEC_PROCESS_KEYRING
	errno("io_uring_setup", unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&buf[0])))
	errno("unshare", unix.SYS_UNSHARE, unix.CLONE_FS)
	errno("clone3", unix.SYS_CLONE3, 0, 0)
	errno("socket vsock", unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM)
	errno("socket inet", unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM)
	errno("getpid", unix.SYS_GETPID)
	runtime.KeepAlive(buf)
	// The Go runtime forks and execs under the filter.
	if err := exec.Command("/bin/true").Run(); err != nil {
		out["exec"] = -1
		fmt.Fprintln(os.Stderr, "exec:", err)
	}
	status, _ := os.ReadFile("/proc/self/status")
	json.NewEncoder(os.Stdout).Encode(map[string]any{"errnos": out, "status": string(status)})
	return 0
}

// TestKernelAcceptsFilter installs the filter in a child process and
// checks that the kernel enforces it.
func TestKernelAcceptsFilter(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("filtered child: %v", err)
	}
	var res struct {
		Errnos map[string]int
		Status string
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("child said %q: %v", b, err)
	}
	want := map[string]unix.Errno{"keyctl": unix.EPERM, "io_uring_setup": unix.EPERM, "unshare": unix.EPERM,
		"clone3": unix.ENOSYS, "socket vsock": unix.EPERM, "socket inet": 0, "getpid": 0}
	for k, v := range want {
		if got, ok := res.Errnos[k]; !ok || unix.Errno(got) != v {
			t.Errorf("%s: errno %d (%v), want %d (%v)", k, got, unix.Errno(got), int(v), v)
		}
	}
	if _, ok := res.Errnos["exec"]; ok {
		t.Errorf("the filtered child could not run /bin/true")
	}
	if !strings.Contains(res.Status, "Seccomp:\t2\n") {
		t.Errorf("child's status lacks Seccomp: 2:\n%s", res.Status)
	}
}

// TestFastAllowSame: the search put before the library's program
// (fastAllow) changes no decision. Every call number of the table and
// past it, with argument values around every rule's, is run through the
// program with and without it, for the tenant's and the zygote's filter;
// and a call the policy does not name is decided by the search alone, in
// a few steps.
func TestFastAllowSame(t *testing.T) {
	info, err := arch.GetInfo("")
	if err != nil {
		t.Fatal(err)
	}
	var argSets [][]uint64
	for _, v := range slices.Concat([]uint64{0, 1, 2, 5, ^uint64(0), 0xffffffff, 1 << 32,
		cloneNamespaces, unix.CLONE_NEWUSER, unix.CLONE_NEWNET, unix.CLONE_NEWNS, homeUnshare, unix.AF_NETLINK},
		personalities, families) {
		argSets = append(argSets, []uint64{v, v, v, v, v, v},
			[]uint64{v, 0, unix.NETLINK_ROUTE, 0, 0, 0}, []uint64{v, 0, 0, 0, 0, 0}, []uint64{0, v, 0, 0, 0, 0})
	}
	newest := 0
	for nr := range info.SyscallNumbers {
		newest = max(newest, nr)
	}
	for _, zygote := range []bool{false, true} {
		guard, search, body, err := parts(zygote)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := bpf.NewVM(slices.Concat(guard, body))
		if err != nil {
			t.Fatal(err)
		}
		fast, err := bpf.NewVM(slices.Concat(guard, search, body))
		if err != nil {
			t.Fatal(err)
		}
		named, err := numbers(info, policy(info, zygote))
		if err != nil {
			t.Fatal(err)
		}
		for nr := 0; nr <= newest+8; nr++ {
			for _, a := range []uint32{uint32(info.ID), 0x40000003} {
				for _, args := range argSets {
					in := seccompData(nr, a, args...)
					want, err1 := plain.Run(in)
					got, err2 := fast.Run(in)
					if err1 != nil || err2 != nil || got != want {
						t.Fatalf("zygote %v: call %d (%s), arch %#x, args %#x: %s with the search, %s without (%v, %v)",
							zygote, nr, info.SyscallNumbers[nr], a, args, retName(uint32(got)), retName(uint32(want)), err2, err1)
					}
				}
			}
			if nr <= newest && !slices.Contains(named, uint32(nr)) {
				// Decided in the search: the guard's 5, then at most
				// log2 of the named numbers and a leaf of 3.
				if steps := steps(slices.Concat(guard, search), nr, uint32(info.ID)); steps > 5+8+7 {
					t.Errorf("zygote %v: call %d takes %d steps", zygote, nr, steps)
				}
			}
		}
	}
}

// steps counts the instructions prog runs on call nr of arch a, -1 if it
// runs off its end.
func steps(prog []bpf.Instruction, nr int, a uint32) int {
	var acc uint32
	for pc, n := 0, 1; pc < len(prog); n++ {
		switch in := prog[pc].(type) {
		case bpf.LoadAbsolute:
			acc = map[uint32]uint32{offNr: uint32(nr), offArch: a}[in.Off]
			pc++
		case bpf.JumpIf:
			var ok bool
			switch in.Cond {
			case bpf.JumpEqual:
				ok = acc == in.Val
			case bpf.JumpGreaterThan:
				ok = acc > in.Val
			case bpf.JumpGreaterOrEqual:
				ok = acc >= in.Val
			default:
				return -1
			}
			if ok {
				pc += 1 + int(in.SkipTrue)
			} else {
				pc += 1 + int(in.SkipFalse)
			}
		case bpf.Jump:
			pc += 1 + int(in.Skip)
		case bpf.RetConstant:
			return n
		default:
			return -1
		}
	}
	return -1
}

// TestFastAllowShapes: the search on its own, for sets of named numbers
// of every shape (none, one, dense runs, sparse, hundreds, so that a
// subtree is longer than a conditional jump reaches), allows exactly the
// numbers not named and sends the named ones on to what follows it.
func TestFastAllowShapes(t *testing.T) {
	const newest = 1200
	const onward = 0xdead // what follows the search returns this
	sets := map[string][]uint32{"none": nil, "one": {7}, "first": {0}, "last": {newest}, "all": nil}
	for i := uint32(0); i <= newest; i++ {
		sets["all"] = append(sets["all"], i)
		if i%3 == 0 {
			sets["every third"] = append(sets["every third"], i)
		}
		if i >= 100 && i < 700 {
			sets["dense run"] = append(sets["dense run"], i)
		}
		if i%97 == 5 || i%89 == 1 {
			sets["sparse"] = append(sets["sparse"], i)
		}
	}
	for name, named := range sets {
		search := fastAllow(named, newest)
		prog := slices.Concat([]bpf.Instruction{bpf.LoadAbsolute{Off: offNr, Size: 4}}, search,
			[]bpf.Instruction{bpf.RetConstant{Val: onward}})
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		long := false
		for i, in := range search {
			if j, ok := in.(bpf.Jump); ok && j.Skip > 255 && i < len(search)/2 {
				long = true
			}
		}
		if name == "every third" && !long {
			t.Errorf("%s: no long jump over a subtree; the test no longer covers that form", name)
		}
		for nr := uint32(0); nr <= newest; nr++ {
			got, err := vm.Run(seccompData(int(nr), 0))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := retAllow
			if slices.Contains(named, nr) {
				want = onward
			}
			if uint32(got) != want {
				t.Fatalf("%s: call %d: %#x, want %#x", name, nr, got, want)
			}
		}
	}
}
