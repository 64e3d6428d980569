"""The leak payload in each pinned kernel (QEMU), with tests/drivers/leaker.

One boot per kernel loads the replacement module and the patched driver once
per mode, reading the leak report after the driver is gone and before the
replacement module is: the leaks are exactly the ones the driver keeps, with
their sizes and the functions that made them (init code included); a clean
driver has none; each bad free, rule violation and resource still held
(netdev, skb, IRQ handler, char-device region, misc device, class, debugfs
entry, spinlock, pending work, workqueue) is reported once and the kernel
survives it. A replacement module with an out-of-range stack depth refuses to
load with one clear line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
import shutil
from pathlib import Path

import pytest

from kedr_build.checks.leaks import LeakReport, parse, summary
from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.console import find_problems
from kedr_build.vm.qemu import GuestJob, run_guest

from conftest import exported, run_scons

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "leaker"
REPL = "kedr_repl_leaker"
MODES = ("leak", "clean", "bad", "atomic", "locks", "timer", "netdev", "frags", "irq",
         "chrdev", "spinlock", "work")

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
for mode in {' '.join(MODES)}; do
  insmod ./{REPL}.ko || exit 1
  insmod ./kedr_leaker.ko mode=$mode || exit 1
  rmmod kedr_leaker || exit 1
  echo "== report $mode"; cat $D/leaks
  rmmod {REPL} || exit 1
done
echo "== full"
insmod ./{REPL}.ko max_objects=1024 || exit 1
insmod ./kedr_leaker.ko mode=leak same_stack=3000 || exit 1
rmmod kedr_leaker || exit 1
grep ^totals $D/leaks
rmmod {REPL} || exit 1
echo "== depth"
insmod ./{REPL}.ko stack_depth=0; echo "insmod rc=$?"
dmesg | grep 'stack_depth=' || true
echo "== alive"
echo ok
"""

# (allocator, size, function the call is in): what mode=leak keeps.
EXPECTED_LEAKS = Counter([
    ("kmalloc_trace", 64, "leak_from_init"),
    ("kmalloc_trace", 100, "leak_kmalloc_trace"),
    ("__kmalloc", 200, "leak_kmalloc_var"),
    ("kmem_cache_alloc", 72, "leak_cache_obj"),
    ("vmalloc", 3 * 4096, "leak_vmalloc"),
    ("__get_free_pages", 2 * 4096, "leak_pages"),
    ("kstrdup", 12, "leak_string"),
    ("krealloc", 300, "leak_realloc"),
    ("kvmalloc_node", 5000, "leak_kvmalloc"),
    ("kmalloc_trace", 32, "leak_same_stack"),
    ("kmalloc_trace", 32, "leak_same_stack"),
    ("kmalloc_trace", 32, "leak_same_stack"),
    ("kmem_cache_create", 0, "leaker_init"),
])


# The name a call compiles to on each kernel (6.1 first): what the report names.
VARIANTS = {
    "kmalloc_trace": ("kmalloc_trace", "__kmalloc_cache_noprof"),
    "__kmalloc": ("__kmalloc", "__kmalloc_noprof"),
    "kmem_cache_alloc": ("kmem_cache_alloc", "kmem_cache_alloc_noprof"),
    "vmalloc": ("vmalloc", "vmalloc_noprof"),
    "__get_free_pages": ("__get_free_pages", "get_free_pages_noprof"),
    "alloc_pages": ("alloc_pages", "alloc_pages_noprof"),
    "krealloc": ("krealloc", "krealloc_noprof"),
    "kvmalloc_node": ("kvmalloc_node", "__kvmalloc_node_noprof"),
    "kmem_cache_create": ("kmem_cache_create", "__kmem_cache_create_args"),
    "__class_create": ("__class_create", "class_create"),
}


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def function_of(where: str) -> str:
    """``leak_pages.constprop.0+0x1c [kedr_leaker]`` -> ``leak_pages``."""
    return where.split("+")[0].split(".")[0]


Guest = tuple[dict[str, str], str, Path, ProvisionedKernel]


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Guest:
    pinned_kernel = kernel
    work = tmp_path_factory.mktemp("leaks_vm")
    src = work / "src"
    shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
    specs = kbuild.discover(src, pinned_kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=pinned_kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=pinned_kernel,
                                       outdir=work / "out", replacement_module=REPL,
                                       driver="kedr_leaker"))
    repl_ko, patched = chain.replacement, chain.patched[0]
    job = GuestJob(script=GUEST_SCRIPT, files={"kedr_leaker.ko": patched,
                                               f"{REPL}.ko": repl_ko})
    vm = run_guest(pinned_kernel, job, workdir=work / "vm", timeout=400)
    # The one kernel warning expected: mode=spinlock's init returns with a
    # spinlock held, and do_one_initcall() (init/main.c) says so.
    unexpected = [p for p in vm.problems if not initcall_imbalance(p.line)]
    assert vm.status == 0 and not unexpected, \
        f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    return sections(vm.output), vm.console, patched, kernel


def initcall_imbalance(line: str) -> bool:
    """do_one_initcall()'s WARN when an init returns with preemption off (its
    message, "initcall ... returned with preemption imbalance", comes first)."""
    return bool(re.match(r"WARNING: CPU: \d+ PID: \d+ at init/main\.c:\d+ do_one_initcall\+", line))


def report(guest: Guest, mode: str) -> LeakReport:
    out, _, patched, _ = guest
    return parse(out[f"report {mode}"], {"kedr_leaker": patched})


def name(guest: Guest, fn: str) -> str:
    """What ``fn`` (its 6.1 name) is called on the guest's kernel."""
    return exported(guest[3], *VARIANTS.get(fn, (fn,)))


def test_leaker_reports_exactly_its_leaks_with_callers_and_sizes(
        guest: Guest) -> None:
    rep = report(guest, "leak")
    got = Counter((leak.function, leak.size, function_of(leak.caller)) for leak in rep.leaks)
    expected = Counter({(name(guest, fn), size, where): n
                        for (fn, size, where), n in EXPECTED_LEAKS.items()})
    assert got == expected, "\n".join(summary(rep))
    assert all(leak.caller.endswith(" [kedr_leaker]") for leak in rep.leaks)
    assert all(leak.stack and leak.stack[0] == leak.caller for leak in rep.leaks)
    # The call from __init code is named from the module's own symbols, though
    # .init.text was freed before the report was read (leaker_init ends in a call of
    # leak_from_init, a call and not a jump in the instrumented build, so leaker_init
    # is the next frame, then the kernel's initcall); kernel frames are named by the
    # guest.
    init = next(leak for leak in rep.leaks if leak.size == 64)
    assert function_of(init.caller) == "leak_from_init"
    assert [function_of(f) for f in init.stack[1:3]] == ["leaker_init", "do_one_initcall"]
    same = next(leak for leak in rep.leaks if leak.size == 32)
    assert function_of(same.stack[1]) == "leak_from_init"
    kinds = {leak.function: leak.kind for leak in rep.leaks}
    assert kinds == {name(guest, fn): kind for fn, kind in (
        ("kmalloc_trace", "kmalloc"), ("__kmalloc", "kmalloc"), ("kmem_cache_alloc", "cache"),
        ("vmalloc", "vmalloc"), ("__get_free_pages", "pages"), ("kstrdup", "kmalloc"),
        ("krealloc", "kmalloc"), ("kvmalloc_node", "kvmalloc"),
        ("kmem_cache_create", "kmem_cache"))}
    t = rep.totals
    assert t.live == len(rep.leaks) == 13 and t.allocs - t.frees == t.live
    assert t.live_bytes == sum(size * n for (_, size, _), n in EXPECTED_LEAKS.items())
    assert (t.bad_frees, t.dropped_objects, t.dropped_stacks, t.untracked_frees) == (0, 0, 0, 0)
    assert not rep.bad_frees
    # Grouped by stack: the three kzalloc(32) from one place are one group.
    top = rep.groups()[0]
    assert len(top.leaks) == 3 and {leak.size for leak in top.leaks} == {32}
    assert any("+2 more with the same stack" in line for line in summary(rep))


def test_clean_driver_reports_nothing(guest: Guest) -> None:
    rep = report(guest, "clean")
    assert rep.clean and not rep.leaks, "\n".join(summary(rep))
    t = rep.totals
    assert t.allocs == t.frees > 20 and t.live == 0 and t.live_bytes == 0


def test_a_report_prints_just_the_stacks_its_lines_name(guest: Guest) -> None:
    """Every stack a line names is printed, and no other: a clean run's report held
    every stack ever interned, for no line that named one."""
    out = guest[0]
    for mode in MODES:
        text = out[f"report {mode}"]
        printed = [int(i) for i in re.findall(r"^stack id=(\d+) ", text, re.M)]
        named = {int(i) for i in re.findall(r"\b(?:alloc_|free_)?stack=(\d+)", text)} - {0}
        assert sorted(printed) == sorted(named), mode
    assert "\nstack id=" not in out["report clean"]
    assert len(re.findall(r"^stack id=", out["report leak"], re.M)) == 11


def test_bad_frees_are_reported_once_each_and_not_passed_on(
        guest: Guest) -> None:
    rep = report(guest, "bad")
    text = "\n".join(summary(rep))
    by_caller = {function_of(b.caller): b for b in rep.bad_frees}
    assert len(rep.bad_frees) == rep.totals.bad_frees == 6, text
    assert set(by_caller) == {"bad_double", "bad_vfree_of_kmalloc", "bad_kfree_of_vmalloc",
                              "bad_wrong_cache", "bad_wrong_order", "bad_foreign"}, text
    double = by_caller["bad_double"]
    assert (double.what, double.function, double.alloc_function) == \
        ("double", "kfree", name(guest, "kmalloc_trace"))
    assert double.free_caller and function_of(double.free_caller) == "bad_double"
    assert double.alloc_stack and double.free_stack and double.stack
    assert double.free_caller != double.caller      # the first free, then the second
    assert (by_caller["bad_vfree_of_kmalloc"].what, by_caller["bad_vfree_of_kmalloc"].function,
            by_caller["bad_vfree_of_kmalloc"].alloc_kind) == ("mismatch", "vfree", "kmalloc")
    assert (by_caller["bad_kfree_of_vmalloc"].what, by_caller["bad_kfree_of_vmalloc"].function,
            by_caller["bad_kfree_of_vmalloc"].alloc_kind) == ("mismatch", "kfree", "vmalloc")
    assert (by_caller["bad_wrong_cache"].what, by_caller["bad_wrong_cache"].function) == \
        ("mismatch", "kmem_cache_free")
    assert (by_caller["bad_wrong_order"].what, by_caller["bad_wrong_order"].alloc_kind) == \
        ("mismatch", "pages")
    foreign = by_caller["bad_foreign"]
    assert foreign.what == "foreign" and foreign.alloc_function is None
    assert not any(b.passed for b in rep.bad_frees)
    # What was refused is still allocated but is not a leak on top: only the
    # cache the driver leaves behind is.
    assert [(leak.function, function_of(leak.caller)) for leak in rep.leaks] == \
        [(name(guest, "kmem_cache_create"), "leaker_init")]


def test_sleeping_calls_in_atomic_context_once_per_call_site_with_a_count(
        guest: Guest) -> None:
    rep = report(guest, "atomic")
    text = "\n".join(summary(rep))
    got = {(v.rule, v.function, function_of(v.caller), v.count, v.context)
           for v in rep.violations}
    assert got == {("sleep-in-atomic", name(guest, "__kmalloc"), "atomic_gfp_kernel", 3,
                    "preempt-off"),
                   ("sleep-in-atomic", "mutex_lock", "atomic_mutex", 1, "preempt-off"),
                   ("sleep-in-atomic", name(guest, "kmalloc_trace"), "bh_off_gfp_kernel", 1,
                    "bh-off")}, text
    assert len(rep.violations) == 3 and rep.dropped_violations == 0
    assert all(v.stack and v.stack[0] == v.caller for v in rep.violations)
    # Everything was freed; the rule violations alone make the report unclean.
    assert not rep.leaks and not rep.bad_frees and not rep.clean
    assert f"rule violation: sleep-in-atomic: {name(guest, '__kmalloc')}() at " \
        "atomic_gfp_kernel+0x" in text
    assert ", 3 times" in text
    # The other modes broke no rule.
    assert all(not report(guest, m).violations for m in ("leak", "clean", "bad"))


def test_mutex_held_at_unload_and_unlock_not_held(
        guest: Guest) -> None:
    rep = report(guest, "locks")
    text = "\n".join(summary(rep))
    [held] = rep.leaks
    assert (held.kind, held.function, function_of(held.caller)) == \
        ("mutex", "mutex_lock", "locks_held_at_unload"), text
    got = {(v.rule, v.function, function_of(v.caller), v.count) for v in rep.violations}
    # Held since init: also broken when init returned (with the lock's call site).
    assert got == {("unlock-not-held", "mutex_unlock", "locks_unlock_not_held", 1),
                   ("lock-held-at-return", "mutex_lock", "locks_held_at_unload", 1)}, text
    assert len(rep.violations) == 2
    # A mutex at the address of the kmalloc'ed object that holds it is not the
    # object: locking, unlocking and freeing it is clean.
    assert not rep.bad_frees and rep.totals.bad_frees == 0, text
    assert "still held: a mutex taken by mutex_lock at locks_held_at_unload+0x" in text
    # A stack is unwound for each of the 5 allocations (2 caches, the object, 2 mutex
    # locks), the kfree (a kmalloc'ed object is held: a double free would show the
    # stack) and the first unlock-not-held; none for the 2 unlocks and the 2 cache
    # destroys, whose stacks no report ever shows (before: allocs + 6).
    assert (rep.totals.allocs, rep.totals.unwinds) == (5, 7), text
    # Each from the driver's own frame (found through the replacement module's frame
    # pointers), none walking the module's frames first: 7 before it did.
    assert rep.totals.full_unwinds == 0, text


def test_timer_pending_at_unload(guest: Guest) -> None:
    rep = report(guest, "timer")
    text = "\n".join(summary(rep))
    got = sorted((leak.kind, leak.function, function_of(leak.caller)) for leak in rep.leaks)
    # The object holding the timer is leaked too; the timer deleted in time and
    # the one that fired are not reported.
    assert got == [("kmalloc", name(guest, "kmalloc_trace"), "timer_pending_at_unload"),
                   ("timer", "mod_timer", "timer_pending_at_unload")], text
    timer = next(leak for leak in rep.leaks if leak.kind == "timer")
    obj = next(leak for leak in rep.leaks if leak.kind == "kmalloc")
    assert timer.ptr == obj.ptr       # first member of the object, told apart
    assert "timer still pending at unload (deleted by kedr): armed by mod_timer at " \
        "timer_pending_at_unload+0x" in text
    _, console, _, _ = guest
    assert "still pending at unload: deleted" in console


def test_a_full_table_counts_what_it_drops(guest: Guest) -> None:
    out, _, _, _ = guest
    # 1024 records for > 3000 live objects: the rest are counted, nothing is lost.
    totals = dict(f.split("=") for f in out["full"].split()[1:])
    t = {k: int(v) for k, v in totals.items()}
    assert t["dropped_objects"] > 0 and 0 < t["live"] <= 1024
    assert t["allocs"] == t["frees"] + t["live"] + t["dropped_objects"]
    assert t["allocs"] >= 3000 and t["gap"] == 1
    # The driver's frees of objects that were dropped are not "foreign".
    assert t["bad_frees"] == 0 and t["untracked_frees"] > 0


def test_kernel_survives_and_bad_settings_are_refused(
        guest: Guest) -> None:
    out, console, _, _ = guest
    assert "ok" in out["alive"]
    problems = find_problems(console)
    assert [p.line for p in problems if not initcall_imbalance(p.line)] == []
    assert len(problems) == 1 and "returned with preemption imbalance" in console
    assert "insmod rc=0" not in out["depth"]
    assert "stack_depth=0 is out of range (1-32)" in out["depth"]



def held(rep: LeakReport) -> set[tuple[str, str, str]]:
    return {(leak.kind, leak.function, function_of(leak.caller)) for leak in rep.leaks}


def test_netdev_and_skb_left_behind(guest: Guest) -> None:
    rep = report(guest, "netdev")
    text = "\n".join(summary(rep))
    # Registered, unregistered and freed; skbs freed and consumed: not reported.
    assert held(rep) == {("netdev", "alloc_netdev_mqs", "res_netdev_leaked"),
                         ("skb", "__alloc_skb", "res_skb_leaked")}, text
    assert len(rep.leaks) == 2 and not rep.bad_frees and not rep.violations, text
    skb = next(leak for leak in rep.leaks if leak.kind == "skb")
    assert skb.size == 100 and skb.stack[0] == skb.caller
    assert "still held at unload: netdev 0x" in text
    assert "acquired by alloc_netdev_mqs at res_netdev_leaked+0x" in text


def test_pages_handed_on_in_an_skb_are_not_leaks_but_a_kept_reference_is(
        guest: Guest) -> None:
    """Pages in an skb's frags go with the skb, to the stack (netif_rx) or freed
    (kfree_skb): the kernel puts them. Only the page the driver holds a second
    reference to is its leak."""
    rep = report(guest, "frags")
    text = "\n".join(summary(rep))
    assert held(rep) == {("page", name(guest, "alloc_pages"), "res_frag_kept")}, text
    assert len(rep.leaks) == 1 and not rep.bad_frees and not rep.violations, text
    assert rep.leaks[0].size == 4096, text


def test_irq_handler_left_registered(guest: Guest) -> None:
    rep = report(guest, "irq")
    text = "\n".join(summary(rep))
    # Two handlers on one shared line, told apart by dev_id: the freed one is not reported.
    assert held(rep) == {("irq", "request_threaded_irq", "res_irq_leaked")}, text
    [irq] = rep.leaks
    assert irq.ptr > 0 and f"still held at unload: irq 0x{irq.ptr:x} acquired by " \
        "request_threaded_irq at res_irq_leaked+0x" in text
    assert not rep.bad_frees and not rep.violations, text


def test_chrdev_misc_class_debugfs_left_behind(guest: Guest) -> None:
    rep = report(guest, "chrdev")
    text = "\n".join(summary(rep))
    assert held(rep) == {
        ("chrdev_region", "alloc_chrdev_region", "res_chrdev_region_leaked"),
        ("misc", "misc_register", "res_misc_leaked"),
        ("class", name(guest, "__class_create"), "res_class_leaked"),
        ("debugfs", "debugfs_create_dir", "res_debugfs_leaked"),
        # the miscdevice and its name, kept in memory on purpose
        ("kmalloc", name(guest, "kmalloc_trace"), "res_misc_leaked"),
        ("kmalloc", "kstrdup", "res_misc_leaked")}, text
    assert len(rep.leaks) == 6 and not rep.bad_frees and not rep.violations, text
    region = next(leak for leak in rep.leaks if leak.kind == "chrdev_region")
    assert region.ptr >> 20 > 0          # a dev_t with a dynamic major


def test_spinlock_held_when_init_returns_and_unlock_not_held(guest: Guest) -> None:
    rep = report(guest, "spinlock")
    text = "\n".join(summary(rep))
    got = {(v.rule, v.function, function_of(v.caller), v.count) for v in rep.violations}
    assert got == {("lock-held-at-return", "_raw_spin_lock", "spin_held_at_return", 1),
                   ("unlock-not-held", "_raw_spin_unlock", "spin_unlock_not_held", 1)}, text
    assert len(rep.violations) == 2
    # Still held at unload too (the driver's exit re-initialised it, unseen).
    assert held(rep) == {("spinlock", "_raw_spin_lock", "spin_held_at_return")}, text
    assert "lock-held-at-return: a lock taken by _raw_spin_lock() at spin_held_at_return+0x" \
        in text
    _, console, _, _ = guest
    # The kernel sees the imbalance too, without saying which lock.
    assert re.search(r"initcall leaker_init\+0x\w+/0x\w+ \[kedr_leaker\] returned with "
                     r"preemption imbalance", console)


def test_work_pending_and_workqueue_left_at_unload(guest: Guest) -> None:
    rep = report(guest, "work")
    text = "\n".join(summary(rep))
    # Flushed, cancelled and destroyed ones are not reported.
    assert held(rep) == {("dwork", "queue_delayed_work_on", "work_pending_at_unload"),
                         ("workqueue", "alloc_workqueue", "workqueue_leaked")}, text
    assert len(rep.leaks) == 2 and not rep.bad_frees and not rep.violations, text
    assert "work still pending at unload (cancelled by kedr): queued by queue_delayed_work_on " \
        "at work_pending_at_unload+0x" in text
    _, console, _, _ = guest
    assert "still pending at unload: cancelled" in console


def test_clean_mode_releases_every_resource(guest: Guest) -> None:
    rep = report(guest, "clean")
    assert rep.clean and not rep.leaks, "\n".join(summary(rep))
    # Each resource kind was acquired and released (a catalog entry per call).
    out, _, _, _ = guest
    assert rep.totals.untracked_frees == 0, out["report clean"]


def test_scons_run_prints_the_leaks_and_fails(pinned_kernel: ProvisionedKernel,
                                              tmp_path: Path) -> None:
    proc = run_scons([f"MODULE={DRIVER}", f"BUILD_DIR={tmp_path}", "run"], check=False)
    out = proc.stdout
    assert proc.returncode != 0, out
    summary_at = out.index("--- leaks, bad frees, rule violations (full report: ")
    assert out.index("--- call trace") < summary_at
    assert "13 possible leaks (26324 bytes), 0 bad frees, 0 rule violations" in out[summary_at:]
    assert "leak: 32 bytes from kmalloc_trace (kmalloc) at leak_same_stack+0x" in out
    assert "(+2 more with the same stack, 96 bytes in all)" in out
    assert "kedr-build: leaker: FAILED: 13 possible leaks, 0 bad frees, 0 rule violations [" in out
    saved = json.loads((tmp_path / "leaker" / "run" / "leaks.json").read_text())
    assert saved["totals"]["live"] == 13
    assert (tmp_path / "leaker" / "run" / "leaks.txt").read_text().startswith("kedr-leaks 1\n")
    # The trace names calls from __init code right too (kallsyms alone, read after
    # init, would say "leaker_exit+0x4d46": the nearest symbol that survived).
    trace = (tmp_path / "leaker" / "run" / "trace.txt").read_text()
    assert re.search(r"call_kmalloc_trace: call_site=leak_from_init\+0x[0-9a-f]+\[kedr_leaker\] "
                     r"s=0x[0-9a-f]+ flags=GFP_KERNEL size=64 ", trace), trace
    assert re.search(r"call_kmem_cache_create: call_site=leaker_init\+0x", trace)
    assert "leaker_exit+0x4" not in trace


def test_scons_run_with_suppressions_passes_and_counts(pinned_kernel: ProvisionedKernel,
                                                       tmp_path: Path) -> None:
    supp = tmp_path / "leaker.supp"
    supp.write_text("# known leaks of the test driver\nleak frame=leak_*\n"
                    "leak frame=leaker_init\nbadfree kind=double\n")
    proc = run_scons([f"MODULE={DRIVER}", f"BUILD_DIR={tmp_path}", f"SUPPRESS={supp}", "run"],
                     check=False)
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "13 findings suppressed" in out
    assert f"suppressed 12: {supp}:2: leak frame=leak_*" in out
    assert f"suppressed 1: {supp}:3: leak frame=leaker_init" in out
    assert f"suppressed 0: {supp}:4: badfree kind=double   (matched nothing)" in out
    assert "kedr-build: leaker: PASSED (13 suppressed by SUPPRESS=, 3 rules) [" in out


def test_scons_bad_suppressions_file_is_one_line(tmp_path: Path) -> None:
    supp = tmp_path / "bad.supp"
    supp.write_text("leak function=kfree\nleek frame=x\n")
    proc = run_scons([f"MODULE={DRIVER}", f"BUILD_DIR={tmp_path}", f"SUPPRESS={supp}", "run"],
                     check=False)
    assert proc.returncode != 0
    assert f"kedr-build: {supp} line 2: unknown category 'leek' (one of leak, badfree, rule)" \
        in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
