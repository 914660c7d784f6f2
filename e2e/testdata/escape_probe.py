# The escape suite's probe (e2e/escape_test.go): every check an attacker
# inside a sandbox, or inside a package's import code, would try. It runs
# as a function's module (attacker and victim roles) and as the body of a
# test-built wheel whose import runs run() inside a zygote node.
#
# run(cfg) returns {"checks": {name: {"leak": bool, "detail": str}},
# "udp": {label: "sent" | error}, "info": {...}, "exhaust": {...}}.
# A check the probe cannot carry out counts as a leak ("probe error"): it
# never reports a pass it did not observe. UDP targets and the exhaustion
# of per-uid resources are judged by the test, from what the host's
# listeners and the victim function received or could still do.
#
# Every wait is short (connects 0.5 s in all, together), so a probe ends
# in about a second even when everything is filtered.
import ctypes
import errno
import hashlib
import json
import os
import resource
import select
import signal
import socket
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.inotify_init1.argtypes = (ctypes.c_int,)

IN_CLOEXEC = 0o2000000
KEY_SPEC_SESSION_KEYRING = -3
KEY_SPEC_USER_KEYRING = -4
KEYCTL_SEARCH = 10
KEYCTL_READ = 11
PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000
AF_VSOCK = 40

# What the probe holds between calls: exhausted resources, the victim's
# sockets and marker process.
HELD = {"inotify": [], "pipe": -1, "children": []}
VICTIM = {}


def ename(e):
    return errno.errorcode.get(e, str(e)) if e else "ok"


def syscall(nr, *args):
    """A raw system call; returns (result, errno name or "ok")."""
    keep, cargs = [], []
    for a in args:
        if isinstance(a, bytes):
            b = ctypes.create_string_buffer(a)
            keep.append(b)
            a = ctypes.addressof(b)
        elif isinstance(a, ctypes.Array):
            a = ctypes.addressof(a)
        cargs.append(ctypes.c_long(a))
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *cargs)
    return r, (ename(ctypes.get_errno()) if r == -1 else "ok")


def read(path, n=65536):
    with open(path, "rb") as fh:
        return fh.read(n)


def status():
    out = {}
    for line in read("/proc/self/status").decode().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def host_id(uid, idmap):
    """uid translated through a uid_map (the parent namespace's id)."""
    for line in idmap.splitlines():
        f = line.split()
        if len(f) == 3:
            inside, outside, count = int(f[0]), int(f[1]), int(f[2])
            if inside <= uid < inside + count:
                return outside + uid - inside
    return -1


def ancestors():
    pids, pid = [], os.getppid()
    while pid > 0 and len(pids) < 64:
        pids.append(pid)
        try:
            stat = read("/proc/%d/stat" % pid).decode()
            pid = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def listed_pids():
    try:
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return []


def cmdline(pid):
    try:
        return read("/proc/%d/cmdline" % pid, 4096).replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


class Report:
    def __init__(self):
        self.checks, self.udp, self.info, self.exhaust = {}, {}, {}, {}

    def check(self, name, leak, detail):
        self.checks[name] = {"leak": bool(leak), "detail": str(detail)[:1500]}

    def guarded(self, names, fn, *args):
        """Run fn; if it fails, every check it owns is a leak: nothing was
        observed to hold."""
        try:
            fn(self, *args)
        except Exception as e:  # noqa: BLE001 - reported
            for n in names:
                if n not in self.checks:
                    self.check(n, True, "probe error: %s: %s" % (e.__class__.__name__, e))

    def out(self):
        return {"checks": self.checks, "udp": self.udp, "info": self.info, "exhaust": self.exhaust}


# --- identity and capabilities ---------------------------------------------

def identity(rep, cfg):
    st = status()
    uid_map = read("/proc/self/uid_map").decode()
    host_ns = uid_map.split() == ["0", "0", "4294967295"]
    caps = {k: int(st.get(k, "0"), 16) for k in ("CapEff", "CapPrm", "CapAmb", "CapInh", "CapBnd")}
    huid = host_id(os.geteuid(), uid_map)
    rep.info.update({"uid": os.geteuid(), "host_uid": huid, "uid_map": uid_map.strip(),
                     "host_userns": host_ns, "seccomp": st.get("Seccomp"),
                     "no_new_privs": st.get("NoNewPrivs"), "pid": os.getpid(), "ppid": os.getppid(),
                     "main": getattr(sys.modules.get("__main__"), "__file__", None)})
    for ns in ("pid", "net", "user", "mnt", "ipc", "uts", "cgroup"):
        try:
            rep.info["ns_" + ns] = os.readlink("/proc/self/ns/" + ns)
        except OSError as e:
            rep.info["ns_" + ns] = "error: %s" % e
    held = caps["CapEff"] | caps["CapPrm"] | caps["CapAmb"]
    rep.check("capabilities", host_ns and held != 0,
              "uid_map %r (%s); CapEff %016x CapPrm %016x CapAmb %016x CapBnd %016x" % (
                  uid_map.strip(), "the host's user namespace" if host_ns else "a user namespace of its own",
                  caps["CapEff"], caps["CapPrm"], caps["CapAmb"], caps["CapBnd"]))
    rep.check("host_root", huid == 0, "euid %d is host uid %d" % (os.geteuid(), huid))


# --- files -----------------------------------------------------------------

def routes(cfg, pids):
    """Prefixes through which a host path might be reached: none, and the
    root of every process this one can name."""
    seen, out = set(), [""]
    for pid in [1] + ancestors() + sorted(cfg["host_pids"].values()) + pids:
        if pid not in seen:
            seen.add(pid)
            out.append("/proc/%d/root" % pid)
    return out


def files(rep, cfg):
    pids = listed_pids()[:3000]
    prefixes = routes(cfg, pids)
    # The host's /etc/shadow, or any shadow (a readable one means the
    # process has root's file access).
    got = []
    for p in prefixes:
        path = p + "/etc/shadow"
        try:
            data = read(path)
        except OSError:
            continue
        host = hashlib.sha256(data).hexdigest() == cfg["shadow_sha256"]
        got.append("%s (%s)" % (path, "the host's" if host else "not the host's"))
        if len(got) >= 5:
            break
    rep.check("read_shadow", got, "read " + ", ".join(got) if got else
              "no /etc/shadow readable through %d routes" % len(prefixes))

    # A world-readable marker file on the host, in a path no sandbox has.
    marker, want = cfg["marker_path"], cfg["marker_content"].encode()
    got = []
    for p in prefixes:
        try:
            if read(p + marker) == want:
                got.append(p + marker)
        except OSError:
            pass
        if len(got) >= 5:
            break
    rep.check("read_host_file", got, "read the host's marker through " + ", ".join(got) if got else
              "the host marker is out of reach through %d routes (direct, /proc/1/root, ancestors', "
              "host pids', listed pids' roots)" % len(prefixes))

    # Creating a file in a world-writable host directory.
    made = []
    for i, p in enumerate(prefixes[:64]):
        path = "%s%s/w-%s-%d" % (p, cfg["marker_dir"], cfg["run_id"].replace("/", "-"), i)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            made.append(path)
        except OSError:
            pass
    rep.check("write_host_file", made, "created " + ", ".join(made) if made else
              "no file created in the host's world-writable directory (%d routes)" % min(64, len(prefixes)))

    # The worker's data dir (the test's, and the default one if the host
    # has it): files by the hash of their first 4 KiB, dirs by listing.
    got = []
    for d in cfg["data_paths"]:
        for p in prefixes[:64]:
            path = p + d["path"]
            try:
                if d.get("names"):
                    names = set(os.listdir(path))
                    if set(d["names"]) <= names:
                        got.append(path + " (listed)")
                else:
                    if hashlib.sha256(read(path, 4096)).hexdigest() == d["sha256"]:
                        got.append(path + " (read)")
            except OSError:
                pass
    rep.check("read_worker_data", got, "reached " + ", ".join(got[:6]) if got else
              "no data dir path reachable: %s" % ", ".join(d["path"] for d in cfg["data_paths"]))


# --- processes -------------------------------------------------------------

def processes(rep, cfg):
    pids = listed_pids()
    rep.info["pids_visible"] = len(pids)
    host_seen, victim_seen = [], []
    for pid in pids:
        c = cmdline(pid)
        if c is None:
            continue
        if cfg["host_token"] in c:
            host_seen.append(pid)
        if cfg["victim_token"] and cfg["victim_token"] in c:
            victim_seen.append(pid)
    rep.check("see_host_processes", host_seen,
              "%d pids in /proc; the host's marker process %s" % (
                  len(pids), "is listed as %s" % host_seen if host_seen else "is not listed"))
    rep.check("see_other_sandbox_processes", victim_seen,
              "%d pids in /proc; the victim's marker process %s" % (
                  len(pids), "is listed as %s" % victim_seen if victim_seen else "is not listed"))
    # Joining another sandbox's namespaces through its processes (those
    # listed, and its marker's host pid), each in a throwaway child.
    targets = sorted(set(victim_seen + [cfg["host_pids"].get("victim_sleeper", 0)]) - {0})
    entered = []
    for pid in targets:
        for ns in ("net", "mnt", "pid", "ipc", "uts", "user", "cgroup"):
            try:
                fd = os.open("/proc/%d/ns/%s" % (pid, ns), os.O_RDONLY)
            except OSError:
                continue
            try:
                res = in_child(lambda: syscall(cfg["nr"]["setns"], fd, 0)[1])
            finally:
                os.close(fd)
            if res == "ok" and (c := cmdline(pid)) is not None and cfg["victim_token"] in c:
                entered.append("%s of %d" % (ns, pid))
    rep.check("enter_other_sandbox", entered, "setns into " + ", ".join(entered) if entered else
              "no namespace of the other sandbox's processes %s could be joined" % targets)
    tokens = {"host_sleeper": cfg["host_token"], "victim_sleeper": cfg["victim_token"], "worker": cfg["worker_token"]}
    for name, pid in sorted(cfg["host_pids"].items()):
        try:
            os.kill(pid, 0)
            res = "ok"
        except OSError as e:
            res = ename(e.errno)
        leak = res != "ESRCH"
        detail = "kill(%d, 0): %s" % (pid, res)
        c = cmdline(pid)
        if leak and c is not None and tokens.get(name) and tokens[name] not in c:
            leak = False
            detail += "; that pid is another process here (%r)" % c[:80]
        rep.check("signal_" + name, leak, detail)


def in_child(fn):
    """fn() in a forked child (so that it cannot change this process);
    returns its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            data = json.dumps(fn()).encode()
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        data += b
    os.close(r)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # SIGCHLD ignored (a zygote): reaped already
    return json.loads(data) if data else "child failed"


# --- network ---------------------------------------------------------------

def network(rep, cfg):
    payload = lambda t: ("%s %s\n" % (cfg["run_id"], t["label"])).encode()
    pending, results, conns = {}, {}, {}
    for t in cfg["targets"]:
        if t["proto"] == "udp":
            continue
        try:
            if t["proto"] == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                addr = "\0" + t["name"]
            else:
                fam = socket.AF_INET6 if ":" in t["host"] else socket.AF_INET
                s = socket.socket(fam, socket.SOCK_STREAM)
                addr = (t["host"], t["port"])
            s.setblocking(False)
            err = s.connect_ex(addr)
        except OSError as e:
            results[t["label"]] = ename(e.errno)
            continue
        if err in (0, errno.EINPROGRESS):
            pending[s] = t
        else:
            results[t["label"]] = ename(err)
            s.close()
    deadline = time.monotonic() + 0.5
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, ready, _ = select.select([], list(pending), [], left)
        for s in ready:
            t = pending.pop(s)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                results[t["label"]] = ename(err)
                s.close()
            else:
                results[t["label"]] = "connected"
                conns[s] = t
    for s, t in pending.items():
        results[t["label"]] = "timed out"
        s.close()
    # Tell the listener who connected; ask an HTTP server for its list of
    # functions (what an attacker would read).
    answers = {}
    for s, t in list(conns.items()):
        try:
            s.setblocking(True)
            s.settimeout(0.3)
            if t.get("http"):
                s.sendall(b"GET /v1/functions HTTP/1.0\r\nHost: x\r\n\r\n")
                answers[t["label"]] = s.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
            else:
                s.sendall(payload(t))
        except OSError as e:
            answers[t["label"]] = ename(e.errno)
        s.close()
    for t in cfg["targets"]:
        if t["proto"] == "udp":
            continue
        r = results.get(t["label"], "not tried")
        detail = "%s %s: %s" % (t["proto"], t.get("name") or "%s:%d" % (t["host"], t["port"]), r)
        if t["label"] in answers:
            detail += "; answered %r" % answers[t["label"]]
        rep.check(t["label"], r == "connected", detail)
    for t in cfg["targets"]:
        if t["proto"] != "udp":
            continue
        try:
            fam = socket.AF_INET6 if ":" in t["host"] else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            try:
                s.sendto(payload(t), (t["host"], t["port"]))
                rep.udp[t["label"]] = "sent"
            finally:
                s.close()
        except OSError as e:
            rep.udp[t["label"]] = ename(e.errno)


# --- keyrings --------------------------------------------------------------

def keyrings(rep, cfg):
    nr = cfg["nr"]
    try:
        proc_keys = read("/proc/keys").decode(errors="replace")
    except OSError as e:
        proc_keys = ""
        rep.info["proc_keys"] = ename(e.errno)
    for k in cfg["keys"]:
        found = []
        for ring in (KEY_SPEC_USER_KEYRING, KEY_SPEC_SESSION_KEYRING):
            kid, res = syscall(nr["keyctl"], KEYCTL_SEARCH, ring, b"user", k["desc"].encode(), 0)
            if kid < 0:
                found.append("search %d: %s" % (ring, res))
                continue
            buf = ctypes.create_string_buffer(256)
            n, res = syscall(nr["keyctl"], KEYCTL_READ, kid, buf, 256)
            found.append("search %d: found key %d, read: %s" % (ring, kid, buf.raw[:max(n, 0)] if n >= 0 else res))
        listed = k["desc"] in proc_keys
        leak = listed or any("found key" in f for f in found)
        rep.check("keyring_" + k["label"], leak, "; ".join(found) + ("; listed in /proc/keys" if listed else ""))


# --- system calls the filter must deny ------------------------------------

SECCOMP_CALLS = ("io_uring_setup", "userfaultfd", "keyctl", "bpf", "perf_event_open", "kexec_load",
                 "init_module", "ptrace_attach", "socket_vsock", "unshare_newuser")


def seccomp_calls(nr):
    """In a forked child (unshare and ptrace must not touch this process):
    each call's errno, and the child's seccomp mode. Arguments are chosen
    so that even a privileged, unfiltered call changes nothing: invalid
    flags, NULL pointers, a child of our own to attach to."""
    out = {"mode": status().get("Seccomp")}
    buf = ctypes.create_string_buffer(4096)

    def fd_call(name, *args):
        r, res = syscall(nr[name], *args)
        if r >= 0:
            os.close(r)
        return res

    out["io_uring_setup"] = fd_call("io_uring_setup", 1, buf)
    out["userfaultfd"] = fd_call("userfaultfd", 1)  # UFFD_USER_MODE_ONLY
    out["keyctl"] = syscall(nr["keyctl"], 0, KEY_SPEC_SESSION_KEYRING, 0)[1]  # KEYCTL_GET_KEYRING_ID
    out["bpf"] = syscall(nr["bpf"], 0, buf, 1 << 20)[1]  # BPF_MAP_CREATE of a zeroed attr
    out["perf_event_open"] = fd_call("perf_event_open", 0, 0, -1, -1, 0)
    out["kexec_load"] = syscall(nr["kexec_load"], 0, 0, 0, 0xFFFF0000)[1]  # invalid flags
    out["init_module"] = syscall(nr["init_module"], 0, 0, b"")[1]
    out["socket_vsock"] = fd_call("socket", AF_VSOCK, socket.SOCK_STREAM, 0)
    child = os.fork()
    if child == 0:
        time.sleep(10)
        os._exit(0)
    out["ptrace_attach"] = syscall(nr["ptrace"], PTRACE_ATTACH, child, 0, 0)[1]
    os.kill(child, signal.SIGKILL)
    try:
        os.waitpid(child, 0)
    except ChildProcessError:
        pass
    out["unshare_newuser"] = syscall(nr["unshare"], CLONE_NEWUSER)[1]  # last: it changes this process
    return out


def seccomp(rep, cfg):
    def calls():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        return seccomp_calls(cfg["nr"])
    out = in_child(calls)
    for name in SECCOMP_CALLS:
        res = out[name]
        rep.check("seccomp_" + name, not (out["mode"] == "2" and res in ("EPERM", "ENOSYS")),
                  "%s; seccomp mode %s" % (res, out["mode"]))


# --- per-uid resources -----------------------------------------------------

def exhaust(rep, cfg):
    """Use up inotify instances and processes and hold them until
    release(). Never as root of the host: its inotify instances are every
    host root process's."""
    uid_map = read("/proc/self/uid_map").decode()
    if host_id(os.geteuid(), uid_map) == 0:
        rep.exhaust["inotify"] = "not attempted: root of the host, whose instances the host's own processes need"
        rep.check("exhaust_inotify_as_host_root", True,
                  "the probe is the host's root: exhausting inotify would starve the host's root processes")
    else:
        n, res = 0, "ok"
        # Leave descriptors for the rest of the probe (sandboxes have
        # 1024, as Lambda's functions).
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        while n < min(4096, soft - 64):
            ctypes.set_errno(0)
            fd = _libc.inotify_init1(IN_CLOEXEC)
            if fd < 0:
                res = ename(ctypes.get_errno())
                break
            HELD["inotify"].append(fd)
            n += 1
        rep.exhaust["inotify"] = "%d instances, then %s" % (n, res)
    r, w = os.pipe()
    n, res = 0, "cap %d reached" % cfg["pids_cap"]
    while n < cfg["pids_cap"]:
        try:
            pid = os.fork()
        except OSError as e:
            res = ename(e.errno)
            break
        if pid == 0:
            try:
                os.closerange(0, r)
                os.closerange(r + 1, 1 << 16)
                os.read(r, 1)  # until the holder goes
            finally:
                os._exit(0)
        HELD["children"].append(pid)
        n += 1
    os.close(r)
    HELD["pipe"] = w
    rep.exhaust["pids"] = "%d processes, then %s" % (n, res)


def release_children():
    """Let the held processes go: in a zygote node they count against the
    node's own cgroup (its pids cap), and would only stop the node's own
    forks."""
    if HELD["pipe"] >= 0:
        os.close(HELD["pipe"])
        HELD["pipe"] = -1
    for pid in HELD["children"]:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def release():
    for fd in HELD["inotify"]:
        os.close(fd)
    n = len(HELD["inotify"])
    HELD["inotify"] = []
    if HELD["pipe"] >= 0:
        os.close(HELD["pipe"])
        HELD["pipe"] = -1
    for pid in HELD["children"]:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    kids = len(HELD["children"])
    HELD["children"] = []
    return {"inotify": n, "children": kids}


def run(cfg):
    rep = Report()
    t0 = time.monotonic()
    rep.guarded(["capabilities", "host_root"], identity, cfg)
    rep.guarded(["read_shadow", "read_host_file", "write_host_file", "read_worker_data"], files, cfg)
    rep.guarded(["see_host_processes", "see_other_sandbox_processes", "enter_other_sandbox"] +
                ["signal_" + n for n in cfg["host_pids"]], processes, cfg)
    rep.guarded([t["label"] for t in cfg["targets"] if t["proto"] != "udp"], network, cfg)
    rep.guarded(["keyring_" + k["label"] for k in cfg["keys"]], keyrings, cfg)
    rep.guarded(["seccomp_" + n for n in SECCOMP_CALLS], seccomp, cfg)
    if cfg.get("exhaust"):
        rep.guarded(["exhaust"], exhaust, cfg)
    rep.info["probe_s"] = round(time.monotonic() - t0, 3)
    return rep.out()


# --- the victim ------------------------------------------------------------

def gateway():
    try:
        for line in read("/proc/net/route").decode().splitlines()[1:]:
            f = line.split()
            if len(f) > 2 and f[1] == "00000000":
                return socket.inet_ntoa(int(f[2], 16).to_bytes(4, "little"))
    except OSError:
        pass
    return ""


def own_address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # sends nothing: picks the source address
        return s.getsockname()[0]
    except OSError:
        return ""
    finally:
        s.close()


def victim_setup(cfg):
    """Listen on TCP and UDP (all addresses) and on an abstract unix
    socket, start a marker process, add a key to the user keyring."""
    import subprocess
    out = {}
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", cfg["port"]))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", cfg["port"]))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + cfg["abstract"])
    unix.listen(64)
    for s in (tcp, udp, unix):
        s.setblocking(False)
    VICTIM.update(tcp=tcp, udp=udp, unix=unix)
    try:
        VICTIM["sleeper"] = subprocess.Popen([cfg["token"], "600"], executable="/bin/sleep", close_fds=True)
        out["sleeper"] = "ok"
    except OSError as e:
        out["sleeper"] = "%s" % e
    kid, res = syscall(cfg["nr"]["add_key"], b"user", cfg["key_desc"].encode(), cfg["key_secret"].encode(),
                       len(cfg["key_secret"]), KEY_SPEC_USER_KEYRING)
    out["key"] = res
    uid_map = read("/proc/self/uid_map").decode()
    out.update(addr=own_address(), gateway=gateway(), host_uid=host_id(os.geteuid(), uid_map),
               ns_pid=os.readlink("/proc/self/ns/pid"), ns_net=os.readlink("/proc/self/ns/net"))
    return out


def victim_check(cfg):
    """What the victim can still do, and what reached its sockets."""
    out = {}
    ctypes.set_errno(0)
    fd = _libc.inotify_init1(IN_CLOEXEC)
    out["inotify"] = ename(ctypes.get_errno()) if fd < 0 else "ok"
    if fd >= 0:
        os.close(fd)
    forks, res = 0, "ok"
    for _ in range(8):
        try:
            pid = os.fork()
        except OSError as e:
            res = ename(e.errno)
            break
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        forks += 1
    out["forks"], out["fork_error"] = forks, res
    got = []
    while True:
        try:
            got.append(VICTIM["udp"].recv(512).decode(errors="replace").strip())
        except BlockingIOError:
            break
    for kind in ("tcp", "unix"):
        while True:
            try:
                c, _ = VICTIM[kind].accept()
            except BlockingIOError:
                break
            c.settimeout(0.2)
            try:
                got.append(c.recv(512).decode(errors="replace").strip())
            except OSError:
                got.append("(%s connection, no payload)" % kind)
            c.close()
    out["received"] = got
    return out
