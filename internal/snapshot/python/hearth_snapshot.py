"""After-restore support for Hearth snapshots (SnapStart-style).

A snapshot freezes a runtime after its handler module has been imported, so
every copy restored from it starts with the same memory, including the state
of every pseudo-random generator. Right after a restore the worker sends
SIGUSR2; the handler installed here then

  * reseeds Python's `random` (and numpy's global generator, if loaded)
    from os.urandom,
  * reseeds the runtime-owned state registered with `_reseed_runtime`,
  * runs the hooks handlers registered with `after_restore`, in order.

The signal is made pending before the worker connects, and Python runs
signal handlers between bytecodes of its main thread, so all of this
happens before the restored runtime answers its first connection.

Handlers use it like this:

    import hearth_snapshot

    @hearth_snapshot.after_restore
    def reconnect():
        global db
        db = connect()

The runtime calls install() before it loads the handler. Installing twice
is harmless. The module imports only the standard library's signal and
random modules (both already loaded by a typical handler).
"""

import os
import signal
import sys

SIGNAL = signal.SIGUSR2

_hooks = []
_runtime = []
restores = 0
"""How many times this process has been restored (and reseeded)."""


def after_restore(fn):
    """Register fn() to run after every restore; returns fn (a decorator)."""
    _hooks.append(fn)
    return fn


def _reseed_runtime(fn):
    """Register runtime-owned state to reseed (for the runtime's own use)."""
    _runtime.append(fn)
    return fn


def reseed():
    """Reseed the generators and run the hooks; the signal handler's body.

    A failing hook is reported on stderr and does not stop the others.
    """
    global restores
    restores += 1
    import random

    random.seed()  # from os.urandom
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        try:
            np_random.seed()
        except Exception as e:  # pragma: no cover - numpy's own failure
            _report("numpy.random.seed", e)
    for fn in list(_runtime) + list(_hooks):
        try:
            fn()
        except Exception as e:
            _report(getattr(fn, "__name__", repr(fn)), e)


def _report(name, e):
    try:
        sys.stderr.write("hearth: after-restore hook %s failed: %s: %s\n" % (name, type(e).__name__, e))
        sys.stderr.flush()
    except Exception:
        pass


def _on_signal(signum, frame):
    reseed()


def install():
    """Install the SIGUSR2 handler. Call from the main thread."""
    signal.signal(SIGNAL, _on_signal)
