"""The driver-fundamentals kinds (kedr_build/packs/fundkind.py) on real drivers in the
VM, on both pinned kernels (racefree's race: one), through `scons ... check
PACK=fundamentals`:

* examples/chardev: its interfaces are discovered exactly, the fuzzer, five
  load -> workload -> unload cycles and chaos (all at once) find nothing;
* tests/drivers/fuzzbugs: the ioctl commands each node answers found by the sweep
  before fuzzing; an ioctl copying the command's size into a 64-byte buffer
  (WARN), a rare ioctl leaking and another unlocking a mutex it never took (rule
  unlock-not-held): found by the fuzzer with FUZZ_SEED=7, each reduced to the two
  operations that still fail (open, then the ioctl) and replayed 3 times in fresh
  loads; the reproducer the report gives (FUZZ_SEED=7) finds and reduces exactly the
  same again;
* tests/drivers/racefree: release() racing with an ioctl on another file: two fuzz
  threads find the double free; replayed in one thread it passes, so it is reduced as a
  race: to the kinds of operation (open/close, ioctl) and the two threads it needs,
  replayed concurrently in fresh boots, its rate verified against the whole recording's;
  its ioctls' commands, hundreds, named as the sequence keeps them (any command races:
  tens are kept, for their volume);
* tests/drivers/cycleleak: one object leaked per cycle: reload's growth check;
* tests/drivers/edu without its device: no interface at all: fuzz is not run, and
  says why;
* tests/drivers/fznet: a network interface whose private ioctl leaks: found by the
  fuzzer through the interface (seed 1), reduced to the socket's open and that ioctl;
* KO=brd: sixteen ram-backed block devices, fuzzed through their nodes: clean;
* tests/drivers/fzref: a rare ioctl that takes a reference to the module and never
  drops it: the unload fails, and is reduced (in the driver still loaded) to the
  open and that ioctl.

Eleven boots per kernel (racefree's, and its race's fresh boots, on debian-6.12 only)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, headless_chromium, kernel_name, on_kernel, outputs, run_scons
from kedr_build.kernel.descriptions import ProvisionedKernel

pytestmark = pytest.mark.vm

DRIVERS = Path(__file__).resolve().parent / "drivers"


PARAMS_PACK = """[pack]
name = "reload-params"
format = 1

[[test]]
name = "reload"
kind = "reload"
cycles = 5
module_params = ["label=a", "label=abc", ""]
checks = ["loads", "workload", "growth", "kernel", "leaks", "rules"]
"""


# racefree's race, reduced within a small budget: 5000 operations (it hits the window in
# the first few hundred of each thread; 20000 cost 264 s of reduction on 6.1), R = 5; the
# halvings end near 150 s on a quiet host, and 180 s leaves the search of the ioctl
# commands by halves 2-5 attempts (the verification runs past the budget).
RACE_PACK = """[pack]
name = "race"
format = 1

[[test]]
name = "fuzz"
kind = "fuzz"
count = 5000
threads = 2
seed = 1
race_replays = 5
race_seconds = 180
checks = ["fuzz", "loads", "kernel", "leaks", "rules"]
"""


def check(build: Path, source: list[str], kernel: ProvisionedKernel, name: str,
          *more: str, pack: str = "fundamentals") -> tuple[Any, dict[tuple[str, str],
                                                                 dict[str, Any]], str]:
    proc = run_scons([*source, f"BUILD_DIR={build}", f"KERNEL={kernel_name(kernel)}", "check",
                      f"PACK={pack}", *more], check=False)
    report = json.loads((outputs(build, name, kernel) / "report" / "report.json").read_text())
    items = {(i["test"], i["check"]): i for i in report["items"]}
    return report, items, proc.stdout + proc.stderr


def run_of(report: Any, test: str) -> Any:
    return next(r for r in report["runs"] if r["test"] == test)


def test_chardev_interfaces_fuzz_and_reload_pass(tmp_path: Path,
                                                 kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, [f"MODULE={REPO / 'examples/chardev'}"], kernel,
                               "chardev", "TEST=fuzz,reload,chaos")
    assert report["verdict"] == "passed", out
    assert {k: i["outcome"] for k, i in items.items()} == {
        **{("fuzz", c): "passed" for c in ("fuzz", "loads", "kernel", "leaks", "rules")},
        **{("reload", c): "passed" for c in ("loads", "workload", "growth", "kernel",
                                              "leaks", "rules")},
        **{("chaos", c): "passed" for c in ("chaos", "loads", "kernel", "leaks", "rules")}}
    # Exactly what kedr_chardev registers: one misc device and its devtmpfs node.
    for test in ("fuzz", "reload", "chaos"):
        assert run_of(report, test)["interfaces"] == \
            "misc: kedr_chardev; char nodes: /dev/kedr_chardev"
    assert re.fullmatch(r"20000 operations \(\d+ syscalls, \d+/s, \d+ ms, 2 threads, seed 1\) "
                        r"on /dev/kedr_chardev", items["fuzz", "fuzz"]["message"])
    cycles = run_of(report, "reload")["cycles"]
    assert [c.split(":")[0] for c in cycles] == [f"cycle {n}" for n in range(1, 6)]
    assert all(c.endswith("0 objects (0 bytes) still allocated after its unload")
               for c in cycles), cycles
    assert items["reload", "workload"]["message"] == "the workload exited 0 in each of 5 cycles"
    # report.html, as a browser renders it, has each cycle's totals (not only report.json).
    from selenium.webdriver.common.by import By

    with headless_chromium() as browser:
        browser.get((outputs(tmp_path, "chardev", kernel) / "report" / "report.html").as_uri())
        shown = browser.find_elements(By.CSS_SELECTOR, "#run-chardev-reload ol.cycles li")
        assert [li.text for li in shown] == cycles
    # Fuzzing, the workload and reloads at once: each happened, nothing broke.
    m = re.fullmatch(r"8 s: (\d+) fuzz operations \(2 threads, seed 1\) on /dev/kedr_chardev, "
                     r"the workload (\d+) "
                     r"times, (\d+) unloads \((\d+) loaded again\), (\d+) refused while in use",
                     items["chaos", "chaos"]["message"])
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, items["chaos", "chaos"]["message"]
    # Every unload was followed by a load that succeeded; the loop ran (an unload refused
    # while the fuzzer holds a file open is clean, counted).
    assert m.group(3) == m.group(4) and int(m.group(3)) + int(m.group(5)) > 0, \
        items["chaos", "chaos"]["message"]


def _steady(message: str) -> str:
    """A message without what changes from run to run: the rate, the time, which CPU
    and PID (the operations, their syscalls, the findings and their counts stay)."""
    return re.sub(r"CPU: \d+ PID: \d+", "CPU: _ PID: _",
                  re.sub(r"\d+/s, \d+ ms", "_/s, _ ms", message))


def _ops(run: Any) -> list[str]:
    """The recorded operations, without their results (fds are numbered per process)."""
    return [re.sub(r" ret=.*$", "", line) for line in run["fuzz"] if line.startswith("KFUZZ op")]


def test_fuzzer_finds_ioctl_bugs_and_its_seed_replays(tmp_path: Path,
                                                      kernel: ProvisionedKernel) -> None:
    report, items, out = check(tmp_path, [f"MODULE={DRIVERS / 'fuzzbugs'}"], kernel,
                               "fuzzbugs", "TEST=fuzz", "FUZZ_SEED=7")
    assert report["verdict"] == "failed", out
    run = run_of(report, "fuzz")
    # Its interfaces, and the ioctl commands the sweep before fuzzing found answered
    # (nr 3 of any type, direction and size on one node, nr 6 and 9 on the other:
    # exactly what it answers; FICLONE, _IOW(0x94, 9, int), the VFS takes first).
    assert run["interfaces"] == ("misc: kedr_fz_copy, kedr_fz_rare; "
                                 "char nodes: /dev/kedr_fz_copy, /dev/kedr_fz_rare; "
                                 "ioctl commands answered (114688 tried a node: every type, "
                                 "nr 0 up, each range of 32 as _IO, then _IOR/_IOW/_IOWR of "
                                 "4 and 8 bytes; 0xDDSSTTNN, * any): /dev/kedr_fz_copy: "
                                 "0x******03; /dev/kedr_fz_rare: 0x******06, 0x******09")
    assert "KFUZZ sweep path=/dev/kedr_fz_rare ioctls=114688 answered=3583 " \
        "cmds=0x******06,0x******09" in run["fuzz"], run["fuzz"]
    assert {k[1]: i["outcome"] for k, i in items.items()} == {
        "fuzz": "passed", "loads": "passed", "kernel": "failed", "leaks": "failed",
        "rules": "failed"}, out
    kernel_msg, leaks_msg = items["fuzz", "kernel"]["message"], items["fuzz", "leaks"]["message"]
    rules_msg = items["fuzz", "rules"]["message"]
    # The copy past the 64-byte buffer: the kernel's copy_overflow() WARN; the rare
    # command's leak, named at its allocation.
    assert "__copy_overflow" in kernel_msg and "(fuzz seed 7; " in kernel_msg, kernel_msg
    assert "at fz_rare_alloc+" in leaks_msg and "(fuzz seed 7; " in leaks_msg, leaks_msg
    # The mutex unlocked while not held: a rule violation, at its call site.
    assert rules_msg.startswith("1 rule violations; first: unlock-not-held: mutex_unlock"), \
        rules_msg
    assert "fz_rare_unlock+" in rules_msg and "(fuzz seed 7; " in rules_msg, rules_msg
    # Each failure reduced to the shortest sequence that still fails: the open of the
    # device, then the ioctl (nr 3 with a size above 64; nr 9; nr 6), replayed 3 times.
    for msg, path, nr in ((kernel_msg, "/dev/kedr_fz_copy", 3),
                          (leaks_msg, "/dev/kedr_fz_rare", 9),
                          (rules_msg, "/dev/kedr_fz_rare", 6)):
        m = re.search(r"shortest failing sequence: 2 of 20000 operations \(ddmin, \d+ "
                      r"attempts, 1-minimal; replayed 3 times in fresh loads: failed 3\): "
                      r"t(\d)#\d+ open path=(\S+) fd=(\d); t(\d)#\d+ ioctl fd=(\d) "
                      r"cmd=0x([0-9a-f]{8}) arg=\w+ size=(\d+)\)$", msg)
        assert m, msg
        assert (m.group(1), m.group(2), m.group(3)) == (m.group(4), path, m.group(5)), msg
        assert int(m.group(6), 16) & 0xff == nr, msg
        assert nr == 9 or int(m.group(7)) > 64, msg
    assert [r.split(":")[0] for r in run["reduced"]] == ["kernel", "leaks", "rules"]
    # The page as a browser renders it: interfaces, fuzz numbers, the reduced sequences.
    from selenium.webdriver.common.by import By

    with headless_chromium() as browser:
        browser.get((outputs(tmp_path, "fuzzbugs", kernel) / "report" / "report.html").as_uri())
        section = browser.find_element(By.ID, "run-fuzzbugs-fuzz")
        assert section.find_element(By.CLASS_NAME, "interfaces").text == \
            "interfaces found: " + run["interfaces"]
        numbers = [li.text for li in section.find_elements(By.CSS_SELECTOR,
                                                           "ul.fuzz-numbers li")]
        assert numbers[0] == "fuzz: " + items["fuzz", "fuzz"]["message"], numbers
        assert numbers[1].startswith("KFUZZ start seed=7 count=20000"), numbers
        shown = [li.text for li in section.find_elements(By.CSS_SELECTOR, "ul.reduced li")]
        assert shown == list(run["reduced"]) and all(li for li in shown), shown
    reproduce = items["fuzz", "kernel"]["reproduce"]
    assert reproduce == items["fuzz", "leaks"]["reproduce"] == items["fuzz", "rules"]["reproduce"]
    assert reproduce.endswith("check PACK=fundamentals TEST=fuzz FUZZ_SEED=7"), reproduce
    # Replay: the reproducer's own command line, run as given.
    args = shlex.split(reproduce)
    assert args[:2] == ["./kedr-env", "scons"]
    proc = run_scons([a for a in args[2:] if not a.startswith("MODULE=")]
                     + [f"MODULE={DRIVERS / 'fuzzbugs'}"], check=False)
    again = json.loads((outputs(tmp_path, "fuzzbugs", kernel) / "report"
                        / "report.json").read_text())
    again_items = {(i["test"], i["check"]): i for i in again["items"]}
    assert {k: (i["outcome"], _steady(i["message"])) for k, i in again_items.items()} == \
        {k: (i["outcome"], _steady(i["message"])) for k, i in items.items()}, proc.stdout
    assert run_of(again, "fuzz")["leak_groups"] == run["leak_groups"]
    assert run_of(again, "fuzz")["reduced"] == run["reduced"]
    assert _ops(run_of(again, "fuzz")) == _ops(run) and len(_ops(run)) == 16


def test_reload_catches_a_leak_per_cycle_and_fuzz_without_a_device_is_not_run(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    # A reload test with module parameters per cycle: cycleleak leaks its label (the
    # `label` parameter; default "kedr_cycleleak session", 23 bytes) once per load.
    own = tmp_path / "reload-params.toml"
    own.write_text(PARAMS_PACK)
    report, items, out = check(tmp_path / "a", [f"MODULE={DRIVERS / 'cycleleak'}"], kernel,
                               "cycleleak", "TEST=reload", pack=str(own))
    assert report["verdict"] == "failed", out
    assert items["reload", "growth"]["outcome"] == "failed"
    assert items["reload", "growth"]["message"] == (
        "still allocated after each cycle's unload: 1, 2, 3, 4, 5 objects: grows by 1 per "
        "cycle")
    # Each cycle's parameters (entries cycled through), and what they did: labels of
    # 2 ("a"), 4 ("abc") and 23 bytes (the default) left by each load.
    given = ["label=a", "label=abc", "none", "label=a", "label=abc"]
    held = [2, 6, 29, 31, 35]
    cycles = run_of(report, "reload")["cycles"]
    assert len(cycles) == 5, cycles
    for n, line in enumerate(cycles, 1):
        assert re.fullmatch(rf"cycle {n} \(module parameters: {given[n - 1]}\): \d+ "
                            rf"allocations, \d+ frees in all; {n} objects \({held[n - 1]} "
                            r"bytes\) still allocated after its unload", line), cycles
    assert items["reload", "workload"]["outcome"] == "passed"
    # Our edu driver without its device registers nothing: nothing to fuzz, not run, and
    # a blocker in fundamentals.
    report, items, out = check(tmp_path / "b", [f"MODULE={DRIVERS / 'edu'}"], kernel, "edu",
                               "TEST=fuzz")
    assert report["verdict"] == "failed", out
    why = ("not run: the driver registered no device node or network interface to fuzz "
           "(found: no interface)")
    assert items["fuzz", "fuzz"]["outcome"] == "not-run"
    assert items["fuzz", "fuzz"]["message"] == why
    assert {i["outcome"] for i in items.values()} == {"not-run"}


# One kernel: what it checks is the reduction, the host's Python (kedr_build/vm/races.py),
# the same for each kernel; its guest script (guest-race.sh.j2) loads, replays with kfuzz
# and unloads as this file's other fuzz tests do on both kernels. debian-6.12: its race
# hit shows as the bad free or as a general protection fault (the replay then never
# ends), so both ways a replay fails are met; debian-6.1's run cost as much again.
@on_kernel("debian-6.12")
def test_fuzz_threads_find_release_racing_with_ioctl(tmp_path: Path,
                                                     kernel: ProvisionedKernel) -> None:
    """Two fuzz threads, seed 1: an ioctl sleeping on the current context while the
    other thread closes its file. The seed replays each thread's operations, not their
    interleaving: whether a given run hits the window is the scheduler's; measured
    here it hits dozens of times in 20000 operations (every run so far, both kernels).
    Replayed in one thread it passes: a race, reduced with concurrent replays in fresh
    boots to the kinds of operation and threads it needs, then verified."""
    own = tmp_path / "race.toml"
    own.write_text(RACE_PACK)
    report, items, out = check(tmp_path, [f"MODULE={DRIVERS / 'racefree'}"], kernel,
                               "racefree", "TEST=fuzz", pack=str(own))
    assert report["verdict"] == "failed", out
    leaks = items["fuzz", "leaks"]
    assert leaks["outcome"] == "failed", out
    m = re.match(r"\d+ possible leaks \(\d+ bytes\), (\d+) bad frees", leaks["message"])
    assert m and int(m.group(1)) > 0, leaks["message"]
    assert run_of(report, "fuzz")["bad_frees"][0].startswith("double"), \
        run_of(report, "fuzz")["bad_frees"]
    # A race: reduced to the kinds of operation and the threads it needs, verified
    # (kedr_build/vm/races.py). This fails when the reduction returns noise: a sequence
    # whose own replays fail under the bar.
    m = re.search(r"\(fuzz seed 1; race reduced to (.+), (\d+) threads, (\d+) operations: "
                  r"replayed concurrently failed (\d+) of (\d+); the whole recording "
                  r"\((\d+) operations\), replayed concurrently in (\d+) fresh loads, failed "
                  r"(\d+) of \d+ \(ddmin over kinds and threads(?:, then (\d+) ioctl commands by "
                  r"halves)?, a subset holding when it failed at least (\d+) of (\d+); \d+ "
                  r"attempts, \d+ fresh boots, \d+ s \(budget [^)]*\); kept in (\S+)\)\)",
                  leaks["message"])
    assert m, leaks["message"]
    kinds = m.group(1).split(" and ")
    threads, ops, fails, replays, recorded, loads, whole, searched, bar, of = (
        int(g or 0) for g in m.groups()[1:11])
    saved = m.group(12)
    assert threads == 2 and ops < recorded and replays == loads == of == 5, m.groups()
    assert fails >= bar >= max(2, (whole + 1) // 2), m.groups()
    kept = [ln.split() for ln in Path(saved).read_text().splitlines() if ln.startswith("op ")]
    assert len(kept) == ops and {op[1] for op in kept} == {"0", "1"}
    # The ioctls' commands, more than 8 in the recording: named as the sequence has them.
    # racefree's ioctl races with any command (rf_ioctl ignores it): the race needs their
    # volume, tens of ioctls, not one command, so the halvings and the search by halves
    # (when the budget leaves it time: 2-3 attempts here) keep some tens of the hundreds
    # recorded, and the report says how many.
    cmds = {int(op[10]) for op in kept if op[3] == "5"}
    named = [k for k in kinds if k.startswith("ioctl")]
    assert kinds[0] == "open/close" and named, kinds
    if len(cmds) <= 8:
        assert named == [f"ioctl cmd={c:#010x}" for c in sorted(cmds)], (named, cmds)
    else:
        n = re.fullmatch(r"ioctl \((\d+) of (\d+) commands\)", named[0])
        assert n and int(n.group(1)) == len(cmds) < int(n.group(2)), (named, len(cmds))
        assert searched <= int(n.group(2)), (named, searched)
    assert leaks["reproduce"].endswith("TEST=fuzz FUZZ_SEED=1")
    # It answers every command: the sweep stops after the first 8192 ("all"; each of
    # its ioctls sleeps, and the whole sweep took 110 s and ran the VM out of time).
    assert any(re.fullmatch(r"KFUZZ sweep path=/dev/kedr_racefree ioctls=8192 "
                            r"answered=\d+ cmds=all", line)
               for line in run_of(report, "fuzz")["fuzz"]), run_of(report, "fuzz")["fuzz"]


def test_chaos_with_devices_hot_unplugs_and_suspends(tmp_path: Path,
                                                      kernel: ProvisionedKernel) -> None:
    """fundamentals' chaos with DEVICES=edu: our edu driver has no interface to fuzz, so
    nothing is fuzzed, but its device is hot-unplugged and plugged in again and the
    guest suspended and resumed, round after round, while the devices' workload runs
    over and over and the driver is unloaded and loaded again (one boot)."""
    report, items, out = check(tmp_path, [f"MODULE={DRIVERS / 'edu'}"], kernel, "edu",
                               "TEST=chaos", "DEVICES=edu", "VM_TIMEOUT=240")
    assert report["verdict"] == "passed", out
    msg = items["chaos", "chaos"]["message"]
    m = re.fullmatch(r"8 s: nothing fuzzed \(no device node or network interface; found: "
                     r"no interface\), "
                     r"the workload (\d+) times, (\d+) unloads \((\d+) loaded again\), \d+ "
                     r"refused while in use, (\d+) hot-unplugs of edu \((\d+) plugged in "
                     r"again\), (\d+) suspends to RAM \(each resumed\)", msg)
    assert m, msg
    runs, unloads, reloads, unplugs, plugs, suspends = (int(g) for g in m.groups())
    assert runs > 0 and unloads > 0 and unloads == reloads, msg
    assert unplugs >= 1 and unplugs == plugs and suspends >= 1, msg
    assert {i["outcome"] for i in items.values()} == {"passed"}, items


def test_chaos_unplugs_the_function_behind_which_the_driver_holds_a_device(
        tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """chaos with KO=virtio_net DEVICES=virtio-net: virtio_net holds virtio0, behind the
    PCI function virtio_pci holds. Chaos unplugs and re-plugs that function (before, it
    drove only functions whose own driver was under test: "no attached device is bound
    by a driver under test"), and fuzzes the interface (before, only character nodes)."""
    report, items, out = check(tmp_path, ["KO=virtio_net"], kernel, "virtio_net",
                               "TEST=chaos", "DEVICES=virtio-net", "VM_TIMEOUT=240")
    msg = items["chaos", "chaos"]["message"]
    m = re.search(r", (\d+) hot-unplugs of virtio-net \((\d+) plugged in again\), (\d+) "
                  r"suspends to RAM \(each resumed\)$", msg)
    assert m, (msg, out[-3000:])
    unplugs, plugs, suspends = (int(g) for g in m.groups())
    assert unplugs >= 1 and unplugs == plugs and suspends >= 1, msg
    # Its network interface is fuzzed meanwhile: gone at each unload and unplug, back
    # under its name at the reload or re-plug.
    assert re.match(r"8 s: [1-9]\d* fuzz operations \(2 threads, seed 1\) on net:eth0, ",
                    msg), msg
    assert items["chaos", "chaos"]["outcome"] == "passed", msg


def test_fuzzer_reaches_net_interfaces_and_block_devices(tmp_path: Path,
                                                         kernel: ProvisionedKernel) -> None:
    """A network interface and block devices, fuzzed through what they registered:
    fznet's leak is reachable only through its private ioctl (a socket, an ifreq
    naming kedrfz0, SIOCDEVPRIVATE + 11); brd's sixteen ram disks (nothing of the
    guest's own) take reads, writes, ioctls and mmaps through their nodes, cleanly."""
    report, items, out = check(tmp_path / "a", [f"MODULE={DRIVERS / 'fznet'}"], kernel,
                               "fznet", "TEST=fuzz")
    assert report["verdict"] == "failed", out
    run = run_of(report, "fuzz")
    assert run["interfaces"] == "net interfaces: kedrfz0"
    assert {k[1]: i["outcome"] for k, i in items.items()} == {
        "fuzz": "passed", "loads": "passed", "kernel": "passed", "leaks": "failed",
        "rules": "passed"}, out
    assert re.fullmatch(r"20000 operations \(\d+ syscalls, \d+/s, \d+ ms, 2 threads, seed 1\) "
                        r"on net:kedrfz0", items["fuzz", "fuzz"]["message"])
    leaks = items["fuzz", "leaks"]
    assert "at fznet_snapshot+" in leaks["message"], leaks["message"]
    m = re.search(r"\(fuzz seed 1; shortest failing sequence: 2 of 20000 operations \(ddmin, "
                  r"\d+ attempts, 1-minimal; replayed 3 times in fresh loads: failed 3\): "
                  r"t(\d)#\d+ open path=net:kedrfz0 fd=(\d); t(\d)#\d+ ioctl fd=(\d) "
                  r"cmd=0x000089fb arg=\w+ size=0\)$", leaks["message"])
    assert m and m.group(1, 2) == m.group(3, 4), leaks["message"]
    assert leaks["reproduce"].endswith("check PACK=fundamentals TEST=fuzz FUZZ_SEED=1")
    report, items, out = check(tmp_path / "b", ["KO=brd"], kernel, "brd", "TEST=fuzz")
    assert report["verdict"] == "passed", out
    nodes = ", ".join(sorted(f"/dev/ram{n}" for n in range(16)))
    assert run_of(report, "fuzz")["interfaces"] == (
        f"block majors: 1 ramdisk; block nodes: {nodes}; block devices: "
        + ", ".join(sorted(f"ram{n}" for n in range(16))))
    assert re.fullmatch(rf"20000 operations \(\d+ syscalls, \d+/s, \d+ ms, 2 threads, seed 1\) "
                        rf"on {re.escape(nodes)}", items["fuzz", "fuzz"]["message"])
    # The block devices' data went through the driver: reads of the size asked for.
    assert any(re.search(r" read fd=\d arg=valid size=(\d+)( offset=\d+)? ret=\1$", line)
               for line in run_of(report, "fuzz")["fuzz"]), run_of(report, "fuzz")["fuzz"]


def test_fuzz_reduces_a_failed_unload(tmp_path: Path, kernel: ProvisionedKernel) -> None:
    """fzref's ioctl nr 5 pins the module: rmmod fails after the fuzzing. No fresh load
    is possible, so the reduction replays in the driver still loaded and judges by
    the references a replay leaves (/sys/module/kedr_fzref/refcnt)."""
    report, items, out = check(tmp_path, [f"MODULE={DRIVERS / 'fzref'}"], kernel, "fzref",
                               "TEST=fuzz")
    assert report["verdict"] == "failed", out
    assert items["fuzz", "fuzz"]["outcome"] == "passed", out
    assert items["fuzz", "kernel"]["outcome"] == "passed", out
    loads = items["fuzz", "loads"]
    assert loads["outcome"] == "failed", out
    m = re.search(r"\(fuzz seed 1; shortest failing sequence: 2 of 20000 operations \(ddmin, "
                  r"\d+ attempts, 1-minimal; replayed 3 times in the driver that did not "
                  r"unload: failed 3\): t(\d)#\d+ open path=/dev/kedr_fz_ref fd=(\d); "
                  r"t(\d)#\d+ ioctl fd=(\d) cmd=0x([0-9a-f]{8}) arg=\w+ size=\d+\)$",
                  loads["message"])
    assert m and m.group(1, 2) == m.group(3, 4), loads["message"]
    assert int(m.group(5), 16) & 0xff == 5, loads["message"]
    assert loads["reproduce"].endswith("check PACK=fundamentals TEST=fuzz FUZZ_SEED=1")
    assert [r.split(":")[0] for r in run_of(report, "fuzz")["reduced"]] == ["loads"]
