"""Suppressions on the recorded leak reports (tests/data/leaks/), and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kedr_build.checks import suppress
from kedr_build.checks.leaks import LeakReport, parse, summary
from kedr_build.errors import KedrError

DATA = Path(__file__).resolve().parent / "data" / "leaks"
KO = {"kedr_leaker": DATA / "kedr_leaker.ko"}


def load(name: str) -> LeakReport:
    return parse((DATA / f"{name}.txt").read_text(), KO)


def test_leaks_suppressed_by_function_caller_and_frame() -> None:
    rules = suppress.parse("""
# the string is kept on purpose
leak function=kstrdup
leak caller=leak_same_stack          # three of them
leak frame=leak_from_init kind=vmalloc
leak function=vfree                  # matches nothing: reported as stale
""", "supp")
    rep, counts = suppress.apply(load("leak"), rules)
    assert len(rep.leaks) == 13 - 1 - 3 - 1 and rep.suppressed == 5
    assert [c.count for c in counts] == [1, 3, 1, 0]
    assert counts[1].rule == "supp:4: leak caller=leak_same_stack"
    assert not any(leak.function in ("kstrdup", "vmalloc") for leak in rep.leaks)
    assert "5 findings suppressed" in summary(rep)


def test_everything_suppressed_is_clean() -> None:
    rules = suppress.parse("leak frame=leak_*\nleak frame=leaker_init\n", "s")
    rep, _ = suppress.apply(load("leak"), rules)
    assert rep.clean and rep.suppressed == 13


def test_bad_frees_and_rules() -> None:
    rep, counts = suppress.apply(load("bad"), suppress.parse(
        "badfree kind=double\nbadfree kind=mismatch function=vfree\n", "s"))
    assert sorted(b.what for b in rep.bad_frees) == ["foreign", "mismatch", "mismatch",
                                                     "mismatch"]
    assert rep.totals.bad_frees == 4 and [c.count for c in counts] == [1, 1]
    rep, counts = suppress.apply(load("atomic"), suppress.parse(
        "rule kind=sleep-in-atomic frame=atomic_*\n", "s"))
    assert [v.function for v in rep.violations] == ["kmalloc_trace"]
    assert counts[0].count == 2


@pytest.mark.parametrize("text, message", [
    ("oops function=x\n", "f line 1: unknown category 'oops' (one of leak, badfree, rule)"),
    ("\n\nleak\n", "f line 3: leak needs at least one key=glob"),
    ("leak function\n", "f line 1: expected key=glob, got 'function'"),
    ("leak function=\n", "f line 1: expected key=glob, got 'function='"),
    ("rule name=x\n", "f line 1: unknown key 'name' (one of function, caller, frame, kind)"),
])
def test_malformed_file_names_line_and_cause(text: str, message: str) -> None:
    with pytest.raises(KedrError) as e:
        suppress.parse(text, "f")
    assert str(e.value).startswith(message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KedrError, match=r"suppressions file .*nope: No such file"):
        suppress.load(tmp_path / "nope")
