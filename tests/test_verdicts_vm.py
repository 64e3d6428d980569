"""The leak checker's verdicts on what in-tree drivers of the device corpus do that
once read as leaks (issue 18; bench/device_corpus_notes.toml), on both pinned kernels,
with our edu driver in mode=idioms (tests/drivers/edu) bound to QEMU's edu device:

- pages given back with put_page(): its last reference calls __folio_put(), the
  free of the allocation (vmxnet3's receive ring); a put_page() that is not the last
  reference frees nothing, so the page whose extra reference is never dropped is the
  one leak reported;
- devres-managed PCI regions (pcim_enable_device(), then pci_request_regions()),
  which the driver core releases at detach (snd-intel8x0): not the driver's to release;
- the device lock the driver core holds around probe() and remove(), dropped and
  taken again by the driver (snd-hda-intel's azx_remove()): neither "unlock-not-held"
  nor a lock held at init's return or at unload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, exported, kernel_name, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm


def test_put_page_managed_regions_and_a_lent_device_lock_are_no_leaks(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    proc = run_scons([f"MODULE={REPO / 'tests/drivers/edu'}", f"BUILD_DIR={tmp_path}",
                      f"KERNEL={kernel_name(kernel)}", "MAKE_ARGS=EDU_MODE=idioms",
                      "DEVICES=edu", "VM_TIMEOUT=180", "run"], check=False)
    out = proc.stdout + proc.stderr
    result = json.loads((outputs(tmp_path, "edu", kernel) / "run/result.json").read_text())
    calls, report = result["trace_calls"], result["leaks"]
    alloc_page = exported(kernel, "alloc_pages", "alloc_pages_noprof")
    dev_alloc_page = exported(kernel, "__alloc_pages", "__alloc_pages_noprof")
    # The one leak is the page whose extra reference was never dropped.
    leaks = [(lk["function"], lk["kind"], lk["size"], lk["caller"].split("+")[0])
             for lk in report["leaks"]]
    assert leaks == [(alloc_page, "page", 4096, "edu_probe")], out
    assert report["violations"] == [] and report["bad_frees"] == [], out
    assert report["totals"]["untracked_frees"] == 0, report["totals"]
    # What the driver did: two pages allocated, one given back by its last put_page();
    # the regions requested on a managed device; the device lock dropped and taken
    # again in probe() and in remove() (and the driver's own lock twice by the workload).
    assert calls.get(alloc_page) == calls.get(dev_alloc_page) == 1, calls
    assert calls.get("__folio_put") == 1, calls
    assert calls.get("pci_request_regions") == 1 and "pci_release_regions" not in calls, calls
    assert calls.get("mutex_unlock") == calls.get("mutex_lock") == 4, calls
    assert proc.returncode != 0 and "1 possible leaks (4096 bytes)" in out, out
