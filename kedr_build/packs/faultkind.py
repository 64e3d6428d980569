"""The ``faults`` test kind: the systematic fault sweep over the driver's init, its
workload and its exit (:mod:`kedr_build.faults.sweep`), then a seeded random
campaign (:mod:`kedr_build.faults.campaign`), judged as two checks:

* ``sweep``     every fault site, failed once, was handled: no leak or bad free,
                no oops/WARN/lockup, no hang, the driver unloads
* ``campaign``  the same for each of ``runs`` random runs (seeds ``seed``, ``seed+1``...)

A failed check names the first bad site (or seed) and carries the one command that
fails it alone: ``scons ... run FAULTS='<point>: nth=1 caller=<site>'`` (a site) or
``FAULTS='<point>: always prob=P seed=S; ...'`` (a campaign run); run, its verdict
names what the failure left behind (a leak, a crash), not the init's failure the
scenario asked for. Every site becomes a row of
the report's sweep picture. A driver that reaches no call that can fail has nothing
to sweep (or to fail at random): that passes, saying so.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kedr_build.errors import KedrError
from kedr_build.faults.campaign import CampaignResult, campaign
from kedr_build.faults.errors import NoFaultPoint
from kedr_build.faults.scenario import PointScenario, Scenario, render
from kedr_build.faults.sweep import SweepResult, sweep
from kedr_build.faults.trials import site_fault
from kedr_build.kernel import provision
from kedr_build.packs.pack import PackTest
from kedr_build.packs.results import CheckResult, SweepRow, TestRun
from kedr_build.packs.session import DriverUnderTest, Session, attached

if TYPE_CHECKING:
    from kedr_build.targets.trials import MachineGuest

def faults_command(driver: DriverUnderTest, scenarios: tuple[PointScenario, ...]) -> str:
    """The scons command that runs the driver once with these fault scenarios."""
    return f"{driver.run_command} {shlex.quote('FAULTS=' + render(scenarios))}"


def run(driver: DriverUnderTest, test: PackTest, logdir: Path, session: Session) -> TestRun:
    def failed(message: str) -> TestRun:
        return TestRun(driver.name, test.name, test.kind, reason=message, logs=str(logdir),
                       checks=tuple(CheckResult(c, False, message) for c in test.checks))

    modules = [Path(m) for m in driver.modules]
    repl = next((m for m in modules if m.stem == driver.replacement), None)
    targets = [m for m in modules if m != repl]
    if repl is None or len(targets) != 1:
        return failed(f"faults: {len(targets)} driver modules "
                      f"({', '.join(m.name for m in targets)}); the sweep fails the sites "
                      "of one module")
    workload = Path(driver.workload) if driver.workload else None
    timeout = float(test.params["timeout"]) or min(session.vm_timeout, 60.0)
    checks: dict[str, CheckResult] = {}
    rows: tuple[SweepRow, ...] = ()
    elapsed = 0.0
    try:
        kernel = provision.ensure(session.kernel)
        if "sweep" in test.checks:
            try:
                with _machine(session) as machine:
                    swept = sweep(kernel, repl, targets[0], logdir / "sweep",
                                  workload=workload, intree=driver.modprobe,
                                  site_timeout=timeout, devices=attached(driver, kernel),
                                  guest=machine.guest)
            except NoFaultPoint as e:
                checks["sweep"] = CheckResult("sweep", True, f"no fault site: {e}")
            else:
                rows = sweep_rows(driver, swept)
                checks["sweep"] = machine.said(judge_sweep(swept, rows), swept.stopped)
                elapsed += swept.elapsed
        if "campaign" in test.checks:
            if test.params["runs"] == 0:
                checks["campaign"] = CheckResult("campaign", True, "runs = 0: no campaign",
                                                 skipped=True)
            else:
                try:
                    with _machine(session) as machine:
                        result = campaign(kernel, repl, targets[0], logdir / "campaign",
                                          runs=test.params["runs"],
                                          probability=test.params["probability"],
                                          seed=test.params["seed"], workload=workload,
                                          intree=driver.modprobe, run_timeout=timeout,
                                          guest=machine.guest)
                except NoFaultPoint as e:
                    checks["campaign"] = CheckResult("campaign", True, f"no fault point: {e}")
                else:
                    checks["campaign"] = machine.said(judge_campaign(driver, result))
                    elapsed += result.elapsed
    except KedrError as e:
        return failed(str(e))
    ordered = tuple(checks[c] for c in test.checks)
    bad = next((c for c in ordered if not c.passed), None)
    return TestRun(driver.name, test.name, test.kind, checks=ordered, elapsed=round(elapsed, 1),
                   logs=str(logdir), reason=bad.message if bad else "", sweep=rows)


@dataclass
class _Machine:
    """TARGET= a real machine: the trials' guest there (targets/trials.py), and what
    happened to the machine, said in the check's message; QEMU: no guest, nothing said."""

    guest: MachineGuest | None = None
    left: str = ""

    def said(self, check: CheckResult, stopped: str = "") -> CheckResult:
        if self.guest is None:
            return check
        notes = [n for n in (stopped, *self.guest.done, self.left) if n]
        if not notes:
            return check
        return CheckResult(check.check, check.passed and not stopped,
                           f"{check.message}; TARGET={self.guest.name}: {'; '.join(notes)}",
                           check.skipped, check.reproduce)


@contextmanager
def _machine(session: Session) -> Iterator[_Machine]:
    """The machine of TARGET= for one sweep or campaign (its own directory there), left
    as found afterwards (or said how it is left)."""
    if not session.target:
        yield _Machine()
        return
    from kedr_build.targets.spec import parse_target
    from kedr_build.targets.trials import machine_guest

    machine = _Machine(machine_guest(parse_target(session.target),
                                     Path(session.ssh_config) if session.ssh_config
                                     else None))
    try:
        yield machine
    finally:
        assert machine.guest is not None
        machine.left = machine.guest.close()


def sweep_rows(driver: DriverUnderTest, result: SweepResult) -> tuple[SweepRow, ...]:
    return tuple(SweepRow(site=f"{r.site.function} at {r.site.caller}", outcome=r.outcome.value,
                          detail=r.record.verdict, phase=r.site.phase, bad=r.outcome.bad,
                          reproduce=faults_command(driver, (site_fault(r.site.function,
                                                                       r.site.caller),)))
                 for r in result.results)


def judge_sweep(result: SweepResult, rows: tuple[SweepRow, ...]) -> CheckResult:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    tally = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    boots = f"{result.boots} boot{'s' if result.boots != 1 else ''}"
    bad = [row for row in rows if row.bad]
    if not bad:
        return CheckResult("sweep", True, f"{len(rows)} fault sites, each failed once, all "
                           f"handled ({tally}; {boots})")
    first = bad[0]
    return CheckResult("sweep", False, f"{len(bad)} of {len(rows)} fault sites not handled; "
                       f"first: {first.outcome} when {first.site} ({first.phase}) fails: "
                       f"{first.detail}", reproduce=first.reproduce)


def judge_campaign(driver: DriverUnderTest, result: CampaignResult) -> CheckResult:
    bad = [r for r in result.runs if r.outcome.bad]
    seeds = f"seeds {result.runs[0].seed}..{result.runs[-1].seed}"
    if not bad:
        return CheckResult("campaign", True, f"{len(result.runs)} random runs (p={result.probability}, "
                           f"{seeds}, {len(result.points)} fault points), none left a leak, "
                           "crash or hang")
    first = bad[0]
    command = faults_command(driver, tuple(
        PointScenario(p, Scenario(rule="always", prob=result.probability, seed=first.seed))
        for p in result.points))
    return CheckResult("campaign", False, f"{len(bad)} of {len(result.runs)} random runs "
                       f"(p={result.probability}, {seeds}) not handled; first: seed "
                       f"{first.seed}: {first.outcome.value}: {first.record.verdict}",
                       reproduce=command)
