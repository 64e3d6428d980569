"""Suppressions: findings a team has looked at and chose to ignore, counted.

A suppressions file has one rule per line (``#`` starts a comment)::

    # category  key=glob ...
    leak     function=kstrdup caller=my_probe
    leak     frame=legacy_*
    badfree  kind=foreign frame=*_compat_free
    rule     kind=sleep-in-atomic function=mutex_lock frame=board_setup

``category`` is ``leak`` (leaks and resources still held), ``badfree`` or
``rule``. Every ``key=glob`` of a rule must match (shell-style globs,
:mod:`fnmatch`). A rule with no key, or whose globs all match anything
(``leak function=*``), would hide every finding of its category: it is refused,
unless written as ``leak all`` (``badfree all``, ``rule all``), the explicit way
to suppress a whole category:

``function``  the kernel function called (``kmalloc_trace``, ``kfree``, ``mutex_lock``)
``caller``    the function of the call site (frame 0, without ``+0x..`` and ``[module]``)
``frame``     any frame of the stack (same form)
``kind``      leak: the kind (``kmalloc``, ``mutex``, ``timer``...); badfree: ``double``,
              ``foreign``, ``mismatch``, ``invalid``, ``interior``; rule: the rule
              (``sleep-in-atomic``...)

:func:`apply` returns the report without what matched, and how many findings
each rule suppressed (a rule that matched nothing is listed with 0: stale);
every report says so (:func:`describe`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from pathlib import Path

from kedr_build.checks.leaks import BadFree, Leak, LeakReport, Violation
from kedr_build.errors import KedrError

CATEGORIES = ("leak", "badfree", "rule")
KEYS = ("function", "caller", "frame", "kind")
ALL = "all"          # `leak all`: every finding of the category, on purpose


@dataclass(frozen=True)
class Suppression:
    category: str
    patterns: tuple[tuple[str, str], ...]     # (key, glob)
    line: int
    text: str

    def matches(self, function: str, kind: str, stack: tuple[str, ...], caller: str) -> bool:
        frames = [_symbol(f) for f in stack] or [_symbol(caller)]
        values = {"function": [function], "kind": [kind], "caller": [_symbol(caller)],
                  "frame": frames}
        return all(any(fnmatch.fnmatchcase(v, glob) for v in values[key])
                   for key, glob in self.patterns)


@dataclass(frozen=True)
class Suppressed:
    rule: str          # the rule as written, "file:line: text"
    count: int
    category: str = ""     # leak, badfree, rule


def describe(suppressed: tuple[Suppressed, ...] | list[Suppressed],
             categories: tuple[str, ...] = CATEGORIES) -> str:
    """One line for a verdict: how many findings the rules of these categories
    suppressed, with each rule and its count ("" when no such rule was given)."""
    rules = [s for s in suppressed if not s.category or s.category in categories]
    if not rules:
        return ""
    total = sum(s.count for s in rules)
    each = "; ".join(f"{s.rule}: {s.count}" + ("" if s.count else " (matched nothing)")
                     for s in rules)
    return f"{total} suppressed by SUPPRESS= ({each})"


def _symbol(where: str) -> str:
    """``leak_from_init+0x1e [kedr_leaker]`` -> ``leak_from_init``; hex stays hex."""
    return where.split(" ")[0].split("+")[0]


def parse(text: str, where: str) -> tuple[Suppression, ...]:
    """Rules from a file's text; ``where`` names the file in errors."""
    rules: list[Suppression] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        category, specs = words[0], words[1:]
        if category not in CATEGORIES:
            raise KedrError(f"{where} line {lineno}: unknown category {category!r} "
                            f"(one of {', '.join(CATEGORIES)})")
        if not specs:
            raise KedrError(f"{where} line {lineno}: {category} needs at least one key=glob "
                            f"({', '.join(KEYS)}); it would suppress everything (write "
                            f"'{category} {ALL}' if that is meant)")
        if specs == [ALL]:
            rules.append(Suppression(category, (), lineno, f"{where}:{lineno}: {line}"))
            continue
        patterns: list[tuple[str, str]] = []
        for spec in specs:
            key, sep, glob = spec.partition("=")
            if not sep or not glob:
                raise KedrError(f"{where} line {lineno}: expected key=glob, got {spec!r}")
            if key not in KEYS:
                raise KedrError(f"{where} line {lineno}: unknown key {key!r} "
                                f"(one of {', '.join(KEYS)})")
            patterns.append((key, glob))
        if all(not glob.strip("*") for _, glob in patterns):
            raise KedrError(f"{where} line {lineno}: {line!r} matches every {category} finding; "
                            f"it would suppress everything (write '{category} {ALL}' if that "
                            "is meant)")
        rules.append(Suppression(category, tuple(patterns), lineno, f"{where}:{lineno}: {line}"))
    return tuple(rules)


def load(path: Path) -> tuple[Suppression, ...]:
    try:
        text = path.read_text()
    except OSError as e:
        raise KedrError(f"suppressions file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise KedrError(f"suppressions file {path}: not a text file") from None
    return parse(text, str(path))


def apply(report: LeakReport, rules: tuple[Suppression, ...]
          ) -> tuple[LeakReport, tuple[Suppressed, ...]]:
    """The report without suppressed findings, and the count per rule."""
    counts = {r.text: 0 for r in rules}
    category = {r.text: r.category for r in rules}

    def suppressed(category: str, function: str, kind: str, stack: tuple[str, ...],
                   caller: str) -> bool:
        for r in rules:
            if r.category == category and r.matches(function, kind, stack, caller):
                counts[r.text] += 1
                return True
        return False

    leaks: list[Leak] = [leak for leak in report.leaks if not suppressed(
        "leak", leak.function, leak.kind, leak.stack, leak.caller)]
    bad: list[BadFree] = [b for b in report.bad_frees if not suppressed(
        "badfree", b.function, b.what, b.stack, b.caller)]
    rules_left: list[Violation] = [v for v in report.violations if not suppressed(
        "rule", v.function, v.rule, v.stack, v.caller)]
    gone_bad = len(report.bad_frees) - len(bad)
    totals = replace(report.totals, bad_frees=report.totals.bad_frees - gone_bad)
    kept = replace(report, leaks=tuple(leaks), bad_frees=tuple(bad),
                   violations=tuple(rules_left), totals=totals,
                   suppressed=sum(counts.values()))
    return kept, tuple(Suppressed(text, n, category[text]) for text, n in counts.items())
