"""Hot patching proven in each pinned kernel, in one boot: a replacement module
attaches to modules that are already loaded and were not patched (a driver of
ours that counts its own calls, and the in-tree loop driver under a workload),
sees exactly the calls of the attached window, judges leaks for that window only,
detaches to a pass-through, re-attaches, and refuses what it must with one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import REPO, kernel_name, outputs, run_scons
from kedr_build.intercept.attach import AttachRequest, AttachResult, prepare
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.ko.container import read_module
from kedr_build.ko.elf import ElfRel
from kedr_build.vm.qemu import GuestJob, run_guest

pytestmark = pytest.mark.vm
ATTACHEE = REPO / "tests" / "drivers" / "attachee"

GUEST = r"""
set -u
D=/sys/kernel/debug/kedr_attachee
R=/sys/kernel/debug/kedr_build/kedr_repl_kedr_attachee
L=/sys/kernel/debug/kedr_build/kedr_repl_loop
B=/sys/kernel/debug/kedr_build/kedr_repl_attachee_b
cmd() { echo "$1" > $D/cmd; }
step() { echo "== $*"; }
calls() { awk -v f="$2" '$1 == f { print $4 }' "$1/status"; }
work() {
	dev=$(losetup -f) && losetup "$dev" /tmp/img &&
	dd if=/dev/zero of="$dev" bs=4k count=8 2>/dev/null && dd if="$dev" of=/dev/null bs=4k 2>/dev/null
	losetup -d "$dev"
}

step not-loaded; sh a/attach.sh; echo "rc=$?"
insmod kedr_attachee.ko || exit 1
cmd keep; cmd keep; cmd churn
step attach; sh a/attach.sh; echo "rc=$?"; cat $R/attach
echo "before $(cat $D/counts)"
echo 1 > /sys/kernel/tracing/events/kedr_repl_kedr_attachee/call_kfree/enable
cmd drop; cmd keep; cmd churn; cmd churn; cmd churn; cmd tail
echo "after $(cat $D/counts)"
grep -o "call_site=tail_free+0x[0-9a-f]*" /sys/kernel/tracing/trace
step twice; sh a/attach.sh; echo "rc=$?"
step rmmod-replacement; rmmod kedr_repl_kedr_attachee 2>&1; echo "rc=$?"
step rmmod-target; rmmod kedr_attachee 2>&1; echo "rc=$?"
step status; cat $R/status
step leaks; cat $R/leaks
step detach; sh a/detach.sh; echo "rc=$?"; cmd churn; cmd churn
step status-detached; cat $R/status
step reattach; sh a/attach.sh; echo "rc=$?"; cmd churn; cat $R/status
sh a/detach.sh; echo "rc=$?"
step busy-detach
sh a/attach.sh >/dev/null; echo "rc=$?"
( echo nap > $D/cmd ) &
nap=$!
i=0; until grep -q "inflight=1$" $R/attach || [ $i -ge 600 ]; do usleep 50000; i=$((i + 1)); done
echo 200 > /sys/module/kedr_repl_kedr_attachee/parameters/detach_timeout_ms
sh a/detach.sh; echo "rc=$?"
grep "^state" $R/attach
rmmod kedr_repl_kedr_attachee 2>/dev/null; echo "rmmod=$?"
sh a/attach.sh; echo "rc=$?"
kill $nap; wait $nap
sh a/detach.sh; echo "rc=$?"
grep "^state" $R/attach
echo 10000 > /sys/module/kedr_repl_kedr_attachee/parameters/detach_timeout_ms
step held-across
cmd hold
sh a/attach.sh >/dev/null; echo "rc=$?"
echo "status0"; cat $R/status
cmd release; cmd churn
echo "status1"; cat $R/status
grep -E "^(totals|violation)" $R/leaks
sh a/detach.sh >/dev/null; echo "rc=$?"
step switching
echo "before $(cat $D/counts)"
( while [ ! -f /tmp/stop ]; do echo churn > $D/cmd; done ) &
bg=$!
i=0; ok=0
while [ $i -lt 6 ]; do
	sh a/attach.sh >/dev/null && ok=$((ok + 1))
	usleep 100000
	sh a/detach.sh >/dev/null
	i=$((i + 1))
done
touch /tmp/stop; wait $bg
echo "switches=$ok"
echo "after $(cat $D/counts)"
cat $R/status
rmmod kedr_repl_kedr_attachee; echo "rmmod=$?"
step wrong-site
insmod a/kedr_repl_kedr_attachee/kedr_repl_kedr_attachee.ko
text=$(cat /sys/module/kedr_attachee/sections/.text)
this=$(cat /sys/module/kedr_attachee/sections/.gnu.linkonce.this_module)
echo "target kedr_attachee $this" > $R/attach
echo "site $text $WRONG_OFFSET call kfree" > $R/attach
echo attach > $R/attach; echo "rc=$?"; cat $R/attach
echo reset > $R/attach
step build-id
mkdir -p /tmp/fs/module/kedr_attachee/notes
touch /tmp/fs/module/kedr_attachee/initstate
printf 'another build' > /tmp/fs/module/kedr_attachee/notes/.note.gnu.build-id
KEDR_SYSFS=/tmp/fs sh a/attach.sh; echo "rc=$?"
step probe-in-the-way
T=/sys/kernel/tracing
echo "p:kedr_test/inway kedr_attachee:$IN_THE_WAY" > $T/kprobe_events &&
	echo 1 > $T/events/kedr_test/inway/enable; echo "kp=$?"
sh a/attach.sh; echo "rc=$?"; cat $R/attach
echo 0 > $T/events/kedr_test/inway/enable; echo "-:kedr_test/inway" >> $T/kprobe_events; echo "unkp=$?"
cmd churn; echo "target still runs: $(cat $D/counts)"
rmmod kedr_repl_kedr_attachee; rmmod kedr_attachee; echo "rmmod rc=$?"

step loop
modprobe loop || exit 1
dd if=/dev/zero of=/tmp/img bs=1k count=256 2>/dev/null
work; work
sh l/attach.sh; echo "rc=$?"
work; work
cat $L/status
grep -E "^(attached|totals|violation|badfree)" $L/leaks
step loop-detached
sh l/detach.sh; echo "rc=$?"
work
cat $L/status
rmmod kedr_repl_loop; echo "rc=$?"
step loop-switching
( while [ ! -f /tmp/stop-loop ]; do work; done ) &
bg=$!
i=0; ok=0
while [ $i -lt 4 ]; do
	sh l/attach.sh >/dev/null && ok=$((ok + 1))
	usleep 200000
	sh l/detach.sh >/dev/null && ok=$((ok + 1))
	i=$((i + 1))
done
touch /tmp/stop-loop; wait $bg
echo "ok=$ok"
cat $L/status
grep -E "^(attached|totals|violation|badfree)" $L/leaks
rmmod kedr_repl_loop; echo "rc=$?"
step other-payloads
insmod kedr_attachee.ko || exit 1
sh a/attach.sh >/dev/null; echo "rc=$?"
sh b/attach.sh; echo "rc=$?"
cmd churn
sh a/detach.sh --unload >/dev/null; echo "rc=$?"
sh b/attach.sh; echo "rc=$?"
cmd churn; cmd churn
step b-status
cat $B/status
sh b/detach.sh --unload >/dev/null; echo "rc=$?"
rmmod kedr_attachee; echo "rmmod=$?"
step end
"""


def _prepare(ko: Path, kernel: ProvisionedKernel, out: Path, name: str) -> AttachResult:
    return prepare(AttachRequest(ko=ko, kernel=kernel, outdir=out, replacement_module=name))


def _files(res: AttachResult, prefix: str) -> dict[str, Path]:
    return res.guest_files(prefix)


def _steps(output: str) -> dict[str, str]:
    parts = re.split(r"^== (\S+)\n", output, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _status(text: str) -> dict[str, int]:
    """function -> calls, from a replacement module's status file."""
    return {f[0]: int(f[3]) for f in (line.split() for line in text.splitlines())
            if len(f) == 5 and all(x.isdigit() for x in f[2:])}


def _counts(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _loop_ko(kernel: ProvisionedKernel) -> Path:
    assert kernel.modules_dir is not None
    found = sorted(kernel.modules_dir.rglob("loop.ko*"))
    assert found, f"no loop.ko under {kernel.modules_dir}"
    return found[0]


def _imports(ko: Path, name: str) -> bool:
    elf = ElfRel(read_module(ko).elf, str(ko))
    return name in {n for _, n in elf.undefined()}


def test_attach_detach_reattach(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    run_scons([f"MODULE={ATTACHEE}", f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}",
               "build"])
    ko = outputs(build, "attachee", kernel) / "kedr_attachee.ko"
    mine = _prepare(ko, kernel, tmp_path / "attach-mine", "kedr_repl_kedr_attachee")
    loop = _prepare(_loop_ko(kernel), kernel, tmp_path / "attach-loop", "kedr_repl_loop")
    # Other payloads: a second replacement module for the same driver, kfree only.
    other = prepare(AttachRequest(ko=ko, kernel=kernel, outdir=tmp_path / "attach-b",
                                  replacement_module="kedr_repl_attachee_b",
                                  functions=("kfree",)))
    assert {s.kind for s in loop.sites.sites} == {"call", "jmp"}   # tail calls too
    sites = json.loads((tmp_path / "attach-mine" / "attach.json").read_text())["sites"]
    kfree = next(s for s in sites if s["function"] == "kfree" and s["kind"] == "call")
    tail = next(s for s in sites if s["function"] == "kfree" and s["kind"] == "jmp")
    script = (f"WRONG_OFFSET=0x{kfree['offset'] + 1:x}\n"
              f"IN_THE_WAY={kfree['probe']}\n" + GUEST)
    job = GuestJob(script=script, files={"kedr_attachee.ko": ko, **_files(mine, "a"),
                                         **_files(loop, "l"), **_files(other, "b")},
                   intree_modules=("loop",))
    result = run_guest(kernel, job, tmp_path / "vm", timeout=300)
    out = result.output
    assert result.status == 0 and not result.problems, out + result.console
    s = _steps(out)
    assert "end" in s, out

    assert s["not-loaded"] == "attach.sh: module kedr_attachee is not loaded\nrc=1\n"
    assert "attached to kedr_attachee (7 sites)\nrc=0\nstate attached" in s["attach"]
    before = _counts(re.search(r"^before (.*)$", s["attach"], re.M).group(1))  # type: ignore[union-attr]
    after = _counts(re.search(r"^after (.*)$", s["attach"], re.M).group(1))  # type: ignore[union-attr]
    # Exact: what the driver counted itself in the attached window, no call lost or doubled.
    seen = _status(s["status"])
    alloc = next(f for f in seen if "kmalloc" in f)
    assert seen[alloc] == after["alloc"] - before["alloc"] == 5
    assert seen["kfree"] == after["free"] - before["free"] == 5   # the tail call's too
    assert seen["mutex_lock"] == after["lock"] - before["lock"] == 6
    assert seen["mutex_unlock"] == after["unlock"] - before["unlock"] == 6
    assert seen["_copy_from_user"] == 6
    # The kfree reached by a jmp is reported at the jump, not at the caller's caller.
    assert f"call_site={tail['where']}" in s["attach"].splitlines(), s["attach"]
    assert s["twice"] == ("attach.sh: kedr_repl_kedr_attachee is already attached to "
                          "kedr_attachee\nrc=1\n")
    assert "rc=1" in s["rmmod-replacement"] and "rc=1" in s["rmmod-target"]

    # Leaks of the window only: the object kept before attach is not reported, the one
    # dropped in the window (allocated before) is an untracked free, never a bad one.
    leaks = s["leaks"]
    assert re.search(r"^attached target=kedr_attachee state=attached attaches=1 ", leaks, re.M)
    objects = re.findall(r"^object fn=(\S+) .*caller=(0x[0-9a-f]+)", leaks, re.M)
    assert [fn for fn, _ in objects] == [alloc], leaks
    totals = _counts(re.search(r"^totals (.*)$", leaks, re.M).group(1))  # type: ignore[union-attr]
    assert totals["live"] == 1 and totals["bad_frees"] == 0 and totals["untracked_frees"] == 1
    assert totals["gap"] == 1
    assert not re.search(r"^violation ", leaks, re.M)

    # Detached: the target runs on, nothing more reaches the replacements.
    assert "detached from kedr_attachee\nrc=0" in s["detach"]
    assert _status(s["status-detached"]) == seen
    reattached = _status(s["reattach"])
    assert "rc=0" in s["reattach"] and reattached["kfree"] == seen["kfree"] + 1

    # Detach with a call blocked in a replacement (msleep_interruptible, until a
    # signal): bounded, one line, the sites disarmed and the module kept ("detaching",
    # not unloadable, no re-attach); once the call returns, detach again finishes.
    busy = s["busy-detach"].splitlines()
    assert busy[0] == "rc=0", busy
    assert busy[1] == ("detach.sh: detach: 1 calls still in flight in the replacements of "
                       "kedr_attachee after 200 ms (blocked in one?); the sites are disarmed: "
                       "detach again to wait on"), busy
    assert busy[2:4] == ["rc=1", "state detaching target=kedr_attachee sites=7 attaches=3 "
                                 "inflight=1"], busy
    assert busy[4] == "rmmod=1", busy
    assert busy[5:7] == ["attach.sh: kedr_repl_kedr_attachee is still detaching (calls in "
                         "flight): sh detach.sh again", "rc=1"], busy
    assert busy[-3:] == ["detach.sh: kedr_repl_kedr_attachee detached from kedr_attachee",
                         "rc=0", "state detached target=kedr_attachee sites=7 attaches=3 "
                                 "inflight=0"], busy

    # A mutex taken before attach and unlocked in the window: the unlock reaches the
    # replacement (counted) and is passed on, never an "unlock-not-held" violation.
    held = s["held-across"]
    assert held.startswith("rc=0\n") and held.endswith("rc=0\n"), held
    st0, st1 = (_status(part) for part in held.split("status1\n"))
    assert st1["mutex_unlock"] - st0["mutex_unlock"] == 2, held   # release, churn's
    assert st1["mutex_lock"] - st0["mutex_lock"] == 1, held       # churn's
    assert "\ntotals " in held and "\nviolation " not in held, held

    # Switching while the driver's workload loops: six windows, no call doubled (the
    # replacements saw no more than the driver made), none lost inside a window (a
    # lock/unlock or alloc/free pair is split only at a window's edge: two per window).
    sw = s["switching"]
    assert "switches=6" in sw and "rmmod=0" in sw, sw
    d0 = _counts(re.search(r"^before (.*)$", sw, re.M).group(1))  # type: ignore[union-attr]
    d1 = _counts(re.search(r"^after (.*)$", sw, re.M).group(1))  # type: ignore[union-attr]
    s0, s1 = reattached, _status(sw)
    made = {"mutex_lock": "lock", "mutex_unlock": "unlock", alloc: "alloc", "kfree": "free"}
    seen_sw = {f: s1[f] - s0[f] for f in made}
    for f, k in made.items():
        assert 0 < seen_sw[f] <= d1[k] - d0[k], (f, seen_sw, d0, d1)
    assert abs(seen_sw["mutex_lock"] - seen_sw["mutex_unlock"]) <= 12, seen_sw
    assert abs(seen_sw[alloc] - seen_sw["kfree"]) <= 12, seen_sw

    # Refusals: one line each, the target left running.
    assert "rc=1" in s["wrong-site"]
    assert re.search(r"^error site free_one\+0x[0-9a-f]+/0x[0-9a-f]+ \[kedr_attachee\]: not a "
                     r"call of kfree \([0-9a-f]{10}\): the \.ko does not match the loaded module$",
                     s["wrong-site"], re.M), s["wrong-site"]
    assert s["build-id"] == ("attach.sh: kedr_attachee: loaded module's build id differs "
                             "from kedr_attachee.ko's: another build of kedr_attachee; "
                             "attach with its own .ko\nrc=1\n")
    way = s["probe-in-the-way"]
    assert "kp=0" in way and "unkp=0" in way and "rc=1" in way and "state detached" in way, way
    refusal = [line for line in way.splitlines() if line.startswith("attach.sh:")]
    assert len(refusal) == 1 and "free_one" in refusal[0], way
    # One line: attach.sh's, not the shell's "write error" of the refused write as well.
    assert way.splitlines()[1:3] == [refusal[0], "rc=1"], way
    assert "target still runs" in way and "rmmod rc=0" in way

    # The in-tree loop driver, loaded at boot and not patched: its calls traced, its
    # locks balanced, no bad free nor rule violation in the window; detached, no more.
    assert f"attached to loop ({len(loop.sites.sites)} sites)\nrc=0" in s["loop"]
    traced = _status(s["loop"])
    assert traced["mutex_unlock"] > 0 and traced["_raw_spin_lock_irq"] > 0
    assert traced["_raw_spin_lock_irq"] == traced["_raw_spin_unlock_irq"]
    # Mutexes: every lock the window saw is unlocked in it, but on a kernel whose loop
    # updates queue limits through queue_limits_start_update() (an inline mutex_lock
    # of q->limits_lock in the driver) and queue_limits_commit_update() (the block
    # core unlocks it: no call of the driver; include/linux/blkdev.h of the pinned
    # 6.12, detected by the import): loop_configure() and
    # loop_clear_limits() do it once each per losetup/losetup -d, twice in the window.
    locks = traced.get("mutex_lock", 0) + traced.get("mutex_lock_killable", 0)
    core_unlocks = 2 * 2 if _imports(_loop_ko(kernel), "queue_limits_commit_update") else 0
    assert locks - traced["mutex_unlock"] == core_unlocks, traced
    loop_totals = _counts(re.search(r"^totals (.*)$", s["loop"], re.M).group(1))  # type: ignore[union-attr]
    assert loop_totals["bad_frees"] == 0 and not re.search(r"^violation ", s["loop"], re.M)
    assert "rc=0" in s["loop-detached"] and _status(s["loop-detached"]) == traced

    # Attached and detached 4 times while loop's workload loops: every switch works,
    # calls are seen, a pair split by a window's edge is neither a bad free nor an
    # unlock-not-held, and the replacement module unloads after.
    sw = s["loop-switching"]
    assert "ok=8" in sw and sw.endswith("rc=0\n"), sw
    assert _status(sw)["mutex_unlock"] > 0, sw
    assert re.search(r"^attached target=loop state=detached attaches=4 ", sw, re.M), sw
    assert _counts(re.search(r"^totals (.*)$", sw, re.M).group(1))["bad_frees"] == 0  # type: ignore[union-attr]
    assert not re.search(r"^(violation|badfree) ", sw, re.M), sw

    # Other payloads on the same running driver: a second replacement module is
    # refused while the first is attached (its sites are probed: one line), attaches
    # once the first is detached and unloaded, and sees only its own function.
    op = s["other-payloads"].splitlines()
    assert op[0] == "rc=0" and op[-1] == "rc=0", op
    assert op[1].startswith("attach.sh: site ") and op[1].endswith(
        ": already probed (int3): another kprobe user is in the way"), op
    assert op[2:4] == ["rc=1", "rc=0"], op
    assert op[4] == f"attach.sh: kedr_repl_attachee_b attached to kedr_attachee " \
                    f"({len(other.sites.sites)} sites)", op
    assert {x.function for x in other.sites.sites} == {"kfree"}
    assert _status(s["b-status"]) == {"kfree": 2}, s["b-status"]
    assert s["b-status"].endswith("rc=0\nrmmod=0\n"), s["b-status"]


# The chardev workload's calls after init and before exit (CHARDEV_CALLS of
# test_intercept_vm.py without the buffer made at init and freed at exit, and without
# misc_register/misc_deregister, which init and exit call).
WINDOW_CALLS = {"mutex_lock": 3, "mutex_unlock": 3, "__kmalloc": 1, "kfree": 1,
                "_copy_from_user": 1, "_copy_to_user": 1}


def test_scons_attach_runs_the_plain_driver_attached_in_the_middle(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
                      f"KERNEL={kernel_name(kernel)}",
                      f"WORKLOAD={REPO / 'examples/chardev/workload.sh'}", "VM_TIMEOUT=200",
                      "attach"], check=False)
    out = outputs(build, "chardev", kernel) / "attach"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "run" / "result.json").read_text())
    assert result["verdict"] == "passed", result["reason"]
    calls = {("__kmalloc" if "kmalloc" in f else f): n for f, n in result["calls"].items()}
    assert calls == WINDOW_CALLS
    assert list(result["times"]) == ["load", "before", "attach", "window", "detach", "after",
                                     "unload", "done"]
    assert result["output"].count("workload rc=0") == 3
    assert "attach PASSED" in proc.stdout and "--- attached window: kedr_chardev, " in proc.stdout
    # The driver itself was never patched: the guest loaded the kbuild output as it is.
    assert not (out / "patched").exists()
    assert (out / "attach.sh").is_file() and (out / "detach.sh").is_file()


def test_scons_attach_ko_attaches_to_the_kernels_own_module(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """``scons KO=loop attach``: the in-tree loop modprobed as shipped, attached to in
    the middle of its workload (README: "KO=loop modprobes the kernel's own")."""
    build = tmp_path / "build"
    proc = run_scons(["KO=loop", f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}",
                      f"WORKLOAD={REPO / 'tests/workloads/loop-file.sh'}", "VM_TIMEOUT=200",
                      "attach"], check=False)
    out = outputs(build, "loop", kernel) / "attach"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((out / "run" / "result.json").read_text())
    assert result["verdict"] == "passed", result["reason"]
    assert result["sites"] == len(json.loads((out / "attach.json").read_text())["sites"]) > 0
    assert result["output"].count("workload rc=0") == 3
    assert "attach.sh: kedr_repl_loop attached to loop (" in result["output"]
    calls = result["calls"]
    assert calls["mutex_unlock"] > 0 and calls["queue_work_on"] > 0
    assert calls["_raw_spin_lock_irq"] == calls["_raw_spin_unlock_irq"] > 0
    assert result["totals"]["bad_frees"] == 0
    assert not (out / "run" / "target.ko").exists()     # modprobed, not a copy insmodded


HOT_PACK = """[pack]
name = "hot"
format = 1
description = "hot patching: the plain driver attached to while its workload runs"

[[test]]
name = "attached"
kind = "attach"
description = "loaded plain, attached between two workload runs, detached"
checks = ["attach", "workload", "kernel", "leaks", "rules"]
"""


def test_pack_test_of_kind_attach(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """A pack test of kind ``attach`` (kedr_build/packs/attachkind.py): ``scons ... check``
    runs the attach flow on the driver's plain module and judges each check."""
    pack = tmp_path / "hot.toml"
    pack.write_text(HOT_PACK)
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={REPO / 'examples/chardev'}", f"BUILD_DIR={build}",
                      f"KERNEL={kernel_name(kernel)}", "check", f"PACK={pack}"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = outputs(build, "chardev", kernel) / "report"
    data = json.loads((report / "report.json").read_text())
    assert data["verdict"] == "passed"
    items = {i["check"]: (i["outcome"], i["message"]) for i in data["items"]}
    assert {c: o for c, (o, _) in items.items()} == {
        c: "passed" for c in ("attach", "workload", "kernel", "leaks", "rules")}
    sites = len(json.loads(next(report.rglob("attach/attach.json")).read_text())["sites"])
    assert items["attach"][1] == ("loaded, attached, detached, unloaded; "
                                  f"{sum(WINDOW_CALLS.values())} calls in the window, "
                                  f"{sites} sites")
    assert items["workload"][1] == "workload exit statuses 0, 0, 0 (before, attached, after)"
