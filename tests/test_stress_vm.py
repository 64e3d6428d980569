"""The leak payload under concurrency, on the SMP guest (2 vCPUs by default,
run truly in parallel by multi-threaded TCG): tests/drivers/stress runs 4
kthreads and a timer (softirq) allocating and freeing, >= 10^5 operations,
while the guest flips tracing on and off and reads the leak report. The
payload's totals must equal the driver's own counts exactly, with nothing
leaked, dropped or reported bad, and no oops or WARN."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kedr_build.checks.leaks import parse
from kedr_build.intercept import catalog, generate
from kedr_build.intercept.pipeline import select_functions
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.patch import patch_module
from kedr_build.ko.plan import build_plan
from kedr_build.ko.symvers import read_symvers
from kedr_build.vm.console import find_problems
from kedr_build.vm.qemu import GuestJob, run_guest

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "stress"
REPL = "kedr_repl_stress"
THREADS, OPS = 4, 25000

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
T=/sys/kernel/tracing
echo "== cpus"; grep -c ^processor /proc/cpuinfo
insmod ./{REPL}.ko || exit 1
insmod ./kedr_stress.ko threads={THREADS} ops={OPS} &
pid=$!
i=0
while kill -0 $pid 2>/dev/null; do
  v=$((i % 2))
  echo $v > $D/functions/kfree/trace
  echo $v > $D/functions/__kmalloc/trace
  echo $v > $T/events/{REPL}/enable
  cat $D/leaks > /dev/null
  i=$((i + 1))
done
wait $pid
echo "== insmod"; echo "rc=$? toggles=$i"
echo 0 > $T/events/{REPL}/enable
echo "== dmesg"; dmesg | grep 'kedr_stress: done'
rmmod kedr_stress || exit 1
echo "== report"; cat $D/leaks
rmmod {REPL} || exit 1
"""


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_exact_totals_under_concurrency_on_smp(pinned_kernel: ProvisionedKernel,
                                               tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
    specs = kbuild.discover(src, pinned_kernel.kdir)
    driver_ko = kbuild.build(kbuild.BuildRequest(
        driver=src, kdir=pinned_kernel.kdir, outdir=tmp_path / "driver",
        modules=tuple(specs)))[0]
    functions = select_functions([driver_ko], pinned_kernel.symvers).functions
    assert {"__kmalloc", "kfree", "kmem_cache_alloc",
            "kmem_cache_free"} <= set(functions)
    plan = build_plan(functions, kernel_exports=set(read_symvers(pinned_kernel.symvers)),
                      replacement_module=REPL)
    module = generate.generate(plan.mapping().items(), catalog.load(), pinned_kernel.symvers,
                               tmp_path / "repl", REPL, kernel=pinned_kernel.release)
    repl_ko = generate.build_replacement(module.directory, pinned_kernel.kdir)
    patched = tmp_path / "kedr_stress.ko"
    patch_module(driver_ko, patched, plan, module.symvers, manifest=False)
    vm = run_guest(pinned_kernel, GuestJob(script=GUEST_SCRIPT, files={
        "kedr_stress.ko": patched, f"{REPL}.ko": repl_ko}), tmp_path / "vm", timeout=900)
    assert vm.ok, f"status {vm.status}, problems {vm.problems}\n{vm.output[-3000:]}"
    out = sections(vm.output)
    assert out["cpus"].split() == ["2"]
    m = re.search(r"rc=(\d+) toggles=(\d+)", out["insmod"])
    assert m and m.group(1) == "0" and int(m.group(2)) >= 2, out["insmod"]
    done = re.search(r"done allocs=(\d+) frees=(\d+) timer=(\d+) arms=(\d+) cpus=(\d+)",
                     out["dmesg"])
    assert done, out["dmesg"]
    allocs, frees, timer_runs, arms, cpus_used = map(int, done.groups())
    assert allocs == frees >= THREADS * OPS >= 10**5
    assert timer_runs > 0 and cpus_used == 2
    rep = parse(out["report"])
    t = rep.totals
    # +1: the kmem_cache the driver created (and destroyed at unload); each
    # mod_timer() arms a timer resource, released by the next one or the delete.
    assert (t.allocs, t.frees) == (allocs + 1 + arms, frees + 1 + arms)
    assert (t.live, t.bad_frees, t.dropped_objects, t.dropped_stacks, t.untracked_frees,
            t.nmi_skipped, t.gap) == (0, 0, 0, 0, 0, 0, False)
    assert not rep.leaks and not rep.bad_frees
    assert find_problems(vm.console) == []
