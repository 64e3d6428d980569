"""The leak payload's judgments while modules come and go, in each pinned kernel
(QEMU), with tests/drivers/judged.

One boot per kernel. A clean driver with a self-re-arming timer and a mutex held
by its thread stays untouched while an unrelated in-tree module (brd) loads and
unloads: its timer keeps firing, nothing is reported, brd is no target. One
module of a driver of two going leaves the other's timer alone. A timer record
whose object was freed and whose address a new object took is not judged
through the new object. A work item that loads a module while kedr cancels it
at unload does not deadlock with kedr's notifier. A self-re-arming timer the
driver never deletes, its callback running on the other CPU when the module
goes, is stopped for good and reported (it would fire into the freed module).
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
from kedr_build.vm.qemu import GuestJob, VmResult, run_guest

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "judged"
REPL = "kedr_repl_judged"

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
P=/sys/module/kedr_judged/parameters
fires() {{ cat ${{1:-$P}}/fires; }}
# Until the timer (of the module whose parameters are in $2, default $P) fired
# once more than $1; or 20 s went by: then it stopped.
fired_since() {{
  n=0
  while [ "$(fires $2)" -le "$1" ] && [ $n -lt 400 ]; do usleep 50000; n=$((n+1)); done
  fires $2
}}
echo "== rearm"; echo "kedr-judge-test: rearm" > /dev/kmsg
insmod ./{REPL}.ko || exit 1
insmod ./kedr_judged.ko mode=rearm || exit 1
echo 1 > $P/hold || exit 1
f=$(fires)
echo "fires at load: $(fired_since $f)"
modprobe brd || exit 1
rmmod brd || exit 1
f=$(fires)
echo "fires after brd: $f then $(fired_since $f)"
rmmod kedr_judged || exit 1
echo "== report rearm"; cat $D/leaks
rmmod {REPL} || exit 1
echo "== held-by-thread"; echo "kedr-judge-test: heldbythread" > /dev/kmsg
insmod ./{REPL}.ko || exit 1
insmod ./kedr_judged.ko mode=rearm hold_at_init=1 || exit 1
rmmod kedr_judged || exit 1
echo "== report held-by-thread"; cat $D/leaks
rmmod {REPL} || exit 1
echo "== multi"; echo "kedr-judge-test: multi" > /dev/kmsg
Q=/sys/module/kedr_judged_peer/parameters
insmod ./{REPL}.ko || exit 1
insmod ./kedr_judged_peer.ko || exit 1
insmod ./kedr_judged.ko mode=rearm || exit 1
rmmod kedr_judged || exit 1
f=$(fires $Q)
echo "peer fires after kedr_judged: $f then $(fired_since $f $Q)"
rmmod kedr_judged_peer || exit 1
echo "== report multi"; cat $D/leaks
rmmod {REPL} || exit 1
echo "== reuse"; echo "kedr-judge-test: reuse" > /dev/kmsg
insmod ./{REPL}.ko || exit 1
insmod ./kedr_judged.ko mode=reuse || exit 1
rmmod kedr_judged || exit 1
echo "== report reuse"; cat $D/leaks
rmmod {REPL} || exit 1
echo "== modload"; echo "kedr-judge-test: modload" > /dev/kmsg
insmod ./{REPL}.ko || exit 1
insmod ./kedr_judged.ko mode=modload || exit 1
rmmod kedr_judged &
r=$!
# A deadlock never ends: give up after 60 s (it takes about 2).
n=0; while kill -0 $r 2>/dev/null && [ $n -lt 600 ]; do usleep 100000; n=$((n+1)); done
if kill -0 $r 2>/dev/null; then echo "rmmod hung"; exit 1; fi
wait $r || exit 1
echo "brd loaded: $(grep -c '^brd ' /proc/modules)"
echo "== report modload"; cat $D/leaks
rmmod {REPL} || exit 1
rmmod brd || exit 1
echo "== left"; echo "kedr-judge-test: left" > /dev/kmsg
taskset -p 1 $$ > /dev/null || exit 1     # this shell and its children on CPU 0
for i in 1 2 3; do
  insmod ./{REPL}.ko || exit 1
  insmod ./kedr_judged.ko mode=left || exit 1
  f=$(fires)
  fired_since $f > /dev/null
  rmmod kedr_judged || exit 1
  sleep 1      # a timer left behind has fired into the freed module by now
  echo "== report left $i"; cat $D/leaks
  rmmod {REPL} || exit 1
done
echo "kedr-judge-test: end" > /dev/kmsg
echo "== alive"
echo ok
"""


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


Guest = tuple[dict[str, str], VmResult, Path]


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel, tmp_path_factory: pytest.TempPathFactory) -> Guest:
    work = tmp_path_factory.mktemp("judge_vm")
    src = work / "src"
    shutil.copytree(DRIVER, src)
    specs = kbuild.discover(src, kernel.kdir)
    built = [ko for ko in kbuild.build(kbuild.BuildRequest(
        driver=src, kdir=kernel.kdir, outdir=work / "driver", modules=tuple(specs)))
        if ko.suffix == ".ko"]
    # The driver's two modules, patched alike.
    chain = intercept(InterceptRequest(modules=tuple(built), kernel=kernel, outdir=work / "out",
                                       replacement_module=REPL, driver="kedr_judged"))
    files = {f"{REPL}.ko": chain.replacement, **{ko.name: ko for ko in chain.patched}}
    assert sorted(files) == ["kedr_judged.ko", "kedr_judged_peer.ko", f"{REPL}.ko"], files
    patched = files["kedr_judged.ko"]
    job = GuestJob(script=GUEST_SCRIPT, files=files, intree_modules=("brd",))
    vm = run_guest(kernel, job, workdir=work / "vm", timeout=600)
    return sections(vm.output), vm, patched


def console(guest: Guest, name: str) -> str:
    """The kernel log of one part of the guest script."""
    _, vm, _ = guest
    parts = re.split(r"^.*kedr-judge-test: (\w+)\r?$", vm.console, flags=re.M)
    logs = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    assert name in logs, vm.console[-3000:]
    return logs[name]


def report(guest: Guest, name: str) -> LeakReport:
    out, vm, patched = guest
    assert f"report {name}" in out, f"no report {name}\n{vm.output}\n{vm.console[-3000:]}"
    return parse(out[f"report {name}"], {"kedr_judged": patched})


def test_unrelated_module_coming_and_going_leaves_the_target_alone(guest: Guest) -> None:
    out, vm, _ = guest
    rep = report(guest, "rearm")
    text = "\n".join(summary(rep))
    # brd is no target: no slot, no judgment at its LIVE (the mutex the driver's
    # thread holds) nor at its GOING (the driver's timer).
    assert [t.name for t in rep.targets] == ["kedr_judged"], text
    assert rep.clean and not rep.leaks and not rep.violations, text
    assert "still pending at unload" not in console(guest, "rearm")
    # The timer fired after brd went (it was not deleted).
    m = re.search(r"fires after brd: (\d+) then (\d+)", out["rearm"])
    assert m and int(m[2]) > int(m[1]), out["rearm"]


def test_a_lock_a_thread_of_the_target_holds_when_init_returns_is_not_inits(
        guest: Guest) -> None:
    # Init started a thread and returned once it held its mutex (like nvme's reset
    # work on probe): not "lock-held-at-return" (before: reported at judged_hold_fn).
    rep = report(guest, "held-by-thread")
    text = "\n".join(summary(rep))
    assert not rep.violations and not rep.leaks, text
    assert "lock-held-at-return" not in console(guest, "heldbythread"), text


def test_a_module_of_the_driver_going_leaves_the_other_modules_timer_alone(
        guest: Guest) -> None:
    out, vm, _ = guest
    rep = report(guest, "multi")
    text = "\n".join(summary(rep))
    # Both modules link to the replacement module: both are targets.
    assert sorted(t.name for t in rep.targets) == ["kedr_judged", "kedr_judged_peer"], text
    assert rep.clean and not rep.leaks and not rep.violations, text
    assert "still pending at unload" not in console(guest, "multi")
    # The peer's timer fired after kedr_judged went (it was not deleted).
    m = re.search(r"peer fires after kedr_judged: (\d+) then (\d+)", out["multi"])
    assert m and int(m[2]) > int(m[1]), out["multi"]


def test_timer_record_in_freed_memory_is_not_judged_through_a_new_object(
        guest: Guest) -> None:
    _, vm, _ = guest
    rep = report(guest, "reuse")
    text = "\n".join(summary(rep))
    assert "reuse: object" in console(guest, "reuse"), vm.console[-3000:]
    # The new object and its cache, kept on purpose, are the findings; the old
    # timer's record is not read through it ("pending", callback NULL).
    assert sorted((leak.kind, leak.caller.split("+")[0]) for leak in rep.leaks) == \
        [("cache", "reuse_freed_timer_memory"), ("kmem_cache", "reuse_freed_timer_memory")], \
        text
    assert not rep.violations and not rep.bad_frees, text
    assert "still pending at unload" not in console(guest, "reuse")


def test_work_item_loading_a_module_while_cancelled_at_unload(guest: Guest) -> None:
    out, vm, _ = guest
    assert "rmmod hung" not in out.get("modload", ""), vm.console[-3000:]
    rep = report(guest, "modload")
    text = "\n".join(summary(rep))
    # Cancelled with no lock held: the module it loaded came, the unload went on.
    assert "brd loaded: 1" in out["modload"], out["modload"]
    assert [(leak.kind, leak.function, leak.caller.split("+")[0]) for leak in rep.leaks] == \
        [("work", "queue_work_on", "judged_modload_fn")], text
    assert "work still pending at unload (cancelled by kedr)" in text
    assert [t.name for t in rep.targets] == ["kedr_judged"], text
    assert "still pending at unload: cancelled" in console(guest, "modload")


def test_rearming_timer_running_on_another_cpu_is_stopped_and_reported(guest: Guest) -> None:
    _, vm, _ = guest
    for i in (1, 2, 3):
        rep = report(guest, f"left {i}")
        text = "\n".join(summary(rep))
        # Its callback re-armed it while the module went: pending, stopped, reported.
        assert [(leak.kind, leak.function, leak.caller.split("+")[0]) for leak in rep.leaks] \
            == [("timer", "mod_timer", "left_timer")], text
        assert "timer still pending at unload (deleted by kedr)" in text
    assert console(guest, "left").count("still pending at unload: deleted") == 3


def test_kernel_survives(guest: Guest) -> None:
    out, vm, _ = guest
    assert vm.status == 0 and not vm.problems, \
        f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    assert "ok" in out["alive"]
