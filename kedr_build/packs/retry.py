"""``RETRIES=N``: a pack test whose run failed a check is run again (a fresh VM boot
for the ``vm`` kind), up to N more times, until every check has passed in some run.

A check is judged over all its runs: one that passed in every run is passed; one that
failed in every run is failed; one that failed in one run and passed in another is
**flaky** (:attr:`CheckResult.flaky` says in which runs), never a plain pass. The
evidence kept (leaks, trace, steps) is the last run's; its logs are beside the first
run's, in ``retry-<k>/``. A driver that was not built is not run again.

A run learns which attempt it is from ``session.env["KEDR_ATTEMPT"]`` ("1" for the
first run); the ``vm`` kind exports it to the workload, so a workload's log says which
run it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from kedr_build.errors import KedrError
from kedr_build.packs.results import NOT_BUILT, CheckResult, TestRun

MAX_RETRIES = 10
ATTEMPT_ENV = "KEDR_ATTEMPT"


def parse_retries(text: str) -> int:
    """RETRIES=N: 0 (no retry) to MAX_RETRIES."""
    if not text:
        return 0
    if not text.isdigit() or int(text) > MAX_RETRIES:
        raise KedrError(f"RETRIES={text}: expected how many times a failed test runs again, "
                        f"0 to {MAX_RETRIES}")
    return int(text)


def _failed(check: CheckResult) -> bool:
    return not check.passed and not check.skipped


def _unsettled(attempts: list[TestRun]) -> bool:
    """Some check has failed in every run so far (and the driver was built)."""
    if attempts[-1].reason.startswith(NOT_BUILT):
        return False
    return any(all(_failed(a.check(c.check)) for a in attempts) for c in attempts[-1].checks)


def run_with_retries(run_once: Callable[[int], TestRun], retries: int) -> TestRun:
    """``run_once(attempt)`` (attempt 1, 2, ...) until no check is failing in every run
    so far, at most ``1 + retries`` times; the runs judged together (:func:`combine`)."""
    attempts = [run_once(1)]
    while _unsettled(attempts) and len(attempts) <= retries:
        attempts.append(run_once(len(attempts) + 1))
    return combine(attempts)


def _runs(numbers: list[int]) -> str:
    return f"run{'s' if len(numbers) > 1 else ''} {', '.join(str(n) for n in numbers)}"


def judge(history: list[CheckResult]) -> CheckResult:
    """One check over its runs (first run first)."""
    last = history[-1]
    n = len(history)
    if n == 1 or last.skipped:
        return last
    failed = [k + 1 for k, c in enumerate(history) if _failed(c)]
    passed = [k + 1 for k, c in enumerate(history) if c.passed]
    if not failed:
        return last
    if not passed:
        return replace(last, message=f"{last.message} (failed in each of {n} runs)")
    good = history[passed[0] - 1]
    bad = history[failed[0] - 1]
    return replace(good, flaky=f"failed in {_runs(failed)} of {n} ({bad.message}), "
                               f"passed in {_runs(passed)}")


def combine(attempts: list[TestRun]) -> TestRun:
    """The runs of one test as one: each check judged over them (:func:`judge`), the
    last run's evidence, the elapsed time summed, and why each earlier run was retried."""
    last = attempts[-1]
    if len(attempts) == 1:
        return last
    checks = tuple(judge([a.check(c.check) for a in attempts]) for c in last.checks)
    retried = tuple(a.reason or "; ".join(f"{c.check}: {c.message}" for c in a.checks
                                          if _failed(c))
                    for a in attempts[:-1])
    return replace(last, checks=checks, attempts=len(attempts), retried=retried,
                   elapsed=sum(a.elapsed for a in attempts))
