"""TARGET=labgrid:ENV.yaml:PLACES: places of a real labgrid coordinator and exporter run
on this machine (tests/labgrid_places.py: two QEMU guests of the pinned kernel, each a
place whose NetworkSerialPort is the guest's serial console).

* ``check PACK=basic`` of tests/drivers/leaker and examples/chardev on ``lab-*`` (both
  places) starts two pytest-xdist workers, each acquiring one place; the groups run on
  both machines and the merged report equals the one of ``lab-a`` alone; both places
  are released after;
* a place another user holds is refused in one line, nothing built or done, still theirs;
* a run refused on the machine (a module of the other kernel) releases the place;
* an unreachable coordinator, a place it does not have, a place name that is not
  one: one line each, nothing built;
* Ctrl-C (SIGINT to scons's process group) in the middle of a two-place check: scons
  exits 130 and both places are released.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, kernel_name, on_kernel, run_scons
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, ProvisionedKernel, available
from kedr_build.packs import report
from labgrid_places import Lab, lab
from labmachine import _free_port
from test_faults_bad_input import refused
from test_interrupt_vm import BLOCKING, Scons

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def places(kernel: ProvisionedKernel,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    work = tmp_path_factory.mktemp(f"places-{kernel_name(kernel)}")
    for src in (REPO / "tests" / "drivers" / "leaker", REPO / "examples" / "chardev"):
        shutil.copytree(src, work / "src" / src.name)
    with lab(kernel, work / "lab") as the_lab:
        yield the_lab, work


def _scons(lab_: Lab, build: Path, kernel: str, places: str,
           *args: str) -> subprocess.CompletedProcess[str]:
    return run_scons([f"KERNEL={kernel}", f"BUILD_DIR={build}",
                      f"TARGET=labgrid:{lab_.environment}:{places}", *args], check=False)


def _items(path: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    data: dict[str, Any] = json.loads(path.read_text())
    return {(i["driver"], i["test"], i["check"]): (i["outcome"], i["message"])
            for i in data["items"]}


def _machines(reports: Path) -> set[str]:
    """The targets the groups' runs say they ran on (each run's result.json)."""
    return {json.loads(f.read_text())["target"] for f in (reports / "logs").rglob("result.json")}


@on_kernel("debian-6.1")
def test_two_places_run_one_batch(places: tuple[Lab, Path], kernel: ProvisionedKernel) -> None:
    the_lab, work = places
    name = kernel_name(kernel)
    sub = "" if name == DEFAULT_KERNEL else name
    drivers = f"DRIVERS={work / 'src/leaker'},{work / 'src/chardev'}"

    both = _scons(the_lab, work / "both", name, "lab-*", drivers, "check", "PACK=basic")
    assert both.returncode != 0, both.stdout + both.stderr      # the leaker leaks
    assert "Traceback" not in both.stdout + both.stderr, both.stdout + both.stderr
    assert " -n 2 " in both.stdout, both.stdout
    both_reports = work / "both" / sub / "report"
    env = the_lab.environment
    assert _machines(both_reports) == {f"labgrid:{env}:lab-a", f"labgrid:{env}:lab-b"}, \
        both.stdout[-3000:] + both.stderr
    assert the_lab.holder("lab-a") == the_lab.holder("lab-b") == ""

    # The same batch on lab-a alone, from the same build (its modules are up to date:
    # only the report is made again), the two-place report kept aside.
    both_reports = both_reports.rename(work / "both-report")
    one = _scons(the_lab, work / "both", name, "lab-a", drivers, "check", "PACK=basic")
    assert one.returncode != 0, one.stdout
    assert " -n " not in one.stdout, one.stdout
    assert not [ln for ln in one.stdout.splitlines()
                if ln.startswith(("kbuild ", "generate ", "patch "))], one.stdout
    one_reports = work / "both" / sub / "report"
    assert _machines(one_reports) == {f"labgrid:{env}:lab-a"}, one.stdout[-3000:] + one.stderr
    assert the_lab.holder("lab-a") == ""

    merged = _items(both_reports / report.JSON_NAME)
    assert merged == _items(one_reports / report.JSON_NAME)
    failed = {k for k, (outcome, _) in merged.items() if outcome != "passed"}
    assert failed == {("leaker", "load-unload", "leaks"), ("leaker", "workload", "leaks")}
    assert len(merged) == 18
    summary = json.loads((both_reports / report.JSON_NAME).read_text())
    assert summary["target"] == f"labgrid:{env}:lab-a,lab-b"


@on_kernel("debian-6.1")
def test_place_held_by_someone_else_refused(places: tuple[Lab, Path],
                                           kernel: ProvisionedKernel) -> None:
    the_lab, work = places
    name = kernel_name(kernel)
    taken = the_lab.client("-p", "lab-b", "acquire", user="someone")
    assert taken.returncode == 0, taken.stderr
    holder = the_lab.holder("lab-b")
    assert holder.endswith("/someone"), holder
    try:
        build = work / "held"
        proc = _scons(the_lab, build, name, "lab-b", f"MODULE={work / 'src/chardev'}", "run")
        refused(proc, build, f"kedr-build: TARGET=labgrid:{the_lab.environment}:lab-b: place "
                f"lab-b is already acquired by {holder}; nothing was done (it is theirs "
                "until they release it: labgrid-client -p lab-b release)")
        assert the_lab.holder("lab-b") == holder
    finally:
        the_lab.client("-p", "lab-b", "release", user="someone")


@on_kernel("debian-6.1")
def test_refused_run_releases_the_place(places: tuple[Lab, Path],
                                        kernel: ProvisionedKernel) -> None:
    the_lab, work = places
    other = next(k for k in available() if k != kernel_name(kernel))
    proc = _scons(the_lab, work / "other", other, "lab-a", "KO=dummy", "run")
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: ")]
    assert len(lines) == 1 and "(vermagic); nothing was copied" in lines[0], proc.stdout
    assert f"TARGET=labgrid:{the_lab.environment}:lab-a: " in lines[0], lines[0]
    assert the_lab.holder("lab-a") == ""


@pytest.mark.parametrize("coordinator, place, fragment", [
    ("unreachable", "lab-a", ": cannot reach the labgrid coordinator at 127.0.0.1:"),
    ("none", "lab-a", " is not a labgrid place name"),
], ids=["unreachable", "bad-name"])
def test_bad_place_one_line(coordinator: str, place: str, fragment: str, tmp_path: Path,
                            pinned_kernel: ProvisionedKernel) -> None:
    env = tmp_path / "lab.yaml"
    env.write_text("targets:\n  main:\n    drivers:\n      SerialDriver: {}\n"
                   "      ShellDriver: {prompt: '# ', login_prompt: 'login: ', "
                   f"username: root}}\noptions:\n  coordinator_address: 127.0.0.1:{_free_port()}\n")
    build = tmp_path / "build"
    target = f"labgrid:{env}:{place if coordinator != 'none' else 'lab a'}"
    proc = run_scons([f"MODULE={REPO / 'examples' / 'chardev'}", f"BUILD_DIR={build}",
                      f"TARGET={target}", "run"], check=False)
    refused(proc, build, f"TARGET={target}: ", fragment)


@on_kernel("debian-6.1")
def test_unknown_place_one_line(places: tuple[Lab, Path], tmp_path: Path,
                                kernel: ProvisionedKernel) -> None:
    the_lab, work = places
    build = tmp_path / "build"
    proc = _scons(the_lab, build, kernel_name(kernel), "rack*",
                  f"MODULE={work / 'src/chardev'}", "run")
    refused(proc, build, f"TARGET=labgrid:{the_lab.environment}:rack*: place 'rack*' matches "
            f"none of the labgrid coordinator {the_lab.address}'s places (lab-a, lab-b)")


@on_kernel("debian-6.1")
def test_ctrl_c_releases_both_places(places: tuple[Lab, Path],
                                     kernel: ProvisionedKernel) -> None:
    """Last: the interrupted runs leave their machines as they were stopped."""
    the_lab, work = places
    blocking = work / "blocking.sh"
    blocking.write_text(BLOCKING)
    build = work / "interrupted"
    job = Scons(build, kernel, f"TARGET=labgrid:{the_lab.environment}:lab-*",
                f"WORKLOAD={blocking}", "check", "PACK=basic")
    job.wait_until("both places acquired",
                   lambda: bool(the_lab.holder("lab-a") and the_lab.holder("lab-b")))
    os.killpg(job.proc.pid, signal.SIGINT)
    assert job.finish() == 130, job.output
    assert "Traceback" not in job.output, job.output
    assert the_lab.holder("lab-a") == the_lab.holder("lab-b") == "", job.output
