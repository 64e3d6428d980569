"""Fault scenarios: when a fault point's calls fail.

The format is the one the replacement module's ``faults/<point>`` debugfs file
takes (replacements/runtime/kedr_faults.c parses it again and answers a bad one
with -EINVAL). A scenario is terms separated by spaces:

=================================  =======================================================
``never``                          no call fails (the default)
``always``                         every matching call fails
``nth=N``                          only the Nth matching call (N >= 1)
``every=N``                        matching calls N, 2N, 3N, ...
``after=N``                        every matching call after the first N (N >= 0)
``prob=P`` [``seed=S``]            each matching call fails with probability P: ``0`` or
                                   ``1``, then at most 18 digits after the point (kept
                                   exactly); the same seed fails the same calls of the
                                   same run
``pid=N``                          calls made by process N or its descendants
``init``                           calls made while a module's init runs
``caller=F`` / ``caller=F+0xO`` /  calls from function F of the target, at offset O,
``caller=F+0xA-0xB``               or at an offset in [A, B)
``size>N`` / ``size<N``            calls whose size is above / below N bytes
``gfp=atomic`` / ``gfp=blocking``  calls whose gfp flags cannot / can sleep
``gfp&MASK``                       calls whose gfp flags have a bit of MASK
=================================  =======================================================

At most one of never/always/nth/every/after (filters alone mean ``always``);
``prob`` combines with any of them; any other term at most once (the kernel would
keep the last). Counts are of *matching* calls, those that pass every filter, since
the scenario was set.

``FAULTS=`` on the command line sets several points: ``point: scenario`` items
separated by ``;``, e.g. ``FAULTS='kmalloc: nth=2 pid=1; kstrdup: init'``.

FAULTS is parsed once, here, into typed :class:`PointScenario` values: the config
(:mod:`kedr_build.config`) parses it, :func:`resolve` checks the points against the
replacement module once it is generated, and :meth:`Scenario.text` is the one place
the kernel's text is written. Every mistake is a :class:`FaultsError`, one line that
quotes at most a short excerpt of the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kedr_build.faults.errors import FaultsError
from kedr_build.intercept.faultpoints import FaultPoint

RULES = ("never", "always", "nth", "every", "after")
MAX_TEXT = 191          # kedr_faults.c: KEDR_SCENARIO_LEN - 1 (the text the kernel reads)
MAX_CALLER = 127        # kedr_faults.c: KEDR_CALLER_LEN - 1
MAX_PROB_DIGITS = 18    # kedr_faults.c: KEDR_PROB_DIGITS (10^18 < 2^64)
MAX_POINTS = 64         # points one FAULTS= sets (more is a typo or a script gone wrong)
EXCERPT = 40            # characters of a bad value an error quotes
_U64 = 2**64 - 1
# Decimal or 0x hex; no leading 0 (kstrtoull(s, 0) would read 010 as octal 8).
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|0|[1-9][0-9]*)\Z")
_PROB = re.compile(r"(?:0(?:\.[0-9]+)?|1(?:\.0+)?)\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]*\Z")
_CALLER = re.compile(r"(?P<fn>[^+]+)(?:\+(?P<lo>0[xX][0-9a-fA-F]+|0|[1-9][0-9]*)"
                     r"(?:-(?P<hi>0[xX][0-9a-fA-F]+|0|[1-9][0-9]*))?)?\Z")


@dataclass(frozen=True)
class Scenario:
    rule: str = "never"                 # one of RULES
    n: int = 0                          # for nth, every, after
    prob: str | None = None             # decimal text, as written ("0.25")
    seed: int | None = None
    pid: int | None = None
    init: bool = False
    caller: str | None = None           # "f", "f+0x1a" or "f+0x10-0x40"
    size_above: int | None = None
    size_below: int | None = None
    gfp: str | None = None              # "atomic", "blocking"
    gfp_mask: int | None = None

    @property
    def uses_size(self) -> bool:
        return self.size_above is not None or self.size_below is not None

    @property
    def uses_gfp(self) -> bool:
        return self.gfp is not None or self.gfp_mask is not None

    def text(self) -> str:
        """The scenario as kedr_faults.c takes it."""
        words = [self.rule if self.rule in ("never", "always") else f"{self.rule}={self.n}"]
        if self.prob is not None:
            words.append(f"prob={self.prob}")
        if self.seed is not None:
            words.append(f"seed={self.seed}")
        if self.pid is not None:
            words.append(f"pid={self.pid}")
        if self.init:
            words.append("init")
        if self.caller is not None:
            words.append(f"caller={self.caller}")
        if self.size_above is not None:
            words.append(f"size>{self.size_above}")
        if self.size_below is not None:
            words.append(f"size<{self.size_below}")
        if self.gfp is not None:
            words.append(f"gfp={self.gfp}")
        if self.gfp_mask is not None:
            words.append(f"gfp&{self.gfp_mask:#x}")
        return " ".join(words)


@dataclass(frozen=True)
class PointScenario:
    point: str
    scenario: Scenario


__all__ = ["FaultsError", "PointScenario", "Scenario", "excerpt", "parse_faults",
           "parse_scenario", "render", "resolve", "resolve_for"]


def excerpt(text: str, at: int = 0) -> str:
    """``text`` quoted, or a short piece of it around column ``at`` when it is long."""
    if len(text) <= EXCERPT:
        return repr(text)
    start = max(0, min(at - EXCERPT // 4, len(text) - EXCERPT))
    piece = text[start:start + EXCERPT]
    return (f"{'...' if start else ''}{piece!r}{'...' if start + EXCERPT < len(text) else ''}"
            f" ({len(text)} characters)")


class _Bad(Exception):
    def __init__(self, column: int, cause: str) -> None:
        super().__init__(cause)
        self.column = column
        self.cause = cause


def parse_scenario(text: str, what: str = "scenario") -> Scenario:
    """One scenario; a bad one is a KedrError naming the column (1-based) and the cause."""
    try:
        return _scenario(text, 0)
    except _Bad as e:
        raise FaultsError(f"{what} {excerpt(text, e.column)}: at column {e.column + 1}: "
                          f"{e.cause}") from None


def parse_faults(text: str, points: Mapping[str, FaultPoint] | None = None,
                 what: str = "FAULTS") -> tuple[PointScenario, ...]:
    """``point: scenario; ...``. With ``points`` (the replacement module's), an unknown
    point, or a size/gfp bound on a point whose functions have none, is an error too."""
    result: list[PointScenario] = []
    seen: set[str] = set()
    pos = 0
    try:
        for item in text.split(";"):
            start = pos
            pos += len(item) + 1
            if not item.strip():
                continue
            if len(seen) == MAX_POINTS:
                raise _Bad(start, f"more than {MAX_POINTS} fault points")
            name, colon, body = item.partition(":")
            lead = len(name) - len(name.lstrip())
            name = name.strip()
            if not colon:
                raise _Bad(start + lead, "expected 'point: scenario', got "
                                         f"{excerpt(item.strip())}")
            if len(name) > MAX_CALLER or not _IDENT.match(name):
                raise _Bad(start + lead, f"{excerpt(name)} is not a fault point name")
            if name in seen:
                raise _Bad(start + lead, f"point {name} is set twice")
            seen.add(name)
            body_at = start + len(name) + lead + 1
            scenario = _scenario(body, body_at)
            if points is not None:
                _check_point(name, scenario, points, start + lead)
            result.append(PointScenario(name, scenario))
    except _Bad as e:
        raise FaultsError(f"{what}={excerpt(text, e.column)}: at column {e.column + 1}: "
                          f"{e.cause}") from None
    return tuple(result)


def resolve(scenarios: tuple[PointScenario, ...], points: Mapping[str, FaultPoint],
            what: str = "FAULTS") -> dict[str, str]:
    """Fault point -> the scenario text the kernel reads, once the replacement module's
    points are known: an unknown point, or a size/gfp bound on a point whose functions
    have none, is a FaultsError."""
    for ps in scenarios:
        try:
            _check_point(ps.point, ps.scenario, points, 0)
        except _Bad as e:
            raise FaultsError(f"{what}: {ps.point}: {e.cause}") from None
    return {ps.point: ps.scenario.text() for ps in scenarios}


def resolve_for(scenarios: tuple[PointScenario, ...], replacement: Path,
                what: str = "FAULTS") -> dict[str, str]:
    """:func:`resolve` against the points of a generated replacement module (the
    fault_points.json beside it)."""
    from kedr_build.intercept.faultpoints import POINTS_FILE, load_points

    return resolve(scenarios, load_points(replacement.parent / POINTS_FILE), what)


def render(scenarios: tuple[PointScenario, ...]) -> str:
    """The FAULTS= value that gives these scenarios (for a printed command)."""
    return "; ".join(f"{ps.point}: {ps.scenario.text()}" for ps in scenarios)


def _check_point(name: str, sc: Scenario, points: Mapping[str, FaultPoint], at: int) -> None:
    point = points.get(name)
    if point is None:
        known = ", ".join(sorted(points)) or "none: the driver calls no function that can fail"
        raise _Bad(at, f"unknown fault point {excerpt(name)}; this driver's: {known}")
    if sc.uses_size and not point.has_size:
        raise _Bad(at, f"point {name} has no size argument for size< or size>")
    if sc.uses_gfp and not point.has_gfp:
        raise _Bad(at, f"point {name} takes no gfp flags for gfp= or gfp&")


def _number(word: str, value: str, at: int, low: int = 0) -> int:
    if not _NUMBER.match(value):
        raise _Bad(at, f"{word}: {value!r} is not a whole number")
    n = int(value, 0)
    if n < low or n > _U64:
        raise _Bad(at, f"{word}: {n} is out of range ({low}..{_U64})")
    return n


def _scenario(text: str, offset: int) -> Scenario:
    # A bound on the input before the work: a 100 KB value is refused at once.
    if len(text.strip()) > MAX_TEXT:
        raise _Bad(offset, f"longer than {MAX_TEXT} characters (the kernel reads at most "
                           f"{MAX_TEXT})")
    fields: dict[str, object] = {}
    rule_at: int | None = None
    terms: set[str] = set()
    for m in re.finditer(r"\S+", text):
        word, at = m.group(), offset + m.start()
        key, value = word, ""
        for sep in ("=", ">", "<", "&"):
            if sep in word:
                key, _, value = word.partition(sep)
                key += sep
                break
        if key in terms:
            raise _Bad(at, f"{excerpt(word)}: {key} given twice (one of each term; the "
                           "kernel would keep only the last)")
        if key not in ("never", "always", "nth=", "every=", "after="):
            terms.add(key)
        if key in ("never", "always", "nth=", "every=", "after="):
            if rule_at is not None:
                raise _Bad(at, f"{word!r}: a second count rule (one of never, always, nth=, "
                               "every=, after=)")
            rule_at = at
            fields["rule"] = key.rstrip("=")
            if key.endswith("="):
                fields["n"] = _number(word, value, at, 0 if key == "after=" else 1)
        elif key == "init" and not value:
            fields["init"] = True
        elif key == "prob=":
            if not _PROB.match(value):
                raise _Bad(at, f"{excerpt(word)}: the probability must be a decimal from 0 "
                               "to 1 (0, 1, 0.25, 1.0)")
            if len(value.partition(".")[2]) > MAX_PROB_DIGITS:
                raise _Bad(at, f"{excerpt(word)}: at most {MAX_PROB_DIGITS} digits after "
                               "the point (the kernel keeps the probability exactly)")
            fields["prob"] = value
        elif key == "seed=":
            fields["seed"] = _number(word, value, at)
        elif key == "pid=":
            pid = _number(word, value, at, 1)
            if pid > 2**22:      # PID_MAX_LIMIT on 64-bit
                raise _Bad(at, f"{word}: no process can have that pid")
            fields["pid"] = pid
        elif key == "caller=":
            c = _CALLER.match(value)
            if c is None or not _IDENT.match(c.group("fn")):
                raise _Bad(at, f"{word}: expected caller=FUNCTION[+0xOFFSET[-0xEND]]")
            if c.group("hi") and int(c.group("hi"), 0) <= int(c.group("lo"), 0):
                raise _Bad(at, f"{word}: the offset range is empty")
            if len(c.group("fn")) > MAX_CALLER:
                raise _Bad(at, f"{word}: function name longer than {MAX_CALLER}")
            fields["caller"] = value
        elif key == "size>":
            fields["size_above"] = _number(word, value, at)
        elif key == "size<":
            fields["size_below"] = _number(word, value, at)
        elif key == "gfp=":
            if value not in ("atomic", "blocking"):
                raise _Bad(at, f"{word}: gfp= is atomic or blocking (or use gfp&MASK)")
            fields["gfp"] = value
        elif key == "gfp&":
            fields["gfp_mask"] = _number(word, value, at, 1)
        else:
            raise _Bad(at, f"unknown term {word!r} (known: never, always, nth=, every=, "
                           "after=, prob=, seed=, pid=, init, caller=, size>, size<, gfp=, "
                           "gfp&)")
    if "seed" in fields and "prob" not in fields:
        raise _Bad(offset, "seed= without prob=: only a probability uses a seed")
    if rule_at is None:
        fields["rule"] = "always" if fields else "never"
    scenario = Scenario(**fields)  # type: ignore[arg-type]
    if len(scenario.text()) > MAX_TEXT:
        raise _Bad(offset, f"{len(scenario.text())} characters as the kernel reads it "
                           f"({excerpt(scenario.text())}); at most {MAX_TEXT}")
    return scenario
