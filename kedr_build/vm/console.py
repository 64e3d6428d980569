"""Parse a guest's kernel console log: find oopses, BUGs, WARNINGs, panics.

Never throws on truncated or garbled input (a VM that died mid-line is the
common case). The parser works on a saved log as well as a live one, so a
recorded console can be re-judged later (``python -m kedr_build parse LOGDIR``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# "[    1.616798] text" (CONFIG_PRINTK_TIME) and "<4>[ 1.6] text" (with level)
_PREFIX = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?")


class ProblemKind(Enum):
    OOPS = "oops"
    BUG = "BUG"
    WARNING = "WARNING"
    PANIC = "panic"
    GPF = "general protection fault"
    LOCKUP = "lockup"


_MARKERS: tuple[tuple[re.Pattern[str], ProblemKind], ...] = (
    (re.compile(r"^Kernel panic - not syncing"), ProblemKind.PANIC),
    (re.compile(r"^Oops: "), ProblemKind.OOPS),
    (re.compile(r"^general protection fault"), ProblemKind.GPF),
    (re.compile(r"^BUG: "), ProblemKind.BUG),
    (re.compile(r"^kernel BUG at "), ProblemKind.BUG),
    (re.compile(r"^WARNING: "), ProblemKind.WARNING),
    (re.compile(r"^watchdog: BUG: soft lockup"), ProblemKind.LOCKUP),
    (re.compile(r"^INFO: task .* blocked for more than"), ProblemKind.LOCKUP),
    (re.compile(r"^INFO: rcu_(?:sched|preempt) (?:self-)?detected stall"), ProblemKind.LOCKUP),
)

EXCERPT_LINES = 40
_NEXT_REPORT = re.compile(r"^(?:WARNING: |-+\[ cut here \]-+$)")


@dataclass(frozen=True)
class KernelProblem:
    kind: ProblemKind
    line: str          # the line that marks it, printk prefix removed
    excerpt: str       # that line and what follows, up to the end of the report

    def __str__(self) -> str:
        return self.line


# A terminal's escape sequences (ECMA-48 CSI, and the two-byte ESC ones: ESC 7, ESC M...).
# A shell on the same serial console writes them, and a kernel line printed while one
# was going out starts with it: busybox ash asks for the cursor position (ESC [6n)
# before its prompt, and a labgrid lab machine's panic read "\x1b[6n[   39.111939]
# Kernel panic - not syncing: ...", was not found, and its run was judged a hang.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[0-Z\\-~])")


def strip_prefix(line: str) -> str:
    return _PREFIX.sub("", _ESCAPES.sub("", line.rstrip("\r")), count=1)


def clean_lines(console: str) -> list[str]:
    return [strip_prefix(ln) for ln in console.splitlines()]


def find_problems(console: str) -> list[KernelProblem]:
    lines = clean_lines(console)
    problems: list[KernelProblem] = []
    i = 0
    while i < len(lines):
        kind = classify(lines[i])
        if kind is None:
            i += 1
            continue
        end = _report_end(lines, i)
        # BUG/oops reports print several marker lines (e.g. "BUG: kernel NULL
        # pointer dereference" then "Oops: 0002"): one problem per report.
        problems.append(KernelProblem(kind, lines[i], "\n".join(lines[i:end])))
        i = end if end > i else i + 1
    return problems


def classify(line: str) -> ProblemKind | None:
    """The problem a line (printk prefix removed) starts the report of, if any."""
    for pattern, kind in _MARKERS:
        if pattern.match(line):
            return kind
    return None


def _report_end(lines: list[str], start: int) -> int:
    limit = min(len(lines), start + EXCERPT_LINES)
    for j in range(start + 1, limit):
        if lines[j].startswith("---[ end trace") or lines[j].startswith("---[ end Kernel panic"):
            return j + 1
        # Two CPUs warning at once interleave their reports line by line (printk keeps
        # only lines whole): a WARNING report has one marker line, so the next one is
        # another report, not part of this one (seen with 2 fuzzer threads on 6.12).
        if _NEXT_REPORT.match(lines[j]):
            return j
    return limit

