"""The cold patcher proven in each pinned kernel: a patched driver links to the
replacement module, a wrong CRC is refused the way the kernel says, and
replacement names up to the kernel's 55-character limit work."""

from __future__ import annotations

import json
import re
from collections import Counter
import shutil
from pathlib import Path

import pytest

from conftest import REPO, exported, kernel_name, outputs, run_scons
from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import build_plan
from kedr_build.vm.runner import run_modules
from kedr_build.vm.qemu import GuestJob, Verdict, run_guest

pytestmark = pytest.mark.vm
CHARDEV = REPO / "examples" / "chardev"


def test_wrong_crc_is_refused_as_the_kernel_says(built_chardev: Path, tmp_path: Path,
                                                 kernel: ProvisionedKernel) -> None:
    plan_data = json.loads((built_chardev / "plan.json").read_text())
    plan = build_plan([], explicit=plan_data["rename"],
                      replacement_module=plan_data["replacement_module"])
    bad = tmp_path / "mods" / "kedr_chardev.ko"
    bad.parent.mkdir()
    # The right names with CRCs that are not the replacement module's.
    wrong = {new: 0x12345678 for new in plan.mapping().values()}
    patch_module(built_chardev / "kedr_chardev.ko", bad, plan, wrong, manifest=False)
    repl = built_chardev / "kedr_repl_chardev" / "kedr_repl_chardev.ko"
    report = run_modules(kernel, [repl, bad], tmp_path / "vm", timeout=120)
    assert report.verdict is Verdict.FAILED
    assert report.reason.startswith("insmod kedr_chardev failed")
    assert "disagrees about version of symbol" in report.reason
    assert any("Unknown symbol" in line and "(err -22)" in line for line in report.driver_log)


def test_patched_driver_needs_its_replacement_module(built_chardev: Path, tmp_path: Path,
                                                     kernel: ProvisionedKernel) -> None:
    job = GuestJob(script="insmod kedr_chardev.ko; echo insmod=$?\n",
                   files={"kedr_chardev.ko": built_chardev / "patched" / "kedr_chardev.ko"})
    result = run_guest(kernel, job, tmp_path, timeout=120)
    assert result.status == 0
    assert "insmod=0" not in result.output
    renamed = json.loads((built_chardev / "plan.json").read_text())["rename"]
    assert f"kedr_chardev: Unknown symbol {renamed['kfree']} (err -2)" in result.console


# What the chardev workload makes the driver call: fixed by its code (open, write,
# read, release, each under the device mutex; one buffer and one per-open state).
CHARDEV_CALLS = {"mutex_lock": 3, "mutex_unlock": 3, "__kmalloc": 2, "kfree": 2,
                 "_copy_from_user": 1, "_copy_to_user": 1, "misc_register": 1,
                 "misc_deregister": 1}
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
    assert lines[start + 1:start + 10] == [
        "14 intercepted calls",
        "         3  mutex_lock",
        "         3  mutex_unlock",
        "         2  __kmalloc",
        "         2  kfree",
        "         1  _copy_from_user",
        "         1  _copy_to_user",
        "         1  misc_deregister",
        "         1  misc_register"]
    assert lines[start + 10] == "first 10 calls:"
    result = json.loads((build / "chardev/run/result.json").read_text())
    assert result["trace_calls"] == CHARDEV_CALLS and result["trace_lost"] == 0


def test_prebuilt_debian_module_is_patched_loaded_and_traced(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """KO=vfat: Debian's own (signed; .ko.xz on 6.12) vfat module, patched as shipped, serves a real mount."""
    workload = REPO / "tests" / "workloads" / "vfat-ramdisk.sh"
    proc = run_scons(["KO=vfat", f"BUILD_DIR={tmp_path}", f"KERNEL={kernel_name(kernel)}",
                      "MODPROBE=brd,nls_cp437,nls_ascii",
                      f"WORKLOAD={workload}", "VM_TIMEOUT=120", "run"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kedr was here" in proc.stdout
    vfat = outputs(tmp_path, "vfat", kernel)
    result = json.loads((vfat / "run/result.json").read_text())
    calls = result["trace_calls"]
    # Creating a file and a directory on vfat: lookups under the inode mutex and
    # the directory-entry buffers of vfat_add_entry.
    assert calls["mutex_lock"] == calls["mutex_unlock"] > 0
    # kmalloc of a constant size: kmalloc_trace up to 6.9, __kmalloc_cache_noprof since.
    kmalloc = exported(kernel, "kmalloc_trace", "__kmalloc_cache_noprof")
    assert calls[kmalloc] == calls["kfree"] > 0
    manifest = json.loads((vfat / "patched/vfat.ko.json").read_text())
    assert manifest["signature_stripped"] is True
    trace = (vfat / "run/trace.txt").read_text()
    assert f"call_{kmalloc}: call_site=vfat_add_entry+0x" in trace


def test_unknown_prebuilt_module_is_one_clear_line(kernel: ProvisionedKernel) -> None:
    proc = run_scons(["KO=no_such_module_here", f"KERNEL={kernel_name(kernel)}"], check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "kedr-build: KO=no_such_module_here: no such file, and no module")


def test_prebuilt_loop_module_serves_io_traced(tmp_path: Path,
                                               kernel: ProvisionedKernel) -> None:
    """KO=loop: Debian's loop module (.ko.xz on 6.12), patched, carries I/O to a file,
    every call traced."""
    workload = REPO / "tests" / "workloads" / "loop-file.sh"
    proc = run_scons(["KO=loop", f"BUILD_DIR={tmp_path}", f"KERNEL={kernel_name(kernel)}",
                      f"WORKLOAD={workload}", "VM_TIMEOUT=120", "run"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "through the loop" in proc.stdout
    loop = outputs(tmp_path, "loop", kernel)
    calls = json.loads((loop / "run/result.json").read_text())["trace_calls"]
    # loop_add() at init: one zeroed kmalloc per loop device it creates
    # (CONFIG_BLK_DEV_LOOP_MIN_COUNT=8 in Debian), each freed at exit; every lock
    # taken is released. 6.12's lo_rw_aio_do_completion() also calls kfree(NULL)
    # per direct-I/O request, so the frees are matched by address.
    kmalloc = exported(kernel, "kmalloc_trace", "__kmalloc_cache_noprof")
    assert calls[kmalloc] == 8
    trace = (loop / "run/trace.txt").read_text()
    allocated = re.findall(rf"call_{kmalloc}: call_site=loop_add\+.* ret=(0x[0-9a-f]+)", trace)
    freed = [a for a in re.findall(r"call_kfree: .*objp=(0x[0-9a-f]+)", trace) if a != "0x0"]
    assert len(allocated) == 8 and sorted(allocated) == sorted(freed)
    assert calls["_raw_spin_lock_irq"] == calls["_raw_spin_unlock_irq"] > 0
    # Every mutex loop unlocks, it locked as often. Since 6.10, loop_configure() and
    # __loop_clr_fd() also call queue_limits_start_update(), an inline in blkdev.h
    # that locks q->limits_lock; queue_limits_commit_update() in the block core
    # (not patched, not traced) unlocks it.
    locks: Counter[str] = Counter()
    sites: dict[str, set[str]] = {}
    for fn, site, lock in re.findall(
            r"call_(mutex_lock|mutex_lock_killable|mutex_unlock): call_site=(\w+)\S* "
            r"lock=(0x[0-9a-f]+)", trace):
        locks[lock] += -1 if fn == "mutex_unlock" else 1
        if fn != "mutex_unlock":
            sites.setdefault(lock, set()).add(site)
    unbalanced = {lock: n for lock, n in locks.items() if n}
    assert calls["mutex_unlock"] > 0
    assert all(n > 0 and sites[lock] <= {"loop_configure", "__loop_clr_fd"}
               for lock, n in unbalanced.items()), \
        (unbalanced, sites)


@pytest.mark.parametrize("built_for,booted", [("debian-6.1", "debian-6.12"),
                                              ("debian-6.12", "debian-6.1")])
def test_module_of_another_kernel_is_refused_by_run_before_insmod(
        built_for: str, booted: str, tmp_path: Path) -> None:
    """KO=<the other kernel's loop module> KERNEL=<this one> run: refused before booting."""
    other = provision.ensure(built_for)
    assert other.modules_dir is not None
    loop = next(other.modules_dir.rglob("loop.ko*"))
    proc = run_scons([f"KO={loop}", f"KERNEL={booted}", f"BUILD_DIR={tmp_path}", "run"],
                     check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith("kedr-build:")]
    this = provision.ensure(booted)
    assert lines == [f"kedr-build: {outputs(tmp_path, 'loop', booted)}/patched/loop.ko: built for kernel "
                     f"{other.release} (vermagic), but the VM boots KERNEL={booted} "
                     f"({this.release}): rebuild it for {this.release} or run it with "
                     f"KERNEL={built_for}"], proc.stdout + proc.stderr
    assert not (outputs(tmp_path, "loop", booted) / "run/console.log").exists()   # no VM booted


def test_load_script_refuses_a_kernel_it_was_not_built_for(tmp_path: Path) -> None:
    """load.sh of a 6.1 build, run in the 6.12 guest: says so, loads nothing."""
    build = tmp_path / "build"
    run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", "KERNEL=debian-6.1"])
    out = build / "chardev"
    # The layout load.sh expects: the build directory as scons left it.
    files = {"load.sh": out / "load.sh", "unload.sh": out / "unload.sh",
             "kedr_repl_chardev/kedr_repl_chardev.ko":
                 out / "kedr_repl_chardev" / "kedr_repl_chardev.ko",
             "patched/kedr_chardev.ko": out / "patched" / "kedr_chardev.ko"}
    k612 = provision.ensure("debian-6.12")
    result = run_guest(k612, GuestJob(script="sh ./load.sh; echo rc=$?; cat /proc/modules\n",
                                      files=files), tmp_path / "vm", timeout=120)
    assert result.status == 0, result.output
    assert ("load.sh: these modules are built for kernel 6.1.0-56-amd64; this is "
            "6.12.117+deb12-amd64.") in result.output
    assert "rc=1" in result.output
    assert "kedr" not in result.output.split("rc=1", 1)[1]      # nothing was inserted
