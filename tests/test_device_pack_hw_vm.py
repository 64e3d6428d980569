"""The device pack on real in-tree hardware drivers, on both pinned kernels, through
`scons KO=... DEVICES=... check`: a NIC (e1000) and a block device (nvme), each
through every test of the pack with its cycles reduced (a copy of the built-in pack
with rebind/hotplug 1 cycle, reload 2) and FUNCTIONS= the DMA and IRQ calls (so the
sweep has a few sites of probe and remove). The hot-unplug runs the driver's remove()
and the re-plug its probe() again, both in the trace; every boot is single-threaded TCG
(the pinned kernels' accel: multi-threaded TCG once hung the suspend test's unload on
a stale int3, README "Hardware drivers: the device pack")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import has_export, kernel_name, outputs, run_scons, sequence
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.packs.pack import BUILTIN_DIR

pytestmark = pytest.mark.vm

# The allocations, frees and PCI, DMA and IRQ set-up of probe and remove, under the
# names the kernel exports (its Module.symvers); a name the driver does not import is
# left out (a warning).
FUNCTIONS = ("kfree", "__kmalloc", "kmalloc_trace", "__kmalloc_node", "kmalloc_node_trace",
             "__kmalloc_noprof", "__kmalloc_node_noprof", "__kmalloc_cache_noprof",
             "pci_enable_device", "pci_enable_device_mem",
             "pci_disable_device", "dma_alloc_attrs", "dma_free_attrs",
             "request_threaded_irq", "free_irq")
# KO= -> (DEVICES=, the driver's probe, a function its remove() calls that makes
# traced calls; nvme_remove makes none itself, its nvme_dev_disable disables the PCI
# device)
DRIVERS = {"e1000": ("e1000", "e1000_probe", "e1000_remove"),
           "nvme": ("nvme", "nvme_probe", "nvme_dev_disable")}


# What the sweep finds, per driver and pinned kernel: on debian-6.12, e1000's probe
# failing at either kmalloc of e1000_sw_init's queues unwinds into a WARNING in
# iounmap (arch/x86/mm/ioremap.c:461, from e1000_probe); debian-6.1 unwinds cleanly.
# A driver bug, reproduced on the stock module: the error path unmaps the CE4100-only
# MDIO mapping, NULL here, and 6.12's iounmap() warns on it (commit 50c6dbdfd16e;
# bench/device_corpus_notes.toml, "debian-6.12 e1000 faults").
SWEEP_FINDINGS = {("e1000", "debian-6.12"): ("kmalloc", "e1000_probe",
                                             "at arch/x86/mm/ioremap.c:461 iounmap")}


def reduced_pack(path: Path) -> Path:
    """The built-in device pack with fewer cycles (its tests and checks unchanged)."""
    text = (BUILTIN_DIR / "device.toml").read_text()
    text = re.sub(r'(step = "(?:rebind|hotplug)"\ncycles = )3', r"\g<1>1", text)
    text = text.replace('kind = "reload"\ndescription = "load -> workload -> unload three '
                        'times with the device present; nothing may grow"\ncycles = 3',
                        'kind = "reload"\ndescription = "load -> workload -> unload twice '
                        'with the device present; nothing may grow"\ncycles = 2')
    text = text.replace(" 3 times", " once")
    assert text.count("cycles = 1") == 2 and "cycles = 2" in text, text
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_hardware_driver_through_the_device_pack(
        name: str, tmp_path: Path, kernel: ProvisionedKernel) -> None:
    device, probe, remove = DRIVERS[name]
    build = tmp_path / "b"
    pack = reduced_pack(tmp_path / "device-ci.toml")
    proc = run_scons([f"KO={name}", f"DEVICES={device}", "FUNCTIONS=" + ",".join(f for f in FUNCTIONS if has_export(kernel, f)),
                      f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}",
                      "VM_TIMEOUT=120", "check", f"PACK={pack}"], check=False)
    out = proc.stdout + proc.stderr
    report_dir = outputs(build, name, kernel) / "report"
    report = json.loads((report_dir / "report.json").read_text())
    items = {(i["test"], i["check"]): i for i in report["items"]}
    failed = {k: i["message"] for k, i in items.items() if i["outcome"] != "passed"}
    finding = SWEEP_FINDINGS.get((name, kernel_name(kernel)))
    if finding is None:
        assert proc.returncode == 0 and report["verdict"] == "passed", (failed, out[-3000:])
    else:
        # Only the sweep fails, and only at the sites of the finding.
        assert proc.returncode != 0 and set(failed) == {("faults", "sweep")}, failed
        bad = [r for run in report["runs"] for r in run.get("sweep", []) if r["bad"]]
        function, caller, evidence = finding
        assert bad and all(re.fullmatch(rf"\w*{function}\w* at {caller}\+0x[0-9a-f]+",
                                        r["site"]) and evidence in r["detail"]
                           for r in bad), bad
    assert {t for t, _ in items} == {"probe", "rebind", "hotplug", "suspend", "reload",
                                     "faults"}
    assert items[("rebind", "device")]["message"].startswith(f"1 unbind/bind cycles of {device}")
    assert items[("hotplug", "device")]["message"].startswith("1 hot-unplug/re-plug cycles")
    assert "suspended to RAM (S3)" in items[("suspend", "device")]["message"]
    # The sweep failed calls of probe (check passed DEVICES= to it).
    sites = [r["site"] for run in report["runs"] for r in run.get("sweep", [])]
    assert any(f" at {probe}" in s or s.endswith(probe) for s in sites), sites

    logs = report_dir / "logs" / name
    # The hot-unplug ran remove() and the re-plug probe() again, both traced: probe at
    # the load, remove at the unplug, probe at the re-plug, remove at the unload.
    trace = (logs / "hotplug" / "trace.txt").read_text()
    assert sequence(trace, probe, remove) == "PRPR", trace[-3000:]
    # Every boot is single-threaded TCG, the suspend test's too (multi-threaded TCG once
    # hung its unload on a stale int3: README, "Hardware drivers: the device pack").
    for step in ("suspend", "hotplug"):
        assert "-accel tcg,thread=single " in (logs / step / "qemu.cmd").read_text()
