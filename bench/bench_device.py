"""The device pack on e1000: the whole pack end to end, one unplug/replug cycle and the
sweep's seconds per site, each next to one bare VM boot of the same run.

    ./kedr-env python bench/bench_device.py [--kernel debian-6.1] [--cycles 5]

Prints: one VM boot to power-off (the floor of every test of the pack), measured first
and again last, the ratios against the mean of the two (the shared host's load moves
within a run too); `scons KO=e1000
DEVICES=e1000 check PACK=device` end to end (build, patch, the six tests: probe,
rebind x3, hotplug x3, suspend, reload x3, the sweep; JOBS= its default, auto: as many
VMs at once as CPUs, said in a line), with each test's seconds and the
bytes its guest wrote to ttyS1 (output.log: the serial port carries about 340 KB/s under
TCG; the big dumps go packed, kedr_build/vm/packed.py); one
unplug + re-plug cycle of the bound, patched e1000 (the guest's clock: QMP device_del
until DEVICE_DELETED, device_add, probe until the interface is back; median of
--cycles in one boot); the pack's sweep: its sites, boots, and seconds per site after
the first boot's discovery. Goals (issue 18): the pack <= 60 s, a cycle <= 2 s, a
sweep site <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import outputs, run_scons  # type: ignore[import-not-found]  # noqa: E402
from kedr_build.devices import catalog  # noqa: E402
from kedr_build.devices.attach import attach  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
from kedr_build.kernel.descriptions import ProvisionedKernel  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402
from kedr_build.vm.runner import run_modules  # noqa: E402

CYCLE = """pci=/sys/bus/pci/devices/0000:00:04.0
n=0
while [ $n -lt {cycles} ]; do
  t0=$(cut -d' ' -f1 /proc/uptime)
  kedr-device unplug e1000 >/dev/null || exit 1
  kedr-device plug e1000 >/dev/null || exit 1
  i=0; while [ ! -d $pci/net ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i + 1)); done
  [ -d $pci/net ] || exit 1
  echo "cycle $t0 $(cut -d' ' -f1 /proc/uptime)"
  n=$((n + 1))
done
"""


def bare_boot(kernel: ProvisionedKernel, workdir: Path) -> float:
    """Seconds of one VM boot to power-off with nothing to do."""
    start = time.perf_counter()
    vm = run_guest(kernel, GuestJob(script="true\n"), workdir, timeout=120)
    assert vm.ok, vm.reason()
    return time.perf_counter() - start


def serial_bytes(logs: Path) -> int:
    """Bytes the guest wrote to ttyS1 in a test's runs (each boot's output.log)."""
    return sum(f.stat().st_size for f in logs.rglob("output.log"))


def pack_run(work: Path, kernel_name: str) -> tuple[Path, float, dict[str, float], dict[str, Any],
                                                   str]:
    """The device pack on e1000 through scons (JOBS= its default): its outputs, seconds
    end to end, each test's seconds (junit.xml), the sweep's sweep.json, and the line
    saying how many VMs ran at once ("" for one)."""
    start = time.perf_counter()
    proc = run_scons(["KO=e1000", "DEVICES=e1000", f"BUILD_DIR={work}",
                      f"KERNEL={kernel_name}", "check", "PACK=device"], check=False)
    whole = time.perf_counter() - start
    jobs = next((ln for ln in proc.stdout.splitlines() if ln.startswith("kedr-build: JOBS=")),
                "")
    out = outputs(work, "e1000", kernel_name)
    tests: dict[str, float] = {}
    for case in ET.parse(out / "report/junit.xml").iter("testcase"):
        test = case.get("name", "").split(".")[0]
        tests[test] = tests.get(test, 0.0) + float(case.get("time", "0"))
    sw = json.loads((out / "report/logs/e1000/faults/sweep/sweep.json").read_text())
    return out, whole, tests, sw, jobs


def unplug_cycles(kernel: ProvisionedKernel, work: Path, out: Path, cycles: int) -> list[float]:
    """Guest seconds of each unplug + re-plug of the pack's bound, patched e1000."""
    modules = [out / "kedr_repl_e1000/kedr_repl_e1000.ko", out / "patched/e1000.ko"]
    script = work / "cycles.sh"
    script.write_text(CYCLE.format(cycles=cycles))
    run = run_modules(kernel, modules, work / "cycles", workload=script,
                      devices=attach(catalog.lookup("e1000"), kernel),
                      trace_providers=("kedr_repl_e1000",))
    assert run.ok, run.reason
    return [float(b) - float(a) for a, b in
            re.findall(r"^cycle (\S+) (\S+)$", run.workload_output, re.M)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    kernel = provision.ensure(args.kernel)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = bare_boot(kernel, work / "boot")
        print(f"kernel {kernel.release}: one VM boot to power-off: {first:.2f} s", flush=True)
        out, whole, tests, sw, jobs = pack_run(work, args.kernel)
        cycles = unplug_cycles(kernel, work, out, args.cycles)
        last = bare_boot(kernel, work / "boot-last")
        boot = (first + last) / 2
        print(f"one VM boot to power-off, again after the rest: {last:.2f} s; the ratios "
              f"below are against their mean, {boot:.2f} s")

        report = json.loads((out / "report/report.json").read_text())
        print(f"KO=e1000 DEVICES=e1000 check PACK=device, end to end: {whole:.1f} s "
              f"= {whole / boot:.1f} x boot (verdict {report['verdict']})")
        print(f"  {jobs.removeprefix('kedr-build: ') or 'one VM at a time'}; each test's "
              "seconds, from its start (VMs at once overlap):")
        for test, secs in tests.items():
            sent = serial_bytes(out / "report/logs/e1000" / test) / 1000
            print(f"  {test:8} {secs:6.1f} s = {secs / boot:5.1f} x boot; {sent:5.0f} KB "
                  "over ttyS1")
        print(f"the pack's sweep: {len(sw['results'])} sites, {sw['boots']} boot(s), first "
              f"boot to first site {sw['discovery_seconds']:.1f} s, then "
              f"{sw['seconds_per_site']:.2f} s per site = "
              f"{sw['seconds_per_site'] / boot:.2f} x boot")
        print(f"one unplug + re-plug of the bound e1000: median "
              f"{statistics.median(cycles):.2f} s of {len(cycles)} (max {max(cycles):.2f} s) "
              f"= {statistics.median(cycles) / boot:.2f} x boot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
