"""The leak report parser on real reports (tests/data/leaks/, recorded from
tests/test_leaks_vm.py's guest, with the patched driver it ran, debug info
stripped) and on broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kedr_build.checks.leaks import LeakReport, Violation, parse, summary
from kedr_build.errors import KedrError

DATA = Path(__file__).resolve().parent / "data" / "leaks"
KO = {"kedr_leaker": DATA / "kedr_leaker.ko"}


def load(name: str, modules: dict[str, Path] | None = KO) -> LeakReport:
    return parse((DATA / f"{name}.txt").read_text(), modules)


def test_leaks_are_named_from_the_module_elf_init_code_included() -> None:
    rep = load("leak")
    assert rep.module == "kedr_repl_leaker" and rep.version == 1
    assert rep.config["stack_depth"] == 16
    assert len(rep.leaks) == rep.totals.live == 13
    callers = sorted(leak.caller.split("+")[0] for leak in rep.leaks)
    assert callers == sorted(["leak_from_init", "leak_kmalloc_trace", "leak_kmalloc_var",
                              "leak_cache_obj", "leak_vmalloc", "leak_pages", "leak_string",
                              "leak_realloc", "leak_kvmalloc", "leak_same_stack",
                              "leak_same_stack", "leak_same_stack", "leaker_init"])
    assert all(leak.caller.endswith(" [kedr_leaker]") for leak in rep.leaks)
    [target] = rep.targets
    assert target.name == "kedr_leaker" and target.state == "unloaded" and target.sections
    # Kernel frames keep the guest's name, without the function length.
    assert any(f == "do_one_initcall+0x59" for leak in rep.leaks for f in leak.stack)


def test_without_the_module_addresses_stay_numbers() -> None:
    rep = load("leak", None)
    assert len(rep.leaks) == 13
    assert all(leak.caller.startswith("0xffffffffc") for leak in rep.leaks)


def test_grouped_by_stack_with_a_count() -> None:
    rep = load("leak")
    groups = rep.groups()
    assert len(groups) == 11 and len(groups[0].leaks) == 3 and groups[0].bytes == 96
    text = summary(rep)
    assert text[0] == (f"{rep.totals.allocs} allocations, {rep.totals.frees} frees, "
                       f"13 possible leaks ({rep.totals.live_bytes} bytes), 0 bad frees, "
                       "0 rule violations")
    assert any("(+2 more with the same stack, 96 bytes in all)" in line for line in text)


def test_clean_report() -> None:
    rep = load("clean")
    assert rep.clean and rep.totals.allocs == rep.totals.frees
    assert summary(rep)[0].endswith(" 0 possible leaks (0 bytes), 0 bad frees, 0 rule violations")


def test_bad_frees_carry_both_sides() -> None:
    rep = load("bad")
    whats = sorted(b.what for b in rep.bad_frees)
    assert whats == ["double", "foreign", "mismatch", "mismatch", "mismatch", "mismatch"]
    double = next(b for b in rep.bad_frees if b.what == "double")
    assert double.free_caller and double.free_caller.startswith("bad_double+")
    assert double.alloc_stack[0].startswith("bad_double+")
    assert "double free: kfree(0x" in double.describe()
    foreign = next(b for b in rep.bad_frees if b.what == "foreign")
    assert foreign.describe().endswith("not a heap object: not passed on")
    assert not rep.clean


def test_rule_violations() -> None:
    rep = load("atomic")
    got = sorted((v.function, v.caller.split("+")[0], v.count, v.context) for v in rep.violations)
    assert got == [("__kmalloc", "atomic_gfp_kernel", 3, "preempt-off"),
                   ("kmalloc_trace", "bh_off_gfp_kernel", 1, "bh-off"),
                   ("mutex_lock", "atomic_mutex", 1, "preempt-off")]
    assert not rep.leaks and not rep.clean and rep.dropped_violations == 0
    assert any(line.startswith("rule violation: sleep-in-atomic: mutex_lock() at atomic_mutex+")
               and line.endswith(", once") for line in summary(rep))


def test_json_form() -> None:
    data = json.loads(load("bad").to_json())
    assert data["totals"]["bad_frees"] == 6
    assert {b["what"] for b in data["bad_frees"]} == {"double", "foreign", "mismatch"}
    assert data["leaks"][0]["function"] == "kmem_cache_create"


GOOD = (DATA / "clean.txt").read_text()


@pytest.mark.parametrize("text, message", [
    ("", "leak report is empty"),
    ("hello\n", "leak report line 1: expected 'kedr-leaks <version>'"),
    ("kedr-leaks 2\nend\n", "format version 2 is not supported"),
    (GOOD.replace("end\n", ""), "leak report is truncated (no 'end' line)"),
    ("kedr-leaks 1\nend\n", "leak report has no 'totals' line"),
    ("kedr-leaks 1\nfrobnicate x=1\nend\n", "leak report line 2: unknown record 'frobnicate'"),
    ("kedr-leaks 1\nframe 0x1 x\nend\n", "leak report line 2: frame outside a stack"),
    ("kedr-leaks 1\ntotals allocs=x\nend\n", "leak report line 2: allocs='x' is not a number"),
    ("kedr-leaks 1\ntotals allocs\nend\n", "leak report line 2: totals: expected key=value"),
    ("kedr-leaks 1\nsection target=m shndx=1 addr=0x1\nend\n",
     "leak report line 2: section of unknown target 'm'"),
    ("kedr-leaks 1\nend\nmore\n", "leak report line 3: text after 'end'"),
])
def test_bad_reports_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(KedrError) as e:
        parse(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_report_with_a_target_not_recorded_is_incomplete_never_clean() -> None:
    """judged-incomplete.txt: tests/test_judge_vm.py's report of mode rearm (clean), its
    totals line edited to dropped_targets=1 (the kzalloc() of a target's entry cannot be
    made to fail on purpose in the guest)."""
    rep = parse((DATA / "judged-incomplete.txt").read_text())
    assert rep.totals.dropped_targets == 1
    assert not rep.leaks and not rep.bad_frees and not rep.violations
    assert not rep.clean
    assert "report incomplete: 1 target modules not recorded: their judgments at init's " \
        "return and at unload are missing" in summary(rep)
    assert json.loads(rep.to_json())["totals"]["dropped_targets"] == 1
    # The same report as recorded, and reports from before the field: complete.
    whole = parse((DATA / "judged-incomplete.txt").read_text().replace(
        "dropped_targets=1", "dropped_targets=0"))
    assert whole.clean and not whole.incomplete
    assert load("clean").totals.dropped_targets == 0 and load("clean").clean


def test_an_incomplete_report_fails_the_run_and_the_leaks_check(tmp_path: Path) -> None:
    from kedr_build.packs.vmkind import _leaks
    from kedr_build.vm.printer import format_report
    from kedr_build.vm.qemu import Verdict
    from kedr_build.vm.runner import RunReport

    rep = parse((DATA / "judged-incomplete.txt").read_text())
    run = RunReport(verdict=Verdict.PASSED, reason="", steps=(), driver_log=(),
                    workload_output="", problems=(), elapsed=1.0, logs=tmp_path, leaks=rep)
    assert not run.checks_ok
    text = format_report(run, "judged")
    assert "report incomplete: 1 target modules not recorded" in text
    assert "kedr-build: judged: FAILED: 0 possible leaks, 0 bad frees, 0 rule violations, " \
        "report incomplete [" in text
    check = _leaks(run)
    assert not check.passed and "report incomplete" in check.message


def test_an_unlock_not_held_is_not_described_as_atomic_context() -> None:
    v = Violation(rule="unlock-not-held", function="mutex_unlock", caller="fz_ioctl+0x3c",
                  stack=(), count=2, context="task", preempt_count=0, pid=1, comm="kfuzz")
    assert v.describe() == ("unlock-not-held: mutex_unlock() at fz_ioctl+0x3c released a lock "
                            "that was not held, 2 times")
