"""The rules payload prints a new violation only after it drops kedr_violations_lock
(replacements/runtime/kedr_rules.c), in each pinned kernel (QEMU, 2 CPUs), with
tests/drivers/rulecon: a console driver whose write() breaks the rule
"sleep-in-atomic" (a GFP_KERNEL allocation with interrupts off), so every printk
reaches the payload from inside printk. Its init breaks the rule at 8 more call
sites from 4 threads on both CPUs at once, each a new violation that is printed:
printed under the lock, the write() that printk calls spins on the lock its own
CPU (or the CPU it waits for) holds, and the guest never gets back. One boot per
kernel."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kedr_build.checks.leaks import parse, summary
from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, Verdict, run_guest

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "rulecon"
REPL = "kedr_repl_rulecon"
SCRIPT = f"""
insmod ./{REPL}.ko || exit 1
insmod ./kedr_rulecon.ko threads=4 || exit 2
echo "== report"; cat /sys/kernel/debug/kedr_build/{REPL}/leaks
rmmod kedr_rulecon || exit 3
rmmod {REPL} || exit 4
echo "== dmesg"; dmesg | grep -E 'kedr_rulecon:|rule sleep-in-atomic'
"""


def test_violations_printed_through_a_console_that_breaks_the_rule(
        kernel: ProvisionedKernel, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DRIVER, src)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=tmp_path / "driver",
                                             modules=tuple(kbuild.discover(src, kernel.kdir))))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel,
                                       outdir=tmp_path / "out", replacement_module=REPL,
                                       driver="kedr_rulecon"))
    job = GuestJob(script=SCRIPT, files={"kedr_rulecon.ko": chain.patched[0],
                                         f"{REPL}.ko": chain.replacement})
    vm = run_guest(kernel, job, tmp_path / "vm", timeout=300, cpus=2, cut_after_crash=True)
    # No hang, and no lockup or RCU stall reported on the way.
    assert vm.verdict is Verdict.PASSED, (vm.reason(), vm.console[-6000:])
    parts = re.split(r"^== (\w+)$", vm.output, flags=re.M)
    out = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    rep = parse(out["report"], {"kedr_rulecon": chain.patched[0]})
    text = "\n".join(summary(rep))
    sites = {v.caller.split("+")[0] for v in rep.violations}
    # The write() and the 8 sites, each kept once; all of them sleep-in-atomic.
    assert sites == {"rulecon_write", *(f"rulecon_site{i}" for i in range(8))}, text
    assert {v.rule for v in rep.violations} == {"sleep-in-atomic"}, text
    assert next(v for v in rep.violations if v.caller.startswith("rulecon_write")).count > 1
    # Each new violation was printed (9 lines), the write()'s from inside printk.
    printed = [ln for ln in out["dmesg"].splitlines() if "rule sleep-in-atomic" in ln]
    assert len(printed) == 9, out["dmesg"]
    assert "kedr_rulecon: 4 threads done" in out["dmesg"]
