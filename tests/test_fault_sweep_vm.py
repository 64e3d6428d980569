"""The systematic fault sweep in the pinned kernel (QEMU), with tests/drivers/faulty.

Its init reaches three fault sites (kmalloc 64, kzalloc 8192, kstrdup) and the
workload tests/workloads/faulty.sh one more (kmalloc from faulty_alloc). With
correct error paths every site fails cleanly; mode=leaky forgets two buffers
when kstrdup fails; mode=deref writes through the kstrdup result unchecked.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from kedr_build.errors import KedrError
from kedr_build.faults.campaign import campaign, reproduce
from kedr_build.faults.sweep import Outcome, SweepResult, sweep, table
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, run_guest

from conftest import REPO, run_scons
from test_faults_vm import REPL, build_faulty

pytestmark = pytest.mark.vm

WORKLOAD = REPO / "tests" / "workloads" / "faulty.sh"
DRIVER = REPO / "tests" / "drivers" / "faulty"


@pytest.fixture(scope="module")
def modules(pinned_kernel: ProvisionedKernel,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    work = tmp_path_factory.mktemp("sweep_vm")
    repl, patched, _ = build_faulty(pinned_kernel, work)
    return repl, patched, work


def outcomes(result: SweepResult) -> list[Outcome]:
    return [r.outcome for r in result.results]


def test_scons_sweep_of_correct_error_paths_is_clean(tmp_path: Path) -> None:
    proc = run_scons([f"MODULE={DRIVER}", f"BUILD_DIR={tmp_path}", f"WORKLOAD={WORKLOAD}",
                      "sweep"])
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "sweep: 4 sites found" in out and "sweep: site 4 of 4 (" in out
    assert re.search(r"4 sites of kedr_faulty: 4 clean; 1 boot, ", out), out
    data = json.loads((tmp_path / "faulty" / "sweep" / "sweep.json").read_text())
    assert data["ok"] and data["boots"] == 1
    phases = [(r["site"]["phase"], r["outcome"], r["injected"]) for r in data["results"]]
    assert data["results"][0]["verdict"] == "init failed (error 12)"
    assert phases == [("init", "clean", 1)] * 3 + [("workload", "clean", 1)]
    inits = [r["init_status"] for r in data["results"]]
    assert inits == [12, 12, 12, 0]                       # -ENOMEM from init
    last = data["results"][-1]
    assert last["workload_status"] != 0 and last["unload_status"] == 0
    assert re.fullmatch(r"faulty_alloc\+0x[0-9a-f]+", last["site"]["caller"])


def test_missing_cleanup_is_caught_at_exactly_its_site(
        pinned_kernel: ProvisionedKernel, modules: tuple[Path, Path, Path]) -> None:
    repl, patched, work = modules
    result = sweep(pinned_kernel, repl, patched, work / "leaky", module_args=("mode=leaky",))
    assert outcomes(result) == [Outcome.CLEAN, Outcome.CLEAN, Outcome.LEAK], \
        "\n".join(table(result))
    leak = result.results[-1]
    assert leak.site.function == "kstrdup" and leak.site.caller.startswith("faulty_init+")
    assert leak.record.leaks == 2 and leak.record.leaked_bytes == 64 + 8192
    assert leak.record.init_status == 12
    assert not result.ok and result.boots == 1


# The replacement module's reset (kedr_control.c), which the sweep's trials use in place
# of unloading and loading it again: refused while the driver is loaded; after it, the
# leak report, the fault points, the sites and the counters are as a fresh load has them.
RESET_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
# init once: busybox insmod would run it again through init_module() (guest-faults.sh.j2)
ins() {{ exec 3>>"$1"; insmod "$@"; rc=$?; exec 3>&-; return $rc; }}
insmod ./{REPL}.ko || exit 1
echo 1 > $D/faults/sites; echo "nth=1 caller=faulty_init" > $D/faults/kstrdup
ins ./kedr_faulty.ko mode=leaky; echo "insmod $?"
echo "== before"; cat $D/leaks
echo 1 > $D/faults/sites
insmod ./kedr_faulty.ko; echo "insmod $?"
echo 1 2>/dev/null > $D/reset; echo "reset loaded $?"
rmmod kedr_faulty
echo 1 2>/dev/null > $D/reset; echo "reset $?"
echo 2 2>/dev/null > $D/reset; echo "reset 2: $?"
echo "== after"; cat $D/leaks; cat $D/faults/kstrdup; cat $D/faults/sites; cat $D/status
insmod ./kedr_faulty.ko; echo "insmod $?"; rmmod kedr_faulty
echo "== again"; cat $D/leaks
"""


def _section(output: str, name: str) -> str:
    return output.split(f"== {name}\n", 1)[1].split("\n== ", 1)[0]


def test_the_reset_leaves_what_a_fresh_load_does(kernel: ProvisionedKernel,
                                                 tmp_path: Path) -> None:
    repl, patched, _ = build_faulty(kernel, tmp_path)
    vm = run_guest(kernel, GuestJob(script=RESET_SCRIPT, files={
        "kedr_faulty.ko": patched, f"{REPL}.ko": repl}), tmp_path / "vm", timeout=120)
    out = vm.output
    assert vm.ok, f"{vm.reason()}\n{out}\n{vm.console[-3000:]}"
    assert "insmod 12" in out and out.count("insmod 0") == 2, out
    before = _section(out, "before")
    assert before.count("\nobject ") == 2 and "target name=kedr_faulty" in before, before
    # The driver loaded links to the replacement module: no reset (-EBUSY), as no rmmod.
    assert "reset loaded 1" in out and "reset 0" in out and "reset 2: 1" in out, out
    after = _section(out, "after")
    assert "\nobject " not in after and "\nstack " not in after, after
    assert "target " not in after and "live=0 live_bytes=0" in after, after
    assert "totals allocs=0 frees=0 " in after, after
    assert "\nnever\n" in f"\n{after}" and "calls=0 matched=0 injected=0" in after, after
    assert "# recording=0 dropped=0" in after and "\nsite " not in after, after
    assert re.search(r"^kstrdup \S+ 1 0 0$", after, re.M), after     # traced, no calls
    # A load after the reset is tracked afresh: its allocations, freed at its unload.
    again = _section(out, "again")
    assert re.search(r"totals allocs=3 frees=3 live=0 ", again), again
    assert "target name=kedr_faulty state=unloaded" in again, again


def test_a_leak_is_charged_to_its_site_only(kernel: ProvisionedKernel,
                                            tmp_path: Path) -> None:
    """Site 3 (kstrdup) leaks two buffers; site 4, next in the same boot with the
    replacement module reset between them, is judged clean: nothing of site 3's."""
    repl, patched, _ = build_faulty(kernel, tmp_path)
    result = sweep(kernel, repl, patched, tmp_path / "leaky", workload=WORKLOAD,
                   module_args=("mode=leaky",))
    assert outcomes(result) == [Outcome.CLEAN, Outcome.CLEAN, Outcome.LEAK, Outcome.CLEAN], \
        "\n".join(table(result))
    leak, after = result.results[2].record, result.results[3].record
    assert (leak.leaks, leak.leaked_bytes) == (2, 64 + 8192)
    assert (after.leaks, after.leaked_bytes, after.bad_frees, after.findings) == (0, 0, 0, ())
    assert after.injected == 1 and after.init_status == 0 and after.unload_status == 0
    assert result.boots == 1 and leak.boot == after.boot == 1


def test_a_crash_is_reported_and_the_sweep_carries_on_after_a_fresh_boot(
        pinned_kernel: ProvisionedKernel, modules: tuple[Path, Path, Path]) -> None:
    repl, patched, work = modules
    lines: list[str] = []
    result = sweep(pinned_kernel, repl, patched, work / "deref", workload=WORKLOAD,
                   module_args=("mode=deref",), progress=lines.append)
    assert outcomes(result) == [Outcome.CLEAN, Outcome.CLEAN, Outcome.CRASH, Outcome.CLEAN], \
        "\n".join(table(result))
    crash = result.results[2]
    assert crash.site.function == "kstrdup" and crash.record.boot == 1
    assert any("NULL pointer dereference" in f for f in crash.record.findings), \
        crash.record.findings
    assert result.results[3].record.boot == 2 and result.boots == 2
    assert result.results[3].site.phase == "workload"
    assert any(line.startswith("sweep: site 4 of 4 (__kmalloc faulty_alloc+") for line in lines)
    saved = json.loads((work / "deref" / "sweep.json").read_text())
    assert saved["results"][2]["outcome"] == "crash" and not saved["ok"]


def test_a_hang_is_cut_off_and_the_sweep_carries_on(
        pinned_kernel: ProvisionedKernel, modules: tuple[Path, Path, Path]) -> None:
    repl, patched, work = modules
    result = sweep(pinned_kernel, repl, patched, work / "hang", workload=WORKLOAD,
                   module_args=("mode=hang",), site_timeout=8)
    assert outcomes(result) == [Outcome.CLEAN, Outcome.CLEAN, Outcome.HANG, Outcome.CLEAN], \
        "\n".join(table(result))
    assert result.results[2].site.function == "kstrdup" and result.boots == 2
    assert result.elapsed < 90


def test_a_discovery_that_hangs_is_one_line(pinned_kernel: ProvisionedKernel,
                                             modules: tuple[Path, Path, Path]) -> None:
    repl, patched, work = modules
    start = time.monotonic()
    with pytest.raises(KedrError, match=r"^sweep of kedr_faulty: discovery hung: no progress "
                                        r"for 12 s, with no fault injected \(logs: "):
        sweep(pinned_kernel, repl, patched, work / "stuck", module_args=("mode=stuck",),
              site_timeout=4)
    assert time.monotonic() - start < 60


def test_nothing_to_sweep(pinned_kernel: ProvisionedKernel,
                          modules: tuple[Path, Path, Path]) -> None:
    """A driver that reaches no function that can fail: one clear line."""
    repl, patched, work = modules
    with pytest.raises(KedrError, match=r"sweep of kedr_faulty: nothing to sweep: the driver "
                                        r"reached no function that can fail in init or exit$"):
        sweep(pinned_kernel, repl, patched, work / "idle", module_args=("mode=idle",))


def test_random_campaign_runs_reproduce_from_their_seeds(
        pinned_kernel: ProvisionedKernel, modules: tuple[Path, Path, Path]) -> None:
    repl, patched, work = modules
    result = campaign(pinned_kernel, repl, patched, work / "campaign", runs=4,
                      probability="0.5", seed=10, workload=WORKLOAD)
    assert [r.seed for r in result.runs] == [10, 11, 12, 13]
    assert result.points == ("kmalloc", "kstrdup") and result.boots == 1
    assert result.ok, [r.record.verdict for r in result.runs]   # correct error paths
    assert sum(r.record.injected for r in result.runs) > 0
    again = reproduce(pinned_kernel, repl, patched, work / "again", 12, probability="0.5",
                      workload=WORKLOAD)
    first = result.runs[2].record
    assert (again.seed, again.record.injected, again.record.init_status,
            again.record.workload_status) == \
        (12, first.injected, first.init_status, first.workload_status)
    saved = json.loads((work / "campaign" / "campaign.json").read_text())
    assert [r["seed"] for r in saved["runs"]] == [10, 11, 12, 13]


def test_scons_run_with_faults(tmp_path: Path) -> None:
    """FAULTS= for one run: kmalloc's second call fails, so the driver's init does; its
    error path frees what it took, so the run passes, saying why init failed."""
    args = [f"MODULE={DRIVER}", f"BUILD_DIR={tmp_path}", "run"]
    proc = run_scons(args + ["FAULTS=kmalloc: nth=2; kstrdup: never"], check=False)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "PASSED (insmod kedr_faulty failed (status 12) under the injected fault)" in out, out
    assert ("--- fault point kmalloc ---\nnth=2\nskipped nofail=0 nmi=0\n"
            "calls=2 matched=2 injected=1") in out, out
    assert "fault injected: kmalloc_trace at faulty_init+" in out
    bad = run_scons(args + ["FAULTS=kmallok: nth=2"], check=False)
    lines = [ln for ln in bad.stdout.splitlines() if ln.startswith("kedr-build:")]
    assert bad.returncode == 1 and lines == [
        "kedr-build: FAULTS: kmallok: unknown fault point 'kmallok'; "
        "this driver's: __kmalloc, kmalloc, kmalloc_trace, kstrdup"], bad.stdout
