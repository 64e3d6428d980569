"""VM tests: the examples really load into each pinned kernel under QEMU, and
broken modules are reported as failures, never as passes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, exported, kernel_name, outputs, run_scons
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, Verdict, run_guest

pytestmark = pytest.mark.vm


def scons_run(driver: Path, build: Path, kernel: ProvisionedKernel,
              *extra: str) -> tuple[int, str, dict[str, object]]:
    proc = run_scons([f"MODULE={driver}", f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}",
                      "VM_TIMEOUT=120", *extra, "run"], check=False)
    result = outputs(build, driver.name, kernel) / "run" / "result.json"
    out = proc.stdout + proc.stderr
    # Every test here expects a VM run: no result.json means scons failed before it.
    assert result.exists(), f"scons exited {proc.returncode} without a VM run:\n{out}"
    return proc.returncode, out, json.loads(result.read_text())


@pytest.mark.quick
def test_chardev_loads_serves_workload_and_unloads(tmp_path: Path,
                                                   kernel: ProvisionedKernel) -> None:
    driver = REPO / "examples/chardev"
    rc, out, result = scons_run(driver, tmp_path, kernel, f"WORKLOAD={driver / 'workload.sh'}")
    assert rc == 0, out
    assert result["verdict"] == "passed"
    # The replacement module loads first and unloads last; the patched driver between.
    assert [(s["action"], s["target"], s["status"]) for s in result["steps"]] == [
        ("insmod", "kedr_repl_chardev", 0), ("insmod", "kedr_chardev", 0),
        ("workload", "workload.sh", 0),
        ("rmmod", "kedr_chardev", 0), ("rmmod", "kedr_repl_chardev", 0)]
    assert "read back: hello from the guest" in out
    assert "kedr_chardev: ready, buffer of 4096 bytes" in out
    assert "kedr-build: chardev: PASSED" in out
    # Its calls were traced, init and exit included, with symbolic call sites.
    calls = result["trace_calls"]
    assert isinstance(calls, dict)
    # init: kzalloc(4096); write: kmalloc + kfree; exit: kfree. A kmalloc of a
    # run-time size is __kmalloc up to 6.9, __kmalloc_noprof since 6.10.
    kmalloc = exported(kernel, "__kmalloc", "__kmalloc_noprof")
    assert calls[kmalloc] == 2 and calls["kfree"] == 2
    assert calls["_copy_from_user"] == 1 and calls["mutex_lock"] == calls["mutex_unlock"]
    assert result["trace_lost"] == 0
    trace = (outputs(tmp_path, "chardev", kernel) / "run" / "trace.txt").read_text()
    assert "call_kfree: call_site=chardev_buffer_free+0x" in trace
    assert "n=21 ret=0" in trace       # "hello from the guest\n" copied from user space


def test_multi_module_directory_with_intree_dependency(tmp_path: Path,
                                                       kernel: ProvisionedKernel) -> None:
    rc, out, result = scons_run(REPO / "examples/multi", tmp_path, kernel)
    assert rc == 0, out
    inserted = [s["target"] for s in result["steps"] if s["action"] == "insmod"]
    assert inserted.index("multi_provider") < inserted.index("multi_consumer")
    assert "multi_crc" in inserted
    log = result["driver_log"]
    assert any(line.startswith("multi_crc: crc7 = 0x") for line in log)  # crc7.ko was loaded
    assert "multi_consumer: got an object from multi_provider" in log


@pytest.mark.parametrize("driver,expected", [
    ("oops", "BUG: kernel NULL pointer dereference"),
    ("warn", "WARNING: CPU: "),   # which CPU: the guest is SMP
])
def test_kernel_problem_is_a_failure_with_excerpt(driver: str, expected: str, tmp_path: Path,
                                                  kernel: ProvisionedKernel) -> None:
    rc, out, result = scons_run(REPO / "tests/drivers" / driver, tmp_path, kernel)
    assert rc != 0
    # The run's own words when it differs (a "lost" VM once under load on 6.12).
    assert result["verdict"] == "kernel problem", (result["reason"], out[-4000:])
    assert expected in str(result["reason"])
    assert f"kedr-build: {driver}: FAILED: kernel reported: {expected}" in out
    assert "Call Trace:" in out          # the excerpt reaches the user


def test_refused_module_shows_the_kernels_reason(tmp_path: Path,
                                                 kernel: ProvisionedKernel) -> None:
    rc, out, result = scons_run(REPO / "tests/drivers/initfail", tmp_path, kernel)
    assert rc != 0
    assert result["verdict"] == "failed"
    reason = str(result["reason"])
    assert reason.startswith("insmod kedr_initfail failed (status ")
    assert reason.endswith("): no such device here")


def test_hang_is_cut_off_by_the_timeout(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    # Long enough for the boot under load (12 s was not, at load 10 on 2 cores).
    result = run_guest(kernel, GuestJob(script="echo started\nsleep 600\n"),
                       tmp_path, timeout=30)
    assert result.verdict is Verdict.LOST and result.timed_out
    assert result.output.strip() == "started"
    assert result.reason().startswith("VM hung: no status after")


def test_a_vm_that_hangs_after_an_oops_is_a_kernel_problem_cut_short(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """What follows an oops may hang (the 6.12 oops test once ended "lost" under load):
    the oops is the verdict, and the run waits only crash_grace() for the status."""
    src = tmp_path / "oops"
    shutil.copytree(REPO / "tests/drivers/oops", src)
    ko = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                          outdir=tmp_path / "out",
                                          modules=tuple(kbuild.discover(src, kernel.kdir))))[0]
    job = GuestJob(script="insmod oops.ko; echo insmod $?; sleep 600\n",
                   files={"oops.ko": ko})
    result = run_guest(kernel, job, tmp_path / "vm", timeout=400, cut_after_crash=True)
    assert result.verdict is Verdict.KERNEL_PROBLEM and result.lost, result.reason()
    assert result.cut_after_crash and not result.timed_out
    assert result.output.split() == ["Killed", "insmod", "137"]   # by the oops; then the sleep
    assert result.elapsed < 300, result.elapsed         # well before the timeout
    reason = result.reason()
    assert reason.startswith("kernel reported: BUG: kernel NULL pointer dereference"), reason
    assert "then no status: the VM was stopped" in reason


def test_guest_status_comes_from_the_status_channel(tmp_path: Path,
                                                    kernel: ProvisionedKernel) -> None:
    # The script prints a fake status line to its output: it must not count.
    result = run_guest(kernel, GuestJob(script="echo 'KEDR-STATUS 0'\nexit 7\n"),
                       tmp_path, timeout=60)
    assert result.status == 7 and result.verdict is Verdict.FAILED
    assert (tmp_path / "console.log").read_text() == result.console


def test_vm_that_does_not_boot_is_lost(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"not a kernel")
    broken = dataclasses.replace(kernel, vmlinuz=bogus, vmlinux=None)
    result = run_guest(broken, GuestJob(script="exit 0\n"), tmp_path / "vm", timeout=30)
    assert result.verdict is Verdict.LOST
    assert result.reason()


def test_boots_from_vmlinux_and_falls_back_to_vmlinuz(tmp_path: Path,
                                                      kernel: ProvisionedKernel) -> None:
    """Provisioning extracted the PVH-bootable vmlinux; without it, vmlinuz boots."""
    assert kernel.vmlinux is not None and kernel.boot_image == kernel.vmlinux
    job = GuestJob(script="uname -r\n")
    for image, kern in (("vmlinux", kernel), ("vmlinuz", dataclasses.replace(kernel, vmlinux=None))):
        result = run_guest(kern, job, tmp_path / image, timeout=120)
        assert result.ok and result.output.strip() == kernel.release, result.reason()
        assert f" -kernel {kernel.root}/boot/{image}-{kernel.release} " in \
            (tmp_path / image / "qemu.cmd").read_text()


def test_intree_module_whose_init_requests_another_by_alias(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """libcrc32c's init asks the crypto API for "crc32c", which request_module()s
    "crypto-crc32c" (its softdep, which busybox's modprobe does not read): the guest's
    modprobe finds it through the shipped modules.alias."""
    job = GuestJob(script="modprobe libcrc32c && echo loaded && grep -c crc32c /proc/modules\n",
                   intree_modules=("libcrc32c",))
    result = run_guest(kernel, job, tmp_path, timeout=120)
    assert result.ok, result.reason() + result.output
    assert "loaded" in result.output
