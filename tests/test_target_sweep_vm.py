"""The fault sweep on real machines (issue 21, item 3): QEMU guests of debian-6.1 (one
kernel: conftest.on_kernel; the labgrid crash of a fuzz run is tested on 6.12) play them, reached through labgrid's own drivers (tests/labgrid_machine.py: QEMUDriver,
ShellDriver, ShellStrategy) and over ssh (tests/labmachine.py: Dropbear).

tests/drivers/faulty with mode=deref: its init reaches three fault sites and the
workload one more; the third (kstrdup) writes through the NULL it returns: an oops.

* through labgrid, with ``oops=panic`` on the machine's command line: the oops panics
  it (the console goes silent: no answer within the site's bound), labgrid's
  ShellStrategy power-cycles it (QEMUDriver off and on, a login again), its kernel is
  checked again, and the sweep goes on to the fourth site; the per-site outcomes and
  verdicts of the sites that did not crash are the ones TARGET=qemu gives; the machine
  is left as found, its console log level put back (ShellDriver set it to 1);
* through labgrid, a run whose job never ends (the machine still answering) and one
  whose machine stops answering without an oops are each reported a hang, not a
  crash, and power-cycled; a panic ends the wait for the job when it shows on the
  console (targets/watch.py), not when the job's time is up;
* over ssh (no power driver): ``scons sweep TARGET=ssh:// I_KNOW_THIS_MAY_CRASH=1`` of
  the correct driver passes, 4 clean sites, the machine left as found; then the oops
  (insmod killed, the kernel tainted D) stops the sweep at that site with one line
  saying so and what state the machine is left in.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, on_kernel, run_scons
from kedr_build.faults.sweep import Outcome, SweepResult, sweep, table
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.targets import labgrid
from kedr_build.targets.spec import LabgridTarget, SshTarget
from kedr_build.targets.trials import machine_guest
from labgrid_machine import environment
from labmachine import lab_machine
from test_faults_vm import build_faulty

pytestmark = pytest.mark.vm

WORKLOAD = REPO / "tests" / "workloads" / "faulty.sh"
DRIVER = REPO / "tests" / "drivers" / "faulty"
DEREF = ("mode=deref",)
STATE = "ls -a /tmp; cut -d' ' -f1 /proc/modules | sort; cut -d' ' -f2,3 /proc/mounts | sort"
EXPECTED = [Outcome.CLEAN, Outcome.CLEAN, Outcome.CRASH, Outcome.CLEAN]


def outcomes(result: SweepResult) -> list[Outcome]:
    return [r.outcome for r in result.results]


def judged(result: SweepResult, index: int) -> tuple[object, ...]:
    r = result.results[index]
    return (r.site.function, r.site.phase, r.outcome, r.record.verdict, r.record.injected,
            r.record.leaks)


@pytest.fixture(scope="module")
def built(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, Path, Path, SweepResult]:
    """The modules, and the sweep TARGET=qemu gives of them."""
    work = tmp_path_factory.mktemp(f"target-sweep-{kernel_name(kernel)}")
    repl, patched, _ = build_faulty(kernel, work)
    in_qemu = sweep(kernel, repl, patched, work / "qemu", workload=WORKLOAD, module_args=DEREF)
    assert outcomes(in_qemu) == EXPECTED, "\n".join(table(in_qemu))
    return repl, patched, work, in_qemu


@on_kernel("debian-6.1")
def test_an_oops_through_labgrid_is_power_cycled_and_the_sweep_goes_on(
        kernel: ProvisionedKernel, built: tuple[Path, Path, Path, SweepResult]) -> None:
    repl, patched, work, in_qemu = built
    target = LabgridTarget(environment(kernel, work / "lab", boot_args="oops=panic"))
    machine = machine_guest(target)
    assert machine.power == "labgrid's ShellStrategy with QEMUDriver"
    shell = labgrid.open_shell(target)
    before, _, _ = shell.driver.run(STATE)
    lines: list[str] = []
    try:
        result = sweep(kernel, repl, patched, work / "labgrid", workload=WORKLOAD,
                       module_args=DEREF, guest=machine, progress=lines.append)
    finally:
        left = machine.close()
    assert left == ""
    text = "\n".join(table(result))
    assert outcomes(result) == EXPECTED, text
    assert result.boots == 2 and not result.stopped and not result.ok, text
    assert machine.done == ["power-cycled through labgrid's ShellStrategy with QEMUDriver"]
    crash = result.results[2]
    assert crash.site.function == "kstrdup" and crash.record.boot == 1, text
    # The panic's last words, read from the serial console as it went silent.
    assert any(f.startswith("Kernel panic - not syncing") for f in crash.record.findings), \
        crash.record.findings
    assert result.results[3].record.boot == 2, text
    for i in (0, 1, 3):
        assert judged(result, i) == judged(in_qemu, i), text
    assert any(line.startswith("sweep: site 4 of 4 (__kmalloc")
               for line in lines), lines
    saved = json.loads((work / "labgrid" / "sweep.json").read_text())
    assert [r["outcome"] for r in saved["results"]] == [o.value for o in EXPECTED]

    # Left as found: the fresh boot's /tmp, modules and mounts are the first boot's,
    # and the console log level is the one the kernel booted with (loglevel=7), not
    # the 1 labgrid's ShellDriver set when it logged in.
    shell = labgrid.open_shell(target)
    after, _, _ = shell.driver.run(STATE)
    assert after == before
    level, _, _ = shell.driver.run("cut -f1 /proc/sys/kernel/printk")
    assert level == ["1"]
    labgrid.restore_console(target)
    level, _, _ = shell.driver.run("cut -f1 /proc/sys/kernel/printk")
    assert level == ["7"]


@on_kernel("debian-6.1")
def test_an_oops_over_ssh_without_power_stops_the_sweep_in_one_line(
        kernel: ProvisionedKernel, built: tuple[Path, Path, Path, SweepResult]) -> None:
    repl, patched, work, in_qemu = built
    name = kernel_name(kernel)
    src = work / "scons-src"
    shutil.copytree(DRIVER, src)
    with lab_machine(kernel, work / "ssh") as lab:
        before = lab.ssh(STATE).stdout
        proc = run_scons([f"KERNEL={name}", f"MODULE={src}", f"BUILD_DIR={work / 'build'}",
                          f"WORKLOAD={WORKLOAD}", f"TARGET={lab.target}",
                          f"SSH_CONFIG={lab.ssh_config}", "I_KNOW_THIS_MAY_CRASH=1", "sweep"],
                         check=False)
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        assert re.search(r"4 sites of kedr_faulty: 4 clean; 1 boot, ", out), out
        assert (f"--- target {lab.target} ---\nleft as found (modules unloaded, "
                "files removed)") in out, out
        assert lab.ssh(STATE).stdout == before

        machine = machine_guest(SshTarget("127.0.0.1", port=lab.port), lab.ssh_config)
        try:
            result = sweep(kernel, repl, patched, work / "ssh-deref", workload=WORKLOAD,
                           module_args=DEREF, guest=machine)
        finally:
            machine.close()
        text = "\n".join(table(result))
        assert outcomes(result) == EXPECTED[:3], text
        for i in (0, 1):
            assert judged(result, i) == judged(in_qemu, i), text
        assert any("NULL pointer dereference" in f for f in result.results[2].record.findings)
        assert result.stopped.startswith(
            f"sweep of kedr_faulty stopped after site 3 of 4 (crash): TARGET={lab.target} "
            "has no power driver to restart it; "), result.stopped
        assert result.stopped.endswith(": reboot it before using it again"), result.stopped
        assert not result.ok and text.splitlines()[-1] == f"STOPPED: {result.stopped}"
        saved = json.loads((work / "ssh-deref" / "sweep.json").read_text())
        assert saved["stopped"] == result.stopped and not saved["ok"]
        taint = lab.ssh("cat /proc/sys/kernel/tainted").stdout
        assert int(taint) & 128, taint           # D: the oops; the machine was not reused


@on_kernel("debian-6.1")
def test_a_run_that_crashes_the_machine_through_labgrid_is_power_cycled(
        kernel: ProvisionedKernel, built: tuple[Path, Path, Path, SweepResult]) -> None:
    """``run FAULTS=`` on a labgrid machine (issue 21, item 3): the workload loads the
    driver again with mode=deref and its kstrdup fails (nth=2: the first load's
    succeeded): the oops panics the machine (oops=panic), its console goes silent; the
    run is reported crashed with the panic's last words, the machine power-cycled
    through labgrid (the sweep's power_cycle), its kernel checked again and left as
    found. Then a machine found tainted is power-cycled once before a run."""
    from kedr_build.faults.scenario import parse_faults, resolve_for
    from kedr_build.targets.connect import power_for
    from kedr_build.targets.machine import run_on_machine
    from kedr_build.vm.qemu import Verdict
    from kedr_build.vm.taint import ALLOWED_TAINT

    repl, patched, work, _ = built
    # The sweep test's environment: one boot of the guest for both tests of a kernel.
    target = LabgridTarget(environment(kernel, work / "lab", boot_args="oops=panic"))
    power = power_for(target)
    assert power is not None and power.how == "labgrid's ShellStrategy with QEMUDriver"
    shell = labgrid.open_shell(target)
    before, _, _ = shell.driver.run(STATE)
    reload = work / "reload-deref.sh"
    reload.write_text('rmmod kedr_faulty && insmod "$(dirname "$0")/modules/kedr_faulty.ko" '
                      "mode=deref\n")
    faults = resolve_for(parse_faults("kstrdup: nth=2"), repl)
    report = run_on_machine(shell, [repl, patched], work / "run-crash", workload=reload,
                            timeout=60, trace_providers=(repl.stem,), faults=faults,
                            power=power)
    assert report.verdict is Verdict.KERNEL_PROBLEM and not report.ok, report.reason
    # Seen on the console as it came (targets/watch.py): the wait ended at the panic
    # ("then no status"), not at VM_TIMEOUT's 60 s ("no status after 60 s"). The first
    # report is the finding: the oops, where the console's log level shows it (the
    # sweep test put it back to 7), else the panic.
    assert report.reason == (f"TARGET={target}: crash (oops/panic on the console: "
                             f"{report.problems[0].line}; then no status)"), report.reason
    # The console's last words, read as it went silent.
    assert any(p.line.startswith("Kernel panic - not syncing") for p in report.problems), \
        report.problems
    assert report.power_cycles == (
        "crash: power-cycled through labgrid's ShellStrategy with QEMUDriver, "
        "its kernel checked again",)
    assert report.left_as_found == "", report.left_as_found
    shell = labgrid.open_shell(target)
    after, _, _ = shell.driver.run(STATE)
    assert after == before
    taint, _, _ = shell.driver.run("cat /proc/sys/kernel/tainted")
    assert int(taint[0]) & ~ALLOWED_TAINT == 0, taint

    # Found tainted (W, set by hand as a WARNING would): power-cycled once, then run.
    shell.driver.run("echo 512 > /proc/sys/kernel/tainted")
    clean = run_on_machine(shell, [repl, patched], work / "run-tainted", workload=WORKLOAD,
                           timeout=60, trace_providers=(repl.stem,), power=power)
    assert clean.ok and clean.left_as_found == "", clean.reason
    assert clean.power_cycles == ("found tainted W: power-cycled through labgrid's "
                                  "ShellStrategy with QEMUDriver, its kernel checked again",)
    assert clean.taint_before is not None and clean.taint_before & ~ALLOWED_TAINT == 0
    labgrid.restore_console(target)


@on_kernel("debian-6.1")
def test_a_run_that_hangs_through_labgrid_is_a_hang_not_a_crash(
        kernel: ProvisionedKernel, built: tuple[Path, Path, Path, SweepResult],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that never ends on a labgrid machine that still answers, then one whose
    machine stops answering without an oops (the console's shell stopped: SIGSTOP to
    what reads /dev/console), are each a hang, said so in the run report (not "crash"),
    the machine power-cycled and left as found."""
    from kedr_build.targets import watch
    from kedr_build.targets.connect import power_for
    from kedr_build.targets.machine import run_on_machine
    from kedr_build.vm.qemu import Verdict

    repl, patched, work, _ = built
    target = LabgridTarget(environment(kernel, work / "lab", boot_args="oops=panic"))
    power = power_for(target)
    assert power is not None
    shell = labgrid.open_shell(target)
    before, _, _ = shell.driver.run(STATE)
    cycled = (f"hang: power-cycled through {power.how}, its kernel checked again",)

    sleeper = work / "sleep.sh"
    sleeper.write_text("sleep 1000\n")
    alive = run_on_machine(shell, [repl, patched], work / "run-sleeps", workload=sleeper,
                           timeout=20, trace_providers=(repl.stem,), power=power)
    assert alive.verdict is Verdict.LOST, alive.reason
    assert alive.reason == (f"TARGET={target}: hang (no status after 20 s, the machine still "
                            "answering)"), alive.reason
    assert alive.power_cycles == cycled and alive.left_as_found == ""

    # The silence bound shortened from 60 s (the run's own timeout stays longer).
    monkeypatch.setattr(watch, "LOST_BOUND", 15.0)
    freezer = work / "freeze.sh"
    freezer.write_text("for p in /proc/[0-9]*; do\n"
                       '  [ "$(readlink $p/fd/0)" = /dev/console ] && [ ${p#/proc/} != 1 ] '
                       "&& kill -STOP ${p#/proc/}\ndone\nsleep 1000\n")
    silent = run_on_machine(labgrid.open_shell(target), [repl, patched], work / "run-silent",
                            workload=freezer, timeout=120, trace_providers=(repl.stem,),
                            power=power)
    assert silent.verdict is Verdict.LOST, silent.reason
    assert silent.reason == f"TARGET={target}: hang (no answer in 15 s)", silent.reason
    assert silent.power_cycles == cycled and silent.left_as_found == ""
    shell = labgrid.open_shell(target)
    after, _, _ = shell.driver.run(STATE)
    assert after == before
    labgrid.restore_console(target)
