# Hearth zygote: /usr/bin/python3 -S -B /hearth/zygote.py
#
# A zygote is an interpreter that has imported a set of packages and forks
# children on request. fd 3 is a SOCK_SEQPACKET control socket to the
# worker; each request is one JSON packet with descriptors attached:
#
#   {"op": "fork", "root", "mounts": [[src, dst], ...], "uid", "gid",
#    "env": {...}, "ncg": k}
#       fds: pid, mnt, uts, ipc namespaces of the target sandbox, its
#       listening socket, stdout, stderr, k cgroup.procs files, and its
#       net namespace last when "net" is true.
#       The zygote enters the sandbox's pid namespace for its children,
#       forks ONCE, and returns to its own. The child joins the other
#       namespaces and the cgroup, drops to uid/gid, loads the handler and
#       serves the socket. Reply: {"pid": host pid} or {"error": msg}.
#   {"op": "child", "modules": [...], "path": [...], "ncg": k}
#       fds: the child zygote's control socket, then k cgroup.procs files.
#       Forks a child zygote that joins its own cgroup, imports the
#       modules and serves its socket. Reply: {"pid": host pid}. The child
#       says {"ready": true} or {"error": msg} on its own socket.
#   {"op": "spare", "root", "ncg": k, "net": bool}
#       fds: as for "fork", then a control socket.
#       Forks a child that does everything "fork" does up to the point
#       where it needs the function (its mounts, uid, environment), and
#       waits on the control socket for
#         {"op": "go", "mounts": [dst, ...], "uid", "gid", "env"}
#       with one detached mount (open_tree) per dst attached, which it
#       moves into place before it drops to uid/gid and loads the
#       handler. So a start pays for none of the fork. Reply: {"pid"}.
#   {"op": "ping"} -> {"ok": true}
#
# The zygote runs as root (it must setns and join cgroups) but with an
# empty capability bounding set and no_new_privs, so neither it nor its
# children can gain privileges through exec; setuid in each child then
# clears its capabilities. A function child then installs the tenant
# seccomp filter (/hearth/seccomp.bpf, loaded once by the root zygote)
# before it runs any of the function's code or reseeds numpy. All lazy
# work (ctypes symbol lookups, opening /proc/self/ns/pid, reading the
# filter) happens here, before any fork.
import sys
import posix
import _socket
import _signal
import ctypes
import gc

import hearthrt

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_FILE = "/hearth/seccomp.bpf"

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# move_mount(2) has the same number on every architecture (new syscalls
# share one table since Linux 5.1).
SYS_MOVE_MOUNT = 429
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384

_MAX_FDS = 64


def setns(fd, kind):
    if _setns(fd, kind) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + posix.strerror(e))


def bind_ro(src, dst):
    """Bind src read-only on dst (paths in the current mount namespace)."""
    for flags, s in ((MS_BIND | MS_REC, src), (MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)):
        if _mount(s.encode() if s else None, dst.encode(), None, flags, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "mount %s on %s: %s" % (src, dst, posix.strerror(e)))


def move_mount(fd, dst):
    """Attach the detached mount tree fd (from open_tree) at dst."""
    if _syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_long(fd), ctypes.c_char_p(b""),
                ctypes.c_long(AT_FDCWD), ctypes.c_char_p(dst.encode()),
                ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "move_mount on %s: %s" % (dst, posix.strerror(e)))


def harden():
    """Empty the bounding set and set no_new_privs (effective caps stay)."""
    try:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "no_new_privs")


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


def confine():
    """Install the tenant seccomp filter on this process (a just-forked
    child, so its only thread). It needs no_new_privs (see harden), and it
    is for good: the process and all it forks stay filtered."""
    _buf, prog = _filter
    if _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
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
    leave it to no collection."""
    path = list(sys.path)
    environ = {k.decode(): v.decode() for k, v in posix.environ.items()}
    try:
        # More than once: CPython specializes an instruction on its second
        # run, and a child would otherwise write that into shared code.
        for _ in range(_REHEARSALS):
            hearthrt.rehearse()
    except Exception as e:  # noqa: BLE001 - an optimization only
        posix.write(2, ("hearth zygote: rehearsal: %r\n" % (e,)).encode())
    finally:
        sys.path[:] = path
        hearthrt.set_environ(environ)
    immortalize()
    gc.freeze()
    populate_files()
    del path, environ
    # A full collection empties the free lists (tuples, lists, dicts...),
    # whose objects a child would otherwise reuse in place, scattered.
    gc.collect()
    fill_pools()
    # Heap pages freed by the above go back to the kernel, so a child's
    # allocations there touch fresh pages rather than copy old ones.
    trim()


MADV_POPULATE_READ = 22
_PAGE = 4096
_madvise = _libc.madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_mincore = _libc.mincore
_mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)


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
    return hearthrt.loads(data), fds


def send(ctl, obj):
    ctl.sendall(hearthrt.dumps(obj))


def reseed():
    """Reseed what a child would otherwise share with its zygote and its
    siblings: Python's random module reseeds itself after a fork, numpy's
    global generator does not."""
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        try:
            np_random.seed()
        except Exception as e:  # noqa: BLE001 - numpy's own failure
            posix.write(2, ("hearth: reseeding numpy.random: %r\n" % (e,)).encode())


def become(req):
    """Drop to the function's uid/gid, seccomp filter and environment, load
    its handler and serve it. Never returns."""
    env = req.get("env") or {}
    posix.setgroups([])
    posix.setgid(int(req["gid"]))
    posix.setuid(int(req["uid"]))
    # Everything after this runs tenant code (numpy's reseed included).
    confine()
    reseed()
    posix.chdir(env.get("HEARTH_CODE", "/code"))
    hearthrt.set_environ(env)
    hearthrt.setup_path(env)
    hearthrt.after_first_call = trim  # what the start and first call freed
    hearthrt.run(_socket.socket(fileno=hearthrt.LISTEN_FD), env)


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


def forked(pidns, own_pid_ns, body):
    """Enter the target's pid namespace, fork once, run body in the child
    and return the child's host pid in the parent."""
    setns(pidns, CLONE_NEWPID)
    try:
        pid = posix.fork()
    except BaseException:
        setns(own_pid_ns, CLONE_NEWPID)
        raise
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except SystemExit as e:
            # The handler called sys.exit: exit as the interpreter would,
            # so the worker reports the status the handler chose.
            code = exit_code(e)
        except BaseException as e:  # noqa: BLE001 - report, never return into the zygote loop
            try:
                posix.write(2, ("hearth zygote child: %r\n" % (e,)).encode())
            except OSError:
                pass
        finally:
            hearthrt.flush()
            posix._exit(code)
    setns(own_pid_ns, CLONE_NEWPID)
    return pid


class Target:
    """The descriptors of a fork or spare request, by name."""

    def __init__(self, op, req, fds, extra):
        ncg = int(req.get("ncg", 0))
        net = 1 if req.get("net") else 0
        want = 7 + ncg + net + extra
        if len(fds) != want:
            raise ValueError("%s: want %d descriptors, got %d" % (op, want, len(fds)))
        self.pidns, self.mntns, self.utsns, self.ipcns, self.lsock, self.out, self.err = fds[:7]
        self.cgs = fds[7:7 + ncg]
        self.netns = fds[7 + ncg] if net else -1
        self.rest = fds[7 + ncg + net:]

    def enter(self, req, keep=-1):
        """In a just-forked child: join the target sandbox up to its cgroup and
        stdio. keep, if set, becomes fd LISTEN_FD + 1; all other fds close."""
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        setns(self.mntns, CLONE_NEWNS)
        # setns puts us at the namespace's root, where the host's tree is
        # still mounted; the sandbox is a chroot inside it (see hearth-init).
        # A pre-made sandbox gets the function's code and packages here,
        # before the chroot hides the host paths.
        root = req["root"]
        for src, dst in req.get("mounts") or []:
            bind_ro(src, root + dst)
        posix.chroot(root)
        posix.chdir("/")
        setns(self.utsns, CLONE_NEWUTS)
        setns(self.ipcns, CLONE_NEWIPC)
        if self.netns >= 0:
            setns(self.netns, CLONE_NEWNET)
        for fd in self.cgs:
            posix.write(fd, b"0")
        posix.setsid()
        posix.dup2(self.out, 1)
        posix.dup2(self.err, 2)
        null = posix.open("/dev/null", posix.O_RDONLY)
        posix.dup2(null, 0)
        posix.dup2(self.lsock, hearthrt.LISTEN_FD)
        if keep >= 0:
            posix.dup2(keep, hearthrt.LISTEN_FD + 1)
            posix.closerange(hearthrt.LISTEN_FD + 2, 1 << 16)
        else:
            posix.closerange(hearthrt.LISTEN_FD + 1, 1 << 16)
        hearthrt.tag_output()


def child_fork(req, fds, own_pid_ns):
    """Fork a function child into the target sandbox."""
    t = Target("fork", req, fds, 0)

    def body():
        t.enter(req)
        become(req)
    return forked(t.pidns, own_pid_ns, body)


def spare_fork(req, fds, own_pid_ns):
    """Fork a spare child into the target sandbox: it waits for "go"."""
    t = Target("spare", req, fds, 1)
    ctl_fd = t.rest[0]

    def body():
        t.enter(req, keep=ctl_fd)
        ctl = _socket.socket(fileno=hearthrt.LISTEN_FD + 1)
        hearthrt.rehearse()
        trim()  # what the rehearsal freed
        try:
            go, mfds = recv(ctl)
        except (EOFError, OSError):
            posix._exit(0)  # discarded before use
        try:
            mounts = go.get("mounts") or []
            if go.get("op") != "go" or len(mounts) != len(mfds):
                raise ValueError("spare: want go with one descriptor per mount, got %r" % (go,))
            for fd, dst in zip(mfds, mounts):
                move_mount(fd, dst)
                posix.close(fd)
        except BaseException as e:  # noqa: BLE001
            send(ctl, {"error": "%s: %s" % (e.__class__.__name__, e)})
            raise
        ctl.close()
        become(go)
    return forked(t.pidns, own_pid_ns, body)


def spawn_child(req, fds):
    """Fork a child zygote that imports more modules."""
    ncg = int(req.get("ncg", 0))
    if len(fds) != 1 + ncg:
        raise ValueError("child: want %d descriptors, got %d" % (1 + ncg, len(fds)))
    ctl_fd = fds[0]
    pid = posix.fork()
    if pid == 0:
        code = 1
        try:
            for fd in fds[1:]:
                posix.write(fd, b"0")
            ctl = _socket.socket(fileno=ctl_fd)
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
            settle()
            send(ctl, {"ready": True, "pid": posix.getpid()})
            serve(ctl)
            code = 0
        finally:
            posix._exit(code)
    return pid


def serve(ctl):
    own_pid_ns = posix.open("/proc/self/ns/pid", posix.O_RDONLY)
    while True:
        try:
            req, fds = recv(ctl)
        except (EOFError, OSError):
            posix._exit(0)  # the worker is gone
        try:
            op = req.get("op")
            if op == "fork":
                send(ctl, {"pid": child_fork(req, fds, own_pid_ns)})
            elif op == "spare":
                send(ctl, {"pid": spare_fork(req, fds, own_pid_ns)})
            elif op == "child":
                send(ctl, {"pid": spawn_child(req, fds)})
            elif op == "ping":
                send(ctl, {"ok": True})
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
    global _filter
    harden()
    _filter = load_filter()
    # Children are reaped automatically; a function child's death is seen
    # by the worker on its socket and in its cgroup.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
    hearthrt.setup_path()
    settle()
    ctl = _socket.socket(fileno=3)
    posix.set_inheritable(3, False)
    send(ctl, {"ready": True, "pid": posix.getpid()})
    serve(ctl)


if __name__ == "__main__":
    main()
