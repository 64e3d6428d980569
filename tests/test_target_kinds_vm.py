"""The faults, fuzz, reload and chaos test kinds on a real machine (issue 21): a QEMU guest of
each pinned kernel plays it over ssh (tests/labmachine.py: Dropbear, no power driver),
and ``scons check TARGET=ssh:// I_KNOW_THIS_MAY_CRASH=1`` runs a small pack of the
three kinds there, through the machine path (targets/machine.py, targets/trials.py).
One lab machine per kernel; the builds are reused between the targets.

* examples/chardev and tests/drivers/errleak: every check's outcome is TARGET=qemu's
  (chardev passes fuzz, reload, chaos (without DEVICES=) and the fault sweep and
  campaign; errleak's sweep fails
  at its kstrdup site with a leak, the same site and finding as in QEMU), the
  interfaces found are the same, and the machine is left as found (no module of
  ours loaded, no file of ours in /tmp, the same mounts and trace buffer size);
* tests/drivers/fuzzbugs with FUZZ_SEED=7: the fuzzer finds the same three bugs as in
  QEMU (the copy overflow's WARN, the rare ioctl's leak, the mutex unlocked while not
  held), each named with its seed and reduced on the machine (the reduction's replays
  read the kernel log from a marker: the machine's log is never cleared); its files
  are gone and its modules unloaded, its kernel tainted W by the WARN (a finding:
  the next run there is refused until it reboots);
* through labgrid, on a machine booted with ``panic_on_warn=1``: the same WARN takes
  the machine down while the fuzzer runs; every check fails naming seed 7, nothing is
  reduced, the machine is power-cycled through labgrid's ShellStrategy and left as
  found.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, kernel_name, on_kernel, outputs, run_scons
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, ProvisionedKernel
from kedr_build.packs import report
from labmachine import LabMachine, lab_machine

pytestmark = pytest.mark.vm

STATE = ("ls -a /tmp; cut -d' ' -f1 /proc/modules | sort; cut -d' ' -f2,3 /proc/mounts | sort; "
         "cat /sys/kernel/tracing/buffer_size_kb 2>/dev/null; true")

# Small budgets: fuzz as the fundamentals pack does (its known bugs need the ioctl
# sweep and 20000 operations from seed 7), a short reduction; two reload cycles; 4 s of
# chaos; the sweep and two campaign runs.
PACK = """[pack]
name = "machine-kinds"
format = 1

[[test]]
name = "fuzz"
kind = "fuzz"
count = 20000
threads = 2
seed = 1
reduce = 40
checks = ["fuzz", "loads", "kernel", "leaks", "rules"]

[[test]]
name = "reload"
kind = "reload"
cycles = 2
checks = ["loads", "workload", "growth", "kernel", "leaks", "rules"]

[[test]]
name = "chaos"
kind = "chaos"
seconds = 4
checks = ["chaos", "loads", "kernel", "leaks", "rules"]

[[test]]
name = "faults"
kind = "faults"
runs = 2
checks = ["sweep", "campaign"]
"""

Items = dict[tuple[str, str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def lab(kernel: ProvisionedKernel,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabMachine, Path]]:
    work = tmp_path_factory.mktemp(f"kinds-{kernel_name(kernel)}")
    for src in (REPO / "examples" / "chardev", REPO / "tests" / "drivers" / "errleak",
                REPO / "tests" / "drivers" / "fuzzbugs"):
        shutil.copytree(src, work / "src" / src.name)
    (work / "kinds.toml").write_text(PACK)
    with lab_machine(kernel, work / "machine") as machine:
        # A lab machine that has traced before (tests/test_target_ssh_vm.py: a trace
        # buffer once expanded is never freed, so a run cannot put that back).
        assert machine.ssh("echo 1408 > /sys/kernel/tracing/buffer_size_kb").returncode == 0
        yield machine, work


def _check(lab: tuple[LabMachine, Path], kernel: ProvisionedKernel, *args: str,
           machine: bool) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    lm, work = lab
    name = kernel_name(kernel)
    target = [f"TARGET={lm.target}", f"SSH_CONFIG={lm.ssh_config}",
              "I_KNOW_THIS_MAY_CRASH=1"] if machine else []
    proc = run_scons([f"KERNEL={name}", f"BUILD_DIR={work / 'build'}", *target, "check",
                      f"PACK={work / 'kinds.toml'}", *args], check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    one = [a for a in args if a.startswith("MODULE=")]
    reports = (outputs(work / "build", Path(one[0]).name, kernel) if one else
               work / "build" / ("" if name == DEFAULT_KERNEL else name)) / "report"
    data: dict[str, Any] = json.loads((reports / report.JSON_NAME).read_text())
    return proc, data


def _items(data: dict[str, Any]) -> Items:
    return {(i["driver"], i["test"], i["check"]): i for i in data["items"]}


def _outcomes(data: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    return {k: i["outcome"] for k, i in _items(data).items()}


def _run(data: dict[str, Any], driver: str, test: str) -> dict[str, Any]:
    run: dict[str, Any] = next(r for r in data["runs"]
                               if r["driver"] == driver and r["test"] == test)
    return run


def _state(machine: LabMachine) -> str:
    proc = machine.ssh(STATE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@on_kernel("debian-6.1")
def test_fuzz_reload_and_faults_on_a_machine_give_the_qemu_verdicts(
        lab: tuple[LabMachine, Path], kernel: ProvisionedKernel) -> None:
    machine, work = lab
    before = _state(machine)
    drivers = f"DRIVERS={work / 'src/chardev'},{work / 'src/errleak'}"
    over_ssh, on_machine = _check(lab, kernel, drivers, machine=True)
    assert _state(machine) == before
    in_qemu, qemu = _check(lab, kernel, drivers, machine=False)
    assert _outcomes(on_machine) == _outcomes(qemu), over_ssh.stdout
    outcomes = _outcomes(qemu)
    assert {k: o for k, o in outcomes.items() if k[0] == "chardev"} == {
        **{("chardev", "fuzz", c): "passed" for c in ("fuzz", "loads", "kernel", "leaks",
                                                      "rules")},
        **{("chardev", "reload", c): "passed" for c in ("loads", "workload", "growth",
                                                        "kernel", "leaks", "rules")},
        **{("chardev", "chaos", c): "passed" for c in ("chaos", "loads", "kernel", "leaks",
                                                       "rules")},
        ("chardev", "faults", "sweep"): "passed", ("chardev", "faults", "campaign"): "passed"
    }, in_qemu.stdout
    assert outcomes[("errleak", "faults", "sweep")] == "failed", in_qemu.stdout
    items, qitems = _items(on_machine), _items(qemu)
    for key in (("chardev", "fuzz", "fuzz"),):
        # The same operations on the same node; the rate and the time are the machine's.
        assert re.sub(r"\d+/s, \d+ ms", "", items[key]["message"]) == \
            re.sub(r"\d+/s, \d+ ms", "", qitems[key]["message"])
    for driver, test in (("chardev", "fuzz"), ("chardev", "reload"), ("chardev", "chaos")):
        assert _run(on_machine, driver, test)["interfaces"] == \
            _run(qemu, driver, test)["interfaces"] == \
            "misc: kedr_chardev; char nodes: /dev/kedr_chardev"
    # Chaos: the fuzzer, the workload and reloads raced on the machine too.
    chaos = items[("chardev", "chaos", "chaos")]["message"]
    assert re.match(r"4 s: \d+ fuzz operations \(2 threads, seed 1\) on /dev/kedr_chardev, "
                    r"the workload \d+ times, \d+ unloads", chaos), chaos
    assert _run(on_machine, "chardev", "reload")["cycles"] == \
        _run(qemu, "chardev", "reload")["cycles"]
    # errleak's sweep: the same sites with the same outcomes, its leak the first bad one.
    assert [(r["site"].split("+")[0], r["outcome"])
            for r in _run(on_machine, "errleak", "faults")["sweep"]] == \
        [(r["site"].split("+")[0], r["outcome"]) for r in _run(qemu, "errleak", "faults")["sweep"]]
    sweep = items[("errleak", "faults", "sweep")]["message"]
    assert "first: leak when kstrdup at errleak_init+0x" in sweep, sweep
    assert "(init) fails: init failed (error 12), 1 leaks (4096 bytes)" in sweep, sweep
    assert f"TARGET={machine.target}" in items[("errleak", "faults", "sweep")]["reproduce"]
    # Nothing said about how the machine was left: it was left as found.
    for r in on_machine["runs"]:
        assert "left behind" not in r["reason"] and "not cleaned up" not in r["reason"], r


@on_kernel("debian-6.1")
def test_a_fuzz_finding_on_a_machine_names_its_seed_as_in_qemu(
        lab: tuple[LabMachine, Path], kernel: ProvisionedKernel) -> None:
    machine, work = lab
    fuzzbugs = f"MODULE={work / 'src/fuzzbugs'}"
    in_qemu, qemu = _check(lab, kernel, fuzzbugs, "TEST=fuzz", "FUZZ_SEED=7", machine=False)
    before = _state(machine)
    over_ssh, on_machine = _check(lab, kernel, fuzzbugs, "TEST=fuzz", "FUZZ_SEED=7",
                                  machine=True)
    assert on_machine["verdict"] == qemu["verdict"] == "failed", over_ssh.stdout
    assert _outcomes(on_machine) == _outcomes(qemu) == {
        ("fuzzbugs", "fuzz", "fuzz"): "passed", ("fuzzbugs", "fuzz", "loads"): "passed",
        ("fuzzbugs", "fuzz", "kernel"): "failed", ("fuzzbugs", "fuzz", "leaks"): "failed",
        ("fuzzbugs", "fuzz", "rules"): "failed"}, over_ssh.stdout
    items = _items(on_machine)
    kernel_msg = items[("fuzzbugs", "fuzz", "kernel")]["message"]
    leaks_msg = items[("fuzzbugs", "fuzz", "leaks")]["message"]
    rules_msg = items[("fuzzbugs", "fuzz", "rules")]["message"]
    # The same findings: the copy overflow's WARN (read from the machine's kernel log),
    # the rare command's leak, the mutex unlocked while not held; each with its seed.
    assert "__copy_overflow" in kernel_msg, kernel_msg
    assert "at fz_rare_alloc+" in leaks_msg, leaks_msg
    assert "unlock-not-held: mutex_unlock" in rules_msg and "fz_rare_unlock+" in rules_msg
    for msg in (kernel_msg, leaks_msg, rules_msg):
        assert "(fuzz seed 7; " in msg, msg
    # Reduced on the machine as in QEMU: the kernel class's oracle counts the WARN lines
    # since its own marker (the machine's log is not cleared).
    reduced = _run(on_machine, "fuzzbugs", "fuzz")["reduced"]
    assert [r.split(":")[0] for r in reduced] == \
        [r.split(":")[0] for r in _run(qemu, "fuzzbugs", "fuzz")["reduced"]] == \
        ["kernel", "leaks", "rules"], reduced
    assert all("shortest failing sequence: " in r for r in reduced), reduced
    reproduce = items[("fuzzbugs", "fuzz", "kernel")]["reproduce"]
    assert reproduce.endswith("TEST=fuzz FUZZ_SEED=7") and f"TARGET={machine.target}" in \
        reproduce, reproduce
    # Left as found (modules, files, mounts), but its kernel tainted W by the WARN the
    # fuzzer found: a machine never reused tainted, the next run refused.
    assert _state(machine) == before
    assert int(machine.ssh("cat /proc/sys/kernel/tainted").stdout) & 512
    again, refused = _check(lab, kernel, fuzzbugs, "TEST=reload", machine=True)
    reason = _run(refused, "fuzzbugs", "reload")["reason"]
    assert f"TARGET={machine.target}: its kernel is already tainted " in reason, again.stdout
    assert reason.endswith("nothing was copied: reboot it first"), reason


@on_kernel("debian-6.12")
def test_a_fuzz_crash_through_labgrid_names_its_seed_and_is_power_cycled(
        lab: tuple[LabMachine, Path], kernel: ProvisionedKernel) -> None:
    """A machine that panics on a WARN (``panic_on_warn=1``), reached through labgrid
    (tests/labgrid_machine.py: QEMUDriver, ShellDriver, ShellStrategy; the fuzzer goes
    over its serial console): fuzzbugs's copy overflow WARN panics it while the fuzzer
    runs, and it stops answering. The run is a crash, the panic's line quoted (it came
    after busybox ash's ESC [6n on the console: it was judged a hang, no answer in 60 s,
    before vm/console.py stripped escape sequences), every check fails
    naming seed 7, nothing reduced (the machine died with the record), and the machine
    is power-cycled through labgrid and left as found."""
    from labgrid_machine import environment

    _, work = lab
    env = environment(kernel, work / "labgrid", boot_args="panic_on_warn=1")
    proc = run_scons([f"KERNEL={kernel_name(kernel)}", f"BUILD_DIR={work / 'build'}",
                      f"TARGET=labgrid:{env}", "I_KNOW_THIS_MAY_CRASH=1", "check",
                      f"PACK={work / 'kinds.toml'}", f"MODULE={work / 'src/fuzzbugs'}",
                      "TEST=fuzz", "FUZZ_SEED=7"], check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    data = json.loads((outputs(work / "build", "fuzzbugs", kernel) / "report"
                       / report.JSON_NAME).read_text())
    assert data["verdict"] == "failed", proc.stdout
    run = _run(data, "fuzzbugs", "fuzz")
    lost = re.fullmatch(re.escape(f"TARGET=labgrid:{env}: ")
                        + r"(crash) \(oops/panic on the console: .+\)", run["reason"])
    assert lost, run["reason"]
    word = lost.group(1)
    items = _items(data)
    kernel_msg = items[("fuzzbugs", "fuzz", "kernel")]["message"]
    assert "(fuzz seed 7; not reduced: the guest died" in kernel_msg, kernel_msg
    assert items[("fuzzbugs", "fuzz", "fuzz")]["message"].endswith("(fuzz seed 7)")
    assert items[("fuzzbugs", "fuzz", "kernel")]["reproduce"].endswith("TEST=fuzz FUZZ_SEED=7")
    assert all(i["outcome"] == "failed" for i in items.values()), items
    result = json.loads((Path(run["logs"]) / "result.json").read_text())
    assert result["power_cycles"] == [
        f"{word}: power-cycled through labgrid's ShellStrategy with QEMUDriver, its kernel "
        "checked again"], result
    assert result["left_as_found"] == "", result
