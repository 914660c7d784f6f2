# Hearth zygote: /usr/bin/python3 -S -B /hearth/zygote.py
#
# A zygote is an interpreter that has imported a set of packages and forks
# children on request. fd 3 is a SOCK_SEQPACKET control socket to the
# worker; each request is one JSON packet with descriptors attached:
#
#   {"op": "fork", "mounts": [dst, ...], "net": bool, "hostname",
#    "uid", "gid", "env": {...}}
#       fds: a sync pipe's read end, the sandbox's scratch file system (a
#       detached mount), its listening socket, stdout, stderr, then one
#       detached mount (open_tree) per dst.
#       The zygote clones ONE child into new user, mount, uts and ipc
#       namespaces (and network, with "net"), which it owns. The child
#       moves the scratch onto /tmp and the mounts onto their dst, caps
#       its inotify use, takes its stdio and socket, then waits for a
#       byte on the sync pipe: the worker has moved it into its cgroup
#       and mapped uid and gid in its user namespace (the zygote can do
#       neither: it is unprivileged, and gets no cgroup descriptor). It
#       then becomes uid/gid, drops every capability, walls itself off
#       (Landlock), installs the tenant filter, loads the handler and
#       serves the socket. Reply: {"pid": pid} with the child's pidfd.
#   {"op": "child", "modules": [...], "path": [...]}
#       fds: the child zygote's control socket.
#       Forks a child zygote that closes every other descriptor, walls
#       itself off, imports the modules and serves its socket. Reply:
#       {"pid": pid} with its pidfd (the worker moves it into its
#       cgroup). The child says {"ready": true} or {"error": msg} on its
#       own socket.
#   {"op": "spare", "net": bool, "hostname"}
#       fds: as for "fork" but no sync pipe and no mounts, then a control
#       socket. Clones a child that does everything "fork" does up to
#       the point where it needs the function (its code, uid and
#       environment), and waits on the control socket for
#         {"op": "go", "mounts": [dst, ...], "uid", "gid", "env"}
#       with one detached mount per dst, sent once the worker has mapped
#       uid and gid. So a start pays for none of the clone. Reply:
#       {"pid"} with the child's pidfd.
#   "spare" with "home": true carries two more descriptors,
#       last: a user namespace and a network namespace (a "home") that an
#       earlier sandbox of the same function made and left, its uid and
#       gid mapped already and its network never used (loopback only).
#       The child is then forked plainly and enters them (setns) before it
#       makes its own mount, uts and ipc namespaces, owned by that user
#       namespace; the zygote's uid owns the home's user namespace, so the
#       child holds every capability there until it drops them, as in
#       one it made. It skips what the home has already (loopback up),
#       and the worker maps no ids. This spares the kernel a network
#       namespace made and torn down per start, about 1 ms of CPU.
#   "spare" with "prepare": true (a home's spare, which only one
#       function takes) gets, first on its control socket, what "go"
#       otherwise carries, as {"op": "prepare", "mounts", "uid", "gid",
#       "env"} with the mounts' descriptors, sent by the worker (never
#       through the zygote, which must not see a function's code). It
#       does all of a start but load the handler (arrive) ahead of need,
#       then waits for a bare {"op": "go"}: a start from it then loads
#       and serves at once, about 0.5 ms sooner.
#   {"op": "probe"} -> {"ok": true} once a clone as "fork" makes worked
#   {"op": "ping"} -> {"ok": true}
#
# A root zygote's first packet is {"pid"} with its own pidfd, then
# {"ready": true} once it has settled.
#
# "fork" and "spare" with "watch": true clone a child that first installs
# the network filter on itself (watch_net) and hands its listener over.
# A fork's reply carries it after the pidfd, or says in "net_watch_error"
# why there is none. A spare sends it itself, as its first message on its
# control socket ({"ok": true} with the listener, or {"error": msg}), so
# its zygote replies at once and waits for no child of its own.
#
# A zygote is unprivileged: a uid of its own, no capabilities, no new
# privileges, the zygote filter (internal/seccomp ZygoteFilter), in a
# sandbox of its own (pid, mount, network namespaces; /proc hides other
# users' processes). Packages it imports run with exactly that. Its
# children get their privileges inside namespaces they own, and the
# worker decides which host uid they become. A function child installs
# the tenant filter (/hearth/seccomp.bpf, read once by the root zygote)
# before it runs any of the function's code or reseeds numpy. All lazy
# work (ctypes symbol lookups, reading the filter) happens here, before
# any fork.
import sys
import posix
import _socket
import _signal
import ctypes
import fcntl
import gc

import hearthrt

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PIDFD = 0x00001000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_FILE = "/hearth/seccomp.bpf"
NET_FILE = "/hearth/seccomp-net.bpf"
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
SIGCHLD = 17

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# clone3 keeps the GIL (a PyDLL function): os.fork holds it too, and the
# child must not start with it released.
_syscall_gil = ctypes.PyDLL(None, use_errno=True).syscall
_syscall_gil.restype = ctypes.c_long
_before_fork = ctypes.pythonapi.PyOS_BeforeFork
_after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child
_after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
_capset = _libc.capset
_capset.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
# move_mount(2) and clone3(2) have the same number on every
# architecture (new syscalls share one table since Linux 5.1).
SYS_MOVE_MOUNT = 429
SYS_CLONE3 = 435
SYS_PIDFD_OPEN = 434
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_MAX_FDS = 64
F_DUPFD = 0
_HIGH_FD = 512  # above every descriptor a zygote or child holds otherwise (MaxFiles is 1024)


def _fcntl(fd, cmd, arg):
    # The fcntl module, not ctypes: in each child, a ctypes call's first
    # run costs more than the call.
    return fcntl.fcntl(fd, cmd, arg)

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1
LANDLOCK_SCOPE_SIGNAL = 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


# wall_off's arguments, made once here (a child that made them wrote to
# its zygote's pages): the scoped ruleset, and the calls' constants.
_LANDLOCK_ATTR = _RulesetAttr(0, 0, LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET)
_LANDLOCK_CREATE = (ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(_LANDLOCK_ATTR),
                    ctypes.c_size_t(ctypes.sizeof(_LANDLOCK_ATTR)), ctypes.c_uint32(0))
_SYS_RESTRICT_SELF = ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF)
_U32_0 = ctypes.c_uint32(0)
_landlock = [None, 0]  # the ABI version landlock_abi found, and its errno


def landlock_abi():
    """The kernel's Landlock ABI version (below 1: none), asked once per
    process tree: a zygote asks before its first fork (main), and its
    children and child nodes read the answer."""
    if _landlock[0] is None:
        abi = _syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
        _landlock[:] = [abi, ctypes.get_errno() if abi < 0 else 0]
    return _landlock[0]


def wall_off():
    """Enter a Landlock domain of this process's own, scoped: from here on
    it, and all it forks, can signal, trace (or read through /proc) and
    reach by abstract unix socket only processes of this domain or of
    domains nested in it. A zygote owns the user namespace of every
    child it clones, which would let it signal and trace every function
    forked from any zygote; each node walls itself off before it imports
    its packages, so that what they run reaches only the node's own
    children, which asked for them. A function child walls itself off
    from its siblings too."""
    abi = landlock_abi()
    if abi < 6:
        raise OSError(_landlock[1] or 95, "landlock: scoped domains need ABI 6 (Linux 6.12), have %d" % abi)
    fd = _syscall(*_LANDLOCK_CREATE)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, "landlock_create_ruleset: " + posix.strerror(e))
    try:
        if _syscall(_SYS_RESTRICT_SELF, ctypes.c_long(fd), _U32_0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "landlock_restrict_self: " + posix.strerror(e))
    finally:
        posix.close(fd)


class _CloneArgs(ctypes.Structure):
    _fields_ = tuple((n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
        "stack_size", "tls", "set_tid", "set_tid_size", "cgroup"))


_clone_pidfd = ctypes.c_int(-1)
_clone_args = _CloneArgs()
_clone_args.pidfd = ctypes.addressof(_clone_pidfd)
_clone_args.exit_signal = SIGCHLD
# clone3's arguments, made once: objects made for the call and freed
# after it would be written, after the fork, by both the zygote and the
# child (a page copied for each).
_CLONE3 = (ctypes.c_long(SYS_CLONE3), ctypes.byref(_clone_args), ctypes.c_size_t(ctypes.sizeof(_clone_args)))


def clone(flags):
    """Fork, as os.fork does, into new namespaces (flags). Returns (pid,
    pidfd) in the parent and (0, -1) in the child."""
    _clone_pidfd.value = -1
    _clone_args.flags = flags | CLONE_PIDFD
    # tag_output flushes the streams it replaces in the child: what the
    # zygote's own hold (a package's print at import, a pipe's buffer)
    # would reach the child's output.
    hearthrt.flush()
    _before_fork()
    pid = _syscall_gil(*_CLONE3)
    if pid == 0:
        _after_fork_child()
        return 0, -1
    e = ctypes.get_errno()
    _after_fork_parent()
    if pid < 0:
        raise OSError(e, "clone3: " + posix.strerror(e))
    return pid, _clone_pidfd.value


_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)


def enter_home(user, net):
    """In a just-forked child (one thread, in its zygote's namespaces):
    enter a home's user namespace, which the zygote's uid owns, then its
    network namespace, and make new mount, uts and ipc namespaces owned
    by the home's user namespace. Closes both descriptors."""
    try:
        for fd, kind, what in ((user, CLONE_NEWUSER, "user"), (net, CLONE_NEWNET, "network")):
            if _setns(fd, kind) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "entering the home's %s namespace: %s" % (what, posix.strerror(e)))
    finally:
        posix.close(user)
        posix.close(net)
    if _unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "unshare in the home: " + posix.strerror(e))


def mount(src, dst, fstype, flags, data=None):
    if _mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags, data and data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s on %s: %s" % (src, dst, posix.strerror(e)))


# A user namespace starts with no limit of its own on inotify: every
# instance and watch made in it counts only against its owner, the
# zygotes' user, which all forked functions share. Each child caps its
# own at a user's usual share (the worker makes room above for many).
INOTIFY_LIMITS = (("/proc/sys/user/max_inotify_instances", b"128"),
                  ("/proc/sys/user/max_inotify_watches", b"8192"))


def limit_inotify():
    for path, value in INOTIFY_LIMITS:
        fd = posix.open(path, posix.O_WRONLY)
        try:
            posix.write(fd, value)
        finally:
            posix.close(fd)


_sethostname = _libc.sethostname  # looked up here, not in each child


def sethostname(name):
    b = name.encode()
    if _sethostname(b, len(b)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "sethostname: " + posix.strerror(e))


_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
# struct ifreq naming lo, with IFF_UP for SIOCSIFFLAGS.
_IFREQ_LO_UP = ctypes.create_string_buffer(b"lo" + b"\0" * 14 + IFF_UP.to_bytes(2, sys.byteorder), 40)


def lo_up():
    """Bring up loopback in a network namespace of the caller's own,
    with the request made in the zygote."""
    # A unix socket reaches the device ioctls as well, and is not one
    # that the network filter (watch_net) stops on.
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        if _ioctl(s.fileno(), SIOCSIFFLAGS, _IFREQ_LO_UP) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "bringing up lo: " + posix.strerror(e))
    finally:
        s.close()


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _cap_last():
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


_CAP_LAST = _cap_last()


def drop_bounding():
    """Empty the capability bounding set. It only limits what an execve
    could grant, so a child empties it as soon as it exists, before it
    waits for its function: the 41 calls (over 1 ms in a fresh fork on a
    slow host) leave the start's critical path."""
    for cap in range(_CAP_LAST + 1):
        _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


# capset's arguments, made here: a child that made them (an array type,
# its instance, a header) wrote to some fifteen of its zygote's pages,
# 0.09 ms of copies on every start. The kernel only reads them.
_CAP_HDR = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
_CAP_NONE = (_CapData * 2)()  # no capability in any set
_CAP_ARGS = (ctypes.byref(_CAP_HDR), _CAP_NONE)


def drop_caps():
    """Drop every capability the child still holds in its own user
    namespace (its bounding set is empty already: drop_bounding)."""
    if _capset(*_CAP_ARGS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "capset: " + posix.strerror(e))


def move_mount(fd, dst):
    """Attach the detached mount tree fd (from open_tree) at dst."""
    if _syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_long(fd), ctypes.c_char_p(b""),
                ctypes.c_long(AT_FDCWD), ctypes.c_char_p(dst.encode()),
                ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "move_mount on %s: %s" % (dst, posix.strerror(e)))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_filter(path=SECCOMP_FILE):
    """Read a seccomp filter (struct sock_filter entries, 8 bytes each, as
    internal/seccomp writes them). Returns the buffer and the sock_fprog
    pointing at it: both must live as long as the zygote."""
    with open(path, "rb") as fh:
        data = fh.read()
    if not data or len(data) % 8:
        raise ValueError("%s: %d bytes is not a seccomp filter" % (path, len(data)))
    buf = ctypes.create_string_buffer(data, len(data))
    return buf, _SockFprog(len(data) // 8, ctypes.addressof(buf))


_filter = None  # load_filter()'s result, set in main before the first fork
_filter_addr = 0  # the address of its sock_fprog, for confine
# The network filter's (watch_net), or why it could not be read: read
# once here rather than by each child, on its start's clock; and the
# calls that install it (net_calls).
_net_filter = None
_net_calls = OSError(22, "no network filter loaded")


def use_filter(f):
    """Make f (load_filter's) the filter confine installs."""
    global _filter, _filter_addr
    _filter, _filter_addr = f, ctypes.addressof(f[1])


def confine():
    """Install the tenant seccomp filter on this process (a just-forked
    child, so its only thread). It needs no_new_privs (hearth-init set it
    for the root zygote), and it is for good: the process and all it
    forks stay filtered."""
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, _filter_addr, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "seccomp: " + posix.strerror(e))


# Python 3.12 and 3.13 on 64-bit take an object whose reference count's
# low 32 bits are all set as immortal: Py_INCREF and Py_DECREF then skip
# the write. Other versions (and free-threaded builds) keep their counts.
_IMMORTAL = 0xFFFFFFFF
_CAN_IMMORTALIZE = (sys.version_info[:2] in ((3, 12), (3, 13)) and sys.maxsize > 2**32
                    and sys.byteorder == "little"
                    and getattr(sys, "_is_gil_enabled", lambda: True)())


def immortalize():
    """Make every object reachable from the zygote's modules and collector
    immortal, so that a child's reference counting never writes to (and
    copies) the zygote's pages. They live as long as the zygote anyway.
    Returns how many objects it changed."""
    if not _CAN_IMMORTALIZE:
        return 0
    gc.collect()  # garbage would live on, immortal
    refcnt = ctypes.c_uint32
    seen = set()
    todo = gc.get_objects()
    # The collector tracks seen, so it is in todo: made immortal, it and
    # the id of every object visited would live as long as the zygote,
    # megabytes (7.5 MiB with numpy) whose page tables every fork copies.
    seen.add(id(seen))
    todo.append(sys.modules)
    n = 0
    get_referents = gc.get_referents
    while todo:
        o = todo.pop()
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        c = refcnt.from_address(i)
        if c.value != _IMMORTAL:
            c.value = _IMMORTAL
            n += 1
        todo.extend(get_referents(o))
    return n


_malloc_trim = _libc.malloc_trim
_malloc_trim.argtypes = (ctypes.c_size_t,)


def trim():
    """Give back to the kernel the heap pages freed since the last trim."""
    _malloc_trim(0)


_REHEARSALS = 4


def settle():
    """Before a zygote's first fork: rehearse a start and a call here, so
    the interpreter's caches and specialized bytecode along those paths are
    set in pages every child shares, then make what exists immortal and
    leave it to no collection, and move its hot code onto huge pages.
    Returns the ready message's report of the last (huge_code)."""
    environ = {k.decode(): v.decode() for k, v in posix.environ.items()}
    try:
        # More than once: CPython specializes an instruction on its second
        # run, and a child would otherwise write that into shared code.
        # Each puts sys.path back itself.
        for _ in range(_REHEARSALS):
            hearthrt.rehearse()
    except Exception as e:  # noqa: BLE001 - an optimization only
        posix.write(2, ("hearth zygote: rehearsal: %r\n" % (e,)).encode())
    finally:
        hearthrt.set_environ(environ)
    del environ  # before immortalize, which would keep it
    hearthrt.premake_output()
    immortalize()
    gc.freeze()
    # Before populate_files, which would map all of it: the pages mapped
    # now are those the rehearsals ran.
    if posix.environ.get(b"HEARTH_HUGE_CODE") == b"0":
        moved, why = 0, "off: the worker's zygote.small_code is set"
    else:
        try:
            moved, why = huge_code()
        except Exception as e:  # noqa: BLE001 - an optimization only
            moved, why = 0, "%s: %s" % (e.__class__.__name__, e)
    populate_files()
    # A full collection empties the free lists (tuples, lists, dicts...),
    # whose objects a child would otherwise reuse in place, scattered.
    gc.collect()
    fill_pools()
    # Heap pages freed by the above go back to the kernel, so a child's
    # allocations there touch fresh pages rather than copy old ones.
    trim()
    report = {"huge_code": moved}
    if why:
        report["huge_code_error"] = why
    return report


MADV_POPULATE_READ = 22
_PAGE = 4096
_madvise = _libc.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_mincore = _libc.mincore
_mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2
_HUGE = 2 << 20
# A 2 MiB stretch is moved if at least this many of its 512 pages are
# resident in the zygote once settled: one its children barely run would
# cost 2 MiB for nothing.
_HOT_PAGES = 128
# At most this much code per zygote: each moves its own copy, charged to
# the zygotes' memory budget.
_HUGE_CODE_MAX = 32 << 20
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_mprotect = _libc.mprotect
_mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_mremap = _libc.mremap
_mremap.restype = ctypes.c_void_p
_mremap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p)
_MAP_FAILED = ctypes.c_void_p(-1).value


def mappings():
    """This process's mappings from /proc/self/smaps, as [lo, hi, perms,
    file offset, inode, path, resident bytes, anonymous bytes, anonymous
    huge bytes]. smaps, not pagemap: a zygote is not dumpable, so its
    pagemap is closed even to itself."""
    out = []
    with open("/proc/self/smaps", "rb") as f:
        for line in f:
            parts = line.split(None, 5)
            if not parts:
                continue
            if len(parts) >= 5 and b"-" in parts[0] and not parts[0].endswith(b":"):
                lo, _, hi = parts[0].partition(b"-")
                path = parts[5].rstrip(b"\n") if len(parts) > 5 else b""
                out.append([int(lo, 16), int(hi, 16), parts[1], int(parts[2], 16), int(parts[4]), path, 0, 0, 0])
            elif out and parts[0] == b"Rss:":
                out[-1][6] = int(parts[1]) * 1024
            elif out and parts[0] == b"Anonymous:":
                out[-1][7] = int(parts[1]) * 1024
            elif out and parts[0] == b"AnonHugePages:":
                out[-1][8] = int(parts[1]) * 1024
    return out


def code_stretches(maps):
    """The 2 MiB-aligned stretches of code worth a huge page, as [lo, hi,
    path], given mappings(): each lies wholly in one program's or
    library's run of adjacent private, readable, not writable mappings
    with code among them (its code and the constants and headers beside
    it), whose every page is still the file's, and at least _HOT_PAGES
    of each of its 2 MiB are resident, as far as each mapping's resident
    share, spread evenly over it, tells; the most resident first, up to
    _HUGE_CODE_MAX in all. Left out: a mapping with pages
    of its own (relocated data; a page a uprobe patched, whose copy would
    keep the breakpoint without the probe), one past its file's end (a
    read there faults), an unreadable gap between segments, or a file
    that is not the one mapped (replaced, deleted)."""
    runs = []  # [lo, hi, path, has code, [(lo, hi, rss)]]
    for lo, hi, perm, off, ino, path, rss, anon, _ in maps:
        if not path.startswith(b"/") or perm[0:1] != b"r" or perm[1:2] == b"w" or perm[3:4] != b"p" or anon:
            continue
        try:
            st = posix.stat(path)
        except OSError:
            continue
        if st.st_ino != ino or off + (hi - lo) > (st.st_size + _PAGE - 1) // _PAGE * _PAGE:
            continue
        r = runs[-1] if runs else None
        if r is not None and r[1] == lo and r[2] == path:
            r[1] = hi
            r[3] = r[3] or perm[2:3] == b"x"
            r[4].append((lo, hi, rss))
        else:
            runs.append([lo, hi, path, perm[2:3] == b"x", [(lo, hi, rss)]])
    hot = []  # (resident, lo, path) of each 2 MiB
    for lo, hi, path, code, parts in runs:
        if not code:
            continue
        for c in range((lo + _HUGE - 1) // _HUGE * _HUGE, hi // _HUGE * _HUGE, _HUGE):
            resident = sum(rss * (min(h, c + _HUGE) - max(l, c)) // (h - l)
                           for l, h, rss in parts if l < c + _HUGE and h > c)
            if resident >= _HOT_PAGES * _PAGE:
                hot.append((resident, c, path))
    # The most resident first, up to the bound: a big library (a deep
    # learning framework's hundreds of MiB of code) a quarter resident
    # would otherwise be copied whole.
    hot.sort(key=lambda x: (-x[0], x[1]))
    out = []
    for _, c, path in sorted(hot[:_HUGE_CODE_MAX // _HUGE], key=lambda x: x[1]):
        if out and out[-1][1] == c and out[-1][2] == path:
            out[-1][1] = c + _HUGE
        else:
            out.append([c, c + _HUGE, path])
    return out


def _anon_huge(lo):
    """AnonHugePages, in bytes, of this process's mapping that starts at
    lo."""
    for m in mappings():
        if m[0] == lo:
            return m[8]
    return 0


def huge_code():
    """Move the code the zygote runs most onto transparent huge pages of
    its own: each stretch code_stretches picks (its pages resident now
    are mostly those settle's rehearsals and imports ran) is copied into
    an anonymous huge page that takes its place, the same bytes at the
    same address, readable and executable. Children share it as they
    share the zygote's heap, and fork copies one entry of its page table
    per 2 MiB rather than none: a child then takes no page fault on that
    code, and the TLB (on a hypervisor that shadows page tables, the
    shadow) needs one entry for it instead of up to 512. Returns (bytes
    moved, why a stretch was not, or None)."""
    try:
        hot = code_stretches(mappings())
    except OSError as e:
        return 0, "reading this process's mappings: %s" % (e,)
    moved, why = 0, None
    for lo, hi, path in hot:
        n = hi - lo
        raw = _mmap(None, n + _HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if raw in (None, _MAP_FAILED):
            why = "mmap: %s" % (posix.strerror(ctypes.get_errno()),)
            break
        new = (raw + _HUGE - 1) // _HUGE * _HUGE
        # Only [new, new+n) stays.
        if new > raw:
            _munmap(raw, new - raw)
        if raw + _HUGE > new:
            _munmap(new + n, raw + _HUGE - new)
        # Read in first, where a failure is an error: in the copy it
        # would be a SIGBUS (the file shrank, or a read failed).
        if _madvise(lo, n, MADV_POPULATE_READ) != 0:
            why = "%s: reading it in: %s" % (path.decode(errors="replace"), posix.strerror(ctypes.get_errno()))
            _munmap(new, n)
            continue
        _madvise(new, n, MADV_HUGEPAGE)
        ctypes.memmove(new, lo, n)
        collapse = ""
        if _anon_huge(new) < n and _madvise(new, n, MADV_COLLAPSE) != 0:
            collapse = " (MADV_COLLAPSE: %s)" % (posix.strerror(ctypes.get_errno()),)
        got = _anon_huge(new)
        if got < n:
            _munmap(new, n)
            why = "%s: the kernel gave %d of %d KiB as huge pages%s" % (path.decode(errors="replace"), got >> 10, n >> 10, collapse)
            continue
        if _mprotect(new, n, PROT_READ | PROT_EXEC) != 0:
            why = "mprotect: %s" % (posix.strerror(ctypes.get_errno()),)
            _munmap(new, n)
            break
        # The same bytes, so the code running now (this call's return
        # path) goes on in the copy. The kernel unmaps [lo, hi) before it
        # moves the copy there: a move that then failed (out of memory
        # for the mapping's own structures) would leave the zygote
        # without that code, dead, and the worker would start another.
        if _mremap(new, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, lo) != lo:
            why = "mremap: %s" % (posix.strerror(ctypes.get_errno()),)
            _munmap(new, n)
            break
        moved += n
    return moved, why


def populate_files():
    """Map into the zygote's page tables every page of its read-only file
    mappings (libraries' code and constants) that is in the page cache. A
    child that runs code the zygote never ran would otherwise map such a
    page alone, and smaps counts a page mapped once as the child's own.
    Pages not cached cost nothing here (they are not read in), and fork
    copies no page tables of these mappings, so forks cost the same.
    Returns how many pages it mapped."""
    try:
        f = open("/proc/self/maps", "rb")
    except OSError:
        return 0
    with f:
        lines = f.read().split(b"\n")
    n = 0
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or not parts[5].startswith(b"/") or parts[1][1:2] == b"w":
            continue
        lo, _, hi = parts[0].partition(b"-")
        lo, hi = int(lo, 16), int(hi, 16)
        vec = ctypes.create_string_buffer((hi - lo) // _PAGE)
        if _mincore(lo, hi - lo, vec) != 0:
            continue
        run = -1  # first page of the current run of cached pages
        for i, b in enumerate(vec.raw + b"\0"):
            if b & 1 and run < 0:
                run = i
            elif not b & 1 and run >= 0:
                _madvise(lo + run * _PAGE, (i - run) * _PAGE, MADV_POPULATE_READ)
                n += i - run
                run = -1
    return n


def malloc_stats():
    """pymalloc's (block size, free blocks in used pools) per size class,
    from sys._debugmallocstats (which writes to fd 2)."""
    fd = posix.memfd_create("hearth-mallocstats")
    saved = posix.dup(2)
    try:
        posix.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        posix.dup2(saved, 2)
        posix.close(saved)
    posix.lseek(fd, 0, 0)
    data = b""
    while True:
        b = posix.read(fd, 65536)
        if not b:
            break
        data += b
    posix.close(fd)
    out = []
    for line in data.split(b"\n"):
        f = line.split()
        if len(f) == 5 and f[0].isdigit():
            out.append((int(f[1]), int(f[4])))
    return out


_obj_malloc = ctypes.pythonapi.PyObject_Malloc
_obj_malloc.argtypes = (ctypes.c_size_t,)
_obj_malloc.restype = None  # the block is never freed, and no int is made
_kept = []


def fill_pools():
    """Take every free block of pymalloc's partly used pools, so that what a
    child allocates lands in fresh pools, packed, rather than in holes
    scattered over the zygote's pages (a page copied for each). Returns
    how many blocks it took."""
    # What this allocates before the loop is kept: freed after it, it
    # would leave the very holes the loop fills.
    stats = malloc_stats()
    args = [ctypes.c_size_t(size) for size, _ in stats]
    _kept.append((stats, args))
    n = 0
    for (_, avail), arg in zip(stats, args):
        for _ in range(avail):
            _obj_malloc(arg)
        n += avail
    return n


def recv(ctl):
    data, anc, _flags, _addr = ctl.recvmsg(65536, _socket.CMSG_SPACE(_MAX_FDS * 4))
    if not data:
        raise EOFError
    fds = []
    for level, kind, payload in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(payload) - len(payload) % 4
            for i in range(0, n, 4):
                fds.append(int.from_bytes(payload[i:i + 4], sys.byteorder))
    try:
        return hearthrt.loads(data), fds
    except Exception:
        for fd in fds:
            posix.close(fd)
        raise


def send(ctl, obj):
    ctl.sendall(hearthrt.dumps(obj))


# numpy's legacy global generator is an MT19937: 624 32-bit words.
_MT_WORDS = 624


def reseed():
    """Reseed what a child would otherwise share with its zygote and its
    siblings: Python's random module reseeds itself after a fork, numpy's
    global generator does not.

    numpy.random.seed() derives the state from 128 bits of entropy through
    a SeedSequence, about 0.3 ms on the start's critical path; the whole
    state read from the kernel's generator is as unpredictable and costs
    about 0.05 ms. seed() stays for a global generator that is not an
    MT19937 (numpy.random.set_bit_generator), whose set_state refuses it."""
    np_random = sys.modules.get("numpy.random")
    if np_random is None:
        return
    try:
        np = sys.modules["numpy"]
        key = np.frombuffer(posix.urandom(4 * _MT_WORDS), dtype=np.uint32)
        np_random.set_state(("MT19937", key, _MT_WORDS))
        return
    except Exception:  # noqa: BLE001 - seed() below, and its error
        pass
    try:
        np_random.seed()
    except Exception as e:  # noqa: BLE001 - numpy's own failure
        posix.write(2, ("hearth: reseeding numpy.random: %r\n" % (e,)).encode())


def arrive(req, fds=()):
    """Take the function's code (the detached mounts fds, one per
    req["mounts"] dst), uid/gid, filter and environment: all of a start
    but its handler, which no tenant code runs in. Returns the
    environment."""
    mounts = req.get("mounts") or []
    if len(mounts) != len(fds):
        raise ValueError("want one descriptor per mount, got %d for %r" % (len(fds), mounts))
    for fd, dst in zip(fds, mounts):
        move_mount(fd, dst)
        posix.close(fd)
    env = req.get("env") or {}
    uid, gid = int(req["uid"]), int(req["gid"])
    posix.setgroups([])
    posix.setresgid(gid, gid, gid)
    posix.setresuid(uid, uid, uid)
    drop_caps()
    wall_off()
    confine()
    posix.chdir(env.get("HEARTH_CODE", "/code"))
    hearthrt.set_environ(env)
    hearthrt.setup_path(env)
    return env


def serve_function(env):
    """Load the function's handler and serve it, in a child that has
    arrived. Never returns."""
    # Everything from here on runs tenant code (numpy's reseed included).
    reseed()
    hearthrt.after_first_call = trim  # what the start and first call freed
    hearthrt.run(_socket.socket(fileno=hearthrt.LISTEN_FD), env)


def become(req, fds=()):
    """Arrive (req and fds as arrive takes them), then load the handler
    and serve it. Never returns."""
    serve_function(arrive(req, fds))


def exit_code(e):
    """The status an interpreter exits with on SystemExit e: its code if
    an int, 0 for None, else 1 with the code printed to stderr."""
    c = e.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c & 0xFF
    try:
        sys.stderr.write("%s\n" % (c,))
    except Exception:  # noqa: BLE001 - stderr may be gone
        pass
    return 1


def cloned(net, body, watch=False, home=None):
    """Clone a child into namespaces of its own, run body in it and
    return (pid, pidfd, listener, why) in the parent. With watch, the
    child first installs the network filter on itself (watch_net) and
    hands its listener back, which the parent returns (else -1, with
    why it could not). With home (user and network namespace
    descriptors), the child enters those rather than making its own
    (enter_home)."""
    # No pid namespace of its own: its pid 1 would ignore the signals it
    # sends itself (a handler's os.kill or abort would not end it) and
    # leave its orphans unreaped. It stays in its zygote's, where /proc
    # shows it its own user's processes only, and its cgroup's kill ends
    # it and all it forked.
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
    if net:
        flags |= CLONE_NEWNET
    if home is not None:
        flags = 0
    if watch:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    pid, pidfd = clone(flags)
    if pid == 0:
        code = 1
        try:
            if home is not None:
                enter_home(*home)
            if watch:
                ours.close()
                hand_over_watch(theirs)
            body()
            code = 0
        except SystemExit as e:
            # The handler called sys.exit: exit as the interpreter would,
            # so the worker reports the status the handler chose.
            code = exit_code(e)
        except BaseException as e:  # noqa: BLE001 - report, never return into the zygote loop
            try:
                tb = e.__traceback__
                while tb.tb_next is not None:
                    tb = tb.tb_next
                where = "%s:%d" % (tb.tb_frame.f_code.co_name, tb.tb_lineno)
                posix.write(2, ("hearth zygote child: %r (in %s)\n" % (e, where)).encode())
            except (OSError, AttributeError):
                pass
        finally:
            hearthrt.flush()
            posix._exit(code)
    listener, why = -1, None
    if watch:
        theirs.close()
        try:
            msg, fds = recv(ours)
            if fds:
                listener = fds[0]
                for fd in fds[1:]:
                    posix.close(fd)
            else:
                why = (msg.get("error") if isinstance(msg, dict) else None) or "no listener"
        except Exception as e:  # noqa: BLE001 - whatever the child sent, the fork stands
            why = "the child sent no listener: %s" % (e,)
        finally:
            ours.close()
    return pid, pidfd, listener, why


_OK = [hearthrt.dumps({"ok": True})]  # hand_over_watch's message


def hand_over_watch(sock):
    """In a just-cloned child: install the network filter on this process
    (its only thread) and send its listener on sock (to its zygote, or a
    spare's to the worker), then close sock; or send why not. Nothing of
    the function has run yet."""
    try:
        fd = watch_net()
    except (OSError, ValueError) as e:
        sock.sendall(hearthrt.dumps({"error": str(e)}))
        sock.close()
        return
    try:
        sock.sendmsg(_OK, [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
    finally:
        posix.close(fd)
        sock.close()


class Target:
    """The descriptors of a fork or spare request, by name."""

    def __init__(self, op, req, fds, lead, extra):
        home = 2 if req.get("home") else 0
        want = lead + 4 + extra + home
        if len(fds) != want:
            raise ValueError("%s: want %d descriptors, got %d" % (op, want, len(fds)))
        self.lead = fds[:lead]
        self.scratch, self.lsock, self.out, self.err = fds[lead:lead + 4]
        self.rest = fds[lead + 4:len(fds) - home]
        # The home's descriptors are the child's to close (enter_home).
        self.home = tuple(fds[len(fds) - home:]) if home else None

    def enter(self, req, keep=-1):
        """In a just-cloned child, owner of all its namespaces: build the
        sandbox (its /tmp, host name, loopback), take its stdio and
        socket (the worker moves it into its cgroup). keep, if
        set, becomes fd LISTEN_FD + 1, and the descriptors of self.rest
        stay open; all others close."""
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        # The descriptors came in at whatever numbers were free (in a
        # node, 3 may be): move them all above the ones set below first,
        # so that no dup2 there lands on one not yet moved.
        high = {}
        for fd in [self.scratch, self.lsock, self.out, self.err] + self.lead + self.rest + ([keep] if keep >= 0 else []):
            if fd not in high:
                high[fd] = _fcntl(fd, F_DUPFD, _HIGH_FD)
        self.scratch, self.lsock, self.out, self.err = (high[fd] for fd in (self.scratch, self.lsock, self.out, self.err))
        self.lead = [high[fd] for fd in self.lead]
        self.rest = [high[fd] for fd in self.rest]
        if keep >= 0:
            keep = high[keep]
        # Mounts made here must not reach the zygote's namespace.
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        move_mount(self.scratch, "/tmp")
        limit_inotify()
        sethostname(req.get("hostname") or "hearth")
        if req.get("net") and self.home is None:
            lo_up()  # a home's is up already
        posix.setsid()
        posix.dup2(self.out, 1)
        posix.dup2(self.err, 2)
        null = posix.open("/dev/null", posix.O_RDONLY)
        posix.dup2(null, 0)
        posix.dup2(self.lsock, hearthrt.LISTEN_FD)
        first = hearthrt.LISTEN_FD + 1
        if keep >= 0:
            posix.dup2(keep, first)
            first += 1
        # The mounts still to come and the sync pipe move down, packed.
        moved = []
        for fd in self.lead + self.rest:
            if fd == keep:
                continue
            posix.dup2(fd, first)
            moved.append(first)
            first += 1
        posix.closerange(first, 1 << 16)
        hearthrt.tag_output()
        drop_bounding()
        return moved


def child_fork(req, fds):
    """Clone a function child into a sandbox of its own."""
    t = Target("fork", req, fds, 1, len(req.get("mounts") or []))

    def body():
        moved = t.enter(req)
        sync, mounts = moved[0], moved[1:]
        # The worker maps uid/gid in our user namespace, then says so.
        if posix.read(sync, 1) != b"1":
            posix._exit(1)  # the worker gave up on this start
        posix.close(sync)
        become(req, mounts)
    return cloned(req.get("net"), body, bool(req.get("watch")), t.home)


def _next(ctl):
    """A spare's next message and descriptors; a spare whose control
    socket closed first was discarded before use, and exits."""
    try:
        return recv(ctl)
    except (EOFError, OSError):
        posix._exit(0)


def _report(ctl, e):
    """Tell the worker on a spare's control socket why it failed."""
    try:
        send(ctl, {"error": "%s: %s" % (e.__class__.__name__, e)})
    except OSError:
        pass


def spare_fork(req, fds):
    """Clone a spare child into a sandbox of its own: it waits for "go".
    With req["prepare"], a spare for one function (in its home): its
    first message, "prepare", carries what "go" otherwise does, and it
    arrives (arrive) before it waits for a bare "go"."""
    t = Target("spare", req, fds, 0, 1)
    ctl_fd = t.rest[0]
    watch = bool(req.get("watch"))
    prepare = bool(req.get("prepare"))

    def body():
        if watch:
            hand_over_watch(_socket.socket(fileno=posix.dup(ctl_fd)))
        t.enter(req, keep=ctl_fd)
        ctl = _socket.socket(fileno=hearthrt.LISTEN_FD + 1)
        # No rehearsal here: the zygote's (settle) already set the shared
        # caches and specialized code, so one per spare only copied ahead
        # the pages the start copies anyway, for 0.8-1.3 ms of CPU per
        # start against 0.2 ms of p50 with starts 200 ms apart.
        env = None
        if prepare:
            # Sent as soon as the spare is made: it comes first.
            prep, pfds = _next(ctl)
            try:
                if prep.get("op") != "prepare":
                    raise ValueError("spare: want prepare, got %r" % (prep,))
                env = arrive(prep, pfds)
            except BaseException as e:  # noqa: BLE001
                _report(ctl, e)
                raise
        go, mfds = _next(ctl)
        try:
            if go.get("op") != "go":
                raise ValueError("spare: want go, got %r" % (go,))
            if prepare and (mfds or len(go) != 1):
                raise ValueError("spare: arrived already, want a bare go, got %r" % (go,))
            ctl.close()
            if prepare:
                serve_function(env)
            else:
                become(go, mfds)
        except BaseException as e:  # noqa: BLE001
            _report(ctl, e)
            raise
    return cloned(req.get("net"), body, home=t.home)


def probe():
    """Clone a child as a fork does, into namespaces of its own, and wait
    for it: {"ok": true}, or the reason this host refuses (no
    unprivileged user namespaces, for one)."""
    try:
        pid, pidfd, _, _ = cloned(True, lambda: None)
    except OSError as e:
        return {"error": "cloning into new user, pid, mount and network namespaces as an unprivileged user: %s" % (e.strerror,)}
    posix.close(pidfd)
    try:
        posix.waitpid(pid, 0)
    except ChildProcessError:
        pass  # reaped already (SIGCHLD is ignored)
    return {"ok": True}


def pidfd_self():
    """A pidfd of this process, for the worker: a zygote's pid means
    nothing outside its pid namespace."""
    return _syscall(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_long(posix.getpid()), ctypes.c_long(0))


def spawn_child(req, fds):
    """Fork a child zygote that imports more modules; return its pid and
    a pidfd of it (the worker moves it into its cgroup)."""
    if len(fds) != 1:
        raise ValueError("child: want 1 descriptor, got %d" % len(fds))
    ctl_fd = fds[0]
    pid = posix.fork()
    if pid == 0:
        code = 1
        try:
            # Nothing of the parent's may reach the packages: its control
            # socket to the worker least of all.
            posix.closerange(3, ctl_fd)
            posix.closerange(ctl_fd + 1, 1 << 16)
            ctl = _socket.socket(fileno=ctl_fd)
            # Nothing runs before the worker has moved this process into
            # its own cgroup: a process a package forks at import would
            # otherwise stay in the parent's, beyond its limits and its
            # teardown.
            if ctl.recv(16) != b"go":
                posix._exit(1)
            wall_off()
            for p in req.get("path") or []:
                if p not in sys.path:
                    sys.path.append(p)
            try:
                for m in req.get("modules", []):
                    __import__(m)
            except BaseException as e:  # noqa: BLE001
                send(ctl, {"error": "import %s: %s: %s" % (m, e.__class__.__name__, e)})
                posix._exit(1)
            # Objects that exist now are never collected or counted: the
            # collector and reference counts would otherwise touch (and copy)
            # their pages in every child.
            send(ctl, dict(settle(), ready=True))
            serve(ctl)
            code = 0
        finally:
            posix._exit(code)
    fd = _syscall(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_long(pid), ctypes.c_long(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    return pid, fd


def watch_net():
    """Install the network filter (internal/seccomp NetFilter) on this
    process, with a listener, and return the listener's descriptor: the
    process and all it starts then wait in socket(2) of an internet or
    netlink family until the worker, which reads the listener, answers
    (it gives the sandbox its network at the first)."""
    if isinstance(_net_calls, Exception):
        raise _net_calls
    for args in _net_calls:
        fd = _syscall(*args)
        if fd >= 0:
            break
        e = ctypes.get_errno()
        if e != 22:  # EINVAL: a kernel without the flag
            break
    if fd < 0:
        raise OSError(e, "seccomp listener: " + posix.strerror(e))
    return fd


def net_calls(net_filter):
    """The seccomp(2) calls that watch_net tries in turn, argument objects
    made in the zygote (a child that makes them writes to its zygote's
    pages: copies on every start), or why there are none."""
    if isinstance(net_filter, Exception):
        return net_filter
    machine = posix.uname().machine
    nr = _SYS_SECCOMP.get(machine)
    if nr is None:
        return OSError(38, "seccomp(2): no call number known for %s" % (machine,))
    _buf, prog = net_filter
    # Once the worker has read a notification, a signal no longer
    # interrupts the wait (Linux 5.19): else a caller under a stream of
    # signals would withdraw its notification and send it again, each
    # time the worker's work.
    return tuple((ctypes.c_long(nr), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                  ctypes.c_long(flags), ctypes.c_void_p(ctypes.addressof(prog)))
                 for flags in (SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                               SECCOMP_FILTER_FLAG_NEW_LISTENER))


def send_pidfd(ctl):
    """Tell the worker who this (root) zygote is: its pid means nothing
    outside its pid namespace."""
    fd = pidfd_self()
    if fd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    ctl.sendmsg([hearthrt.dumps({"pid": posix.getpid()})],
                [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
    posix.close(fd)


def reply_pid(ctl, pid, pidfd, listener=-1, why=None):
    """Send a cloned child's pid with its pidfd and, if it watches its
    sockets, its listener (else why not, if it was asked to)."""
    msg = {"pid": pid}
    fds = [pidfd]
    if listener >= 0:
        fds.append(listener)
    elif why:
        msg["net_watch_error"] = why
    try:
        ctl.sendmsg([hearthrt.dumps(msg)],
                    [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(f.to_bytes(4, sys.byteorder) for f in fds))])
    finally:
        for f in fds:
            posix.close(f)


def serve(ctl):
    while True:
        try:
            req, fds = recv(ctl)
        except (EOFError, OSError):
            posix._exit(0)  # the worker is gone
        try:
            op = req.get("op")
            if op == "fork":
                reply_pid(ctl, *child_fork(req, fds))
            elif op == "spare":
                reply_pid(ctl, *spare_fork(req, fds))
            elif op == "child":
                reply_pid(ctl, *spawn_child(req, fds))
            elif op == "ping":
                send(ctl, {"ok": True})
            elif op == "probe":
                send(ctl, probe())
            else:
                send(ctl, {"error": "unknown op %r" % (op,)})
        except Exception as e:  # noqa: BLE001
            send(ctl, {"error": "%s: %s" % (e.__class__.__name__, e)})
        finally:
            for fd in fds:
                try:
                    posix.close(fd)
                except OSError:
                    pass


def main():
    global _net_filter, _net_calls
    ctl = _socket.socket(fileno=3)
    posix.set_inheritable(3, False)
    send_pidfd(ctl)
    # Zygotes share a uid: none may trace another, or read its memory.
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    try:
        wall_off()
    except OSError as e:
        # The worker serves without zygotes, and says why.
        send(ctl, {"error": "unavailable: %s" % (e,)})
        posix._exit(1)
    use_filter(load_filter())
    try:
        _net_filter = load_filter(NET_FILE)
    except (OSError, ValueError) as e:
        _net_filter = e
    _net_calls = net_calls(_net_filter)
    # Children are reaped automatically; a function child's death is seen
    # by the worker on its socket and in its cgroup.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    hearthrt.setup_path()
    send(ctl, dict(settle(), ready=True))
    serve(ctl)


if __name__ == "__main__":
    main()
