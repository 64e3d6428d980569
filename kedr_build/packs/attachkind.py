"""The ``attach`` test kind: hot patching as a pack test, the flow of ``scons ...
attach`` (:mod:`kedr_build.vm.attachrun`) judged check by check. One boot: the
driver's plain ``.ko`` (the one its patched copy was made from; an in-tree module
is modprobed) is loaded, runs the workload, the replacement module built for
attaching attaches (a kprobe per call site), the workload runs again (the attached
window), it detaches, the workload runs a third time, the driver is unloaded.

* ``attach``   every step ran: load, attach, detach (the replacement module
               unloaded), unload
* ``workload`` the workload exited 0 each of the three times
* ``kernel``   no oops/BUG/WARNING/panic
* ``leaks``    no bad free in the window (objects from before attach freed in it are
               untracked; objects still live at detach are listed, not judged: the
               driver still runs)
* ``rules``    no kernel API rule broken in the window

With TARGET=ssh:// or labgrid: the same flow runs on that machine
(:mod:`kedr_build.targets.attach`), judged the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.errors import KedrError
from kedr_build.kernel import provision
from kedr_build.packs.pack import PackTest
from kedr_build.packs.results import CheckResult, TestRun, not_run
from kedr_build.packs.session import DriverUnderTest, Session

if TYPE_CHECKING:
    from kedr_build.intercept.attach import AttachResult
    from kedr_build.vm.attachrun import AttachReport


def plain_module(driver: DriverUnderTest) -> Path:
    """The unpatched ``.ko`` the driver's one patched module was made from (its
    manifest's ``source``)."""
    patched = [Path(m) for m in driver.modules if Path(m).stem != driver.replacement]
    if len(patched) != 1:
        raise KedrError(f"{driver.name}: {len(patched)} modules; attach takes one")
    manifest = patched[0].with_name(patched[0].name + ".json")
    try:
        source = Path(json.loads(manifest.read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KedrError(f"{manifest}: no source module in the patch manifest ({e})") from None
    if not source.is_file():
        raise KedrError(f"{manifest}: source module {source} is gone")
    return source


def run(driver: DriverUnderTest, test: PackTest, logdir: Path, session: Session) -> TestRun:
    from kedr_build.intercept.attach import AttachRequest, prepare
    from kedr_build.vm.attachrun import run_attach

    if driver.workload is None:
        return not_run(driver.name, test.name, test.kind, test.checks,
                       "no workload: give WORKLOAD=script.sh (or put workload.sh in the "
                       "driver)")
    timeout = float(test.params["timeout"]) or session.vm_timeout
    try:
        kernel = provision.ensure(session.kernel)
        ko = plain_module(driver)
        intree = kernel.modules_dir is not None and kernel.modules_dir in ko.resolve().parents
        prepared = prepare(AttachRequest(ko=ko, kernel=kernel, outdir=logdir / "attach",
                                         replacement_module=driver.replacement))
        if session.target:
            report = _on_machine(session, prepared, ko, intree, logdir / "run",
                                 Path(driver.workload), timeout)
        else:
            report = run_attach(kernel, prepared, ko, intree, logdir / "run",
                                Path(driver.workload), timeout)
    except KedrError as e:
        return TestRun(driver.name, test.name, test.kind, reason=str(e), logs=str(logdir),
                       checks=tuple(CheckResult(c, False, str(e)) for c in test.checks))
    return judge(driver.name, test, report, logdir)


def _on_machine(session: Session, prepared: AttachResult, ko: Path, intree: bool,
                logdir: Path, workload: Path, timeout: float) -> AttachReport:
    """The same flow on the real machine of TARGET= (targets/attach.py); how the machine
    was left, when not as found, joins the reason (never silent, not a driver check)."""
    import dataclasses

    from kedr_build.targets.attach import attach_on_machine
    from kedr_build.targets.spec import parse_target

    target = parse_target(session.target)
    report = attach_on_machine(target, Path(session.ssh_config) if session.ssh_config
                               else None, prepared, ko, intree, logdir, workload, timeout)
    if report.left_as_found:
        report = dataclasses.replace(report, reason="; ".join(
            r for r in (report.reason, f"TARGET={target} {report.left_as_found}") if r))
    return report


def judge(driver: str, test: PackTest, report: AttachReport, logdir: Path) -> TestRun:
    """Each of the test's checks from one attach run."""
    out = report.output
    failed = re.search(r"^failed: (.*)$", out, re.M)
    kernel_problem = report.reason if report.reason.startswith("kernel ") else ""
    lost = report.reason if report.reason.startswith(("the VM", "the guest job")) else ""
    violations = re.findall(r"^violation (.*)$", out, re.M)
    workloads = re.findall(r"^workload rc=(\d+)$", out, re.M)
    window = (f"{sum(report.calls.values())} calls in the window, {report.sites} sites")
    checks = {
        "attach": CheckResult("attach", not failed and "done" in report.times and not lost,
                              failed.group(1) if failed else lost or
                              "loaded, attached, detached, unloaded; " + window),
        "workload": CheckResult("workload", workloads == ["0"] * 3,
                                f"workload exit statuses {', '.join(workloads) or 'none'} "
                                "(before, attached, after)"),
        "kernel": CheckResult("kernel", not kernel_problem and not lost,
                              kernel_problem or lost or "no oops, BUG, WARNING or panic"),
        "leaks": CheckResult("leaks", bool(report.totals) and not report.totals.get("bad_frees"),
                             (f"{report.totals.get('bad_frees', 0)} bad frees in the window, "
                              f"{report.totals.get('untracked_frees', 0)} untracked frees, "
                              f"{len(report.live)} objects live at detach (not judged)")
                             if report.totals else "no leak report of the window"),
        "rules": CheckResult("rules", bool(report.totals) and not violations,
                             f"{len(violations)} rule violations in the window"
                             + (f"; first: {violations[0]}" if violations else "")
                             if report.totals else "no rule report of the window"),
    }
    return TestRun(driver=driver, test=test.name, kind=test.kind,
                   checks=tuple(checks[c] for c in test.checks), logs=str(logdir),
                   reason=report.reason, violations=tuple(violations),
                   trace_calls=dict(report.calls))
