"""The ``vm`` test kind: one boot loads the patched drivers (``cycles`` times), runs
the workload, unloads them, and judges every check from that one run:

* ``loads``    every insmod and rmmod succeeded, and the VM came back
* ``workload`` the workload ran and exited 0 (with ``copies = N``: N copies of it at
               once, a stress, each exiting 0)
* ``kernel``   no oops/BUG/WARNING/panic, and no taint beyond out-of-tree and unsigned
* ``leaks``    nothing left allocated or held, no bad free
* ``rules``    no kernel API rule broken (sleep in atomic context, ...)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kedr_build.checks import suppress
from kedr_build.errors import KedrError
from kedr_build.kernel import provision
from kedr_build.packs import retry
from kedr_build.packs.pack import PackTest
from kedr_build.packs.results import CheckResult, LeakGroupInfo, TestRun
from kedr_build.packs.session import DriverUnderTest, Session, attached
from kedr_build.vm.qemu import Verdict
from kedr_build.vm.runner import RunReport, run_modules
from kedr_build.vm.taint import ALLOWED_TAINT, taint_letters

def run(driver: DriverUnderTest, test: PackTest, logdir: Path, session: Session) -> TestRun:
    workload = Path(driver.workload) if driver.workload else None
    # With DEVICES= and no WORKLOAD=, the devices' own workloads run (vm.runner).
    if test.params["workload"] == "required" and workload is None and not driver.devices:
        # Not run, never passed: whether that fails the verdict is the pack's call
        # (the test's ``blocker``).
        message = "no workload: give WORKLOAD=script.sh (or put workload.sh in the driver)"
        return TestRun(driver.name, test.name, test.kind, reason=f"not run: {message}",
                       checks=tuple(CheckResult(c, False, f"not run: {message}", skipped=True)
                                    for c in test.checks))
    if test.params["workload"] == "none":
        workload = None
    suppressions = suppress.load(Path(driver.suppress)) if driver.suppress else ()
    timeout = float(test.params["timeout"]) or session.vm_timeout
    try:
        if session.target:
            return judge(driver, test, on_machine(driver, logdir, session, timeout,
                                                suppressions, workload=workload,
                                                cycles=test.params["cycles"],
                                                copies=test.params["copies"]))
        kernel = provision.ensure(session.kernel)
        report = run_modules(kernel, [Path(m) for m in driver.modules], logdir,
                             workload=workload, timeout=timeout,
                             trace_providers=(driver.replacement,), intree=driver.modprobe,
                             cpus=session.vm_cpus, suppressions=suppressions,
                             cycles=test.params["cycles"], copies=test.params["copies"],
                             attempt=int(session.env.get(retry.ATTEMPT_ENV, "1")),
                             devices=attached(driver, kernel))
    except KedrError as e:
        return TestRun(driver.name, test.name, test.kind, reason=str(e), logs=str(logdir),
                       checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
    return judge(driver, test, report)


def on_machine(driver: DriverUnderTest, logdir: Path, session: Session, timeout: float,
               suppressions: tuple[suppress.Suppression, ...], **steps: Any) -> RunReport:
    """The same run on a real machine (TARGET=ssh://, labgrid:): its own kernel, no boot
    of ours (a labgrid environment's strategy may power it on). ``steps``: the run's
    (run_on_machine's workload, cycles, fuzz, ...: the fuzz and reload kinds' too)."""
    from kedr_build.targets.connect import connect, power_for
    from kedr_build.targets.machine import run_on_machine
    from kedr_build.targets.spec import parse_target

    target = parse_target(session.target)
    if not target.real:
        raise KedrError(f"TARGET={session.target}: not a real machine")
    report = run_on_machine(connect(target, Path(session.ssh_config) if session.ssh_config
                                    else None),
                            [Path(m) for m in driver.modules], logdir, timeout=timeout,
                            trace_providers=(driver.replacement,), intree=driver.modprobe,
                            suppressions=suppressions,
                            attempt=int(session.env.get(retry.ATTEMPT_ENV, "1")),
                            power=power_for(target), **steps)
    if report.left_as_found:
        # Not a check of the driver, but never silent: the test's reason says it.
        report = dataclasses.replace(report, reason="; ".join(
            r for r in (report.reason, f"TARGET={target} {report.left_as_found}") if r))
    return report


def judge(driver: DriverUnderTest, test: PackTest, report: RunReport) -> TestRun:
    checks = tuple(_suppressed(_CHECKS[c](report), report) for c in test.checks)
    copies = test.params.get("copies", 1)
    if copies > 1:
        checks = tuple(CheckResult(c.check, c.passed, f"{copies} copies at once: {c.message}")
                       if c.check == "workload" else c for c in checks)
    leaks = report.leaks
    groups: tuple[LeakGroupInfo, ...] = ()
    bad: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()
    if leaks is not None:
        groups = tuple(LeakGroupInfo(count=len(g.leaks), bytes=g.bytes,
                                     function=g.leaks[0].function, caller=g.leaks[0].caller,
                                     stack=g.stack) for g in leaks.groups())
        bad = tuple(b.describe() for b in leaks.bad_frees)
        violations = tuple(v.describe() for v in leaks.violations)
    return TestRun(driver=driver.name, test=test.name, kind=test.kind, checks=checks,
                   elapsed=round(report.elapsed, 1), logs=str(report.logs),
                   reason=report.reason,
                   steps=tuple(f"{s.action} {s.target} {s.status}" for s in report.steps),
                   leak_groups=groups, bad_frees=bad, violations=violations,
                   problems=tuple(str(p) for p in report.problems),
                   trace_calls=dict(report.trace_calls), taint=report.taint,
                   suppressed=report.suppressed)


# The suppression categories (kedr_build.checks.suppress) each check judges.
_SUPPRESSED_BY = {"leaks": ("leak", "badfree"), "rules": ("rule",)}


def _suppressed(result: CheckResult, r: RunReport) -> CheckResult:
    """A check that SUPPRESS= rules judged says what they hid (a PASSED with every
    finding suppressed must not read like a clean run)."""
    said = suppress.describe(r.suppressed, _SUPPRESSED_BY.get(result.check, ()))
    if not said or r.leaks is None:
        return result
    return CheckResult(result.check, result.passed, f"{result.message}; {said}",
                       result.skipped, result.reproduce)


def _loads(r: RunReport) -> CheckResult:
    if r.lost:
        return CheckResult("loads", False, r.reason)
    bad = [s for s in r.steps if s.action in ("insmod", "rmmod", "modprobe") and not s.ok]
    if bad:
        return CheckResult("loads", False, r.reason if r.verdict is Verdict.FAILED
                           else f"{bad[0].action} {bad[0].target} failed "
                                f"(status {bad[0].status})")
    loads = sum(1 for s in r.steps if s.action == "insmod")
    if not loads:
        return CheckResult("loads", False, "no module was loaded")
    return CheckResult("loads", True, f"{loads} insmod, "
                       f"{sum(1 for s in r.steps if s.action == 'rmmod')} rmmod, all succeeded")


def _workload(r: RunReport) -> CheckResult:
    steps = [s for s in r.steps if s.action == "workload"]
    if not steps and r.lost:
        return CheckResult("workload", False, r.reason)
    if not steps:
        return CheckResult("workload", False, "the workload did not run"
                           + (f": {r.reason}" if r.reason else ""))
    s = steps[-1]
    if not s.ok:
        tail = r.workload_output.strip().splitlines()[-1:] or [""]
        return CheckResult("workload", False, f"workload {s.target} exited with status "
                           f"{s.status}" + (f": {tail[0]}" if tail[0] else ""))
    return CheckResult("workload", True, f"workload {s.target} exited 0")


def _kernel(r: RunReport) -> CheckResult:
    if r.problems:
        return CheckResult("kernel", False, f"kernel {r.problems[0].kind.value}: "
                           f"{r.problems[0].line}" + (f" (+{len(r.problems) - 1} more)"
                                                      if len(r.problems) > 1 else ""))
    if r.lost:
        return CheckResult("kernel", False, r.reason)
    if r.taint is None:
        return CheckResult("kernel", False, "the guest did not report the kernel's taint")
    extra = r.taint & ~ALLOWED_TAINT
    if extra:
        return CheckResult("kernel", False, f"kernel tainted {taint_letters(r.taint)} "
                           f"({r.taint}): {taint_letters(extra)} beyond out-of-tree/unsigned")
    return CheckResult("kernel", True, "no oops, BUG, WARNING or panic; taint "
                       f"{taint_letters(r.taint) or 'none'}")


def _leaks(r: RunReport) -> CheckResult:
    if r.leaks is None:
        return CheckResult("leaks", False, "no leak report: " + (r.leaks_error or r.reason
                                                                 or "the payload was not read"))
    lk = r.leaks
    if lk.leaks or lk.bad_frees or lk.totals.bad_frees:
        nbytes = sum(x.size for x in lk.leaks)
        first = lk.groups()[0] if lk.leaks else None
        where = (f"; first: {first.leaks[0].function} at {first.leaks[0].caller}"
                 if first else "")
        return CheckResult("leaks", False, f"{len(lk.leaks)} possible leaks ({nbytes} bytes), "
                           f"{max(len(lk.bad_frees), lk.totals.bad_frees)} bad frees{where}")
    if lk.incomplete:
        return CheckResult("leaks", False, f"report incomplete: {lk.incomplete}")
    return CheckResult("leaks", True, f"{lk.totals.allocs} allocations, {lk.totals.frees} "
                       "frees, nothing left, no bad free")


def _rules(r: RunReport) -> CheckResult:
    if r.leaks is None:
        return CheckResult("rules", False, "no rule report: " + (r.leaks_error or r.reason
                                                                 or "the payload was not read"))
    v = r.leaks.violations
    if v or r.leaks.dropped_violations:
        return CheckResult("rules", False, f"{len(v) + r.leaks.dropped_violations} rule "
                           f"violations; first: {v[0].describe() if v else 'dropped'}")
    return CheckResult("rules", True, "no API rule broken")


_CHECKS = {"loads": _loads, "workload": _workload, "kernel": _kernel, "leaks": _leaks,
           "rules": _rules}
CHECKS = tuple(_CHECKS)     # the checks judge() judges (other kinds reuse them)
