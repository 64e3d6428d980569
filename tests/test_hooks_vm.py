"""The leak payload's allocation and free hooks in each pinned kernel (QEMU),
with tests/drivers/hooks: frees the kernel would oops on (error pointers,
interior pointers) are reported and not passed on; frees that are right are
never taken for double frees when the address was handed out again by an
allocation the payload did not see (the kernel's, or one made while the
allocator's tracking was switched off), nor when krealloc's old address is
allocated again before krealloc returns; the two ways of naming pages meet;
conditional acquires (trylocks, refcount_dec_and_lock, ...) released are not
"unlock of a lock not held"; objects the kernel frees for the driver
(kfree_rcu, skbs handed on) are not leaks; a driver freeing badly in a loop
does not flood the console. One boot per kernel, one load per mode.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kedr_build.checks.leaks import LeakReport, parse, summary
from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, run_guest

from conftest import exported, has_export

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "hooks"
REPL = "kedr_repl_hooks"
# The modes whose frees would crash an unprotected kernel last.
MODES = ("reuse", "realloc", "pages", "trylock", "rcu", "skb", "interior", "invalid", "flood")
FLOOD_N = 20000             # tests/drivers/hooks: kfree(ERR_PTR) in a loop
BAD_FREES_KEPT = 64         # KEDR_BAD_FREES in replacements/runtime/kedr_objects.c
# kmalloc(64) compiles to this on 6.1 / 6.12: the allocator mode=toggle switches off.
KMALLOC_CONST = ("kmalloc_trace", "__kmalloc_cache_noprof")

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
P=/sys/module/kedr_hooks/parameters
insmod ./{REPL}.ko || exit 1
insmod ./kedr_hooks.ko mode=toggle || exit 1
echo 1 > $P/step || exit 1
for f in {' '.join(KMALLOC_CONST)}; do
  if [ -e $D/functions/$f/leaks ]; then echo 0 > $D/functions/$f/leaks; fi
done
echo 2 > $P/step || exit 1
for f in {' '.join(KMALLOC_CONST)}; do
  if [ -e $D/functions/$f/leaks ]; then echo 1 > $D/functions/$f/leaks; fi
done
rmmod kedr_hooks || exit 1
echo "== report toggle"; cat $D/leaks
rmmod {REPL} || exit 1
for mode in {' '.join(MODES)}; do
  insmod ./{REPL}.ko || exit 1
  insmod ./kedr_hooks.ko mode=$mode || exit 1
  rmmod kedr_hooks || exit 1
  echo "== report $mode"; cat $D/leaks
  rmmod {REPL} || exit 1
  echo "== dmesg $mode"; dmesg | grep 'kedr_hooks:'
  echo "== bad free lines $mode"; dmesg -c | grep -c -e ' free: ' -e 'bad frees: '
done
echo "== alive"
echo ok
"""

Guest = tuple[dict[str, str], str, Path, ProvisionedKernel]


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def function_of(where: str) -> str:
    return where.split("+")[0].split(".")[0]


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Guest:
    work = tmp_path_factory.mktemp("hooks_vm")
    src = work / "src"
    shutil.copytree(DRIVER, src)
    specs = kbuild.discover(src, kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel, outdir=work / "out",
                                       replacement_module=REPL, driver="kedr_hooks"))
    repl_ko, patched = chain.replacement, chain.patched[0]
    job = GuestJob(script=GUEST_SCRIPT, files={"kedr_hooks.ko": patched, f"{REPL}.ko": repl_ko})
    vm = run_guest(kernel, job, workdir=work / "vm", timeout=400)
    # Each mode's test reads its own report; test_kernel_survives judges the guest.
    problems = "\n".join(p.line for p in vm.problems)
    return (sections(vm.output), f"status {vm.status}\nproblems:\n{problems}\n{vm.console}",
            patched, kernel)


def report(guest: Guest, mode: str) -> LeakReport:
    out, console, patched, _ = guest
    assert f"report {mode}" in out, f"the guest did not get to mode={mode}:\n{console[-4000:]}"
    return parse(out[f"report {mode}"], {"kedr_hooks": patched})


def test_error_pointers_are_bad_frees_not_passed_on(guest: Guest) -> None:
    rep = report(guest, "invalid")
    text = "\n".join(summary(rep))
    kernel = guest[3]
    got = sorted((b.what, b.function, b.passed) for b in rep.bad_frees)
    assert got == sorted([("invalid", "kfree", False), ("invalid", "kfree", False),
                          ("invalid", "kvfree", False),
                          ("invalid", exported(kernel, "krealloc", "krealloc_noprof"), False)]), \
        text
    assert {b.ptr for b in rep.bad_frees} == {2**64 - 12, 0x100, 2**64 - 13}, text
    assert all(function_of(b.caller) == "hooks_invalid" for b in rep.bad_frees), text
    # kfree(NULL), kfree(ZERO_SIZE_PTR), vfree(NULL) are no-ops, not bad frees.
    assert rep.totals.bad_frees == 4 and not rep.leaks, text
    out, _, _, _ = guest
    assert "krealloc(ERR_PTR) returned 0000000000000000" in out["dmesg invalid"]
    assert "free of an invalid pointer (an error pointer or an address in the first page): " \
        "kfree(0xfffffffffffffff4) at hooks_invalid+0x" in text


def test_bad_frees_in_a_loop_are_counted_not_printed_each(guest: Guest) -> None:
    rep = report(guest, "flood")
    text = "\n".join(summary(rep))
    assert rep.totals.bad_frees == FLOOD_N, text
    assert len(rep.bad_frees) == BAD_FREES_KEPT, text
    assert f"... {FLOOD_N - BAD_FREES_KEPT} more bad frees (not kept)" in text, text
    out = guest[0]
    # The kept ones and one line saying the rest are counted (before: a line
    # each, 20000, as many as the kernel's log buffer held).
    assert int(out["bad free lines flood"].split()[0]) == BAD_FREES_KEPT + 1, out


def test_interior_pointer_frees_are_bad_frees_not_passed_on(guest: Guest) -> None:
    rep = report(guest, "interior")
    text = "\n".join(summary(rep))
    kernel = guest[3]
    got = sorted((b.what, b.function, b.passed, b.alloc_function) for b in rep.bad_frees)
    assert got == sorted([
        ("interior", "kfree", False, exported(kernel, *KMALLOC_CONST)),
        ("interior", "kmem_cache_free", False,
         exported(kernel, "kmem_cache_alloc", "kmem_cache_alloc_noprof"))]), text
    assert rep.totals.bad_frees == 2 and not rep.leaks, text
    assert "free of an address inside an object the target allocated" in text


@pytest.mark.parametrize("mode", ["reuse", "toggle", "realloc"])
def test_a_reused_address_is_not_a_double_free(guest: Guest, mode: str) -> None:
    rep = report(guest, mode)
    text = "\n".join(summary(rep))
    assert rep.clean and not rep.leaks and rep.totals.bad_frees == 0, text
    assert rep.totals.live == 0 and rep.totals.allocs == rep.totals.frees, text


def test_realloc_window_was_exercised(guest: Guest) -> None:
    # The kretprobe's allocation got krealloc's old address before krealloc returned:
    # the window the payload must not confuse the two objects in.
    out, _, _, _ = guest
    report(guest, "realloc")
    assert re.search(r"kedr_hooks: realloc: old (\w+) new \w+ allocated meanwhile \1 "
                     r"\(the old address\)", out["dmesg realloc"]), out["dmesg realloc"]


def test_pages_freed_by_address_or_by_page(guest: Guest) -> None:
    rep = report(guest, "pages")
    text = "\n".join(summary(rep))
    assert rep.clean and not rep.leaks and rep.totals.bad_frees == 0, text
    assert rep.totals.allocs == rep.totals.frees == 2, text


def test_conditional_acquires_released_are_not_unlocks_not_held(guest: Guest) -> None:
    rep = report(guest, "trylock")
    text = "\n".join(summary(rep))
    assert not rep.violations and rep.clean and not rep.leaks, text
    # Each acquire was seen (and its release): 4 locks taken and released.
    assert rep.totals.allocs == rep.totals.frees == 4, text


def test_kernel_survives(guest: Guest) -> None:
    out, console, _, _ = guest
    assert console.startswith("status 0\nproblems:\n\n"), console[-4000:]
    assert "ok" in out["alive"]


def test_kfree_rcu_is_a_free(guest: Guest) -> None:
    rep = report(guest, "rcu")
    text = "\n".join(summary(rep))
    assert rep.clean and not rep.leaks, text
    assert rep.totals.allocs == rep.totals.frees == 1, text


def test_skbs_handed_to_the_kernel_are_released(guest: Guest) -> None:
    rep = report(guest, "skb")
    text = "\n".join(summary(rep))
    assert rep.clean and not rep.leaks, text
    # netlink_unicast, netlink_broadcast, rtnl_unicast, dev_queue_xmit, and where the
    # kernel exports it (6.12) netlink_broadcast_filtered: each skb released.
    out, _, _, kernel = guest
    filtered = has_export(kernel, "netlink_broadcast_filtered")
    assert ("kedr_hooks: netlink_broadcast_filtered: " in out["dmesg skb"]) == filtered
    assert rep.totals.allocs == rep.totals.frees == 4 + filtered, text
    assert rep.totals.untracked_frees == 0, text
