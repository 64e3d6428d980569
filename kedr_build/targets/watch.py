"""A job watched on a machine's serial console (labgrid's ShellDriver): its end, a
crash, or silence, each noticed as it happens rather than when the job's time is up.

The job runs in the background of the console's shell (its output and status into
files on the machine: targets/labgrid.py) and, when it ends, writes one line
``KEDR-JOB-END-<token> <status>`` on the console. The shell stays free meanwhile, so
the watch reads the console for:

* that line: the job ended (its status is read back from the machine);
* a kernel report that leaves the kernel damaged (vm/console.py's oops, BUG, general
  protection fault, panic: vm/qemu.py's CRASHES): a panic ends the watch at once (the
  machine is dead); the others give the job :func:`crash_grace` more to end, as the
  QEMU guest is given (vm/qemu.py's cut_after_crash), and a panic after one ends it
  then (``oops=panic``). Which reports reach the
  console depends on its log level: ShellDriver sets 1 when it logs in, so a panic
  (KERN_EMERG) does, an oops (KERN_ALERT/KERN_DEFAULT) that does not panic does not
  (it is read from ``dmesg`` once the job ends);
* silence: every :data:`POLL` seconds without an answer, a probe (``echo``) is typed;
  a machine that does not answer one in :data:`~kedr_build.targets.machine.LOST_BOUND`
  seconds has stopped answering (a hang, or a crash that printed nothing).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from kedr_build.targets.machine import LOST_BOUND, JobEnd
from kedr_build.vm.console import ProblemKind, find_problems
from kedr_build.vm.qemu import CRASHES, crash_grace

POLL = 5.0              # seconds without an answer before the console's shell is probed
END = "KEDR-JOB-END-"
ALIVE = "KEDR-ALIVE-"
# A whole line with one of vm/console.py's reports after which the kernel is damaged
# (vm/qemu.py's CRASHES; find_problems() tells them from "watchdog: BUG: soft lockup").
_CRASH = re.compile(rb"[^\r\n]*(?:Kernel panic - not syncing|Oops: |general protection fault"
                    rb"|BUG: |kernel BUG at )[^\r\n]*\r?\n")


def hidden(text: str) -> str:
    """``text`` as typed in a shell command, so that the console's echo of the command
    does not contain it (labgrid's ShellDriver hides its marker the same way)."""
    return f"{text[:4]}''{text[4:]}"


def end_line(token: str) -> str:
    """The shell command's part that writes the job's end line with status ``$?``."""
    return f"echo {hidden(END + token)} $?"


def watch_job(console: Any, token: str, timeout: float, bound: float | None = None,
              clock: Callable[[], float] = time.monotonic) -> JobEnd:
    """Watch ``console`` (labgrid's console driver: expect, sendline) until the job
    marked ``token`` ends (``JobEnd()``), a crash report or ``bound`` seconds of
    silence (:data:`LOST_BOUND`) end the watch, or ``timeout`` seconds pass
    (``timed_out``)."""
    from pexpect import TIMEOUT

    bound = LOST_BOUND if bound is None else bound

    mark = token.encode()
    patterns = [re.compile(re.escape(END.encode() + mark) + rb" (\d+)"), _CRASH,
                re.compile(re.escape(ALIVE.encode() + mark))]
    start = answered = clock()
    deadline = start + timeout
    asked: float | None = None          # when the unanswered probe was typed
    seen: list[bytes] = []
    pending = b""                       # read since the last match (a timed-out expect's)
    crashed = ""
    while True:
        now = clock()
        if now - answered >= bound and not crashed:
            return _end([*seen, pending], token, silent=now - answered)
        if now >= deadline:
            return _end([*seen, pending], token, crashed=crashed, timed_out=not crashed,
                        answering=now - answered < 2 * POLL)
        wait = min(POLL, deadline - now, answered + bound - now)
        try:
            if asked is None and now - answered >= POLL:
                console.sendline(f"echo {hidden(ALIVE + token)}")
                asked = now
            index, before, _, after = console.expect(patterns, timeout=max(wait, 0.1))
        except TIMEOUT:
            before = getattr(getattr(console, "_expect", None), "before", b"")
            pending = before if isinstance(before, bytes) else b""
            continue
        except Exception as e:  # labgrid's and pexpect's own: the console broke
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
            return _end([*seen, pending], token,
                        lost=f"lost its console: {type(e).__name__}: {first}")
        seen += [before, after]
        pending = b""
        if index == 0:
            return JobEnd()
        if index == 2:
            answered, asked = clock(), None
            continue
        problems = find_problems(after.decode("utf-8", "replace").strip())
        if not problems or problems[0].kind not in CRASHES:
            continue
        if problems[0].kind is ProblemKind.PANIC:
            # The oops that led to it (oops=panic), if the console showed one, is the
            # finding.
            return _end(seen, token, crashed=crashed or problems[0].line)
        if not crashed:
            crashed = problems[0].line
            now = clock()
            deadline = min(deadline, now + crash_grace(now - start))


def _end(seen: list[bytes], token: str, **how: Any) -> JobEnd:
    """The JobEnd, with what the console showed, without our probes."""
    text = b"".join(seen)
    lines = [ln for ln in text.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
             if token not in ln]
    return JobEnd(console="\n".join(lines), **how)
