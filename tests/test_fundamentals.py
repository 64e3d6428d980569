"""The driver-fundamentals kinds without a VM: interface discovery's parsing, the
guest fuzzer built with gcc -static and run on the host (its seed replays the same
operations), the guest script they add, and bad input (FUZZ_SEED=, budgets, an
unknown parameter): one line each (issue 20)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, run_scons
from kedr_build.errors import KedrError
from kedr_build.packs import pack
from kedr_build.packs.fundkind import fuzz_seed
from kedr_build.vm import discover, fuzzer, reboots, reduction
from kedr_build.devices.attach import Attached, Attachment
from kedr_build.devices.catalog import lookup
from kedr_build.packs.fundkind import chaos_check
from kedr_build.vm.runner import SEQ_BEGIN, SEQ_END, FuzzPlan, RunReport, Step, Verdict, plan_run

CHARDEV = REPO / "examples" / "chardev"


def test_discover_parses_the_new_lines() -> None:
    found = discover.parse(["chr 240 kedr_foo", "blk 254 kedr_blk", "misc kedr_b",
                            "misc kedr_a", "node c /dev/kedr_a", "node b /dev/kedr_blk0",
                            "block kedr_blk0", "net dummy0", "junk"])
    assert found == discover.Interfaces(
        char_majors=("240 kedr_foo",), block_majors=("254 kedr_blk",),
        misc=("kedr_a", "kedr_b"), char_nodes=("/dev/kedr_a",),
        block_nodes=("/dev/kedr_blk0",), block=("kedr_blk0",), net=("dummy0",))
    assert found.describe() == (
        "char majors: 240 kedr_foo; block majors: 254 kedr_blk; misc: kedr_a, kedr_b; "
        "char nodes: /dev/kedr_a; block nodes: /dev/kedr_blk0; block devices: kedr_blk0; "
        "net interfaces: dummy0")
    assert discover.parse([]).empty and discover.parse([]).describe() == "no interface"


@pytest.fixture(scope="module")
def kfuzz() -> Path:
    return fuzzer.build()


def ops(kfuzz: Path, tmp: Path, seed: str, name: str) -> list[str]:
    rec = tmp / f"{name}.rec"
    run = subprocess.run([str(kfuzz), "-s", seed, "-n", "4000", "-j", "2", "-r", str(rec),
                          "/dev/null", "/dev/zero"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert re.search(r"^KFUZZ done ops=4000 syscalls=\d+ elapsed_ms=\d+ rate=\d+$",
                     run.stdout, re.M), run.stdout
    dump = subprocess.run([str(kfuzz), "-D", str(rec), "-k", "20"], capture_output=True,
                          text=True, check=True).stdout
    # Results aside (fds are numbered per process, whichever thread opens first).
    return [re.sub(r" ret=.*$", "", ln) for ln in dump.splitlines()]


def test_kfuzz_is_static_and_its_seed_replays(kfuzz: Path, tmp_path: Path) -> None:
    assert "statically linked" in subprocess.run(["file", str(kfuzz)], capture_output=True,
                                                 text=True).stdout
    assert fuzzer.build() == kfuzz      # cached by the source's hash
    first, again = ops(kfuzz, tmp_path, "7", "a"), ops(kfuzz, tmp_path, "7", "b")
    other = ops(kfuzz, tmp_path, "8", "c")
    assert len(first) == 2 + 2 * 20 and first == again and first != other
    kinds = {ln.split()[4] for ln in first if ln.startswith("KFUZZ op")}
    assert kinds >= {"ioctl", "read", "write"}, kinds


@pytest.mark.parametrize("args, fragment", [
    (["-s", "seven"], "seed seven: not a number"),
    (["-n", "-1"], "count -1: not a number"),
    (["-n", "0"], "need a count and threads above 0"),
    (["-t", "x"], "seconds x: not a number"),
])
def test_kfuzz_bad_arguments_one_line(kfuzz: Path, tmp_path: Path, args: list[str],
                                      fragment: str) -> None:
    run = subprocess.run([str(kfuzz), *args, "-r", str(tmp_path / "r"), "/dev/null"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and fragment in run.stderr, run.stderr


def test_kfuzz_net_path_without_the_interface_touches_nothing(kfuzz: Path,
                                                              tmp_path: Path) -> None:
    """net:NAME of an interface that does not exist (on the host): every open of it
    fails with ENODEV (its socket's SIOCGIFINDEX), so no operation reaches anything."""
    rec = tmp_path / "n.rec"
    run = subprocess.run([str(kfuzz), "-s", "3", "-n", "500", "-j", "2", "-r", str(rec),
                          "net:kedr-none0"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    dump = subprocess.run([str(kfuzz), "-D", str(rec), "-k", "50"], capture_output=True,
                          text=True, check=True).stdout
    shown = [ln for ln in dump.splitlines() if ln.startswith("KFUZZ op")]
    assert len(shown) == 100
    assert {re.sub(r"^KFUZZ op thread=\d index=\d+ (\w+) path=(\S+) fd=\d(?: offset=\d+)? ret=(\S+)$",
                   r"\1 \2 \3", ln) for ln in shown} <= {
        "open net:kedr-none0 -19", "storm net:kedr-none0 -19"}, shown


def test_guest_fuzz_targets_are_the_new_nodes_and_interfaces(built_chardev: Path,
                                                             tmp_path: Path) -> None:
    """The guest script's fuzz targets, run in sh on two snapshots: the new character
    and block nodes and net:NAME for each new interface; nothing the guest had before
    (its own disk /dev/vda here)."""
    script = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                      fuzz=FuzzPlan(seed=5, count=100)).script
    start = script.index("targets=$(grep")
    end = script.index("targets=$(echo $targets)\n", start) + len("targets=$(echo $targets)\n")
    before, after = tmp_path / "before", tmp_path / "after"
    before.write_text("node b /dev/vda\nblock vda\nnet lo\nnode c /dev/null\n")
    after.write_text(before.read_text() + "node c /dev/kedr_x\nnode b /dev/kedr_b0\n"
                     "block kedr_b0\nnet kedrfz0\nmisc kedr_x\n")
    snippet = script[start:end].replace("/tmp/kedr-if.before", str(before)).replace(
        "/tmp/kedr-if.after", str(after))
    got = subprocess.run(["sh", "-c", snippet + 'echo "$targets"'], capture_output=True,
                         text=True, check=True).stdout
    assert got == "/dev/kedr_x /dev/kedr_b0 net:kedrfz0\n"
    # The chaos kind fuzzes the same targets.
    chaos = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                     per_cycle=True, chaos=FuzzPlan(seed=5, count=10**9, seconds=4)).script
    start = chaos.index("targets=$(grep")
    assert chaos[start:].startswith(script[script.index("targets=$(grep"):end])


def test_guest_script_with_fuzz_and_cycles_is_valid_sh(built_chardev: Path,
                                                       tmp_path: Path) -> None:
    plan = plan_run(sorted(built_chardev.glob("*.ko")), workload=CHARDEV / "workload.sh",
                    trace_providers=("kedr_repl_chardev",), cycles=3, per_cycle=True,
                    fuzz=FuzzPlan(seed=5, count=100, seconds=2, threads=3, reduce=50,
                                  sweep=8192))
    script = tmp_path / "job.sh"
    script.write_text(plan.script)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert ("/kedr/kfuzz -s 5 -n 100 -t 2 -j 3 -r $rec -S 8192 -y /tmp/kfuzz.swept "
            "$targets") in plan.script
    assert "rec=/tmp/kfuzz.rec\n" in plan.script and "resource2" not in plan.script
    assert ("/kedr/kfuzz -M $rec -o /tmp/kfuzz-$cls.seq -a 50 -c "
            "/tmp/kedr-oracle.sh") in plan.script
    # With the ivshmem (vm/shm.py): the record in its memory when the guest finds it.
    shm = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                   fuzz=FuzzPlan(seed=5, count=100, seconds=2), shm=True).script
    script.write_text(shm)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "shm=$d/resource2" in shm and '[ -z "$shm" ] || rec=$shm' in shm
    assert "-r $rec${shm:+ -F} $targets &" in shm
    # its heartbeat while the fuzzer runs (the host stops a guest whose beat stopped)
    assert shm.index("kfuzz -B $shm & beat=$!") < shm.index("-r $rec${shm:+ -F}") < \
        shm.index('[ -z "$beat" ] || { kill $beat 2>/dev/null; wait $beat; }')
    assert "run_workload() {" in plan.script
    assert plan.script.count("run_workload\n") == 2   # cycle 1, each later cycle
    assert "cycle_leaks $((cycle - 1))" in plan.script
    params = plan_run(sorted(built_chardev.glob("*.ko")), workload=CHARDEV / "workload.sh",
                      trace_providers=("kedr_repl_chardev",), cycles=3, per_cycle=True,
                      cycle_params=("debug=1 size=4", "")).script
    script.write_text(params)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "insmod /kedr/modules/kedr_chardev.ko $(cycle_params 1)\n" in params
    assert "insmod /kedr/modules/$m.ko $(cycle_params $cycle); rc=$?" in params
    # The function itself, run by sh: cycle i gets entry (i - 1) mod 2.
    func = params[params.index("cycle_params() {"):params.index("\n}\n", params.index(
        "cycle_params() {")) + 3]
    got = subprocess.run(["sh", "-c", func + "for c in 1 2 3; do echo \"[$(cycle_params $c)]\"; "
                          "done"], capture_output=True, text=True, check=True).stdout
    assert got == "[debug=1 size=4]\n[]\n[debug=1 size=4]\n"
    chaos = plan_run(sorted(built_chardev.glob("*.ko")), workload=CHARDEV / "workload.sh",
                     trace_providers=("kedr_repl_chardev",), per_cycle=True,
                     chaos=FuzzPlan(seed=5, count=10**9, seconds=4, threads=2)).script
    script.write_text(chaos)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "/kedr/kfuzz -s 5 -n 1000000000 -t 4 -j 2 -r /tmp/kfuzz.rec $targets &" in chaos
    # The ioctl sweep before fuzzing, in chaos too when its budget is above 0.
    swept = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                     per_cycle=True, chaos=FuzzPlan(seed=5, count=10**9, seconds=4, threads=2,
                                                    sweep=300)).script
    assert "-r /tmp/kfuzz.rec -S 300 $targets &" in swept
    # ... and the unloads wait for it to end (a sweep of a driver coming and going
    # listed what a stale file answered: FIBMAP, FS_IOC_GETFLAGS, FIONREAD).
    assert "[ ! -e /tmp/kfuzz.rec.swept ]; do sleep 0.1; done" in swept
    assert "kfuzz.rec.swept ]" not in chaos
    assert "kedr-device" not in chaos and "step chaos none 100" in chaos
    # With DEVICES=: the devices' loop joins in, and a driver with no character device
    # is not "not run" (the reloads, the workload and the devices race for the time).
    edu = Attachment((Attached(lookup("edu")[0], 5),), None)
    chaos = plan_run(sorted(built_chardev.glob("*.ko")), workload=CHARDEV / "workload.sh",
                     trace_providers=("kedr_repl_chardev",), per_cycle=True, devices=edu,
                     chaos=FuzzPlan(seed=5, count=10**9, seconds=4, threads=2)).script
    script.write_text(chaos)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "step chaos none 100" not in chaos
    assert "for d in edu,edu,0000:00:05.0; do" in chaos
    # A device is driven when a driver under test holds it or one behind it.
    assert "for l in /sys/module/kedr_chardev/drivers/*:*/* ; do" in chaos
    assert "kedr-device unplug $qid" in chaos and "kedr-device suspend" in chaos


def _chaos_report(*lines: str, status: int = 0) -> RunReport:
    return RunReport(Verdict.PASSED, "", (Step("chaos", "kfuzz", status),), (), "", (), 1.0,
                     Path("/nonexistent"), fuzz_output=lines)


def test_chaos_summary_counts_the_devices() -> None:
    plan = FuzzPlan(seed=1, count=10**9, seconds=8, threads=2)
    found = discover.Interfaces()
    chaos = "KEDR-CHAOS unloads=5 refused=0 reloads=5 failed=0"
    dev = "KEDR-CHAOS-DEVICES names=edu unplugs=3 plugs=3 suspends=2 failed=none"
    r = chaos_check(_chaos_report("KEDR-CHAOS-NOFUZZ", "KEDR-CHAOS-WORKLOAD runs=9 failed=4",
                                   dev, chaos), found, plan, devices=True)
    assert r.passed and r.message == (
        "8 s: nothing fuzzed (no device node or network interface; found: no interface), "
        "the workload 9 times, 5 "
        "unloads (5 loaded again), 0 refused while in use, 3 hot-unplugs of edu (3 plugged "
        "in again), 2 suspends to RAM (each resumed)"), r.message
    # What was fuzzed is named: a network interface too.
    net = discover.parse(("net eth0",))
    r = chaos_check(_chaos_report("KFUZZ done ops=812 syscalls=900 elapsed_ms=8000 rate=112",
                                   "KEDR-CHAOS-WORKLOAD runs=9 failed=4", dev, chaos), net, plan,
                    devices=True)
    assert r.passed and r.message.startswith(
        "8 s: 812 fuzz operations (2 threads, seed 1) on net:eth0, the workload 9 times"), \
        r.message
    failed = dev.replace("suspends=2 failed=none", "suspends=1 failed=the suspend to RAM or "
                         "the resume failed (round 2)")
    r = chaos_check(_chaos_report("KEDR-CHAOS-NOFUZZ", failed, chaos), found, plan, True)
    assert not r.passed and r.message.startswith(
        "the suspend to RAM or the resume failed (round 2); 8 s: nothing fuzzed"), r.message
    r = chaos_check(_chaos_report("KEDR-CHAOS-NOFUZZ", dev, "KEDR-CHAOS-UNBOUND edu", chaos),
                     found, plan, True)
    assert not r.passed and r.message.startswith(
        "not bound to its driver again after the chaos: edu; 8 s:"), r.message
    # DEVICES= given, and the guest's device loop never reported: not a pass.
    r = chaos_check(_chaos_report("KEDR-CHAOS-NOFUZZ", chaos), found, plan, True)
    assert not r.passed and "before it reported" in r.message


@pytest.mark.parametrize("text", ["abc", "-1", "18446744073709551616", "1.5", ""])
def test_fuzz_seed_garbage(text: str) -> None:
    with pytest.raises(KedrError) as e:
        fuzz_seed(text)
    assert str(e.value) == (f"FUZZ_SEED={text}: not a seed (an integer from 0 to 2^64-1, "
                            "e.g. FUZZ_SEED=1234)")
    assert fuzz_seed("0x10") == 16 and fuzz_seed(" 18446744073709551615") == 2**64 - 1


@pytest.mark.parametrize("line, cause", [
    ("count = 0", "[[test]] f: count: 0 is below the minimum 1"),
    ("count = -5", "[[test]] f: count: -5 is below the minimum 1"),
    ("seconds = -1", "[[test]] f: seconds: -1 is below the minimum 0"),
    ("speed = 3", "[[test]] f: unknown key 'speed' (known for kind 'fuzz': "),
    ("reduce = -1", "[[test]] f: reduce: -1 is below the minimum 0"),
    ("reduce_seconds = 0", "[[test]] f: reduce_seconds: 0 is below the minimum 1"),
    ("hang = -3", "[[test]] f: hang: -3 is below the minimum 0"),
    ('module_params = "debug=1"', "[[test]] f: module_params: 'debug=1' is not a list of "
                                  "strings"),
    ('module_params = ["debug=1; reboot"]', "[[test]] f: module_params: 'debug=1; reboot' "
                                            "is not NAME=VALUE pairs"),
    ('module_params = ["debug"]', "[[test]] f: module_params: 'debug' is not NAME=VALUE"),
], ids=["count-0", "count-negative", "seconds-negative", "unknown-param", "reduce-negative",
        "reduce-seconds-0", "hang-negative", "params-not-list", "params-shell", "params-no-value"])
def test_bad_fuzz_pack_values(line: str, cause: str, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    kind = "reload" if line.startswith("module_params") else "fuzz"
    text = f'[pack]\nname = "p"\n\n[[test]]\nname = "f"\nkind = "{kind}"\n{line}\n'
    with pytest.raises(KedrError) as e:
        pack.parse(text, path)
    assert str(e.value).startswith(f"{path}:7: {cause}"), str(e.value)
    with pytest.raises(KedrError, match=r"p.toml:6: \[\[test\]\] f: unknown test kind 'mayhem'"):
        pack.parse(text.replace(f'"{kind}"', '"mayhem"').replace(line, ""), path)


@pytest.mark.parametrize("kind", ["fuzz", "chaos"])
@pytest.mark.parametrize("line, cause", [
    ("sweep = -1", "[[test]] f: sweep: -1 is below the minimum 0"),
    ("sweep = 1048577", "[[test]] f: sweep: 1048577 is above the maximum 1048576"),
    ('sweep = "lots"', "[[test]] f: sweep: "),
])
def test_bad_sweep_budget_one_line(kind: str, line: str, cause: str, tmp_path: Path) -> None:
    """The ioctl sweep's budget, a parameter of fuzz and chaos alike."""
    path = tmp_path / "p.toml"
    text = f'[pack]\nname = "p"\n\n[[test]]\nname = "f"\nkind = "{kind}"\n{line}\n'
    with pytest.raises(KedrError) as e:
        pack.parse(text, path)
    assert str(e.value).startswith(f"{path}:7: {cause}") and "\n" not in str(e.value), \
        str(e.value)
    good = pack.parse(text.replace(line, "sweep = 0"), path).tests[0]
    assert good.params["sweep"] == 0
    assert pack.parse(text.replace(line, ""), path).tests[0].params["sweep"] == 114688


def test_fundamentals_pack_is_blocker_throughout() -> None:
    p = pack.load("fundamentals")
    assert [(t.name, t.kind, t.blocker) for t in p.tests] == [
        ("load-unload", "vm", True), ("workload", "vm", True), ("fuzz", "fuzz", True),
        ("reload", "reload", True), ("chaos", "chaos", True)]


def test_scons_fuzz_seed_garbage_one_line(tmp_path: Path) -> None:
    build = tmp_path / "build"
    proc = run_scons([f"MODULE={CHARDEV}", f"BUILD_DIR={build}", "check",
                      "PACK=fundamentals", "FUZZ_SEED=12ab"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert lines == ["kedr-build: FUZZ_SEED=12ab: not a seed (an integer from 0 to 2^64-1, "
                     "e.g. FUZZ_SEED=1234)"], lines
    assert not build.exists() or not any(build.iterdir())


# An oracle for kfuzz -M on the host: the sequence "fails" when an ioctl with _IOC_NR 3
# and a size above 64 is made on a file the same thread's slot opened (what
# tests/drivers/fuzzbugs's WARN needs). Fields: op THREAD INDEX KIND SLOT PATH SHAPE
# MISALIGN SIZE OFFSET CMD FLAG EXTRA (replacements/guest/kfuzz.c).
ORACLE = r"""awk '$1 == "op" { key = $2 " " $5
  if ($4 == 0) open[key] = 1
  if ($4 == 1) delete open[key]
  if ($4 == 5 && (key in open) && $11 % 256 == 3 && int($11 / 65536) % 16384 > 64) hit = 1 }
  END { exit hit ? 0 : 1 }' "$1"
"""


def test_kfuzz_reduces_a_recorded_run_and_replays_it(kfuzz: Path, tmp_path: Path) -> None:
    rec, seq, oracle = tmp_path / "r.rec", tmp_path / "r.seq", tmp_path / "oracle.sh"
    oracle.write_text(ORACLE)
    subprocess.run([str(kfuzz), "-s", "7", "-n", "4000", "-j", "2", "-r", str(rec),
                    "/dev/null", "/dev/zero"], capture_output=True, check=True)
    out = subprocess.run([str(kfuzz), "-M", str(rec), "-o", str(seq), "-a", "200", "-c",
                          str(oracle)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "KFUZZ reduce-start ops=4000", out
    assert re.fullmatch(r"KFUZZ reduced ops=2 attempts=\d+ minimal", lines[1]), out
    assert re.fullmatch(r"KFUZZ op thread=(\d) index=\d+ open path=/dev/\w+ fd=(\d) ret=.*",
                        lines[2]), out
    assert re.fullmatch(r"KFUZZ op thread=\d index=\d+ ioctl fd=\d cmd=0x[0-9a-f]{6}03 "
                        r"arg=\w+ size=\d+ ret=.*", lines[3]), out
    # The sequence file replays (no PRNG) and still fails; the oracle tells.
    assert subprocess.run(["sh", str(oracle), str(seq)]).returncode == 0
    replayed = subprocess.run([str(kfuzz), "-p", str(seq)], capture_output=True, text=True)
    assert replayed.stdout == "KFUZZ replayed ops=2\n"
    # Parsed for the report.
    red = reduction.parse(["KFUZZ reduce class=kernel", *lines,
                           "KFUZZ replay class=kernel fails=3 of 3"])["kernel"]
    assert red.reduced and red.recorded == 4000 and len(red.ops) == 2
    assert red.describe().startswith("shortest failing sequence: 2 of 4000 operations "
                                     "(ddmin, "), red.describe()
    # A budget too small: the shortest failing sequence so far, said so.
    out = subprocess.run([str(kfuzz), "-M", str(rec), "-o", str(seq), "-a", "3", "-c",
                          str(oracle)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^KFUZZ reduced ops=\d+ attempts=3 budget-reached$", out, re.M), out
    # An oracle that never fails: nothing to reduce (a race, in the guest).
    oracle.write_text("exit 1\n")
    out = subprocess.run([str(kfuzz), "-M", str(rec), "-o", str(tmp_path / "n.seq"), "-a",
                          "9", "-c", str(oracle)], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == ("KFUZZ reduce-none ops=4000 attempts=1 "
                                    "why=replayed-in-one-thread-it-passes"), out
    bad = tmp_path / "bad.seq"
    bad.write_text("kfuzz-seq seed=1\npath 0 /dev/null\nop 0 1 99 0 0 0 0 0 0 0 0 0\n")
    run = subprocess.run([str(kfuzz), "-p", str(bad)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout.startswith(f"KFUZZ error: {bad}: bad line: ")


def test_reduction_parse_truncated_and_not_reduced() -> None:
    got = reduction.parse(["KFUZZ reduce class=leaks", "KFUZZ reduce-start ops=20000",
                           "KFUZZ reduce-none ops=20000 attempts=1 "
                           "why=replayed-in-one-thread-it-passes",
                           "KFUZZ reduce class=kernel", "KFUZZ reduce-start ops=20000"])
    assert got["leaks"].describe() == (
        "not reduced (the recorded operations replayed in one thread do not fail (a race, "
        "or ops older than the record); 1 attempts over 20000 recorded operations)")
    assert got["kernel"].describe() == ("not reduced (cut short; 0 attempts over 20000 "
                                        "recorded operations)")
    assert reduction.parse(["junk", "KFUZZ op thread=0 index=1 open path=/x fd=0"]) == {}


def test_reduction_of_a_failed_unload_reads_back() -> None:
    got = reduction.parse(["KFUZZ reduce class=loads", "KFUZZ reduce-start ops=20000",
                           "KFUZZ reduced ops=2 attempts=40 minimal",
                           "KFUZZ op thread=1 index=7 open path=/dev/kedr_fz_ref fd=2 ret=3",
                           "KFUZZ op thread=1 index=9 ioctl fd=2 cmd=0x00004105 arg=null "
                           "size=0 ret=0", "KFUZZ replay class=loads fails=3 of 3"])
    assert got["loads"].describe() == (
        "shortest failing sequence: 2 of 20000 operations (ddmin, 40 attempts, 1-minimal; "
        "replayed 3 times in the driver that did not unload: failed 3): t1#7 open "
        "path=/dev/kedr_fz_ref fd=2; t1#9 ioctl fd=2 cmd=0x00004105 arg=null size=0")


def test_unload_oracle_judges_by_the_references_left(built_chardev: Path,
                                                     tmp_path: Path) -> None:
    """The guest's oracle for a failed unload, run in sh with /sys/module and kfuzz
    faked: a replay fails (status 0) when the drivers' refcnt grew, passes (1) when not."""
    script = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                      fuzz=FuzzPlan(seed=5, count=100, reduce=50)).script
    start = script.index("if [ $fz_ran -eq 1 ] && [ $fz_hung -eq 0 ] && [ $unload_bad -eq 1 ]; then")
    body = script[start:]
    oracle = body[body.index("<<'EOF'\n") + len("<<'EOF'\n"):body.index("\nEOF\n")]
    assert "/sys/module/$m/refcnt" in oracle and "for m in kedr_chardev ; do" in oracle
    sysfs = tmp_path / "module" / "kedr_chardev"
    sysfs.mkdir(parents=True)
    (sysfs / "refcnt").write_text("2\n")
    fake = tmp_path / "kfuzz"
    fake.write_text(f'#!/bin/sh\n[ "$KEDR_PIN" = 1 ] && echo 3 > {sysfs}/refcnt\nexit 0\n')
    fake.chmod(0o755)
    path = tmp_path / "oracle.sh"
    path.write_text(oracle.replace("/sys/module", str(tmp_path / "module")).replace(
        "/kedr/kfuzz", str(fake)))
    run = [subprocess.run(["sh", str(path), "seq"], env={"KEDR_PIN": pin, "PATH": "/bin:/usr/bin"})
           .returncode for pin in ("0", "1", "0")]
    assert run == [1, 0, 1]
    # The failed unload is noted in unload_all, and only then is this branch taken.
    assert "[ $rc -eq 0 ] || { final=3; unload_bad=1; }" in script


def test_html_shows_interfaces_fuzz_numbers_reduction_and_cycles() -> None:
    """Before: report.html showed none of these (only report.json had them)."""
    from kedr_build.packs import report
    from kedr_build.packs.results import CheckResult, PackReport, TestRun

    fuzz = TestRun("d", "fuzz", "fuzz", (CheckResult("fuzz", True, "20000 operations "
                                                     "(106840 syscalls, 89249/s, seed 7)"),),
                   interfaces="misc: kedr_x; char nodes: /dev/kedr_x",
                   fuzz=("KFUZZ start seed=7 count=20000", "KFUZZ op thread=0 index=1",
                         "KFUZZ done ops=20000 syscalls=106840"),
                   reduced=("kernel: shortest failing sequence: 2 of 20000 operations",))
    reload = TestRun("d", "reload", "reload", (), cycles=("cycle 1: 3 allocations",
                                                          "cycle 2: 6 allocations"))
    html = report.html(PackReport("fundamentals", "debian-6.1", "failed", (), (fuzz, reload)))
    assert '<p class="interfaces">interfaces found: misc: kedr_x; char nodes: /dev/kedr_x' \
        in html
    assert "<li>fuzz: 20000 operations (106840 syscalls, 89249/s, seed 7)</li>" in html
    assert "<li><code>KFUZZ done ops=20000 syscalls=106840</code></li>" in html
    assert "KFUZZ op thread" not in html
    assert "<li>kernel: shortest failing sequence: 2 of 20000 operations</li>" in html
    assert ('<ol class="cycles"><li>cycle 1: 3 allocations</li><li>cycle 2: 6 allocations'
            '</li></ol>') in html


def test_failures_that_do_not_reduce_say_why() -> None:
    """A failed check of a fuzz run without a reduced sequence says why (issue 20: every
    failure carries the seed and the shortest sequence, or the reason it cannot)."""
    assert reduction.CHECKS == ("kernel", "leaks", "rules", "loads")
    hang = reduction.why_not("kernel", lost=True, unload_failed=False, kernel_lines=False)
    assert hang.startswith("not reduced: the guest died or was lost, and no recorded "
                           "operations came back"), hang
    # Lost mid-fuzz: what ended it is reduced under one check (vm/shm.py); the others
    # failed for want of the reports the lost guest never sent.
    assert reduction.why_not("leaks", True, False, True, "kernel") == (
        "not reduced on its own: the guest was lost while the fuzzer ran, and what ended "
        "it is reduced under kernel")
    # After a failed unload the other checks have no fresh load to replay in; the
    # failed unload itself reduces in the driver still loaded (test_fundamentals_vm),
    # and says why when no reduction ran.
    stuck = reduction.why_not("leaks", lost=False, unload_failed=True, kernel_lines=False)
    assert stuck == ("not reduced: a driver did not unload, so there is no fresh load to "
                     "replay the operations in")
    assert reduction.why_not("loads", False, True, False) == (
        "not reduced: no reduction ran for it (the fuzzer did not run, or the guest stopped "
        "before the reduction)")
    taint = reduction.why_not("kernel", lost=False, unload_failed=False, kernel_lines=False)
    assert "neither while the fuzzer ran nor at the drivers' unload" in taint, taint
    assert reduction.why_not("kernel", False, False, True) == \
        reduction.why_not("rules", False, False, False) == \
        "not reduced: the guest saw no failure of this kind to reduce"


def test_rules_oracle_counts_violations_by_their_counts(built_chardev: Path,
                                                        tmp_path: Path) -> None:
    """The guest's reduction oracle for `rules`: the sum of the violations' counts (one
    line per call site, so a repeat only raises its count) and the dropped ones."""
    script = plan_run(sorted(built_chardev.glob("*.ko")), workload=CHARDEV / "workload.sh",
                      trace_providers=("kedr_repl_chardev",),
                      fuzz=FuzzPlan(seed=5, count=100, seconds=2, threads=3,
                                    reduce=50)).script
    assert "for cls in kernel leaks rules; do" in script
    found = script[script.index("found() {"):script.index("\n}\n", script.index(
        "found() {")) + 3]
    leaks = tmp_path / "kedr_repl_chardev" / "leaks"
    leaks.parent.mkdir()
    leaks.write_text("violation rule=unlock-not-held fn=mutex_unlock caller=0x1 stack=2 "
                     "count=3 context=task preempt_count=0x0 irqs_off=0 pid=1 comm=x\n"
                     "violation rule=sleep-in-atomic fn=kmalloc caller=0x2 stack=3 count=4 "
                     "context=task preempt_count=0x0 irqs_off=0 pid=1 comm=x\n"
                     "object addr=0x5 size=8\nrules dropped_violations=2\n")
    found = found.replace("/sys/kernel/debug/kedr_build", str(tmp_path))
    got = {cls: subprocess.run(["sh", "-c", found + "found"], capture_output=True, text=True,
                               check=True, env={"KEDR_CLASS": cls, "PATH": "/usr/bin:/bin"}
                               ).stdout for cls in ("rules", "leaks")}
    assert got == {"rules": "9\n", "leaks": "1\n"}


def test_ioctl_sweep_lines_read_back() -> None:
    lines = ("KFUZZ start seed=7 count=20000 seconds=0 threads=2 paths=3",
             "KFUZZ sweep path=/dev/a ioctls=65536 answered=1792 cmds=0x******03",
             "KFUZZ sweep path=/dev/b ioctls=65536 answered=0 cmds=",
             "KFUZZ sweep path=/dev/c ioctls=65536 answered=2 cmds=0x00006b01,0xc0086b02",
             "KFUZZ sweep-done ms=812")
    assert discover.ioctl_commands(lines) == (
        "ioctl commands answered (65536 tried a node: every type, nr 0 up, each range of 32 "
        "as _IO, then _IOR/_IOW/_IOWR of 4 and 8 bytes; 0xDDSSTTNN, * any): "
        "/dev/a: 0x******03; /dev/c: 0x00006b01, 0xc0086b02")
    assert discover.ioctl_commands(lines[:1] + lines[2:3]) == ""


def _sweep_run(kfuzz: Path, tmp_path: Path, plain: Path,
               *sweep: str) -> tuple[list[str], list[int]]:
    """kfuzz on /dev/null and a plain file: its sweep lines, the ioctl commands drawn."""
    rec = tmp_path / "s.rec"
    out = subprocess.run([str(kfuzz), "-s", "7", "-n", "4000", "-j", "2", "-r", str(rec),
                          *sweep, "/dev/null", str(plain)], capture_output=True,
                         text=True, check=True).stdout
    sweeps = [ln for ln in out.splitlines() if ln.startswith("KFUZZ sweep path=")]
    dump = subprocess.run([str(kfuzz), "-D", str(rec), "-k", "2000"], capture_output=True,
                          text=True, check=True).stdout
    return sweeps, [int(c, 16) for c in re.findall(r" ioctl fd=\d cmd=0x(\w+)", dump)]


def test_kfuzz_sweep_finds_answered_commands_and_favours_them(kfuzz: Path,
                                                               tmp_path: Path) -> None:
    """kfuzz -S on the host: a regular file answers some of the kernel's file ioctls
    (FIBMAP, FS_IOC_*, FIONREAD: whichever this host's filesystem does), /dev/null only
    the generic ones every file answers (left out); about half the fuzzer's ioctls then
    use a command answered, against almost none without the sweep. With 8192 ioctls a
    node only _IO(type, nr 0-31) is swept; with 65536, _IOR/_IOW/_IOWR of 4 and 8 bytes
    too, and FS_IOC_GETFLAGS (_IOR('f', 1, long): 0x80086601 on x86-64), which answers
    only with its own direction and size, is found."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"x" * 4096)
    found: dict[str, set[int]] = {}
    for budget in ("8192", "65536"):
        sweeps, cmds = _sweep_run(kfuzz, tmp_path, plain, "-S", budget)
        assert sweeps[0] == f"KFUZZ sweep path=/dev/null ioctls={budget} answered=0 cmds=", \
            sweeps
        m = re.fullmatch(rf"KFUZZ sweep path={plain} ioctls={budget} answered=(\d+) "
                         r"cmds=(0x[0-9a-f]{8}(,0x[0-9a-f]{8})*)", sweeps[1])
        assert m and int(m.group(1)) == len(m.group(2).split(",")), sweeps
        found[budget] = {int(c, 16) for c in m.group(2).split(",")}
        # Half of the fuzzer's ioctls are among them: with one shape swept, the type
        # and nr (direction and size drawn); with several, the exact commands (a
        # plain file answers by the whole command, in one shape).
        favoured = (sum(c & 0xffff in found[budget] for c in cmds) if budget == "8192"
                    else sum(c in found[budget] for c in cmds)) / len(cmds)
        assert 0.35 < favoured < 0.65, (budget, favoured)
    assert all(c >> 16 == 0 for c in found["8192"]), found
    assert found["8192"] < found["65536"] and 0x80086601 in found["65536"], found
    none, cmds = _sweep_run(kfuzz, tmp_path, plain)
    assert not none
    assert sum(c in found["65536"] for c in cmds) / len(cmds) < 0.05


# The oracle of a reduction across boots, on the host: a sequence "fails" as
# tests/drivers/fztaint does (an ioctl with _IOC_NR 11 on a file its thread's slot
# opened), says at which of its operations (SEQUENCE.at), and exits 4: this "kernel"
# can judge no more attempts. With NOAT set it does not say where.
ACROSS_ORACLE = r"""awk -v at="$1.at" -v noat="${NOAT:-}" '$1 == "op" { n++; key = $2 " " $5
  if ($4 == 0) open[key] = 1
  if ($4 == 1) delete open[key]
  if ($4 == 5 && (key in open) && $11 % 256 == 11) { if (!noat) print n > at; hit = 1; exit } }
  END { exit hit ? 4 : 1 }' "$1"
"""


def across_boots(kfuzz: Path, tmp: Path, start: Path, env: dict[str, str]) -> tuple[int, str]:
    """kfuzz -M resumed boot after boot (as kedr_build/vm/reboots.py does): the runs
    it took and the last one's output."""
    import os

    oracle, seq = tmp / "across.sh", tmp / "red.seq"
    oracle.write_text(ACROSS_ORACLE)
    args = ["-g", "2"]
    for runs in range(1, 60):
        out = subprocess.run([str(kfuzz), "-M", "-", "-m", str(start), "-o", str(seq), "-a",
                              "400", "-c", str(oracle), *args], capture_output=True, text=True,
                             check=True, env={**os.environ, **env}).stdout
        end = reboots.parse_boot(out.replace(
            "KFUZZ reduce-reboot", f"{SEQ_BEGIN}\n{seq.read_text()}{SEQ_END}\nKFUZZ reduce-reboot"))
        if end.kind != "reboot":
            return runs, out
        start = tmp / f"start-{runs}.seq"
        start.write_text(end.sequence)
        args = ["-R", "-g", str(end.gran), "-A", str(end.attempts)] + (["-L"] if end.located
                                                                        else [])
    raise AssertionError("no end")


def test_kfuzz_reduces_across_boots(kfuzz: Path, tmp_path: Path) -> None:
    """A failure that leaves the kernel unable to judge another attempt (oracle status
    4): kfuzz -M stops at each failing attempt and resumes from the sequence it left.
    Located (the oracle says at which op), it takes three runs: the whole record (cut
    after that op), that op with the open of its file, each alone; not located, plain
    ddmin takes a run per failing attempt."""
    rec, start = tmp_path / "r.rec", tmp_path / "all.seq"
    subprocess.run([str(kfuzz), "-s", "3", "-n", "3000", "-j", "2", "-r", str(rec),
                    "/dev/null", "/dev/zero"], capture_output=True, check=True)
    count = subprocess.run([str(kfuzz), "-C", str(rec)], capture_output=True, text=True,
                           check=True).stdout
    assert count == "3000\n"
    subprocess.run([str(kfuzz), "-E", str(rec), "-o", str(start)], check=True)
    text = start.read_text()
    assert text.startswith("kfuzz-seq seed=3\npath 0 /dev/null\npath 1 /dev/zero\nop 0 1 ")
    assert text.count("\nop ") == 3000
    runs, out = across_boots(kfuzz, tmp_path, start, {})
    assert runs == 3, out
    assert re.search(r"^KFUZZ reduced ops=2 attempts=\d+ minimal$", out, re.M), out
    assert re.search(r"^KFUZZ op thread=(\d) index=\d+ open path=\S+ fd=(\d) ret=.*\n"
                     r"KFUZZ op thread=\1 index=\d+ ioctl fd=\2 cmd=0x[0-9a-f]{6}0b ", out,
                     re.M), out
    plain, out = across_boots(kfuzz, tmp_path, start, {"NOAT": "1"})
    assert plain > runs and re.search(r"^KFUZZ reduced ops=2 attempts=\d+ minimal$", out,
                                      re.M), (plain, out)


def test_kfuzz_replay_keeps_its_position_and_stops_at_a_taint(kfuzz: Path,
                                                              tmp_path: Path) -> None:
    seq, at = tmp_path / "s.seq", tmp_path / "s.pos"
    seq.write_text("kfuzz-seq seed=1\npath 0 /dev/null\n" + "".join(
        f"op 0 {i} 3 0 0 0 0 8 0 0 0 0\n" for i in range(1, 6)))
    out = subprocess.run([str(kfuzz), "-p", str(seq), "-x", str(at), "-T"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "KFUZZ replayed ops=5\n"       # the host's taint did not change
    assert at.read_text().split() == ["5"]


def test_reduction_across_boots_reads_back() -> None:
    cls, text = reboots.split_sequence(("class taint", "kfuzz-seq seed=3", "path 0 /dev/x",
                                        "op 0 7 0 1 0 0 0 8 0 0 1 0"))
    assert (cls, text) == ("taint", "kfuzz-seq seed=3\npath 0 /dev/x\nop 0 7 0 1 0 0 0 8 0 0 1 0\n")
    assert reboots.CLASSES == {"hang": "fuzz", "crash": "kernel", "taint": "kernel",
                               "unload-taint": "kernel"}
    out = "\n".join(["KFUZZ reduce-start ops=1500",
                     "KFUZZ reduce-reboot ops=1386 gran=2 attempts=1 located=1",
                     "KFUZZ op thread=0 index=1 open path=/dev/x fd=1 ret=0",
                     SEQ_BEGIN, "kfuzz-seq seed=3", SEQ_END])
    end = reboots.parse_boot(out)
    assert end == reboots.BootEnd("reboot", 1, ("t0#1 open path=/dev/x fd=1",),
                                  "kfuzz-seq seed=3\n", 2, True)
    assert reboots.parse_boot("KFUZZ reduce-start ops=3\n").kind == "lost"   # a cut boot
    red = reduction.Reduction("kernel", 1500, ("t0#1 open path=/dev/x fd=1",
                                               "t0#9 ioctl fd=1 cmd=0x0000000b"),
                              4, "minimal", True, 1, 1, boots=4, seconds=13.4,
                              budget="40 attempts, 300 s")
    assert red.describe() == (
        "shortest failing sequence: 2 of 1500 operations (ddmin, 4 attempts in 4 fresh "
        "boots, 13 s (budget 40 attempts, 300 s), 1-minimal; replayed in one more fresh "
        "boot: failed 1 of 1): t0#1 open path=/dev/x fd=1; t0#9 ioctl fd=1 cmd=0x0000000b")
    cut = reduction.Reduction("fuzz", 677, (), 40, "budget-reached", False, boots=9,
                              seconds=80.2, budget="40 attempts, 300 s")
    assert cut.describe() == ("not reduced (the attempt budget ran out; 40 attempts in 9 "
                              "fresh boots, 80 s (budget 40 attempts, 300 s) over 677 "
                              "recorded operations)")


def test_fresh_boots_get_the_devices_and_a_taint_at_unload_unloads(built_chardev: Path,
                                                                    tmp_path: Path) -> None:
    """The boots of a reduction across boots (and of a race's) with DEVICES=: the same
    QEMU devices on the same slots, their in-tree drivers loaded as the judged run loads
    them, each load waited for to bind; an unload-taint attempt unloads before it is
    judged, and is not placed at an operation."""
    nic = Attachment((Attached(lookup("e1000")[0], 4),), None)
    loads = reboots.FreshLoads.of(sorted(built_chardev.glob("*.ko")), ("kedr_repl_chardev",),
                                  ("crc32c",), nic)
    assert loads.intree == ("crc32c", "e1000")
    job = loads.job("guest-reduce.sh.j2", tmp_path / "b1", "kfuzz-seq seed=1\n",
                    cls="unload-taint", hang=3, attempts=20, used=0, seconds=100, gran=2,
                    resumed=False, located=False, replay=False, seq_begin=SEQ_BEGIN,
                    seq_end=SEQ_END)
    assert "e1000,autonegotiation=off,netdev=e1000n,id=e1000,addr=0x04" in job.qemu_args
    assert job.intree_modules == ("crc32c", "e1000")
    (tmp_path / "reduce.sh").write_text(job.script)
    subprocess.run(["sh", "-n", str(tmp_path / "reduce.sh")], check=True)
    oracle = job.script[job.script.index("<<'ORACLE'\n"):job.script.rindex("\nORACLE\n")]
    assert oracle.index("find /sys/module/$m/drivers/") < oracle.index("kfuzz -p")
    assert oracle.index("kfuzz -p") < oracle.index("rmmod $m || exit 3") < oracle.index(
        "|| exit 4")
    assert "-T" not in oracle and ".at" not in oracle
    race = loads.job("guest-race.sh.j2", tmp_path / "r1", "", check="kernel", replays=2,
                     limit=9)
    assert race.qemu_args == job.qemu_args and "find /sys/module/$m/drivers/" in race.script
    (tmp_path / "race.sh").write_text(race.script)
    subprocess.run(["sh", "-n", str(tmp_path / "race.sh")], check=True)
    # Without DEVICES=: no devices, no wait.
    bare = reboots.FreshLoads.of(sorted(built_chardev.glob("*.ko")), ("kedr_repl_chardev",), ())
    job = bare.job("guest-reduce.sh.j2", tmp_path / "b2", "", cls="taint", hang=3,
                   attempts=20, used=0, seconds=100, gran=2, resumed=False, located=False,
                   replay=False, seq_begin=SEQ_BEGIN, seq_end=SEQ_END)
    assert job.qemu_args == () and "find /sys/module" not in job.script
    assert "kfuzz -p \"$1\" -x \"$1.pos\" -T" in job.script


def test_guest_fuzz_step_watches_for_hangs_and_writes_the_record_out(built_chardev: Path,
                                                                     tmp_path: Path) -> None:
    plan = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                    fuzz=FuzzPlan(seed=5, count=100, threads=1, reduce=50, hang=7))
    script = tmp_path / "job.sh"
    script.write_text(plan.script)
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert "[ $still -lt 7 ] || { fz_hung=1; break; }" in plan.script
    assert "export_seq hang" in plan.script and "|| export_seq taint\n" in plan.script
    assert "[ -z \"$cls\" ] || export_seq $cls" in plan.script
    # Which taint with no WARN/BUG line is reduced across boots, by the guest's function
    # run by sh: the fuzzing's (taint), else the unload's (unload-taint, when the drivers
    # unloaded and it said no WARN/BUG either: that one reduces in the boot), else none.
    func = plan.script[plan.script.index("taint_class() {"):plan.script.index(
        "\n}\n", plan.script.index("taint_class() {")) + 3]
    cases = {"0 0 0 0 0 0 0": "", "0 4 4 4 0 0 0": "taint", "0 4 4 4 0 2 1": "taint",
             "0 0 0 4 0 0 0": "unload-taint", "0 4 4 5 0 0 0": "taint",
             "0 0 0 4 0 1 0": "", "0 0 0 4 0 0 1": "", "0 0 0 4 3 0 0": "",
             "0 4 4 4 2 0 0": ""}
    got = subprocess.run(["sh", "-c", func + "".join(
        f'echo "[$(taint_class {args})]"; ' for args in cases)], capture_output=True,
        text=True, check=True).stdout
    assert got.splitlines() == [f"[{c}]" for c in cases.values()]
    # A WARN/BUG line at the unload reduces in the boot, class kernel (its oracle unloads).
    assert "kernel) [ $fz_warn -gt 0 ] || [ $un_warn -gt 0 ] || continue;;" in plan.script
    assert "{ [ $fz_warn -gt 0 ] || [ $un_warn -gt 0 ] || [ $nleak -gt 0 ]" in plan.script
    # The last unload is watched for what it does: a log mark and the taint before it.
    mark = plan.script.index("log_mark unload\ntaint2=$(cat /proc/sys/kernel/tainted)\n")
    assert mark < plan.script.rindex("\nunload_all\n") < plan.script.rindex("taint_class \"$")
    # no watchdog and nothing written out when not asked for
    quiet = plan_run(sorted(built_chardev.glob("*.ko")), trace_providers=("kedr_repl_chardev",),
                     fuzz=FuzzPlan(seed=5, count=100, threads=1)).script
    assert "fz_hung=1" not in quiet and "export_seq" not in quiet
