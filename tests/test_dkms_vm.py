"""DKMS packages that need no hardware, run in the VM: built with `scons DKMS=`,
patched, loaded (in-tree dependencies first), unloaded, traced and checked for
leaks. And one real bug the run finds in a shipped package. Each outcome is
recorded in build/test-results/dkms-vm/ for the README's table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dkms_corpus
from conftest import REPO, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

RESULTS = REPO / "build" / "test-results" / "dkms-vm"
LOADS = [ln.split()[0] for ln in (REPO / "tests/data/dkms-vm.txt").read_text().splitlines()
         if ln.strip() and not ln.startswith("#")]

pytestmark = [pytest.mark.dkms, pytest.mark.vm]


@pytest.fixture(scope="module")
def corpus() -> dict[str, dkms_corpus.Package]:
    return dkms_corpus.provision()


def _run(pkg: dkms_corpus.Package, build: Path) -> tuple[int, dict[str, object], str]:
    """``scons DKMS=<source> run`` in the package's session build dir (built already by
    test_dkms_corpus.py when it ran first, else built now)."""
    proc = run_scons([f"DKMS={pkg.source}", f"BUILD_DIR={build}", "VM_TIMEOUT=180", "run"],
                     check=False)
    result = build / pkg.source.name / "run" / "result.json"
    data = json.loads(result.read_text()) if result.is_file() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def _record(deb: str, summary: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{deb}.json").write_text(json.dumps({"package": deb, "summary": summary}) + "\n")


@pytest.mark.parametrize("deb", LOADS)
def test_dkms_package_loads_traced_and_unloads(deb: str,
                                               corpus: dict[str, dkms_corpus.Package],
                                               pinned_kernel: ProvisionedKernel,
                                               dkms_builds: Path) -> None:
    rc, data, out = _run(corpus[deb], dkms_builds / deb)
    # Many make no catalogued call in init and exit alone (acpi_call registers a proc
    # file): what is asserted is that tracing and the leak check ran, not a count.
    calls = sum(dict(data.get("trace_calls", {})).values())  # type: ignore[call-overload]
    _record(deb, f"yes ({calls} calls traced)" if rc == 0 else "NO")
    assert rc == 0 and data["verdict"] == "passed", out[-3000:]
    run = dkms_builds / deb / corpus[deb].source.name / "run"
    assert (run / "trace.txt").is_file() and data["leaks"]["totals"]["live"] == 0
    assert [s["action"] for s in data["steps"]][-1] == "rmmod"


def test_xt_chaos_oops_at_unload_is_found(corpus: dict[str, dkms_corpus.Package],
                                         pinned_kernel: ProvisionedKernel,
                                         dkms_builds: Path) -> None:
    """xtables-addons 3.23's xt_CHAOS tests xt_request_find_target() for NULL, but it
    returns ERR_PTR(-ENOENT) when the REJECT target cannot be loaded: init succeeds
    and its exit does module_put(ERR_PTR(-2)->me), an oops at address 0x56."""
    rc, data, out = _run(corpus["xtables-addons-dkms"], dkms_builds / "xtables-addons-dkms")
    _record("xtables-addons-dkms", "oops in xt_CHAOS at unload (a bug of the package)")
    assert rc != 0 and data["verdict"] == "kernel problem", out[-3000:]
    problem = data["problems"][0]
    assert "NULL pointer dereference, address: 0000000000000056" in problem["line"]
    assert "chaos_tg_exit" in problem["excerpt"]
