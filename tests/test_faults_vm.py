"""The fault payload in the pinned kernel (QEMU), with tests/drivers/faulty.

One boot: the replacement module and the patched driver are loaded once, and
the scenario of the kmalloc point is rewritten while the driver runs; each
trigger makes ten kmalloc(32) calls from one call site in the writer's process
and reads back which failed. Then the driver is reloaded under init-only and
size-bound scenarios, and bad scenarios are refused by the kernel side too.
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

DRIVER = Path(__file__).resolve().parent / "drivers" / "faulty"
REPL = "kedr_repl_faulty"

GUEST_SCRIPT = f"""
D=/sys/kernel/debug/kedr_build/{REPL}/faults
P=/sys/module/kedr_faulty/parameters
# busybox insmod runs init again through init_module() when finit_module()
# fails; a writer on the file makes finit_module() fail before init runs
# (-ETXTBSY from deny_write_access()), so init runs once.
ins() {{ exec 3>>"$1"; insmod "$@"; rc=$?; exec 3>&-; return $rc; }}
insmod ./{REPL}.ko || exit 1
insmod ./kedr_faulty.ko || exit 1
t() {{
  echo "== $1"
  echo "$2" > $D/kmalloc || {{ echo refused; return; }}
  echo "10 32" 2>/dev/null > $P/trigger; cat $P/pattern; cat $D/kmalloc
}}
echo "== default"; echo "10 32" > $P/trigger; cat $P/pattern; cat $D/kmalloc
t nth "nth=3"
t every "every=3"
t after "after=7"
t prob1 "prob=0.5 seed=42"
t prob2 "prob=0.5 seed=42"
t prob3 "prob=0.5 seed=7"
t above "size>4096"
t below "size<64"
t init "init"
t caller "caller=faulty_alloc every=2"
t othercaller "caller=trigger_set"
t atomic "gfp=atomic"
t blocking "gfp=blocking nth=10"
sleep 30 & other=$!
t otherpid "pid=$other"
kill $other
t mypid "pid=$$ nth=2"
echo "== child"; echo "pid=$$" > $D/kmalloc
sh -c 'echo "3 32" > '$P'/trigger' 2>/dev/null; cat $P/pattern
echo "== never"; echo never > $D/kmalloc; echo "10 32" > $P/trigger; cat $P/pattern; cat $D/kmalloc
for bad in "nth=0" "bogus" "prob=1.5" "seed=3" "nth=2 every=3" "size>x" "pid=4000000"; do
  echo "== bad $bad"; echo "$bad" > $D/kmalloc; echo "rc=$?"
done
echo "== sites"; echo 1 > $D/sites; echo "3 32" > $P/trigger; cat $D/sites
rmmod kedr_faulty || exit 1
echo "== initload"; echo "init nth=2" > $D/kmalloc; echo 1 > $D/sites
ins ./kedr_faulty.ko; echo "insmod rc=$?"; cat $D/kmalloc; cat $D/sites
echo "== bigload"; echo "size>4096" > $D/kmalloc
ins ./kedr_faulty.ko; echo "insmod rc=$?"; cat $D/kmalloc
echo "== kstrdup"; echo never > $D/kmalloc; echo always > $D/kstrdup
ins ./kedr_faulty.ko; echo "insmod rc=$?"; cat $D/kstrdup
echo "== leaks"; cat /sys/kernel/debug/kedr_build/{REPL}/leaks | grep ^totals
echo never > $D/kstrdup
insmod ./kedr_faulty.ko || exit 1
echo "== loaded"; echo "10 32" > $P/trigger; cat $P/pattern
rmmod kedr_faulty || exit 1
rmmod {REPL} || exit 1
echo "== log"; dmesg | grep 'fault injected' | tail -n 2
"""


def sections(output: str) -> dict[str, list[str]]:
    parts = re.split(r"^== (.+)$", output, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip().splitlines()
            for i in range(1, len(parts) - 1, 2)}


def build_faulty(kernel: ProvisionedKernel, work: Path) -> tuple[Path, Path, Path]:
    """(replacement .ko, patched driver .ko, the driver as built)."""
    src = work / "src"
    shutil.copytree(DRIVER, src)        # kbuild builds in the driver's directory
    specs = kbuild.discover(src, kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel, outdir=work / "out",
                                       replacement_module=REPL, driver="kedr_faulty"))
    return chain.replacement, chain.patched[0], built[0]


@pytest.fixture(scope="module")
def guest(kernel: ProvisionedKernel,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    work = tmp_path_factory.mktemp("faults_vm")
    repl_ko, patched, _ = build_faulty(kernel, work)
    job = GuestJob(script=GUEST_SCRIPT, files={"kedr_faulty.ko": patched,
                                               f"{REPL}.ko": repl_ko})
    vm = run_guest(kernel, job, workdir=work / "vm", timeout=300)
    assert vm.ok, f"status {vm.status}, problems {vm.problems}\n{vm.output}\n{vm.console[-3000:]}"
    return sections(vm.output)


def pattern(out: dict[str, list[str]], name: str) -> str:
    return out[name][0]


def counters(out: dict[str, list[str]], name: str) -> dict[str, int]:
    line = next(ln for ln in out[name] if ln.startswith("calls="))
    return {k: int(v) for k, v in (w.split("=") for w in line.split())}


def test_off_by_default(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "default") == ".........."
    assert guest["default"][1] == "never"


def test_counting_scenarios_are_exact(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "nth") == "..F......."
    assert pattern(guest, "every") == "..F..F..F."
    assert pattern(guest, "after") == ".......FFF"
    assert counters(guest, "every") == {"calls": 10, "matched": 10, "injected": 3}
    assert guest["nth"][1] == "nth=3"


def test_seeded_probability_reproduces(guest: dict[str, list[str]]) -> None:
    one, two, other = (pattern(guest, n) for n in ("prob1", "prob2", "prob3"))
    assert one == two and "F" in one and "." in one
    assert one != other
    assert guest["prob1"][1] == "always prob=0.500000 seed=42"


def test_filters(guest: dict[str, list[str]]) -> None:
    assert pattern(guest, "above") == ".........."
    assert counters(guest, "above")["matched"] == 0
    assert pattern(guest, "below") == "FFFFFFFFFF"
    assert pattern(guest, "init") == ".........."       # not a module's init
    assert pattern(guest, "caller") == ".F.F.F.F.F"
    assert guest["caller"][1] == "every=2 caller=faulty_alloc"
    assert pattern(guest, "othercaller") == ".........."
    assert pattern(guest, "atomic") == ".........."      # GFP_KERNEL can block
    assert pattern(guest, "blocking") == ".........F"
    assert pattern(guest, "otherpid") == ".........."
    assert pattern(guest, "mypid") == ".F........"
    assert pattern(guest, "child") == "FFF"             # a child of the pid
    assert pattern(guest, "never") == ".........."


def test_bad_scenarios_are_refused_by_the_kernel(guest: dict[str, list[str]]) -> None:
    bad = {k: v for k, v in guest.items() if k.startswith("bad ")}
    assert len(bad) == 7
    for name, lines in bad.items():
        assert lines[-1] != "rc=0", name
    assert any("Invalid argument" in ln for ln in bad["bad nth=0"])
    assert any("No such process" in ln for ln in bad["bad pid=4000000"])


def test_sites_are_named_relative_to_the_target(guest: dict[str, list[str]]) -> None:
    sites = [ln.split() for ln in guest["sites"] if ln.startswith("site ")]
    assert len(sites) == 1, guest["sites"]
    _, function, point, caller, calls = sites[0]
    assert point == "kmalloc" and function.startswith("__kmalloc")
    assert re.fullmatch(r"faulty_alloc\+0x[0-9a-f]+", caller) and calls == "calls=3"


def test_init_only_and_size_bound_fail_the_drivers_init(guest: dict[str, list[str]]) -> None:
    assert "insmod rc=0" not in guest["initload"]
    assert "insmod rc=12" in guest["initload"]          # -ENOMEM, init ran once
    assert counters(guest, "initload") == {"calls": 2, "matched": 2, "injected": 1}
    assert "insmod rc=0" not in guest["bigload"]
    assert counters(guest, "bigload") == {"calls": 2, "matched": 1, "injected": 1}
    assert "insmod rc=0" not in guest["kstrdup"]
    assert counters(guest, "kstrdup")["injected"] == 1
    # the correct driver's error paths free what they took: nothing live
    assert re.search(r"\blive=0\b", guest["leaks"][0]), guest["leaks"]
    assert pattern(guest, "loaded") == ".........."


def test_injections_are_logged_with_the_caller(guest: dict[str, list[str]]) -> None:
    assert guest["log"] and all("fault injected: kstrdup at faulty_init" in ln
                                or "fault injected" in ln for ln in guest["log"])
    assert "[kedr_faulty]" in guest["log"][-1]
