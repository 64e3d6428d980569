"""FAULTS= through scons, as a user types it, on both pinned kernels (one build and
two VM runs per kernel, tests/drivers/errleak: a failed kstrdup() in its init leaks
4 KiB).

* the run target with a scenario that fails the init names what the failure left
  behind (the leak), not insmod's failure (which the scenario asked for): this is
  the command the faults pack prints to reproduce a site;
* FAULTS errors found once the replacement module exists (an unknown point, a size
  bound on a point without one) are bad input like syntax errors: one line, exit
  status 1 (the config's), no VM booted, no result written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def errleak(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """scons arguments of a built copy of tests/drivers/errleak for this kernel."""
    work = tmp_path_factory.mktemp("faults_run")
    shutil.copytree(REPO / "tests" / "drivers" / "errleak", work / "errleak")
    args = [f"MODULE={work / 'errleak'}", f"BUILD_DIR={work / 'build'}",
            f"KERNEL={kernel_name(kernel)}"]
    run_scons(args)
    return args


def kedr_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("kedr-build: ")]


def test_failed_init_names_the_leak_not_insmod(errleak: list[str]) -> None:
    proc = run_scons(errleak + ["run", "FAULTS=kstrdup: nth=1"], check=False)
    assert proc.returncode != 0, proc.stdout
    verdict = kedr_lines(proc.stdout)[-1]
    assert verdict.startswith("kedr-build: errleak: FAILED: 1 possible leaks, 0 bad frees, "
                              "0 rule violations (insmod kedr_errleak failed (status 12) "
                              "under the injected fault)"), verdict
    assert "injected=1" in proc.stdout


def test_init_that_handles_the_fault_passes(errleak: list[str]) -> None:
    # kmalloc's failure is handled by errleak's init: nothing leaks, the run passes.
    proc = run_scons(errleak + ["run", "FAULTS=kmalloc: nth=1"], check=False)
    verdict = kedr_lines(proc.stdout)[-1]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdict.startswith("kedr-build: errleak: PASSED (insmod kedr_errleak failed "
                              "(status 12) under the injected fault)"), verdict


@pytest.mark.parametrize("faults, cause", [
    ("kmallok: always", "FAULTS: kmallok: unknown fault point 'kmallok'; this driver's: "),
    ("kstrdup: size>10", "FAULTS: kstrdup: point kstrdup has no size argument"),
])
def test_points_checked_after_generation_are_bad_input(errleak: list[str], faults: str,
                                                       cause: str) -> None:
    result = Path(errleak[1].split("=", 1)[1]) / "errleak" / "run" / "result.json"
    before = result.read_bytes() if result.exists() else None
    proc = run_scons(errleak + ["run", f"FAULTS={faults}"], check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = kedr_lines(proc.stdout + proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("kedr-build: " + cause), lines
    assert (result.read_bytes() if result.exists() else None) == before
