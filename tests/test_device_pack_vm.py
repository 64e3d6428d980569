"""The device pack on both pinned kernels, through `scons ... check` (so check's
DEVICES= is what attaches the device): our edu driver, clean, passes every test; its
leaky build fails the sweep at request_irq with the DMA buffer (4096 bytes) left
behind, and the reproducer keeps DEVICES=; without DEVICES= every test is not run,
saying why, and the verdict fails (no VM boots for that)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm


def _check(build: Path, kernel: ProvisionedKernel, *args: str) -> tuple[int, str, dict]:
    proc = run_scons([f"MODULE={REPO / 'tests/drivers/edu'}", f"BUILD_DIR={build}",
                      f"KERNEL={kernel_name(kernel)}", "VM_TIMEOUT=120", *args,
                      "check", "PACK=device"], check=False)
    report = json.loads((outputs(build, "edu", kernel) / "report/report.json").read_text())
    return proc.returncode, proc.stdout + proc.stderr, report


def test_edu_passes_the_device_pack_and_the_leaky_one_fails_its_sweep(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    rc, out, report = _check(tmp_path / "none", kernel)
    assert rc != 0 and report["verdict"] == "failed", out
    assert {i["outcome"] for i in report["items"]} == {"not-run"}, report["items"]
    assert all("no device: test" in i["message"] and "give DEVICES=" in i["message"]
               for i in report["items"]), report["items"]

    rc, out, report = _check(tmp_path / "clean", kernel, "DEVICES=edu")
    items = {(i["test"], i["check"]): i for i in report["items"]}
    assert rc == 0 and report["verdict"] == "passed", out
    assert len(items) == 27 and all(i["outcome"] == "passed" for i in items.values())
    assert items[("rebind", "device")]["message"].startswith("3 unbind/bind cycles of edu")
    assert items[("hotplug", "device")]["message"].startswith("3 hot-unplug/re-plug cycles")
    assert "suspended to RAM (S3)" in items[("suspend", "device")]["message"]
    # The sweep reaches probe's calls (check passed DEVICES= to it).
    sites = [r["site"] for run in report["runs"] for r in run.get("sweep", [])]
    assert any(s.startswith("request_threaded_irq at edu_probe") for s in sites), sites

    rc, out, report = _check(tmp_path / "leaky", kernel, "DEVICES=edu",
                             "MAKE_ARGS=EDU_MODE=leaky", "TEST=faults")
    (item,) = report["items"]
    assert rc != 0 and item["outcome"] == "failed", out
    assert "leak when request_threaded_irq at edu_probe" in item["message"], item
    assert "1 leaks (4096 bytes)" in item["message"], item
    assert "DEVICES=edu" in item["reproduce"], item
