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
its file: it fails; each alone: they pass) and one more replay of the result.

On one kernel (the guest scripts are the same; the two above prove them on each):
tests/drivers/edu built with EDU_MODE=fzunload, a PCI driver of QEMU's edu device
(DEVICES=edu) whose node's rare ioctl (nr 11) makes its remove() taint the kernel (I)
at the unload, with no WARN or BUG line: reduced across boots that each get the edu
device (without it the driver binds nothing, no node, no failure), every attempt
unloading the driver before it is judged. Not placed at an operation, so plain ddmin:
20 operations (FUZZ_SEED=362 reaches the ioctl at the 4th), a boot per failing attempt.
The same build, FUZZ_SEED=379: its ioctl nr 12 makes remove() WARN: a WARN line at the
unload, reduced in the judged run's boot (each attempt unloads), no boot more."""

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
          *more: str, pack_text: str = PACK) -> tuple[Any, dict[tuple[str, str], Any], str]:
    pack = tmp_path / "fuzz-reboots.toml"
    pack.write_text(pack_text)
    proc = run_scons([f"MODULE={DRIVERS / driver}", f"BUILD_DIR={tmp_path}",
                      f"KERNEL={kernel_name(kernel)}", "check", f"PACK={pack}", *more],
                     check=False)
    report = json.loads((outputs(tmp_path, driver, kernel) / "report" / "report.json")
                        .read_text())
    return report, {(i["test"], i["check"]): i for i in report["items"]}, \
        proc.stdout + proc.stderr


def reduced(message: str, node: str, nr: int, budget: str = "40 attempts, 300 s") -> re.Match[str]:
    m = re.search(_REDUCED.replace("40 attempts, 300 s", budget), message)
    assert m, message
    assert m.group(6) == node and m.group(7) == m.group(9), message
    assert int(m.group(10), 16) & 0xff == nr, message
    return m


def test_hang_reduced_across_boots(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, "fzhang", kernel, "FUZZ_SEED=3")
    assert report["verdict"] == "failed", out
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["outcome"] == "failed", out
    assert fuzz["message"].startswith("the fuzzer hung: no operation started for 3 s"), fuzz
    assert int(reduced(fuzz["message"], "/dev/kedr_fz_hang", 7).group(3)) == 4, fuzz
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
    # the judged run's boot is not counted
    assert int(reduced(k["message"], "/dev/kedr_fz_taint", 11).group(3)) == 4, k
    assert items["fuzz", "fuzz"]["outcome"] == "passed", out


UNLOAD_PACK = PACK.replace("count = 1500", "count = 20").replace(
    "reduce = 40\nreduce_seconds = 300", "reduce = 30\nreduce_seconds = 240")


@on_kernel("debian-6.12")
def test_taint_at_unload_with_a_device_reduced_across_boots(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, "edu", kernel, "FUZZ_SEED=362", "DEVICES=edu",
                               "MAKE_ARGS=EDU_MODE=fzunload", pack_text=UNLOAD_PACK)
    assert report["verdict"] == "failed", out
    k = items["fuzz", "kernel"]
    assert k["outcome"] == "failed", out
    assert "kernel tainted" in k["message"] and "I" in k["message"].split("(")[0], k
    m = reduced(k["message"], "/dev/kedr_edu", 11, "30 attempts, 240 s")
    assert int(m.group(1)) == 20, k
    assert 2 <= int(m.group(3)) <= 8, k        # not located: a boot per failing attempt
    assert "DEVICES=edu" in k["reproduce"] and "FUZZ_SEED=362" in k["reproduce"], k
    assert {c: items["fuzz", c]["outcome"] for c in ("fuzz", "loads", "leaks", "rules")} \
        == dict.fromkeys(("fuzz", "loads", "leaks", "rules"), "passed"), out

    report, items, out = check(tmp_path, "edu", kernel, "FUZZ_SEED=379", "DEVICES=edu",
                               "MAKE_ARGS=EDU_MODE=fzunload", pack_text=UNLOAD_PACK)
    k = items["fuzz", "kernel"]
    assert k["outcome"] == "failed" and "WARNING" in k["message"], out
    m = re.search(r"shortest failing sequence: 2 of 20 operations \(ddmin, \d+ attempts, "
                  r"1-minimal; replayed 3 times in fresh loads: failed 3\): t0#\d+ open "
                  r"path=/dev/kedr_edu fd=(\d); t0#\d+ ioctl fd=(\d) cmd=0x[0-9a-f]{6}0c ",
                  k["message"])
    assert m and m.group(1) == m.group(2), k    # in the boot: no "fresh boots"


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
    m = reduced(k["message"], "/dev/kedr_fz_die", 9)
    assert int(m.group(3)) == 4, m.group(0)     # the judged run's boot not counted
    assert "FUZZ_SEED=12" in k["reproduce"]
    fuzz = items["fuzz", "fuzz"]
    assert fuzz["message"].startswith("the guest was lost while the fuzzer ran"), fuzz
    logs = outputs(tmp_path, "fzdie", kernel)
    assert "Fatal exception in interrupt" in next(logs.rglob("reduce-crash-1/console.log")) \
        .read_text(), out


@on_kernel("debian-6.1")
def test_sweep_hang_reduced_to_its_ioctl(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """tests/drivers/fzhang with the ioctl sweep on: the sweep reaches nr 7 (_IO, type 0:
    its 1792nd ioctl on the node, after the /dev/null probes) and hangs there. The
    sweep's ioctl in flight is in the record (and counts as an operation for the
    watchdog): the reduction gives the open of the node and that ioctl, in a thread of
    their own."""
    report, items, out = check(tmp_path, "fzhang", kernel, "FUZZ_SEED=3",
                               pack_text=PACK.replace("sweep = 0", "sweep = 8192"))
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
    assert fuzz["message"].startswith("the guest was lost while the fuzzer ran: the guest "
                                      "locked up: its heartbeat stopped"), fuzz
    m = reduced(fuzz["message"], "/dev/kedr_fz_lock", 5)
    assert int(m.group(3)) == 4, m.group(0)     # the judged run's boot not counted
    assert "reduced under fuzz" in items["fuzz", "kernel"]["message"], out
