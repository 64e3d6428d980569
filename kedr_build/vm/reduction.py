"""What ``kfuzz -M`` said (``replacements/guest/kfuzz.c``): the shortest sequence of a
fuzz run's recorded operations that still fails, for each kind of failure the guest
saw (``kernel``: a WARN/BUG/oops in the kernel log; ``leaks``: objects the replacement
module still holds after the driver's unload, or bad frees; ``rules``: rule violations,
counted; ``loads``: a driver that did not unload, judged by the references to it its
replay leaves, in the driver still loaded), and how its three replays went; a hang and a
taint with no WARN/BUG line are reduced across boots (:mod:`kedr_build.vm.reboots`,
the same :class:`Reduction` with its boots and seconds). :func:`why_not` says why the
other failures of a fuzz run carry no sequence.

The lines come from the run's fuzz reduction section (after the judged run)::

    KFUZZ reduce class=kernel
    KFUZZ reduce-start ops=20000
    KFUZZ reduced ops=2 attempts=54 minimal
    KFUZZ op thread=0 index=1461 open path=/dev/x fd=2 ret=6
    KFUZZ op thread=0 index=1470 ioctl fd=2 cmd=0x81003303 arg=valid size=256 ret=0
    KFUZZ replay class=kernel fails=3 of 3

A truncated section (the guest died) gives what came before the cut; never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CHECKS = ("kernel", "leaks", "rules", "loads")  # the pack checks a reduction is made for

_CLASS = re.compile(r"^KFUZZ reduce class=(\w+)$")
_START = re.compile(r"^KFUZZ reduce-start ops=(\d+)$")
_DONE = re.compile(r"^KFUZZ reduced ops=(\d+) attempts=(\d+) ([\w-]+)$")
_NONE = re.compile(r"^KFUZZ reduce-none ops=(\d+) attempts=(\d+) why=([\w-]+)$")
_OP = re.compile(r"^KFUZZ op thread=(\d+) index=(\d+) (.*?)(?: ret=.*)?$")
_REPLAY = re.compile(r"^KFUZZ replay class=(\w+) fails=(\d+) of (\d+)$")

_HOW = {"minimal": "1-minimal", "budget-reached": "the attempt budget ran out",
        "time-reached": "the time budget ran out",
        "guest-lost": "cut short: a reduction boot gave no answer",
        "oracle-failed": "stopped: a driver would not load or unload",
        "replayed-in-one-thread-it-passes":
            "the recorded operations replayed in one thread do not fail (a race, or ops "
            "older than the record)"}


@dataclass(frozen=True)
class Reduction:
    check: str                  # the check it reduces for: one of CHECKS
    recorded: int = 0           # operations in the record (all threads)
    ops: tuple[str, ...] = ()   # the shortest failing sequence, "t0#1461 open path=... fd=2"
    attempts: int = 0
    outcome: str = ""           # minimal, budget-reached, oracle-failed, or why not reduced
    reduced: bool = False       # a sequence that fails was found (ops)
    replays: int = 0            # replays of it in fresh loads...
    replay_fails: int = 0       # ... and how many failed again
    boots: int = 0              # fresh boots it took (a hang or a taint: vm/reboots.py)...
    seconds: float = 0.0        # ... and their seconds
    budget: str = ""            # ... under this budget ("200 attempts, 300 s")
    saved: str = ""             # ... the sequence kept beside the logs (CLASS.seq)

    def describe(self) -> str:
        how = _HOW.get(self.outcome, self.outcome or "cut short")
        boots = (f" in {self.boots} fresh boots, {self.seconds:.0f} s (budget "
                 f"{self.budget})" if self.boots else "")
        if not self.reduced:
            return (f"not reduced ({how}; {self.attempts} attempts{boots} over "
                    f"{self.recorded} recorded operations)")
        said = (f"shortest failing sequence: {len(self.ops)} of {self.recorded} operations "
                f"(ddmin, {self.attempts} attempts{boots}, {how}")
        if self.replays and self.boots:
            said += f"; replayed in one more fresh boot: failed {self.replay_fails} of 1"
        elif self.replays:
            where = ("in the driver that did not unload" if self.check == "loads"
                     else "in fresh loads")
            said += f"; replayed {self.replays} times {where}: failed {self.replay_fails}"
        kept = f" (kept in {self.saved})" if self.saved else ""
        return f"{said}): {'; '.join(self.ops)}{kept}"


def describe_ops(lines: Iterable[str]) -> tuple[str, ...]:
    """kfuzz's ``KFUZZ op`` lines as a reduction names them: "t0#1461 open path=... fd=2"."""
    return tuple(f"t{m.group(1)}#{m.group(2)} {m.group(3)}"
                 for m in map(_OP.match, (ln.strip() for ln in lines)) if m)


def parse(lines: Iterable[str]) -> dict[str, Reduction]:
    """check -> its reduction."""
    out: dict[str, Reduction] = {}
    cur: dict[str, object] | None = None
    ops: list[str] = []

    def close() -> None:
        if cur is not None:
            out[str(cur["check"])] = Reduction(ops=tuple(ops), **cur)  # type: ignore[arg-type]

    for line in lines:
        line = line.strip()
        if m := _CLASS.match(line):
            close()
            cur, ops = {"check": m.group(1)}, []
        elif cur is None:
            continue
        elif m := _START.match(line):
            cur["recorded"] = int(m.group(1))
        elif m := _DONE.match(line):
            cur.update(attempts=int(m.group(2)), outcome=m.group(3), reduced=True)
        elif m := _NONE.match(line):
            cur.update(attempts=int(m.group(2)), outcome=m.group(3))
        elif (m := _OP.match(line)) and cur.get("reduced"):
            ops.append(f"t{m.group(1)}#{m.group(2)} {m.group(3)}")
        elif (m := _REPLAY.match(line)) and m.group(1) == cur["check"]:
            cur.update(replay_fails=int(m.group(2)), replays=int(m.group(3)))
    close()
    return out


def why_not(check: str, lost: bool, unload_failed: bool, kernel_lines: bool,
            lost_reduced_as: str = "") -> str:
    """Why a failed ``check`` of a fuzz run has no reduction: ``lost``, the guest was
    lost and no record came back (one lost in the fuzz step is reduced across boots
    from the shared memory's record: :mod:`kedr_build.vm.shm`, :mod:`kedr_build.vm.reboots`);
    ``unload_failed``, a driver did not unload (no fresh load to replay in: only
    ``loads`` itself reduces, in the driver still loaded);
    ``kernel_lines``, the log had a WARN/BUG line (without one, the kernel check failed
    on the taint alone: reduced across boots when the fuzzing or the drivers' unload
    tainted it);
    ``lost_reduced_as``: the check under which what ended a guest lost mid-fuzz is
    reduced (the others failed only for want of what the lost guest never sent)."""
    if lost and lost_reduced_as:
        return (f"not reduced on its own: the guest was lost while the fuzzer ran, and "
                f"what ended it is reduced under {lost_reduced_as}")
    if lost:
        return ("not reduced: the guest died or was lost, and no recorded operations came "
                "back (lost outside the fuzz step, or on a real machine, where no memory "
                "outlives the guest)")
    if unload_failed and check != "loads":
        return ("not reduced: a driver did not unload, so there is no fresh load to "
                "replay the operations in")
    if unload_failed:
        return ("not reduced: no reduction ran for it (the fuzzer did not run, or the "
                "guest stopped before the reduction)")
    if check == "kernel" and not kernel_lines:
        return ("not reduced: the kernel was tainted with no WARN/BUG line, but neither "
                "while the fuzzer ran nor at the drivers' unload (at their load, say, "
                "or in the workload)")
    return "not reduced: the guest saw no failure of this kind to reduce"
