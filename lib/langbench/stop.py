"""Stopping the runner on SIGTERM or SIGINT at any moment, whatever its parent did with them.

    stop.install()      # first thing the CLI does: handlers set, both signals unblocked
    stop.check()        # raises KeyboardInterrupt if a stop signal has arrived
    with stop.deferred():          # a signal in here raises only on the way out
        proc = subprocess.Popen(...); stop.watch(proc.pid)   # the handler SIGKILLs it now

Why more than `signal.signal(SIGTERM, raise KeyboardInterrupt)`: CPython runs a Python signal
handler in the main thread at the next bytecode boundary, and that may be inside a finalizer
(a `__del__`, an io object's close on collection, a generator closed by the garbage
collector). An exception raised there is printed as "Exception ignored in ..." and dropped,
so the interrupt was lost and the sweep ran to its end with exit 0. Here the signal is kept
(sticky) as well as raised: the runner checks it before it starts an agent, after it reaps
one, and before it exits, and the handler kills the agent in flight so that a lost exception
cannot leave the runner waiting a whole batch for it.

What the parent may have done: a blocked mask is inherited across exec (it is unblocked here);
a SIG_IGN disposition is inherited too (the handlers replace it). A signal that arrives before
`install()` runs, while the disposition is still the parent's SIG_IGN, is discarded by the
kernel: nothing in the process can see it. `install()` runs before anything else in `main()`.
"""

from __future__ import annotations

import contextlib
import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: int | None = None  # the first stop signal, kept until the process ends
_watched: dict[int, int | None] = {}  # agent pid → its pidfd (None where pidfd_open fails)
_deferred = 0  # > 0: inside deferred(), where the handler records but does not raise


def _handler(signum, frame) -> None:
    global _received
    if _received is None:
        _received = signum
    for pid, fd in list(_watched.items()):
        _kill(pid, fd)
    if _deferred:
        return  # deferred() raises on its way out
    raise KeyboardInterrupt(f"signal {signum}")


def _kill(pid: int, fd: int | None) -> None:
    """SIGKILL through the pidfd where there is one: it names that process even after it has
    been reaped, so a recycled pid is never hit."""
    with contextlib.suppress(OSError):  # already gone
        if fd is not None:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def install() -> None:
    """Handle SIGTERM and SIGINT (raise KeyboardInterrupt, and remember it), then unblock them:
    a signal that was pending while the parent's mask blocked it is delivered here."""
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS))


def received() -> int | None:
    """The stop signal's number, or None when none has arrived."""
    return _received


def check() -> None:
    """Raise KeyboardInterrupt if a stop signal has arrived (its exception may have been lost)."""
    if _received is not None:
        raise KeyboardInterrupt(f"signal {_received} (received earlier)")


@contextlib.contextmanager
def deferred():
    """Inside, a stop signal is recorded (and kills the watched agents) but raises nothing; it
    raises on the way out. Wrap a child's start and its `watch`, so that no interrupt can fall
    between the two and leave a child running unwatched."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    check()


def watch(pid: int) -> None:
    """From now on a stop signal SIGKILLs process `pid` (a child of this process) at once."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        fd = None
    _watched[pid] = fd


def unwatch(pid: int) -> None:
    fd = _watched.pop(pid, None)
    if fd is not None:
        os.close(fd)


def reset() -> None:
    """Forget a received signal (tests that stop many times in one process)."""
    global _received
    _received = None
