"""The console parser against real console logs recorded from the pinned kernel."""

from pathlib import Path

from kedr_build.vm.console import ProblemKind, clean_lines, find_problems, strip_prefix

DATA = Path(__file__).parent / "data" / "console"


def read(name: str) -> str:
    return (DATA / name).read_text(errors="replace")


def test_clean_boot_has_no_problem() -> None:
    assert find_problems(read("chardev-ok.log")) == []


def test_null_dereference_is_one_problem_with_its_trace() -> None:
    problems = find_problems(read("oops-null-deref.log"))
    assert len(problems) == 1
    p = problems[0]
    assert p.kind is ProblemKind.BUG
    assert p.line == "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert "oops_init" in p.excerpt and "Call Trace:" in p.excerpt


def test_warning_is_found_and_excerpt_ends_at_end_trace() -> None:
    problems = find_problems(read("warn.log"))
    assert [p.kind for p in problems] == [ProblemKind.WARNING]
    assert "kedr_warn.c:7 warn_init" in problems[0].line
    assert problems[0].excerpt.splitlines()[-1].startswith("---[ end trace")


def test_panic_is_found() -> None:
    problems = find_problems(read("panic.log"))
    assert ProblemKind.PANIC in [p.kind for p in problems]
    panic = next(p for p in problems if p.kind is ProblemKind.PANIC)
    assert panic.line == "Kernel panic - not syncing: kedr_panic: deliberate panic"


def test_truncated_log_never_throws() -> None:
    text = read("oops-null-deref.log")
    at = text.index("BUG: kernel NULL")
    for cut in range(at - 5, min(len(text), at + 400), 7):
        problems = find_problems(text[:cut])
        if cut > at + len("BUG: "):
            assert problems and problems[0].kind is ProblemKind.BUG
    assert find_problems("") == []
    assert find_problems("\x00\xff garbage [ 1.0") == []


def test_printk_prefix_is_stripped() -> None:
    assert strip_prefix("[    1.616798] hello") == "hello"
    assert strip_prefix("<4>[ 12.5] WARNING: x") == "WARNING: x"
    assert strip_prefix("no prefix") == "no prefix"
    # A shell's escape sequences on the same console (busybox ash's ESC [6n before its
    # prompt, ESC 7 / ESC 8, colours) before or inside a kernel line.
    assert strip_prefix("\x1b[6n[   39.1] Kernel panic - not syncing: x") == \
        "Kernel panic - not syncing: x"
    assert strip_prefix("\x1b7\x1b[1;31m[ 2.0] BUG: y\x1b[0m\x1b8") == "BUG: y"
    assert "kedr_initfail: no such device here" in clean_lines(read("initfail.log"))


def test_warnings_of_two_cpus_interleaved_are_two_problems() -> None:
    # Two WARNs of the fuzzer's two threads (recorded on 6.12, CPU 0 then CPU 1). A
    # loaded host can stop one vCPU in the middle of its report, and the other CPU's
    # lines then come between them, a whole line at a time: interleave them so.
    lines = read("two-warnings-6.12.log").splitlines()
    warnings = [strip_prefix(ln) for ln in lines if "WARNING: CPU" in ln]
    assert len(warnings) == 2 and warnings[0] != warnings[1]
    assert [p.line for p in find_problems("\n".join(lines))] == warnings
    start = next(i for i, ln in enumerate(lines) if "cut here" in ln)
    cut = next(i for i, ln in enumerate(lines) if "end trace" in ln) + 1
    first, second = lines[start:cut], lines[cut:]
    for at in (3, 10, len(first) - 1):
        mixed = first[:at] + second + first[at:]
        assert [p.line for p in find_problems("\n".join(mixed))] == warnings, at
