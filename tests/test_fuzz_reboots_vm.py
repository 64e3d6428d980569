"""A fuzz failure only a fresh kernel can judge, reduced across boots
(kedr_build/vm/reboots.py), on both pinned kernels through `scons ... check`:

* tests/drivers/fzhang: a rare ioctl (nr 7) that waits forever for a reply: the fuzz
  step's watchdog calls it a hang, and the reduction (a boot per failing attempt) gives
  the two operations that still hang: the open and that ioctl;
* tests/drivers/fztaint: a rare ioctl (nr 11) that taints the kernel (I, a firmware
  workaround) with no WARN or BUG line: reduced the same way to the open and the ioctl.

Each run states its budget and how many boots and seconds the reduction took. The
budget here is small (40 attempts, 300 s): the fuzzer runs 1500 operations in one
thread, and the pack's sweep is off (the sweep would reach the rare command first).
Five boots per test: the judged run, three of the reduction (the whole record replayed
in one thread: it fails, and says at which operation; that operation with the open of
its file: it fails; each alone: they pass) and one more replay of the result."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import kernel_name, on_kernel, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm

DRIVERS = Path(__file__).resolve().parent / "drivers"

PACK = """[pack]
name = "fuzz-reboots"
format = 1

[[test]]
name = "fuzz"
kind = "fuzz"
count = 1500
threads = 1
sweep = 0
hang = 3
reduce = 40
reduce_seconds = 300
checks = ["fuzz", "loads", "kernel", "leaks", "rules"]
"""

_REDUCED = (r"shortest failing sequence: 2 of (\d+) operations \(ddmin, (\d+) attempts in "
            r"(\d+) fresh boots, (\d+) s \(budget 40 attempts, 300 s\), 1-minimal; replayed in "
            r"one more fresh boot: failed 1 of 1\): "
            r"t0#(\d+) open path=(\S+) fd=(\d); t0#(\d+) ioctl fd=(\d) cmd=0x([0-9a-f]{8}) ")


def check(tmp_path: Path, driver: str, kernel: ProvisionedKernel,
          *more: str, pack: str = PACK) -> tuple[Any, dict[tuple[str, str], Any], str]:
    path = tmp_path / "fuzz-reboots.toml"
    path.write_text(pack)
    proc = run_scons([f"MODULE={DRIVERS / driver}", f"BUILD_DIR={tmp_path}",
                      f"KERNEL={kernel_name(kernel)}", "check", f"PACK={path}", *more],
                     check=False)
    report = json.loads((outputs(tmp_path, driver, kernel) / "report" / "report.json")
                        .read_text())
    return report, {(i["test"], i["check"]): i for i in report["items"]}, \
        proc.stdout + proc.stderr


def reduced(message: str, node: str, nr: int) -> re.Match[str]:
    m = re.search(_REDUCED, message)
    assert m, message
    assert m.group(6) == node and m.group(7) == m.group(9), message
    assert int(m.group(10), 16) & 0xff == nr, message
    assert int(m.group(3)) == 4, message      # the judged run's boot is not counted
    return m


def test_hang_reduced_across_boots(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, "fzhang", kernel, "FUZZ_SEED=3")
    assert report["verdict"] == "failed", out
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["outcome"] == "failed", out
    assert fuzz["message"].startswith("the fuzzer hung: no operation started for 3 s"), fuzz
    reduced(fuzz["message"], "/dev/kedr_fz_hang", 7)
    assert "FUZZ_SEED=3" in fuzz["reproduce"]
    # the hung replay was killed: the driver unloaded, nothing else failed
    assert {c: items["fuzz", c]["outcome"] for c in ("loads", "kernel", "leaks", "rules")} \
        == dict.fromkeys(("loads", "kernel", "leaks", "rules"), "passed"), out


def test_taint_reduced_across_boots(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, "fztaint", kernel, "FUZZ_SEED=3")
    assert report["verdict"] == "failed", out
    k = items["fuzz", "kernel"]
    assert k["outcome"] == "failed", out
    assert "kernel tainted" in k["message"] and "I" in k["message"].split("(")[0], k
    reduced(k["message"], "/dev/kedr_fz_taint", 11)
    assert items["fuzz", "fuzz"]["outcome"] == "passed", out


@on_kernel("debian-6.12")
def test_guest_death_reduced_across_boots(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """tests/drivers/fzdie: a rare ioctl (nr 9) whose timer oopses in softirq: the kernel
    panics and the VM ends mid-fuzz. The record came back from the ivshmem's file
    (vm/shm.py), and the reduction (each failing attempt a panic, resumed from the
    shared memory) gives the open and that ioctl; its replay panics again. Seed 12 draws
    the ioctl as its 9th operation: the judged run, three reduction boots (the whole
    record; the located open + ioctl; each alone) and the replay."""
    report, items, out = check(tmp_path, "fzdie", kernel, "FUZZ_SEED=12")
    assert report["verdict"] == "failed", out
    k = items["fuzz", "kernel"]
    assert k["outcome"] == "failed", out
    reduced(k["message"], "/dev/kedr_fz_die", 9)
    assert "FUZZ_SEED=12" in k["reproduce"]
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["message"].startswith("the guest was lost while the fuzzer ran"), fuzz
    logs = outputs(tmp_path, "fzdie", kernel)
    assert "Fatal exception in interrupt" in next(logs.rglob("reduce-crash-1/console.log")) \
        .read_text(), out


@on_kernel("debian-6.1")
def test_sweep_hang_reduced_to_its_ioctl(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """tests/drivers/fzhang with the ioctl sweep on: the sweep reaches nr 7 (_IO, type 0:
    its 1792nd ioctl on the node, after the /dev/null probes) and hangs there. The sweep's ioctl in flight is in the record (and
    counts as an operation for the watchdog): the reduction gives the open of the node
    and that ioctl, in a thread of their own."""
    report, items, out = check(tmp_path, "fzhang", kernel, "FUZZ_SEED=3",
                               pack=PACK.replace("sweep = 0", "sweep = 8192"))
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["message"].startswith("the fuzzer hung: no operation started for 3 s"), fuzz
    assert re.search(r"shortest failing sequence: 2 of 2 operations .*: t1#1792 open "
                     r"path=/dev/kedr_fz_hang fd=0; t1#1792 ioctl fd=0 cmd=0x00000007 "
                     r"arg=null size=0 ", fuzz["message"]), fuzz
    assert "replayed in one more fresh boot: failed 1 of 1" in fuzz["message"], fuzz


@on_kernel("debian-6.1")
def test_lockup_reduced_across_boots(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """tests/drivers/fzlock: a rare ioctl (nr 5) that spins with interrupts off on every
    CPU: nothing in the guest runs any more, its heartbeat (kfuzz -B) stops, and the
    host stops the VM after vm/shm.py's STALL (not the VM timeout). Reduced as a hang
    from the shared memory's record, each failing attempt a boot stopped the same way;
    seed 23 draws the ioctl as its 7th operation."""
    report, items, out = check(tmp_path, "fzlock", kernel, "FUZZ_SEED=23")
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["message"].startswith("the guest was lost while the fuzzer ran: VM hung: "
                                      "no status after"), fuzz
    reduced(fuzz["message"], "/dev/kedr_fz_lock", 5)
    assert "reduced under fuzz" in items["fuzz", "kernel"]["message"], out
