"""TARGET=ssh://: a QEMU guest of the pinned kernel plays a lab machine
(tests/labmachine.py: Dropbear, a forwarded port), and scons runs on it over ssh as it
would on real hardware. One lab machine per kernel for the whole file.

* ``check PACK=basic`` passes examples/chardev and fails tests/drivers/leaker with the
  report TARGET=qemu gives (every check's outcome and message of the leaker; the
  example's 9 passes in QEMU are tests/test_packs_vm.py's), and the machine is
  left as found: no module of ours loaded, no file of ours left, the same mounts and
  trace buffer size;
* hot patching (``attach``, tests/attach_lab.py): a pack of kind attach gives the
  report TARGET=qemu gives for the clean example and a leaky driver, ``scons attach``
  prints the machine's part, and the machine is left as found; the kernel's own loop,
  loaded before, is attached to and left loaded;
* a module built for the other pinned kernel is refused before anything is copied, in
  one line naming both releases;
* an unreachable host, a key the machine does not accept, a full disk, a pack that
  may crash the machine without I_KNOW_THIS_MAY_CRASH=1, and a machine already tainted beyond
  out-of-tree/unsigned: one line each, the machine left as found.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attach_lab import (batch_report, check_lab_against_qemu, copy_drivers, drivers_arg,
                        hot_result, in_qemu, window)
from conftest import REPO, kernel_name, on_kernel, outputs, run_scons
from kedr_build.kernel.descriptions import (DEFAULT_KERNEL, ProvisionedKernel, available,
                                            describe)
from kedr_build.packs import report
from labmachine import LabMachine, lab_machine

pytestmark = pytest.mark.vm

# What a run may change on the machine and must put back (compared before and after).
STATE = ("ls -a /tmp; cut -d' ' -f1 /proc/modules | sort; cut -d' ' -f2,3 /proc/mounts | sort; "
         "cat /sys/kernel/tracing/buffer_size_kb 2>/dev/null; true")


@pytest.fixture(scope="module")
def lab(kernel: ProvisionedKernel,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabMachine, Path]]:
    work = tmp_path_factory.mktemp(f"lab-{kernel_name(kernel)}")
    # kbuild builds in the driver's directory: build copies.
    for src in (REPO / "tests" / "drivers" / "leaker", REPO / "examples" / "chardev"):
        shutil.copytree(src, work / "src" / src.name)
    with lab_machine(kernel, work / "machine") as machine:
        # A lab machine that has traced before: its trace buffer expanded (the kernel
        # allocates it on first use, "7 (expanded: 1408)" before, and never frees it,
        # so a run cannot put that back; its size it can).
        assert machine.ssh("echo 1408 > /sys/kernel/tracing/buffer_size_kb").returncode == 0
        yield machine, work


def _scons(lab: tuple[LabMachine, Path], kernel: str, *args: str,
           target: str | None = None) -> subprocess.CompletedProcess[str]:
    machine, work = lab
    return run_scons([f"KERNEL={kernel}", f"BUILD_DIR={work / 'build'}",
                      f"TARGET={target or machine.target}",
                      f"SSH_CONFIG={machine.ssh_config}", *args], check=False)


def _state(machine: LabMachine) -> str:
    proc = machine.ssh(STATE)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _report(path: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    data: dict[str, Any] = json.loads(path.read_text())
    return {(i["driver"], i["test"], i["check"]): (i["outcome"], i["message"])
            for i in data["items"]}


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run's one kedr-build line (its cause), with no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: ")]
    assert len(lines) == 1, proc.stdout
    return lines[0]


@on_kernel("debian-6.1")
def test_basic_over_ssh_gives_the_qemu_report(lab: tuple[LabMachine, Path],
                                              kernel: ProvisionedKernel) -> None:
    machine, work = lab
    name = kernel_name(kernel)
    before = _state(machine)
    drivers = f"DRIVERS={work / 'src/leaker'},{work / 'src/chardev'}"
    # A batch's reports: build/report, on another kernel than the default build/<kernel>.
    reports = work / "build" / ("" if name == DEFAULT_KERNEL else name) / "report"
    over_ssh = _scons(lab, name, drivers, "check", "PACK=basic")
    assert over_ssh.returncode != 0, over_ssh.stdout
    ssh_items = _report(reports / report.JSON_NAME)
    # The machine as found: nothing of ours loaded or left, mounts and trace buffer as
    # they were.
    assert _state(machine) == before
    # The reproducer of a failure names the target (and the ssh configuration).
    assert f"TARGET={machine.target}" in over_ssh.stdout, over_ssh.stdout

    # run: the same steps once, the report printed with the machine's part, on a
    # machine without debugfs and tracefs mounted: mounted for the run (its leak report
    # and trace are read), unmounted after.
    assert machine.ssh("umount /sys/kernel/tracing && umount /sys/kernel/debug").returncode == 0
    unmounted = _state(machine)
    once = _scons(lab, name, f"MODULE={work / 'src/chardev'}", "run")
    assert once.returncode == 0, once.stdout
    assert f"--- target {machine.target} ---" in once.stdout, once.stdout
    assert "left as found (modules unloaded, files removed)" in once.stdout
    assert "2 allocations, 2 frees, 0 possible leaks" in once.stdout, once.stdout
    assert _state(machine) == unmounted
    assert machine.ssh("mount -t debugfs debugfs /sys/kernel/debug && "
                       "mount -t tracefs tracefs /sys/kernel/tracing").returncode == 0
    assert _state(machine) == before

    # The leaker in QEMU (2 boots; chardev's 9 passes there are test_packs_vm.py's):
    # the same outcome and message for every check.
    in_qemu = run_scons([f"KERNEL={name}", f"BUILD_DIR={work / 'build'}",
                         f"DRIVERS={work / 'src/leaker'}", "check", "PACK=basic"], check=False)
    assert in_qemu.returncode != 0, in_qemu.stdout
    qemu_items = _report(outputs(work / "build", "leaker", kernel) / "report" /
                         report.JSON_NAME)
    assert {k: v for k, v in ssh_items.items() if k[0] == "leaker"} == qemu_items
    # And that report is the one test_packs_vm.py checks: the leaker fails its leak
    # checks only (13 objects a load), the example passes all 9.
    failed = {k for k, (outcome, _) in ssh_items.items() if outcome != "passed"}
    assert failed == {("leaker", "load-unload", "leaks"), ("leaker", "workload", "leaks")}
    assert ssh_items[("leaker", "load-unload", "leaks")][1].startswith("39 possible leaks")
    assert len([k for k in ssh_items if k[0] == "chardev"]) == 9


@on_kernel("debian-6.1")
def test_attach_over_ssh_gives_the_qemu_verdict(lab: tuple[LabMachine, Path],
                                                kernel: ProvisionedKernel) -> None:
    """Hot patching over ssh (tests/attach_lab.py): a pack of kind attach over the clean
    example and the leaky attachee gives QEMU's report, ``scons attach`` prints the
    machine's part, and the machine is left as found after each."""
    machine, work = lab
    name = kernel_name(kernel)
    before = _state(machine)
    hot = work / "hot"
    pack = copy_drivers(hot)
    build = hot / "build"
    common = [f"KERNEL={name}", f"BUILD_DIR={build}", f"TARGET={machine.target}",
              f"SSH_CONFIG={machine.ssh_config}"]
    over_ssh = run_scons([*common, drivers_arg(hot), "check", f"PACK={pack}"], check=False)
    assert over_ssh.returncode == 0, over_ssh.stdout + over_ssh.stderr
    assert _state(machine) == before
    shutil.move(batch_report(build, kernel, name), hot / "lab-report")

    workload = hot / "src" / "attachee" / "workload.sh"
    once = run_scons([*common, f"MODULE={hot / 'src' / 'attachee'}", f"WORKLOAD={workload}",
                      "attach"], check=False)
    assert once.returncode == 0, once.stdout + once.stderr
    assert f"--- target {machine.target} ---" in once.stdout, once.stdout
    assert "left as found (modules unloaded, files removed)" in once.stdout, once.stdout
    assert "kedr-build: kedr_attachee: attach PASSED" in once.stdout, once.stdout
    assert _state(machine) == before

    # TARGET=qemu, from the same build.
    qemu = in_qemu(hot, build, pack, kernel, name)
    check_lab_against_qemu(hot / "lab-report", qemu)
    assert window(hot_result(build, "attachee", kernel)) == qemu[1]["attachee"]

    # A module loaded before (the kernel's own loop, as loaded at boot): attached to as
    # it is and left loaded; only what the run brought is gone.
    assert machine.ssh("modprobe loop").returncode == 0
    loaded = _state(machine)
    # tests/workloads/loop-file.sh with its disk image in the run's directory (removed
    # with it), not in /tmp: a machine's /tmp is compared.
    loop_workload = hot / "loop-file.sh"
    loop_workload.write_text((REPO / "tests/workloads/loop-file.sh").read_text()
                             .replace("/tmp/disk.img", "disk.img"))
    hot_loop = run_scons([*common, "KO=loop", f"WORKLOAD={loop_workload}", "attach"],
                         check=False)
    assert hot_loop.returncode == 0, hot_loop.stdout + hot_loop.stderr
    assert "left as found (modules unloaded, files removed)" in hot_loop.stdout, hot_loop.stdout
    result = json.loads(hot_result(build, "loop", kernel).read_text())
    assert result["output"].count("workload rc=0") == 3, result["output"]
    assert result["calls"]["mutex_unlock"] > 0, result["calls"]
    assert _state(machine) == loaded
    assert machine.ssh("modprobe -r loop").returncode == 0
    assert _state(machine) == before


@on_kernel("debian-6.1")
def test_refused_in_one_line_and_nothing_copied(lab: tuple[LabMachine, Path],
                                               kernel: ProvisionedKernel) -> None:
    machine, work = lab
    name = kernel_name(kernel)
    before = _state(machine)

    # A module of the other pinned kernel (a real Debian one, patched as shipped).
    other = next(k for k in available() if k != name)
    line = _one_line(_scons(lab, other, "KO=dummy", "run"))
    assert f"the machine runs kernel {describe(name).release}, but " in line, line
    assert f"is built for {describe(other).release} (vermagic); nothing was copied" in line
    assert _state(machine) == before

    # Nothing listens on that port.
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    line = _one_line(_scons(lab, name, "KO=dummy", "run",
                            target=f"ssh://root@127.0.0.1:{closed}"))
    assert f"TARGET=ssh://root@127.0.0.1:{closed}: cannot reach it over ssh" in line, line
    assert "Connection refused" in line, line

    # A key the machine does not accept.
    stranger = work / "stranger"
    stranger.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(stranger / "key")], check=True)
    config = stranger / "ssh_config"
    config.write_text(machine.ssh_config.read_text().replace(
        "IdentityFile ", f"IdentityFile {stranger / 'key'}\n  #"))
    proc = run_scons([f"KERNEL={name}", f"BUILD_DIR={work / 'build'}", "KO=dummy",
                      f"TARGET={machine.target}", f"SSH_CONFIG={config}", "run"], check=False)
    line = _one_line(proc)
    assert f"TARGET={machine.target}: cannot reach it over ssh" in line, line
    assert "Permission denied" in line, line
    assert _state(machine) == before

    # A full disk: a 64 KiB /tmp takes the directory but not the modules.
    assert machine.ssh("mount -t tmpfs -o size=64k tmpfs /tmp").returncode == 0
    line = _one_line(_scons(lab, name, "KO=dummy", "run"))
    assert machine.ssh("ls -A /tmp; umount /tmp").stdout == ""
    assert f"TARGET={machine.target}: copying the files to /tmp/kedr-build-" in line, line
    assert "No space left on device (the machine was left as found)" in line, line
    assert _state(machine) == before

    # A pack whose test fails kernel calls on purpose, without I_KNOW_THIS_MAY_CRASH=1:
    # refused, not run in QEMU behind one's back (tests/test_target_kinds_vm.py runs it).
    # (Refused while SConstruct reads the targets, on stderr: nothing is built.)
    proc = _scons(lab, name, f"MODULE={work / 'src/chardev'}", "check", "PACK=faults")
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kedr-build: ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    line = lines[0]
    assert (f"TARGET={machine.target}: pack faults test faults (faults) fails the driver's "
            "kernel calls on purpose and may crash that machine: add "
            "I_KNOW_THIS_MAY_CRASH=1 to go ahead") in line, line
    assert _state(machine) == before

    # A machine tainted beyond out-of-tree/unsigned (W: a WARNING) is not reused. Last:
    # the taint stays until the machine reboots.
    assert machine.ssh("echo 512 > /proc/sys/kernel/tainted").returncode == 0
    line = _one_line(_scons(lab, name, "KO=dummy", "run"))
    assert f"TARGET={machine.target}: its kernel is already tainted " in line, line
    assert "W beyond out-of-tree/unsigned; nothing was copied: reboot it first" in line, line
    assert _state(machine) == before
