"""TARGET=labgrid:ENV.yaml: a labgrid environment plays the lab (tests/labgrid_machine.py:
labgrid's QEMUDriver boots the pinned kernel, its ShellDriver logs in on the serial
console, its ShellStrategy powers the machine on), and scons runs there through
labgrid as it would on a lab machine. The same steps as TARGET=ssh://
(kedr_build/targets/machine.py), over labgrid's shell.

* ``check PACK=basic`` passes examples/chardev and fails tests/drivers/leaker with the
  report TARGET=qemu gives (every check's outcome and message of the leaker), and
  ``run`` prints the machine's part, left as found;
* a module built for the other pinned kernel is refused before anything is copied, in
  one line naming both releases (run in this process, on its own labgrid guest: its
  /tmp and loaded modules are compared before and after);
* hot patching (``attach``, tests/attach_lab.py): a pack of kind attach gives the
  report TARGET=qemu gives for the clean example and a leaky driver, ``scons attach``
  prints the machine's part, and the machine is left as found;
* an environment file that is not YAML, one that is not text, one without the target ``main``, one whose
  target has no command driver: one line each, nothing built (coordinator places:
  tests/test_target_labgrid_places_vm.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from attach_lab import (batch_report, check_lab_against_qemu, copy_drivers, drivers_arg,
                        hot_result, in_qemu, prepared, window)
from conftest import REPO, kernel_name, on_kernel, outputs, run_scons
from kedr_build.errors import KedrError
from kedr_build.kernel.descriptions import (DEFAULT_KERNEL, ProvisionedKernel, available,
                                            describe)
from kedr_build.packs import report
from labgrid_machine import environment
from test_faults_bad_input import refused

pytestmark = pytest.mark.vm

STATE = "ls -a /tmp; cut -d' ' -f1 /proc/modules | sort; cut -d' ' -f2,3 /proc/mounts | sort"


@pytest.fixture(scope="module")
def lab(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp(f"labgrid-{kernel_name(kernel)}")
    for src in (REPO / "tests" / "drivers" / "leaker", REPO / "examples" / "chardev"):
        shutil.copytree(src, work / "src" / src.name)
    return environment(kernel, work / "lab"), work


def _scons(lab: tuple[Path, Path], kernel: str, *args: str) -> subprocess.CompletedProcess[str]:
    env, work = lab
    return run_scons([f"KERNEL={kernel}", f"BUILD_DIR={work / 'build'}",
                      f"TARGET=labgrid:{env}", *args], check=False)


def _report(path: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    data: dict[str, Any] = json.loads(path.read_text())
    return {(i["driver"], i["test"], i["check"]): (i["outcome"], i["message"])
            for i in data["items"]}


@on_kernel("debian-6.12")
def test_basic_through_labgrid_gives_the_qemu_report(lab: tuple[Path, Path],
                                                     kernel: ProvisionedKernel) -> None:
    env, work = lab
    name = kernel_name(kernel)
    reports = work / "build" / ("" if name == DEFAULT_KERNEL else name) / "report"
    drivers = f"DRIVERS={work / 'src/leaker'},{work / 'src/chardev'}"
    through = _scons(lab, name, drivers, "check", "PACK=basic")
    assert through.returncode != 0, through.stdout
    assert "Traceback" not in through.stdout + through.stderr, through.stdout + through.stderr
    lab_items = _report(reports / report.JSON_NAME)
    assert f"TARGET=labgrid:{env}" in through.stdout, through.stdout

    once = _scons(lab, name, f"MODULE={work / 'src/chardev'}", "run")
    assert once.returncode == 0, once.stdout + once.stderr
    assert f"--- target labgrid:{env} ---" in once.stdout, once.stdout
    assert "left as found (modules unloaded, files removed)" in once.stdout, once.stdout
    assert "2 allocations, 2 frees, 0 possible leaks" in once.stdout, once.stdout

    in_qemu = run_scons([f"KERNEL={name}", f"BUILD_DIR={work / 'qemu'}",
                         f"DRIVERS={work / 'src/leaker'}", "check", "PACK=basic"], check=False)
    assert in_qemu.returncode != 0, in_qemu.stdout
    qemu_items = _report(outputs(work / "qemu", "leaker", kernel) / "report" /
                         report.JSON_NAME)
    assert {k: v for k, v in lab_items.items() if k[0] == "leaker"} == qemu_items
    failed = {k for k, (outcome, _) in lab_items.items() if outcome != "passed"}
    assert failed == {("leaker", "load-unload", "leaks"), ("leaker", "workload", "leaks")}
    assert lab_items[("leaker", "load-unload", "leaks")][1].startswith("39 possible leaks")
    assert len([k for k in lab_items if k[0] == "chardev"]) == 9


@on_kernel("debian-6.12")
def test_other_kernel_refused_before_copying(lab: tuple[Path, Path],
                                             kernel: ProvisionedKernel) -> None:
    from kedr_build.targets.labgrid import open_shell
    from kedr_build.targets.machine import run_on_machine
    from kedr_build.targets.spec import parse_target

    env, work = lab
    name = kernel_name(kernel)
    other = next(k for k in available() if k != name)
    # The dummy module of the other pinned kernel (a real Debian one), patched.
    build = work / "other"
    run_scons([f"KERNEL={other}", f"BUILD_DIR={build}", "KO=dummy"])
    modules = sorted(build.rglob("*.ko"))
    assert modules, sorted(build.rglob("*"))

    shell = open_shell(parse_target(f"labgrid:{env}"))

    def state() -> list[str]:
        # Less the listing command's own output files (/tmp/.kedr-labgrid-*.out, .err).
        return [ln for ln in shell.check(STATE, "reading its state").splitlines()
                if not ln.startswith(".kedr-labgrid-")]

    before = state()
    with pytest.raises(KedrError) as refusal:
        run_on_machine(shell, modules, work / "refused")
    line = str(refusal.value)
    assert "\n" not in line
    assert f"the machine runs kernel {describe(name).release}, but " in line, line
    assert f"is built for {describe(other).release} (vermagic); nothing was copied" in line
    assert state() == before

    # Through scons too: the same one line.
    proc = _scons(lab, other, "KO=dummy", "run")
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: ")]
    assert len(lines) == 1 and "(vermagic); nothing was copied" in lines[0], proc.stdout


@on_kernel("debian-6.12")
def test_attach_through_labgrid_gives_the_qemu_verdict(lab: tuple[Path, Path],
                                                       kernel: ProvisionedKernel) -> None:
    """Hot patching through labgrid (tests/attach_lab.py): a pack of kind attach over
    the clean example and the leaky attachee gives QEMU's report, ``scons attach``
    prints the machine's part, and the attach job run again on this process's labgrid
    machine (the one the refusal test opened: no other boot) leaves it as found."""
    from kedr_build.targets.attach import attach_on_machine
    from kedr_build.targets.labgrid import open_shell
    from kedr_build.targets.spec import parse_target

    env, work = lab
    name = kernel_name(kernel)
    hot = work / "hot"
    pack = copy_drivers(hot)
    build = hot / "build"
    through = run_scons([f"KERNEL={name}", f"BUILD_DIR={build}", f"TARGET=labgrid:{env}",
                         drivers_arg(hot), "check", f"PACK={pack}"], check=False)
    assert through.returncode == 0, through.stdout + through.stderr
    lab_report = batch_report(build, kernel, name)
    shutil.move(lab_report, hot / "lab-report")

    workload = hot / "src" / "attachee" / "workload.sh"
    once = run_scons([f"KERNEL={name}", f"BUILD_DIR={build}", f"TARGET=labgrid:{env}",
                      f"MODULE={hot / 'src' / 'attachee'}", f"WORKLOAD={workload}", "attach"],
                     check=False)
    assert once.returncode == 0, once.stdout + once.stderr
    assert f"--- target labgrid:{env} ---" in once.stdout, once.stdout
    assert "left as found (modules unloaded, files removed)" in once.stdout, once.stdout
    assert "kedr-build: kedr_attachee: attach PASSED" in once.stdout, once.stdout

    # TARGET=qemu, from the same build.
    qemu = in_qemu(hot, build, pack, kernel, name)
    check_lab_against_qemu(hot / "lab-report", qemu)
    assert window(hot_result(build, "attachee", kernel)) == qemu[1]["attachee"]

    # The machine as found: the job again, on a shell of this process.
    target = parse_target(f"labgrid:{env}")
    shell = open_shell(target)

    def state() -> list[str]:
        return [ln for ln in shell.check(STATE, "reading its state").splitlines()
                if not ln.startswith(".kedr-labgrid-")]

    before = state()
    plan, ko = prepared(build, "attachee", kernel)
    again = attach_on_machine(target, None, plan, ko, False, hot / "again", workload, 300.0)
    assert again.left_as_found == "" and again.verdict == "passed", again.reason
    assert again.taint_before is not None and again.taint is not None
    assert window(hot / "again" / "result.json") == qemu[1]["attachee"]
    assert state() == before


@pytest.mark.parametrize("text, fragment", [
    ("targets: [main\n", ": not a labgrid environment: "),
    (b"targets:\xff\xfe\n", ": not a labgrid environment: "),
    ("targets:\n  other:\n    drivers: {}\n", ": no target 'main' in it (it has other)"),
    ("targets:\n  main:\n    drivers:\n      ShellStrategy: {}\n", ": target 'main': "),
    ("targets:\n  main:\n    resources:\n      RawSerialPort:\n        port: /dev/null\n",
     ": target 'main' has no command driver (ShellDriver or SSHDriver): "),
], ids=["not-yaml", "not-text", "no-main", "strategy-without-drivers", "no-command-driver"])
def test_bad_environment_one_line(text: str | bytes, fragment: str, tmp_path: Path,
                                  pinned_kernel: ProvisionedKernel) -> None:
    env = tmp_path / "lab.yaml"
    data = text if isinstance(text, bytes) else text.encode()
    env.write_bytes(data)
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'examples' / 'chardev'}", f"BUILD_DIR={build}",
                      f"TARGET=labgrid:{env}", "run"], check=False)
    line = refused(proc, build, f"TARGET=labgrid:{env}: {env}{fragment}")
    assert env.read_bytes() == data, line
