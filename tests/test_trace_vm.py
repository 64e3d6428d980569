"""The replacement module in each pinned kernel (QEMU): a patched test driver
calls catalog functions from process context, with a spinlock held, with
interrupts off, from a timer (softirq) and from an irq_work (hard IRQ). Every
call must appear in the trace with the arguments and results the driver saw;
switching tracing off globally, per function, and disabling one tracefs event
must show up exactly in the trace and in the counters."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import exported
from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, run_guest

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "kedr_ttest"
REPL = "kedr_repl_ttest"
COMMON = ["kfree", "kstrdup", "kasprintf", "vfree", "mutex_lock", "mutex_unlock",
          "_raw_spin_lock", "_raw_spin_unlock", "_raw_spin_lock_irqsave",
          "_raw_spin_unlock_irqrestore"]


@dataclass(frozen=True)
class Allocators:
    """What kmalloc(64), kmalloc(n) and vmalloc(n) compile to on a kernel, by its exports
    (the driver picks the same names from its headers)."""

    const: str
    var: str
    vmalloc: str

    @classmethod
    def of(cls, kernel: ProvisionedKernel) -> Allocators:
        return cls(exported(kernel, "kmalloc_trace", "__kmalloc_cache_noprof",
                            "kmalloc_trace_noprof"),
                   exported(kernel, "__kmalloc", "__kmalloc_noprof"),
                   exported(kernel, "vmalloc", "vmalloc_noprof"))

    @property
    def intercepted(self) -> list[str]:
        return [self.const, self.var, self.vmalloc, *COMMON]

GUEST_SCRIPT = f"""
set -e
T=/sys/kernel/tracing
D=/sys/kernel/debug/kedr_build/{REPL}
RUN=/sys/module/kedr_ttest/parameters/run
sh ./load.sh var_size=100
echo 1 > $T/events/{REPL}/enable
echo 1 > $RUN
echo "== status 1"; cat $D/status
echo 0 > $D/enabled
echo 2 > $RUN
echo "== status 2"; cat $D/status
echo 1 > $D/enabled
echo 0 > $D/functions/kfree/trace
echo 0 > $T/events/{REPL}/call_kstrdup/enable
echo 3 > $RUN
echo "== status 3"; cat $D/status
echo 0 > $D/functions/kstrdup/unrecorded
echo 0 > $D/functions/mutex_lock/calls
echo "== status reset"; cat $D/status
echo "== set 5"
if echo 5 > $D/functions/mutex_lock/calls 2>/dev/null; then echo "set to 5"; else echo "refused 5"; fi
echo 0 > $T/events/{REPL}/enable
echo "== trace"; cat $T/trace
echo "== dmesg"; dmesg | grep 'kedr_ttest: '
echo "== overrun"; cat $T/per_cpu/cpu*/stats | grep -E '^(overrun|dropped events)'
echo "== unload"
sh ./unload.sh
if [ -e /sys/kernel/debug/kedr_build ]; then echo "debugfs kept"; else echo "debugfs removed"; fi
echo "== reload enabled=0"
echo > $T/trace
insmod ./{REPL}.ko enabled=0
insmod ./kedr_ttest.ko var_size=100
echo 1 > $T/events/{REPL}/enable
cat $D/enabled
echo 1 > $RUN
echo "== status pass-through"; cat $D/status
echo 0 > $T/events/{REPL}/enable
echo "== trace pass-through"; cat $T/trace
echo "== end"
rmmod kedr_ttest
rmmod {REPL}
"""

# "  kedr_ttest:run-12  [000] d.h1.  12.345678: call_kfree: call_site=f+0x1/0x2 [m] objp=0x1"
_TRACE_LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<flags>\S+)\s+"
                         r"[\d.]+: call_(?P<fn>\w+): (?P<body>.*)$")
_VALUE = re.compile(r'(\w+)=("[^"]*"|\S+(?: \[\w+\])?)')


@dataclass(frozen=True)
class Call:
    fn: str
    values: dict[str, str]
    context: str = ""     # process, softirq, hardirq
    irqs_off: bool = False

    @property
    def site(self) -> str:
        return self.values.get("call_site", self.values.get("site", ""))


def parse_trace(text: str) -> list[Call]:
    calls = []
    for line in text.splitlines():
        m = _TRACE_LINE.match(line)
        if m is None:
            continue
        ctx_flag = m.group("flags")[2] if len(m.group("flags")) > 2 else "."
        context = {"h": "hardirq", "H": "hardirq", "s": "softirq"}.get(ctx_flag, "process")
        calls.append(Call(m.group("fn"), dict(_VALUE.findall(m.group("body"))), context,
                          irqs_off=m.group("flags")[0] == "d"))
    return calls


def parse_expectations(dmesg: str) -> dict[int, list[Call]]:
    runs: dict[int, list[Call]] = {}
    current = -1
    for line in dmesg.splitlines():
        text = line.split("kedr_ttest: ", 1)[-1]
        if m := re.match(r"run (\d+) start", text):
            current = int(m.group(1))
            runs[current] = []
        elif text.startswith("expect "):
            fn, rest = text[len("expect "):].split(" ", 1)
            values = dict(_VALUE.findall(rest))
            runs[current].append(Call(fn, values, values.pop("ctx")))
    return runs


def parse_status(text: str) -> dict[str, tuple[int, int, int]]:
    """function -> (trace switch, calls, unrecorded)"""
    rows = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fn, _repl, trace, calls, unrecorded = line.split()
        rows[fn] = (int(trace), int(calls), int(unrecorded))
    return rows


def sections(output: str) -> dict[str, str]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def check_matches(expected: list[Call], traced: list[Call]) -> None:
    assert [c.fn for c in traced] == [c.fn for c in expected]
    for want, got in zip(expected, traced):
        site = want.values["site"]
        assert got.site.startswith(f"{site}+0x") and got.site.endswith(" [kedr_ttest]"), \
            (want, got)
        for key, value in want.values.items():
            if key != "site":
                assert got.values.get(key) == value, (key, want, got)
        assert got.context == want.context, (want, got)


@dataclass(frozen=True)
class GuestRun:
    output: str
    console: str
    alloc: Allocators


@pytest.fixture(scope="module")
def guest_run(kernel: ProvisionedKernel,
              tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    work = tmp_path_factory.mktemp("trace_vm")
    src = work / "src"
    shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
    specs = kbuild.discover(src, kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    alloc = Allocators.of(kernel)
    intercepted = alloc.intercepted
    out = work / "out"
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel, outdir=out,
                                       replacement_module=REPL, driver="kedr_ttest",
                                       functions=tuple(intercepted)))
    manifest = json.loads((out / "patched" / "kedr_ttest.ko.json").read_text())
    assert sorted(r["old"] for r in manifest["renames"]) == sorted(intercepted)
    # load.sh and unload.sh name the modules by their paths under out/, as the guest has them.
    job = GuestJob(script=GUEST_SCRIPT, files={
        **{str(p.relative_to(out)): p for p in chain.load_order},
        "kedr_ttest.ko": chain.patched[0], f"{REPL}.ko": chain.replacement,
        "load.sh": out / "load.sh", "unload.sh": out / "unload.sh"})
    vm = run_guest(kernel, job, workdir=work / "vm", timeout=300)
    assert vm.ok, f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    return GuestRun(vm.output, vm.console, alloc)


def test_every_call_is_traced_with_its_arguments_result_caller_and_context(
        guest_run: GuestRun) -> None:
    out = sections(guest_run.output)
    expected = parse_expectations(out["dmesg"])
    traced = parse_trace(out["trace"])
    assert sorted(expected) == [1, 2, 3]
    # Run 1 traced everything; run 2 nothing (global switch off); run 3 all but
    # kfree (its switch off) and kstrdup (its tracefs event disabled).
    run1 = expected[1]
    run3 = [c for c in expected[3] if c.fn not in ("kfree", "kstrdup")]
    assert len(traced) == len(run1) + len(run3)
    check_matches(run1, traced[:len(run1)])
    check_matches(run3, traced[len(run1):])
    contexts = {c.context for c in run1}
    assert contexts == {"process", "softirq", "hardirq"}
    # Process-context calls made with interrupts off show it in the trace.
    irqsave = next(i for i, c in enumerate(traced) if c.fn == "_raw_spin_lock_irqsave")
    inside = traced[irqsave + 1]
    assert inside.fn == guest_run.alloc.var and inside.values["size"] == "16" and inside.irqs_off
    assert not traced[0].irqs_off


def test_counters_are_exact_and_switches_work(guest_run: GuestRun) -> None:
    out = sections(guest_run.output)
    intercepted = guest_run.alloc.intercepted
    expected = parse_expectations(out["dmesg"])
    per_run = Counter(c.fn for c in expected[1])
    assert set(per_run) == set(intercepted)
    status1 = parse_status(out["status 1"])
    assert status1 == {fn: (1, per_run[fn], 0) for fn in intercepted}
    # Globally off: a pass-through, nothing counted.
    assert parse_status(out["status 2"]) == status1
    status3 = parse_status(out["status 3"])
    for fn in intercepted:
        if fn == "kfree":
            assert status3[fn] == (0, per_run[fn], 0)
        elif fn == "kstrdup":   # traced by kedr, but its event was disabled in tracefs
            assert status3[fn] == (1, 2 * per_run[fn], per_run[fn])
        else:
            assert status3[fn] == (1, 2 * per_run[fn], 0)


def test_nothing_lost_and_clean_unload(guest_run: GuestRun) -> None:
    out = sections(guest_run.output)
    console = guest_run.console
    assert all(line.split(":")[1].strip() == "0" for line in out["overrun"].split("\n")
               if ":" in line)
    assert "debugfs removed" in out["unload"]
    assert "unsafe" not in console.lower()   # trace event format checks at load


def test_counter_reset_by_writing_zero(guest_run: GuestRun) -> None:
    out = sections(guest_run.output)
    status3, reset = parse_status(out["status 3"]), parse_status(out["status reset"])
    assert status3["mutex_lock"][1] > 0 and status3["kstrdup"][2] > 0
    assert reset["mutex_lock"] == (1, 0, 0)
    assert reset["kstrdup"] == (status3["kstrdup"][0], status3["kstrdup"][1], 0)
    assert {fn: v for fn, v in reset.items() if fn not in ("mutex_lock", "kstrdup")} == \
        {fn: v for fn, v in status3.items() if fn not in ("mutex_lock", "kstrdup")}
    assert out["set 5"].split() == ["refused", "5"]   # a counter can only be reset


def test_enabled_0_at_load_is_a_pass_through(guest_run: GuestRun) -> None:
    """insmod kedr_repl_... enabled=0: the global switch reads 0, the driver's calls run
    (its run succeeds) but none is counted or traced."""
    out = sections(guest_run.output)
    assert out["reload enabled=0"].split() == ["0"]
    status = parse_status(out["status pass-through"])
    assert status == {fn: (1, 0, 0) for fn in guest_run.alloc.intercepted}
    assert parse_trace(out["trace pass-through"]) == []
    assert "tracer:" in out["trace pass-through"]   # the trace was read, and is empty
