// Package seccomp builds the system call filter that every piece of tenant
// code runs under: functions (cold-started, forked from a zygote, or
// restored from a snapshot), package installs (pip and the setup.py files
// it runs) and the byte-compiler that reads a function's code at deploy.
//
// The filter is a denylist, modelled on the notable exclusions of
// Docker's default profile: calls that widen the kernel's attack surface
// (io_uring, userfaultfd, bpf, perf_event_open, the key retention
// service), reach other processes (ptrace, process_vm_readv...), change
// the machine (modules, kexec, reboot, swap, clocks, accounting), mount
// or make namespaces, open files by handle, or change the personality.
// socket is limited to the families Python needs: AF_UNIX, AF_INET,
// AF_INET6, and AF_NETLINK for NETLINK_ROUTE only (glibc's getaddrinfo
// and if_nameindex read addresses through it); AF_VSOCK, AF_PACKET,
// AF_ALG and the other families, with their rarely exercised kernel code,
// are refused. A denied call fails with EPERM rather than killing the
// caller, so that libraries that probe for a feature fall back.
//
// clone3 fails with ENOSYS: a filter cannot read the flags it passes in
// memory, and glibc then falls back to clone, whose namespace flags the
// filter does check. Calls of another ABI than the native one (i386 and
// x32 on x86-64) are refused, and so are call numbers beyond the newest
// the builder's table knows (ENOSYS, as on an older kernel): a denylist
// cannot judge calls that did not exist when it was written.
//
// The program is built once with github.com/elastic/go-seccomp-bpf, with
// a binary search on the call number in front (fastAllow) that allows the
// calls the policy does not name in a few steps rather than after a
// comparison with every named one: the kernel runs a new filter for every
// call number when it is installed (to cache what it always allows), and
// each fork start installs one. It is handed over as raw struct
// sock_filter entries (Filter, WriteFile):
// hearth-init installs it before it execs a sandbox's main process, and
// the zygote installs it in each function child (see internal/runtime).
package seccomp
