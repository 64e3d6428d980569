"""Suppressions on the recorded leak reports (tests/data/leaks/), and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedr_build.checks import suppress
from kedr_build.checks.leaks import LeakReport, parse, summary
from kedr_build.errors import KedrError
from kedr_build.packs.pack import PackTest

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
    # A catch-all was accepted once, and a check then said a plain "PASSED ... nothing left".
    ("leak function=*\n", "f line 1: 'leak function=*' matches every leak finding; it would "
                          "suppress everything (write 'leak all' if that is meant)"),
    ("rule kind=** frame=*\n", "f line 1: 'rule kind=** frame=*' matches every rule finding"),
])
def test_malformed_file_names_line_and_cause(text: str, message: str) -> None:
    with pytest.raises(KedrError) as e:
        suppress.parse(text, "f")
    assert str(e.value).startswith(message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KedrError, match=r"suppressions file .*nope: No such file"):
        suppress.load(tmp_path / "nope")


def test_all_is_the_explicit_catch_all_and_says_what_it_hid() -> None:
    rules = suppress.parse("leak all\nbadfree all\nrule kind=x*\n", "s")
    rep, counts = suppress.apply(load("leak"), rules)
    assert not rep.leaks and rep.suppressed == 13
    assert [(c.rule, c.count, c.category) for c in counts] == [
        ("s:1: leak all", 13, "leak"), ("s:2: badfree all", 0, "badfree"),
        ("s:3: rule kind=x*", 0, "rule")]
    assert suppress.describe(counts, ("leak", "badfree")) == (
        "13 suppressed by SUPPRESS= (s:1: leak all: 13; s:2: badfree all: 0 (matched nothing))")
    assert suppress.describe(counts, ("rule",)) == \
        "0 suppressed by SUPPRESS= (s:3: rule kind=x*: 0 (matched nothing))"
    assert suppress.describe((), ("rule",)) == ""


def test_every_verdict_says_what_was_suppressed(tmp_path: Path) -> None:
    """`leak all` on a leaking run: the pack's leaks check, the run's verdict line, the
    summary, JSON and HTML all say what was hidden (a check once said a plain "PASSED ...
    nothing left"; JUnit and HTML never mentioned it)."""
    from kedr_build.packs import report, vmkind
    from kedr_build.packs.results import ItemResult, PackReport
    from kedr_build.packs.session import DriverUnderTest
    from kedr_build.vm.printer import format_report
    from kedr_build.vm.qemu import Verdict
    from kedr_build.vm.runner import RunReport, Step

    kept, counts = suppress.apply(load("leak"), suppress.parse(
        "leak all\nrule kind=sleep-in-atomic\n", "my.supp"))
    run = RunReport(verdict=Verdict.PASSED, reason="", steps=(Step("insmod", "kedr_leaker", 0),
                                                              Step("rmmod", "kedr_leaker", 0)),
                    driver_log=(), workload_output="", problems=(), elapsed=1.0,
                    logs=tmp_path, leaks=kept, suppressed=counts, taint=1 << 12)
    driver = DriverUnderTest("leaker", (), "kedr_repl_leaker", "./kedr-env scons check")
    test = load_pack_test()
    judged = vmkind.judge(driver, test, run)
    leaks = judged.check("leaks")
    assert leaks.passed and leaks.message.endswith(
        "nothing left, no bad free; 13 suppressed by SUPPRESS= (my.supp:1: leak all: 13)"), leaks
    assert judged.check("rules").message == (
        "no API rule broken; 0 suppressed by SUPPRESS= (my.supp:2: rule kind=sleep-in-atomic: "
        "0 (matched nothing))")
    assert judged.check("loads").message == "1 insmod, 1 rmmod, all succeeded"
    assert format_report(run, "leaker").splitlines()[-1].startswith(
        "kedr-build: leaker: PASSED (13 suppressed by SUPPRESS=, 2 rules) [insmod kedr_leaker")
    items = tuple(ItemResult("leaker", test.name, c.check, "passed", c.message, "", i)
                  for i, c in enumerate(judged.checks))
    rep = PackReport("basic", "debian-6.1", "passed", items, (judged,))
    assert report.summary(rep, tmp_path)[1] == (
        f"PASSED leaker: {len(items)} checks; 13 suppressed by SUPPRESS= (my.supp:1: leak all: "
        "13; my.supp:2: rule kind=sleep-in-atomic: 0 (matched nothing))")
    assert json.loads(rep.to_json())["runs"][0]["suppressed"] == [
        {"rule": "my.supp:1: leak all", "count": 13, "category": "leak"},
        {"rule": "my.supp:2: rule kind=sleep-in-atomic", "count": 0, "category": "rule"}]
    html = report.html(rep)
    assert "leaker: 13 suppressed by SUPPRESS= (my.supp:1: leak all: 13;" in html
    assert '<li class="suppressed-rule">my.supp:1: leak all: 13</li>' in html


def load_pack_test() -> PackTest:
    from kedr_build.packs.pack import load as load_pack

    return load_pack("basic").test("load-unload")
