"""The cold patcher proven in the pinned kernel: a patched driver links to the
replacement module, a wrong CRC is refused the way the kernel says, and
replacement names up to the kernel's 55-character limit work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import build_plan
from kedr_build.vm.runner import run_modules
from kedr_build.vm.qemu import GuestJob, Verdict, run_guest

pytestmark = pytest.mark.vm
CHARDEV = REPO / "examples" / "chardev"


def test_wrong_crc_is_refused_as_the_kernel_says(built_chardev: Path, tmp_path: Path,
                                                 pinned_kernel: ProvisionedKernel) -> None:
    plan_data = json.loads((built_chardev / "plan.json").read_text())
    plan = build_plan([], explicit=plan_data["rename"],
                      replacement_module=plan_data["replacement_module"])
    bad = tmp_path / "mods" / "kedr_chardev.ko"
    bad.parent.mkdir()
    # The right names with CRCs that are not the replacement module's.
    wrong = {new: 0x12345678 for new in plan.mapping().values()}
    patch_module(built_chardev / "kedr_chardev.ko", bad, plan, wrong, manifest=False)
    repl = built_chardev / "kedr_repl_chardev" / "kedr_repl_chardev.ko"
    report = run_modules(pinned_kernel, [repl, bad], tmp_path / "vm", timeout=120)
    assert report.verdict is Verdict.FAILED
    assert report.reason.startswith("insmod kedr_chardev failed")
    assert "disagrees about version of symbol" in report.reason
    assert any("Unknown symbol" in line and "(err -22)" in line for line in report.driver_log)


def test_patched_driver_needs_its_replacement_module(built_chardev: Path, tmp_path: Path,
                                                     pinned_kernel: ProvisionedKernel) -> None:
    job = GuestJob(script="insmod kedr_chardev.ko; echo insmod=$?\n",
                   files={"kedr_chardev.ko": built_chardev / "patched" / "kedr_chardev.ko"})
    result = run_guest(pinned_kernel, job, tmp_path, timeout=120)
    assert result.status == 0
    assert "insmod=0" not in result.output
    renamed = json.loads((built_chardev / "plan.json").read_text())["rename"]
    assert f"kedr_chardev: Unknown symbol {renamed['kfree']} (err -2)" in result.console


# What the chardev workload makes the driver call: fixed by its code (open, write,
# read, release, each under the device mutex; one buffer and one per-open state).
CHARDEV_CALLS = {"mutex_lock": 3, "mutex_unlock": 3, "__kmalloc": 2, "kfree": 2,
                 "_copy_from_user": 1, "_copy_to_user": 1}
LIMIT_PREFIX = "kedr_" + "n" * 35     # + "_copy_from_user" = 55 characters, the limit


def test_names_at_the_55_character_limit_load_and_are_traced(
        tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    driver = tmp_path / "chardev"
    shutil.copytree(CHARDEV, driver)
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={driver}", f"BUILD_DIR={build}", f"NAMING=prefix:{LIMIT_PREFIX}",
                      f"WORKLOAD={driver / 'workload.sh'}", "VM_TIMEOUT=120", "run"],
                     check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((build / "chardev/patched/kedr_chardev.ko.json").read_text())
    renames = {r["old"]: r["new"] for r in manifest["renames"]}
    assert renames["kfree"] == LIMIT_PREFIX + "kfree"
    assert len(renames["_copy_from_user"]) == 55
    assert all(r["crc_new"] is not None for r in manifest["renames"])  # in __versions
    result = json.loads((build / "chardev/run/result.json").read_text())
    assert result["verdict"] == "passed"
    assert result["trace_calls"] == CHARDEV_CALLS
    assert "read back: hello from the guest" in proc.stdout


def test_names_past_the_limit_are_one_error(tmp_path: Path,
                                            pinned_kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}",
                      f"NAMING=prefix:{LIMIT_PREFIX}x"], check=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
              if ln.startswith("kedr-build")]
    assert errors == [f"kedr-build: NAMING=prefix:{LIMIT_PREFIX}x: replacement "
                      f"{LIMIT_PREFIX}x_copy_from_user for _copy_from_user is 56 characters; "
                      "a module's __versions entry (struct modversion_info) holds at most 55: "
                      "choose a shorter prefix or same-length"], errors
    assert not (build / "chardev" / "kedr_repl_chardev").exists()


def test_chardev_run_prints_exact_counts(tmp_path: Path,
                                         pinned_kernel: ProvisionedKernel) -> None:
    """The README's main job: the printed summary has the driver's exact calls."""
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}",
                      f"WORKLOAD={CHARDEV / 'workload.sh'}", "VM_TIMEOUT=120", "run"])
    lines = proc.stdout.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("--- call trace")))
    assert lines[start + 1:start + 8] == [
        "12 intercepted calls",
        "         3  mutex_lock",
        "         3  mutex_unlock",
        "         2  __kmalloc",
        "         2  kfree",
        "         1  _copy_from_user",
        "         1  _copy_to_user"]
    assert lines[start + 8] == "first 10 calls:"
    result = json.loads((build / "chardev/run/result.json").read_text())
    assert result["trace_calls"] == CHARDEV_CALLS and result["trace_lost"] == 0


def test_prebuilt_debian_module_is_patched_loaded_and_traced(
        tmp_path: Path, pinned_kernel: ProvisionedKernel) -> None:
    """KO=vfat: Debian's own (signed) vfat.ko, patched as shipped, serves a real mount."""
    workload = REPO / "tests" / "workloads" / "vfat-ramdisk.sh"
    proc = run_scons(["KO=vfat", f"BUILD_DIR={tmp_path}", "MODPROBE=brd,nls_cp437,nls_ascii",
                      f"WORKLOAD={workload}", "VM_TIMEOUT=120", "run"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kedr was here" in proc.stdout
    result = json.loads((tmp_path / "vfat/run/result.json").read_text())
    calls = result["trace_calls"]
    # Creating a file and a directory on vfat: lookups under the inode mutex and
    # the directory-entry buffers of vfat_add_entry.
    assert calls["mutex_lock"] == calls["mutex_unlock"] > 0
    assert calls["kmalloc_trace"] == calls["kfree"] > 0
    manifest = json.loads((tmp_path / "vfat/patched/vfat.ko.json").read_text())
    assert manifest["signature_stripped"] is True
    trace = (tmp_path / "vfat/run/trace.txt").read_text()
    assert "call_kmalloc_trace: call_site=vfat_add_entry+0x" in trace


def test_unknown_prebuilt_module_is_one_clear_line(pinned_kernel: ProvisionedKernel) -> None:
    proc = run_scons(["KO=no_such_module_here"], check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "kedr-build: KO=no_such_module_here: no such file, and no module")


def test_prebuilt_loop_module_serves_io_traced(tmp_path: Path,
                                               pinned_kernel: ProvisionedKernel) -> None:
    """KO=loop: Debian's loop.ko, patched, carries I/O to a file, every call traced."""
    workload = REPO / "tests" / "workloads" / "loop-file.sh"
    proc = run_scons(["KO=loop", f"BUILD_DIR={tmp_path}", f"WORKLOAD={workload}",
                      "VM_TIMEOUT=120", "run"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "through the loop" in proc.stdout
    calls = json.loads((tmp_path / "loop/run/result.json").read_text())["trace_calls"]
    # loop_add() at init: one zeroed kmalloc per loop device it creates
    # (CONFIG_BLK_DEV_LOOP_MIN_COUNT=8 in Debian),
    # each freed at exit; every lock taken is released.
    assert calls["kmalloc_trace"] == calls["kfree"] == 8
    assert calls["_raw_spin_lock_irq"] == calls["_raw_spin_unlock_irq"] > 0
    assert calls["mutex_lock"] + calls["mutex_lock_killable"] == calls["mutex_unlock"]
