"""Interrupted runs: stop promptly, say so, and leave no child behind.

A VM job has children that outlive a careless parent: QEMU (run, sweep, and the
pack session's tests) and the pack session's pytest. Three rules:

* every such child is started with :func:`spawn`: it gets ``PR_SET_PDEATHSIG``
  (prctl(2)), so when its parent dies, even by SIGKILL, the kernel sends it a
  signal: SIGKILL for QEMU (nothing to save), SIGTERM for pytest (it writes its
  reports as "interrupted", then exits);
* :func:`install` puts a handler on SIGINT, SIGTERM and SIGHUP that records the
  first signal, passes it on to the live children (so a ``kill`` of the parent
  alone stops its VM now, not at the job's end) and then calls the handler it
  replaced (SCons's, which stops scheduling further targets); in a pytest session
  it also raises :class:`Interrupted` in the main thread on the first signal,
  which pytest handles as it handles Ctrl-C;
* code that waits for a child calls :func:`check` when the child ends: a VM that
  ended because of the signal raises :class:`Interrupted` and is never judged
  (a swept site is not a "crash" because the user pressed Ctrl-C).

An interrupted process exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM),
as a shell reports a command killed by that signal: :func:`exit_status`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1            # include/uapi/linux/prctl.h

# Loaded before any fork: the child of a fork must not import or dlopen anything.
_libc = ctypes.CDLL(None, use_errno=True)
# Re-entrant: the signal handler takes it (_forward) in the main thread, which may hold
# it already, in spawn() or release(), or in _forward() itself when a second signal
# comes (Ctrl-C reaches the pack's pytest as the group's SIGINT, then as the SIGTERM
# scons forwards): with a plain Lock that pytest waited on itself forever.
_lock = threading.RLock()
_children: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
_received: list[int] = []       # the first signal, once one came


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by a signal. A KeyboardInterrupt, so that nothing that
    catches errors (``except Exception``, ``except KedrError``) takes it for a finding,
    and pytest ends the session as it does on Ctrl-C."""

    def __init__(self, signum: int, partial: Any = None) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum
        self.partial = partial          # what was done before (a caller may attach it)

    @property
    def status(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def received() -> int | None:
    """The first signal this process got since :func:`install` (None: none)."""
    return _received[0] if _received else None


def check() -> None:
    """Raise :class:`Interrupted` if a signal came."""
    signum = received()
    if signum is not None:
        raise Interrupted(signum)


def exit_status() -> int | None:
    signum = received()
    return None if signum is None else 128 + signum


def die_with_parent(signum: int, parent: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies; if the
    parent is already gone (it died before the prctl), act as if it just did."""
    _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def spawn(cmd: Sequence[str], *, on_parent_death: int = signal.SIGKILL,
          forward: int = signal.SIGKILL, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(cmd, **kwargs)`` for a child that must not outlive us: it dies
    with its parent (``on_parent_death``) and gets ``forward`` when we are interrupted.
    Call :func:`release` once it has been waited for."""
    check()
    parent = os.getpid()
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        list(cmd), preexec_fn=lambda: die_with_parent(on_parent_death, parent), **kwargs)
    with _lock:
        _children[proc.pid] = (proc, forward)
    if received() is not None:          # the signal came while it was being started
        _send(proc, forward)
    return proc


def release(proc: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.pop(proc.pid, None)


def _send(proc: subprocess.Popen[bytes], signum: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass


def _forward() -> None:
    with _lock:
        children = list(_children.values())
    for proc, signum in children:
        _send(proc, signum)


Handler = Callable[[int, FrameType | None], Any]


def install(*, raise_first: bool = False) -> None:
    """Handle SIGINT, SIGTERM and SIGHUP as the module docstring says, in front of the
    handlers in place now (call it again after someone replaced them). Main thread
    only, as Python's signal.signal()."""
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if getattr(previous, "_kedr_interrupt", False):
            continue
        signal.signal(sig, _handler(previous, raise_first))


def _handler(previous: Any, raise_first: bool) -> Handler:
    def handle(signum: int, frame: FrameType | None) -> None:
        first = not _received
        if first:
            _received.append(signum)
        _forward()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        if raise_first and first:
            raise Interrupted(signum)

    setattr(handle, "_kedr_interrupt", True)
    return handle
