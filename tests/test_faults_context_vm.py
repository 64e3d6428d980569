"""The fault payload's context rules in the pinned kernel (QEMU), with
tests/drivers/faultctx: calls that must never fail (__GFP_NOFAIL, NMI, an
interruptible wait in a kernel thread, which no signal reaches), pid= and
init filters in task context only, and prob= at its edges.

One boot per kernel: the replacement module and the patched driver are loaded
once (init under the "init" scenario) and the scenarios are rewritten while the
driver runs; each trigger makes its calls and reads back which failed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kedr_build.intercept.pipeline import InterceptRequest, intercept
from kedr_build.kernel import kbuild
from kedr_build.kernel.descriptions import ProvisionedKernel
from kedr_build.vm.qemu import GuestJob, run_guest

pytestmark = pytest.mark.vm

DRIVER = Path(__file__).resolve().parent / "drivers" / "faultctx"
REPL = "kedr_repl_faultctx"
BAD_PROBS = ("prob=18446744073709551617", "prob=1.0000001", "prob=0.1234567890123456789",
             "prob=1e-30", "prob=2", "prob=01", "prob=1.")
# A term given twice is refused, not last-wins (the host refuses the same).
TWICE = ("init init", "size>1 size>2", "gfp=atomic gfp=blocking", "prob=0.5 prob=0.25",
         "caller=a caller=b")

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}
F=$D/faults
P=/sys/module/kedr_faultctx/parameters
# busybox insmod runs init again through init_module() when finit_module() fails.
ins() {{ exec 3>>"$1"; insmod "$@"; rc=$?; exec 3>&-; return $rc; }}
insmod ./{REPL}.ko || exit 1
# The NMI case is about the fault payload alone: no lock tracking or rules there.
for s in leaks rules; do
  f=$D/functions/_raw_spin_trylock/$s; [ -e $f ] && echo 0 > $f
done
echo "== initload"; echo init > $F/kmalloc
ins ./kedr_faultctx.ko; echo "insmod rc=$?"; cat $P/pattern; cat $F/kmalloc
# Another module loaded (by modprobe, in its own task) in the middle of the init.
rmmod kedr_faultctx || exit 1
echo "== initmodprobe"; echo init > $F/kmalloc
ins ./kedr_faultctx.ko modprobe=crc7; echo "insmod rc=$?"; cat $P/pattern; cat $F/kmalloc
grep -c '^crc7 ' /proc/modules
t() {{
  echo "== $1"
  echo "$3" > $F/$2 || {{ echo refused; return; }}
  echo "$4" > $P/trigger; echo "trigger rc=$?"; cat $P/pattern; cat $F/$2
  echo never > $F/$2
}}
t task kmalloc always "5 task"
t nofail kmalloc always "5 nofail"
t irqany kmalloc always "5 irq"
t taskpid kmalloc "pid=$$" "5 task"
t irqpid kmalloc "pid=$$" "5 irq"
t nmi spin_trylock always "3 nmi"
t wait wait_for_completion_interruptible always "5 wait"
t kwait wait_for_completion_interruptible always "5 kwait"
t prob0 kmalloc "prob=0" "50 task"
t prob1 kmalloc "prob=1" "50 task"
t prob10 kmalloc "prob=1.0" "50 task"
t probhigh kmalloc "prob=0.9999999999 seed=1" "200 task"
t problow kmalloc "prob=0.0000000001 seed=1" "200 task"
t probhalf kmalloc "prob=0.5 seed=42" "200 task"
t probtiny kmalloc "prob=0.0000001 seed=3" "1 task"
t prob18 kmalloc "prob=0.123456789012345678 seed=3" "1 task"
for bad in {' '.join(repr(b) for b in BAD_PROBS + TWICE)}; do
  echo "== bad $bad"; echo "$bad" > $F/kmalloc; echo "rc=$?"; head -n 1 $F/kmalloc
done
rmmod kedr_faultctx || exit 1
rmmod {REPL} || exit 1
"""


def sections(output: str) -> dict[str, list[str]]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip().splitlines()
            for i in range(1, len(parts) - 1, 2)}


def build_faultctx(kernel: ProvisionedKernel, work: Path) -> tuple[Path, Path]:
    """(replacement .ko, patched driver .ko)."""
    src = work / "src"
    shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
    specs = kbuild.discover(src, kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel, outdir=work / "out",
                                       replacement_module=REPL, driver="kedr_faultctx"))
    return chain.replacement, chain.patched[0]


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    work = tmp_path_factory.mktemp("faultctx_vm")
    repl_ko, patched = build_faultctx(kernel, work)
    job = GuestJob(script=GUEST_SCRIPT, intree_modules=("crc7",),
                   files={"kedr_faultctx.ko": patched,
                                               f"{REPL}.ko": repl_ko})
    vm = run_guest(kernel, job, workdir=work / "vm", timeout=300)
    assert vm.ok, f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    return sections(vm.output)


def pattern(out: dict[str, list[str]], name: str) -> str:
    lines = out[name]
    assert lines[0] in ("trigger rc=0", "insmod rc=0"), lines
    return lines[1]


def shown(out: dict[str, list[str]], name: str) -> str:
    return out[name][2]


def counters(out: dict[str, list[str]], name: str, prefix: str) -> dict[str, int]:
    line = next(ln for ln in out[name] if ln.startswith(prefix))
    return {k: int(v) for k, v in (w.split("=") for w in line.split() if "=" in w)}


def test_nofail_allocations_are_never_failed(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "task") == "FFFFF"          # the same calls without __GFP_NOFAIL
    assert pattern(guest, "nofail") == "....."
    assert counters(guest, "nofail", "skipped") == {"nofail": 5, "nmi": 0}
    assert counters(guest, "nofail", "calls=")["injected"] == 0


def test_pid_filter_ignores_interrupts_on_that_process(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "irqany") == "FFFFF"        # interrupt calls can be failed
    assert pattern(guest, "taskpid") == "FFFFF"       # the process's own calls match
    assert pattern(guest, "irqpid") == "....."        # an interrupt landing on it does not


def test_init_filter_holds_while_another_module_loads_during_init(
        guest: dict[str, list[str]]) -> None:
    # crc7 came and went LIVE in modprobe's task in the middle of the init: the init's
    # own allocation after it is still the init's (it failed), crc7 is no target.
    assert pattern(guest, "initmodprobe") == "F."
    assert counters(guest, "initmodprobe", "calls=") == {"calls": 2, "matched": 1,
                                                         "injected": 1}
    assert guest["initmodprobe"][-1] == "1"           # crc7 was loaded


def test_init_filter_ignores_interrupts_during_init(guest: dict[str, list[str]]) -> None:
    # the init's own allocation fails; the one in an interrupt during init does not
    assert pattern(guest, "initload") == "F."
    assert counters(guest, "initload", "calls=") == {"calls": 2, "matched": 1, "injected": 1}


def test_nmi_calls_are_never_failed_and_counted(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "nmi") == "..."
    assert counters(guest, "nmi", "skipped") == {"nofail": 0, "nmi": 3}
    assert counters(guest, "nmi", "calls=") == {"calls": 0, "matched": 0, "injected": 0}


def test_interruptible_waits_fail_only_where_a_signal_can_arrive(
        guest: dict[str, list[str]]) -> None:
    # In the writer's process a signal can end the wait early: failed (-ERESTARTSYS).
    assert pattern(guest, "wait") == "FFFFF"
    assert counters(guest, "wait", "calls=")["injected"] == 5
    # In a kernel thread (every signal ignored) it cannot: the catalog's
    # fails_on = "signal" keeps such calls from the fault payload altogether (the
    # sweep once hung usb-storage's control thread on this infeasible failure).
    assert pattern(guest, "kwait") == "....."
    assert counters(guest, "kwait", "calls=") == {"calls": 0, "matched": 0, "injected": 0}


def test_probability_edges(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "prob0") == "." * 50
    assert pattern(guest, "prob1") == "F" * 50
    assert pattern(guest, "prob10") == "F" * 50
    assert shown(guest, "prob1").startswith("always prob=1.000000 seed=")
    assert pattern(guest, "probhigh") == "F" * 200
    assert pattern(guest, "problow") == "." * 200
    assert 60 < pattern(guest, "probhalf").count("F") < 140


def test_probability_digits_are_kept(guest: dict[str, list[str]]) -> None:
    assert shown(guest, "probtiny") == "always prob=0.0000001 seed=3"
    assert shown(guest, "prob18") == "always prob=0.123456789012345678 seed=3"


def test_bad_probabilities_are_refused(guest: dict[str, list[str]]) -> None:
    for bad in BAD_PROBS:
        lines = guest[f"bad {bad}"]
        assert "rc=0" not in lines and lines[-1] == "never", (bad, lines)


def test_a_term_given_twice_is_refused(guest: dict[str, list[str]]) -> None:
    for bad in TWICE:
        lines = guest[f"bad {bad}"]
        assert "rc=0" not in lines and lines[-1] == "never", (bad, lines)
