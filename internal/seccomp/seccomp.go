package seccomp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// denied are refused with EPERM whatever their arguments.
var denied = []string{
	// Kernel interfaces with a long record of privilege escalations and
	// no use in a function.
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"userfaultfd", "bpf", "perf_event_open",
	"add_key", "request_key", "keyctl",
	// Other processes' memory, descriptors and pages.
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
	"pidfd_getfd", "process_madvise", "move_pages", "migrate_pages",
	// The machine: modules, kexec, power, swap, clocks, logs, quotas.
	"init_module", "finit_module", "delete_module",
	"kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
	"settimeofday", "clock_settime", "clock_adjtime",
	"acct", "syslog", "lookup_dcookie", "quotactl", "quotactl_fd",
	"sethostname", "setdomainname", "vhangup", "fanotify_init",
	// Mounts, namespaces and file handles (which bypass path checks).
	"mount", "umount2", "pivot_root", "move_mount", "open_tree",
	"open_tree_attr", "fsopen", "fsconfig", "fsmount", "fspick",
	"mount_setattr", "listmount", "statmount",
	"unshare", "setns",
	"open_by_handle_at", "name_to_handle_at",
}

// deniedLegacy are refused too where the native table has them: calls
// that newer architectures never had (x86 port I/O and LDT, obsolete
// module and sysctl interfaces).
var deniedLegacy = []string{
	"iopl", "ioperm", "modify_ldt", "vm86", "vm86old",
	"create_module", "get_kernel_syms", "query_module", "nfsservctl",
	"sysfs", "_sysctl", "ustat", "uselib",
}

// cloneNamespaces are clone's flags that make new namespaces:
// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID and NEWNET.
const cloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// personalities are the personality(2) arguments allowed, as Docker
// allows them: PER_LINUX, UNAME26 with or without PER_LINUX32, and the
// query 0xffffffff. Others (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC...)
// weaken the process's own hardening.
var personalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// families are the socket families allowed.
var families = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

func notIn(arg uint32, values []uint64) libseccomp.ArgumentConditions {
	var c libseccomp.ArgumentConditions
	for _, v := range values {
		c = append(c, libseccomp.Condition{Argument: arg, Operation: libseccomp.NotEqual, Value: v})
	}
	return c
}

// zygoteAllowed are the calls of denied that a zygote's filter allows:
// a zygote makes each child in new namespaces of its own (clone3 with
// CLONE_NEWUSER and the others), and the child, their owner, mounts its
// /tmp, code and /proc and names its host before it installs the tenant
// filter. None of them reaches beyond namespaces the caller owns.
var zygoteAllowed = []string{"mount", "umount2", "move_mount", "sethostname"}

// A zygote child given a home (an earlier sandbox's user and network
// namespaces, of the same function) enters them (setns) and then makes
// its mount, uts and ipc namespaces (unshare). The zygote's filter allows
// exactly that: setns of one user or one network namespace by its
// descriptor's type (not type 0, which takes any kind, nor a pidfd's
// several at once), and unshare of those three kinds. unshare of the
// three needs every capability in the caller's own user namespace, which
// a zygote lacks; unshare of a user namespace stays refused.
//
// setns needs every capability over the target's owning user namespace.
// All zygotes share a uid, which owns the user namespace of every zygote
// child, of every node: what keeps a node out of another's children is
// that it cannot get a descriptor of their namespaces (they are not
// dumpable, so /proc/PID/ns is closed to it; their pids are in another
// pid namespace; Landlock scopes it; open_by_handle_at is refused). The
// worker hands a node only the homes of its own children's functions.
const homeUnshare = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// policy is the filter's policy for the architecture info describes: the
// tenant filter, or with zygote the zygote's.
// Argument checks compare all 64 bits, so a value with stray upper bits
// (which the kernel would truncate to an int) never matches an allowed
// one: it is denied.
func policy(info *arch.Info, zygote bool) libseccomp.Policy {
	var names []string
	for _, n := range denied {
		if !zygote || !slices.Contains(zygoteAllowed, n) && n != "setns" && n != "unshare" {
			names = append(names, n)
		}
	}
	for _, n := range deniedLegacy {
		if _, ok := info.SyscallNames[n]; ok {
			names = append(names, n)
		}
	}
	eperm := libseccomp.ActionErrno | libseccomp.Action(unix.EPERM)
	enosys := libseccomp.ActionErrno | libseccomp.Action(unix.ENOSYS)
	p := libseccomp.Policy{
		DefaultAction: libseccomp.ActionAllow,
		Syscalls: []libseccomp.SyscallGroup{
			{Names: names, Action: eperm},
			{
				NamesWithCondtions: []libseccomp.NameWithConditions{
					{Name: "clone", Conditions: libseccomp.ArgumentConditions{
						{Argument: 0, Operation: libseccomp.BitsSet, Value: cloneNamespaces}}},
					{Name: "personality", Conditions: notIn(0, personalities)},
					{Name: "socket", Conditions: notIn(0, families)},
					{Name: "socket", Conditions: libseccomp.ArgumentConditions{
						{Argument: 0, Operation: libseccomp.Equal, Value: unix.AF_NETLINK},
						{Argument: 2, Operation: libseccomp.NotEqual, Value: unix.NETLINK_ROUTE}}},
					{Name: "socketpair", Conditions: notIn(0, []uint64{unix.AF_UNIX})},
				},
				Action: eperm,
			},
		},
	}
	if zygote {
		p.Syscalls[1].NamesWithCondtions = append(p.Syscalls[1].NamesWithCondtions,
			libseccomp.NameWithConditions{Name: "setns", Conditions: notIn(1, []uint64{unix.CLONE_NEWUSER, unix.CLONE_NEWNET})},
			libseccomp.NameWithConditions{Name: "unshare", Conditions: libseccomp.ArgumentConditions{
				{Argument: 0, Operation: libseccomp.BitsSet, Value: ^uint64(homeUnshare)}}},
			libseccomp.NameWithConditions{Name: "unshare", Conditions: libseccomp.ArgumentConditions{
				{Argument: 0, Operation: libseccomp.Equal, Value: 0}}},
		)
	}
	if !zygote {
		// clone3's flags are in memory a filter cannot read: refuse it
		// whole, and the C library falls back to clone.
		p.Syscalls = append(p.Syscalls, libseccomp.SyscallGroup{Names: []string{"clone3"}, Action: enosys})
	}
	return p
}

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
)

// program assembles the filter for the native architecture. The library
// sends calls of a foreign ABI to its default action, which for a
// denylist is to allow them; so the program starts with its own guard
// that refuses them (EPERM), and numbers past the newest call in the
// table (ENOSYS).
func program(zygote bool) ([]bpf.Instruction, error) {
	guard, search, body, err := parts(zygote)
	return slices.Concat(guard, search, body), err
}

// parts are program's: the guard, the search that allows what the
// policy does not name (fastAllow), the library's program.
func parts(zygote bool) (guard, search, body []bpf.Instruction, err error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("seccomp: %w", err)
	}
	p := policy(info, zygote)
	body, err = p.Assemble()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("seccomp: assembling the filter: %w", err)
	}
	newest := 0
	for nr := range info.SyscallNumbers {
		newest = max(newest, nr)
	}
	guard = []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(libseccomp.ActionErrno) | uint32(unix.EPERM)},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(newest), SkipFalse: 1},
		bpf.RetConstant{Val: uint32(libseccomp.ActionErrno) | uint32(unix.ENOSYS)},
	}
	named, err := numbers(info, p)
	if err != nil {
		return nil, nil, nil, err
	}
	return guard, fastAllow(named, uint32(newest)), body, nil
}

// numbers are the call numbers the policy names, sorted: the only ones
// its program does not simply allow.
func numbers(info *arch.Info, p libseccomp.Policy) ([]uint32, error) {
	var out []uint32
	add := func(name string) error {
		nr, ok := info.SyscallNames[name]
		if !ok {
			return fmt.Errorf("seccomp: no call %s on %s", name, info.Name)
		}
		out = append(out, uint32(nr))
		return nil
	}
	for _, g := range p.Syscalls {
		for _, n := range g.Names {
			if err := add(n); err != nil {
				return nil, err
			}
		}
		for _, nc := range g.NamesWithCondtions {
			if err := add(nc.Name); err != nil {
				return nil, err
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// fastAllow is a binary search, on the call number in the accumulator,
// that allows at once every number of [0, newest] but those of named
// (sorted), and sends those on to the instructions that follow it. The
// library's program tests the named numbers one after the other, so an
// allowed call ran through all of them (some 70), and when a filter is
// installed the kernel works out which calls it always allows by running
// it for every number (its action cache). Every fork start installs the
// tenant filter: 0.13 ms, 0.09 ms with the search (a longer program,
// checked and compiled, takes back part of what the cache saves).
func fastAllow(named []uint32, newest uint32) []bpf.Instruction {
	const toRest = ^uint32(0) // a jump to what follows, resolved below
	allow := bpf.RetConstant{Val: uint32(libseccomp.ActionAllow)}
	var search func(lo, hi uint32, s []uint32) []bpf.Instruction
	search = func(lo, hi uint32, s []uint32) []bpf.Instruction {
		switch {
		case len(s) == 0:
			return []bpf.Instruction{allow}
		case uint64(hi-lo)+1 == uint64(len(s)):
			return []bpf.Instruction{bpf.Jump{Skip: toRest}}
		case len(s) <= 3:
			var out []bpf.Instruction
			for _, v := range s {
				out = append(out, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, bpf.Jump{Skip: toRest})
			}
			return append(out, allow)
		}
		k := len(s) / 2
		mid := s[k]
		left, right := search(lo, mid-1, s[:k]), search(mid, hi, s[k:])
		if len(left) <= 255 {
			return slices.Concat([]bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: mid, SkipTrue: uint8(len(left))}}, left, right)
		}
		return slices.Concat([]bpf.Instruction{
			bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: mid, SkipFalse: 1},
			bpf.Jump{Skip: uint32(len(left))},
		}, left, right)
	}
	out := search(0, newest, named)
	for i, in := range out {
		if j, ok := in.(bpf.Jump); ok && j.Skip == toRest {
			out[i] = bpf.Jump{Skip: uint32(len(out) - i - 1)}
		}
	}
	return out
}

// watched are the socket families whose first socket in a sandbox
// gets it its network (see NetFilter): the internet ones, and netlink,
// through which the C library's getaddrinfo asks whether the host has
// an address at all before it makes one.
var watched = []uint64{unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// netProgram assembles NetFilter's program: socket(2) of a watched
// family goes to the listener (SECCOMP_RET_USER_NOTIF), everything else
// is allowed. Calls of a foreign ABI are allowed too: the filters below
// it refuse them.
func netProgram() ([]bpf.Instruction, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var conds []libseccomp.NameWithConditions
	for _, f := range watched {
		conds = append(conds, libseccomp.NameWithConditions{Name: "socket", Conditions: libseccomp.ArgumentConditions{
			{Argument: 0, Operation: libseccomp.Equal, Value: f}}})
	}
	p := libseccomp.Policy{
		DefaultAction: libseccomp.ActionAllow,
		Syscalls:      []libseccomp.SyscallGroup{{NamesWithCondtions: conds, Action: libseccomp.ActionUserNotify}},
	}
	body, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: assembling the network filter: %w", err)
	}
	guard := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(libseccomp.ActionAllow)},
	}
	return append(guard, body...), nil
}

// filter is Filter, built once; zygoteFilter ZygoteFilter; netFilter
// NetFilter.
var (
	filter       = sync.OnceValues(func() ([]byte, error) { return build(false) })
	zygoteFilter = sync.OnceValues(func() ([]byte, error) { return build(true) })
	netFilter    = sync.OnceValues(func() ([]byte, error) { return encode(netProgram()) })
)

func build(zygote bool) ([]byte, error) {
	return encode(program(zygote))
}

func encode(insns []bpf.Instruction, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("seccomp: assembling the filter: %w", err)
	}
	if len(raw) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: the filter has %d instructions, more than the kernel's %d", len(raw), unix.BPF_MAXINSNS)
	}
	var b bytes.Buffer
	for _, in := range raw {
		binary.Write(&b, binary.NativeEndian, unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K})
	}
	return b.Bytes(), nil
}

// InstructionSize is the size of one struct sock_filter in Filter's
// output.
const InstructionSize = 8

// Filter returns the filter for the native architecture as the array of
// struct sock_filter (8 bytes each, in native byte order) that
// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) or seccomp(2) takes through
// a struct sock_fprog. The caller must not modify it.
func Filter() ([]byte, error) { return filter() }

// ZygoteFilter is Filter for zygotes: it also allows clone3 (with the
// flags that make namespaces) and the calls a child needs to set up the
// namespaces clone3 made for it (zygoteAllowed). Each function child
// then installs Filter on top.
func ZygoteFilter() ([]byte, error) { return zygoteFilter() }

// NetFilter is the filter a root zygote installs on itself, with a
// listener (SECCOMP_FILTER_FLAG_NEW_LISTENER) that it hands to the
// worker, before it runs anything else: every process of its tree then
// stops in socket(2) of AF_INET, AF_INET6 or AF_NETLINK until the worker
// answers (see Listener). The worker gives a forked sandbox its network
// only then, so a function that never opens such a socket never pays
// for a veth pair. It allows everything: the filters stacked on it
// decide what is refused, and a refusal takes precedence over the
// notification.
func NetFilter() ([]byte, error) { return netFilter() }

// WriteFile writes Filter to path (mode 0644), atomically, and leaves an
// identical file alone.
func WriteFile(path string) error { return writeFile(path, Filter) }

// WriteZygoteFile is WriteFile for ZygoteFilter.
func WriteZygoteFile(path string) error { return writeFile(path, ZygoteFilter) }

// WriteNetFile is WriteFile for NetFilter.
func WriteNetFile(path string) error { return writeFile(path, NetFilter) }

func writeFile(path string, filter func() ([]byte, error)) error {
	b, err := filter()
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".seccomp-*")
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("seccomp: writing %s: %w", path, err)
	}
	return nil
}
