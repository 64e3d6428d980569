"""VM tests of emulated devices (DEVICES=), on both pinned kernels: a NIC and an NVMe
disk bound by their drivers (the NIC's Debian e1000.ko patched, so its probe, IRQ,
DMA and remove are traced), the NIC hot-unplugged and plugged again through QMP at
the guest's request (remove() and probe() run again), a suspend to RAM woken
through QMP with both devices working after it, and the fault sweep through the probe of our edu driver:
the clean one unwinds every failure, the leaky one is caught at request_irq."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, outputs, run_scons
from kedr_build.devices import catalog
from kedr_build.devices.attach import attach
from kedr_build.faults.sweep import sweep
from kedr_build.faults.trials import Outcome
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm


def test_e1000_and_nvme_bind_probe_unplug_replug_work_and_remove(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    proc = run_scons(["KO=e1000", "DEVICES=e1000,nvme,virtio-blk", f"BUILD_DIR={tmp_path}",
                      f"KERNEL={kernel_name(kernel)}", "VM_TIMEOUT=180",
                      f"WORKLOAD={REPO / 'tests/workloads/devices-hotplug.sh'}", "run"],
                     check=False)
    out = proc.stdout + proc.stderr
    result = json.loads((outputs(tmp_path, "e1000", kernel) / "run/result.json").read_text())
    assert proc.returncode == 0 and result["verdict"] == "passed", out
    bound = {b["device"]: b for b in result["bindings"] if b["module"]}
    # Slot 4 is the first device's, 5 the second's; the modalias is the catalog's.
    assert bound["0000:00:04.0"]["module"] == "e1000"
    assert bound["0000:00:04.0"]["modalias"] == catalog.load()["e1000"].modalias[0]
    assert bound["0000:00:05.0"]["module"] == "nvme"
    assert "pci 0000:00:04.0 [pci:v00008086d0000100E" in out and ": e1000 (e1000)" in out
    # The patched driver's probe and remove ran: PCI enable, IRQ, DMA, and back.
    calls = result["trace_calls"]
    for fn in ("request_threaded_irq", "dma_alloc_attrs", "free_irq", "dma_free_attrs"):
        assert calls.get(fn, 0) >= 1, (fn, calls)
    # probe() at the load and after each of two re-plugs; remove() at each of two
    # hot-unplugs and at the unload; the suspend disables the device once more, the
    # resume enables it (e1000's own suspend and resume).
    for fn in ("register_netdev", "unregister_netdev"):
        assert calls.get(fn) == 3, (fn, calls)
    for fn in ("pci_enable_device", "pci_disable_device"):
        assert calls.get(fn) == 4, (fn, calls)
    events = [(e["request"], e["reply"].split(":")[0]) for e in result["device_events"]]
    assert events[:4] == [("unplug e1001", "error"), ("unplug e1000", "ok"),
                          ("plug e1000", "ok"), ("unplug e1000 0.001", "timeout")], events
    # The virtio disk's re-plug: its -drive went with the device, and came back (before
    # the host added it again, device_add said "can't find value 'virtio_blkd'").
    assert ("unplug virtio_blk", "ok") in events, events
    assert events[-2:] == [("plug virtio_blk", "ok"), ("suspend", "ok")], events
    assert out.count("virtio-blk: /dev/vda wrote and read back 64 KiB") == 2
    assert "kedr-device suspend: resumed (status 0)" in out
    assert out.count("nvme: /dev/nvme0n1 wrote and read back 64 KiB") == 2
    assert "ACPI: PM: Waking up from system sleep state S3" in out
    assert ("kedr-device unplug e1001: error: no device 'e1001'; attached: e1000, nvme, "
            "virtio_blk") in out
    assert "e1000: bound again to e1000" in out
    assert result["leaks"]["leaks"] == []
    # The default workloads: a ping through the NIC, 64 KiB through the NVMe disk.
    assert "2 packets received" in result["workload_output"], result["workload_output"]
    assert "nvme: /dev/nvme0n1 wrote and read back 64 KiB" in result["workload_output"]
    steps = [(s["action"], s["target"], s["status"]) for s in result["steps"]]
    assert ("workload", "devices-hotplug.sh", 0) in steps


@pytest.fixture(scope="module")
def built_edu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/drivers/edu built, planned and patched, per kernel name (lazily)."""
    return {}


def _edu(built_edu: dict[str, Path], kernel: ProvisionedKernel,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = kernel_name(kernel)
    if name not in built_edu:
        build = tmp_path_factory.mktemp(f"edu-{name}")
        run_scons([f"MODULE={REPO / 'tests/drivers/edu'}", f"BUILD_DIR={build}",
                   f"KERNEL={name}"])
        built_edu[name] = outputs(build, "edu", kernel)
    return built_edu[name]


@pytest.mark.parametrize("mode", ["clean", "leaky"])
def test_edu_sweep_covers_probe_and_finds_the_leaky_error_path(
        mode: str, kernel: ProvisionedKernel, built_edu: dict[str, Path],
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = _edu(built_edu, kernel, tmp_path_factory)
    result = sweep(kernel, out / "kedr_repl_edu/kedr_repl_edu.ko", out / "patched/kedr_edu.ko",
                   tmp_path, module_args=[f"mode={mode}"],
                   devices=attach(catalog.lookup("edu"), kernel), site_timeout=30)
    by_site = {(r.site.function, r.site.caller.split("+")[0]): r for r in result.results}
    # Probe's calls are sites (the device is there and the driver binds it), and so
    # are the workload's: the factorial and the DMA wait for the device's interrupt.
    for site in (("pci_enable_device", "edu_probe"), ("dma_alloc_attrs", "edu_probe"),
                 ("request_threaded_irq", "edu_probe"),
                 ("wait_for_completion_timeout", "factorial_store")):
        assert site in by_site, (site, list(by_site))
    irq = by_site[("request_threaded_irq", "edu_probe")]
    bad = {k: r.outcome for k, r in by_site.items() if r.outcome not in
           (Outcome.CLEAN, Outcome.NOT_REACHED)}
    if mode == "clean":
        assert result.ok and bad == {}, bad
    else:
        # Exactly one site fails: request_irq's, whose error path skips the buffer's free.
        assert not result.ok
        assert bad == {("request_threaded_irq", "edu_probe"): Outcome.LEAK}, bad
        assert any("4096 bytes" in f for f in irq.record.findings), irq.record.findings
