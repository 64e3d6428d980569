"""Tail calls in each pinned kernel (QEMU), with tests/drivers/tailcall: a kernel call
gcc -O2 makes with a jmp (a sibling call, opcode e9) is reported at the driver's function
that makes it, not at that function's caller (the kernel's delete_module for an exit
ending in kfree()), in the trace and in the leak report.

The driver twice: built from source by kedr-build (the instrumented build: sibling
calls off, so each such call is a call), and built as shipped (plain kbuild flags: the
jmps stay; objdump shows them) and patched as a prebuilt module, as KO= does: the
replacement module then tells from the relocations which jump a call came from (the
exit, an entry point, for a call from outside the driver; tc_drop and tc_alloc by the
call before the return address in tc_init). One boot per kernel."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, run_guest
from kedr_build.vm.trace import Symbolizer, parse_trace

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "tailcall"
REPL = "kedr_repl_tailcall"
VARIANTS = ("src", "ko")

GUEST_SCRIPT = f"""
set -e
T=/sys/kernel/tracing
for v in {' '.join(VARIANTS)}; do
  insmod ./$v/{REPL}.ko
  echo 1 > $T/events/{REPL}/enable
  insmod ./$v/kedr_tailcall.ko
  echo "== kallsyms $v"; grep '\\[kedr_tailcall\\]' /proc/kallsyms
  rmmod kedr_tailcall
  echo 0 > $T/events/{REPL}/enable
  echo "== trace $v"; grep ' call_' $T/trace || true
  echo > $T/trace
  insmod ./$v/kedr_tailcall.ko leak=1
  echo "== leak kallsyms $v"; grep '\\[kedr_tailcall\\]' /proc/kallsyms
  rmmod kedr_tailcall
  echo "== leaks $v"; cat /sys/kernel/debug/kedr_build/{REPL}/leaks
  rmmod {REPL}
done
"""


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def function_of(where: str) -> str:
    """``tc_alloc.constprop.0+0x1c [kedr_tailcall]`` -> ``tc_alloc``."""
    return where.split("+")[0].split(".")[0]


# exit is also cleanup_module, init also init_module (module_init/module_exit aliases).
SAME = {"cleanup_module": "tc_exit", "init_module": "tc_init"}


def jump_sites(ko: Path) -> dict[str, set[str]]:
    """Import -> the functions that jump to it, as GNU objdump disassembles them."""
    out = subprocess.run(["objdump", "-dr", str(ko)], capture_output=True, text=True,
                         check=True).stdout
    sites: dict[str, set[str]] = {}
    function = ""
    previous = ""
    for line in out.splitlines():
        if m := re.match(r"^[0-9a-f]+ <(.+)>:$", line):
            function = m.group(1)
        elif m := re.search(r"R_X86_64_(?:PLT32|PC32)\s+(\w+)-0x4$", line):
            if re.search(r":\s+e9 00 00 00 00\s", previous):
                sites.setdefault(m.group(1), set()).add(SAME.get(function, function))
        previous = line
    return sites


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[dict[str, str], str]:
    work = tmp_path_factory.mktemp("tailcall_vm")
    files: dict[str, Path] = {}
    for variant in VARIANTS:
        src = work / variant / "src"
        shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
        if variant == "src":
            ko = kbuild.build(kbuild.BuildRequest(
                driver=src, kdir=kernel.kdir, outdir=work / variant / "driver",
                modules=tuple(kbuild.discover(src, kernel.kdir))))[0]
        else:
            # As shipped: the kernel's own flags only, and gcc makes these calls jumps.
            subprocess.run(["make", "-C", str(kernel.kdir), f"M={src}", "modules"], check=True,
                           capture_output=True)
            ko = src / "kedr_tailcall.ko"
            jumps = jump_sites(ko)
            assert {"tc_drop", "tc_exit"} <= jumps.get("kfree", set()), jumps
        chain = intercept(InterceptRequest(modules=(ko,), kernel=kernel,
                                           outdir=work / variant / "out",
                                           replacement_module=REPL, driver="kedr_tailcall"))
        files[f"{variant}/{REPL}.ko"] = chain.replacement
        files[f"{variant}/kedr_tailcall.ko"] = chain.patched[0]
    vm = run_guest(kernel, GuestJob(script=GUEST_SCRIPT, files=files), work / "vm", timeout=400)
    assert vm.ok, f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    return sections(vm.output), vm.output


def traced_sites(out: dict[str, str], variant: str) -> dict[str, set[str]]:
    """Intercepted function -> the functions of the driver named as its call sites."""
    names = Symbolizer(out[f"kallsyms {variant}"])
    sites: dict[str, set[str]] = {}
    for e in parse_trace(out[f"trace {variant}"]).events:
        # %pS printed when the trace is read: the driver is gone by then, its addresses
        # stay hex (named here from its kallsyms), the kernel's are names.
        where = e.fields["call_site"]
        if where.startswith("0x"):
            where = names.resolve(int(where, 16), max_offset=0x1000) or where
        if "[kedr_tailcall]" not in where:
            where = f"{where} (not in kedr_tailcall)"
        fn = function_of(where)
        sites.setdefault(e.function, set()).add(SAME.get(fn, fn))
    return sites


@pytest.mark.parametrize("variant", VARIANTS)
def test_tail_called_kfree_is_reported_at_the_driver_function(
        guest: tuple[dict[str, str], str], variant: str) -> None:
    out, _ = guest
    sites = traced_sites(out, variant)
    # tc_drop (from init) and the module's exit both end in kfree().
    assert sites.get("kfree") == {"tc_drop", "tc_exit"}, sites


@pytest.mark.parametrize("variant", VARIANTS)
def test_tail_called_allocation_is_traced_and_leaks_at_the_driver_function(
        guest: tuple[dict[str, str], str], variant: str) -> None:
    out, _ = guest
    sites = traced_sites(out, variant)
    alloc = [fn for fn in sites if fn != "kfree" and fn != "kstrdup"]
    assert len(alloc) == 1 and sites[alloc[0]] == {"tc_alloc"}, sites
    report = out[f"leaks {variant}"]
    objects = re.findall(r"^object fn=(\S+) .* size=200 caller=(0x[0-9a-f]+)", report, re.M)
    assert len(objects) == 1, report
    names = Symbolizer(out[f"leak kallsyms {variant}"])
    where = names.resolve(int(objects[0][1], 16), max_offset=0x1000) or objects[0][1]
    assert "[kedr_tailcall]" in where and function_of(where) == "tc_alloc", where
