"""Emulated devices (DEVICES=): a run, hot-unplug/re-plug cycles and a device sweep,
each next to one bare VM boot of the same run.

    ./kedr-env python bench/bench_devices.py [--kernel debian-6.1] [--cycles 5]

Prints: one VM boot to power-off (the floor of every run); `KO=e1000 DEVICES=e1000`
end to end (the patched Debian e1000 probed, pinged through, removed); one unplug +
re-plug cycle of that e1000 with its driver bound (from the guest's clock: the QMP
device_del until DEVICE_DELETED, device_add, probe until the interface is back);
the sweep of tests/drivers/edu with DEVICES=edu, seconds per site after discovery.
Goals (issue 18): a cycle <= 2 s, a sweep site <= 1 s after the first boot.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import outputs, run_scons  # type: ignore[import-not-found]  # noqa: E402
from kedr_build.devices import catalog  # noqa: E402
from kedr_build.devices.attach import attach  # noqa: E402
from kedr_build.faults.sweep import sweep  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
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
sh /kedr/devices.sh
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1")
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    kernel = provision.ensure(args.kernel)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        vm = run_guest(kernel, GuestJob(script="true\n"), work / "boot", timeout=120)
        boot = time.perf_counter() - start
        assert vm.ok, vm.reason()
        print(f"kernel {kernel.release}: one VM boot to power-off: {boot:.2f} s")

        run_scons([f"KO=e1000", f"BUILD_DIR={work}", f"KERNEL={args.kernel}"])
        out = outputs(work, "e1000", args.kernel)
        modules = [out / "kedr_repl_e1000/kedr_repl_e1000.ko", out / "patched/e1000.ko"]
        devices = attach(catalog.lookup("e1000"), kernel)
        start = time.perf_counter()
        report = run_modules(kernel, modules, work / "run", devices=devices,
                             trace_providers=("kedr_repl_e1000",))
        whole = time.perf_counter() - start
        assert report.ok, report.reason
        print(f"KO=e1000 DEVICES=e1000 run (probe, ping, remove): {whole:.2f} s "
              f"= {whole / boot:.2f} x boot")

        script = work / "cycles.sh"
        script.write_text(CYCLE.format(cycles=args.cycles))
        report = run_modules(kernel, modules, work / "cycles", workload=script,
                             devices=devices, trace_providers=("kedr_repl_e1000",))
        assert report.ok, report.reason
        cycles = [float(b) - float(a) for a, b in
                  re.findall(r"^cycle (\S+) (\S+)$", report.workload_output, re.M)]
        print(f"unplug + re-plug of e1000, bound: median {statistics.median(cycles):.2f} s "
              f"of {len(cycles)} (max {max(cycles):.2f} s) = "
              f"{statistics.median(cycles) / boot:.2f} x boot")

        run_scons([f"MODULE={REPO / 'tests/drivers/edu'}", f"BUILD_DIR={work}",
                   f"KERNEL={args.kernel}"])
        edu = outputs(work, "edu", args.kernel)
        result = sweep(kernel, edu / "kedr_repl_edu/kedr_repl_edu.ko",
                       edu / "patched/kedr_edu.ko", work / "sweep",
                       devices=attach(catalog.lookup("edu"), kernel))
        print(f"sweep of tests/drivers/edu, DEVICES=edu: {len(result.results)} sites, "
              f"{result.boots} boot(s), first boot to first site "
              f"{result.discovery_seconds:.2f} s, then {result.seconds_per_site:.2f} s per "
              f"site = {result.seconds_per_site / boot:.2f} x boot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
