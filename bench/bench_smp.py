"""Scaling of the leak payload with CPUs, in the pinned kernel's SMP VM, one boot.

tests/drivers/stress runs T kthreads of kmalloc/kfree and kmem_cache pairs
(plus a timer) and logs the threads' wall time. Native (unpatched) and patched
(leak tracking on, stacks of depth 16; and call site only) with 1 and 2
threads, --ops pairs per thread: pairs per second, and how the second thread
scales (2 threads / 1 thread; 2.0 is perfect with 2 vCPUs).

    ./kedr-env python bench/bench_smp.py [--ops 20000]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402

DRIVER = REPO / "tests" / "drivers" / "stress"
REPL = "kedr_repl_stress"

_SCRIPT = """
set -e
T=/sys/kernel/tracing
run() {{
  for t in 1 2; do
    insmod $2/kedr_stress.ko threads=$t ops={ops}
    echo "RESULT $1 $t $(dmesg | grep 'kedr_stress: done' | tail -1 | sed 's/.* ns=//')"
    rmmod kedr_stress
  done
}}
echo "CPUS $(grep -c ^processor /proc/cpuinfo)"
run native native
insmod {repl}.ko
echo 0 > $T/events/{repl}/enable
D=/sys/kernel/debug/kedr_build/{repl}
for f in $D/functions/*/trace; do echo 0 > $f; done
run leaks patched
grep ^totals $D/leaks
rmmod {repl}
insmod {repl}.ko stack_depth=1 free_stacks=0
for f in $D/functions/*/trace; do echo 0 > $f; done
run leaks_site patched
rmmod {repl}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20000)
    args = parser.parse_args()
    kernel = provision.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "build"
        subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
                        f"MODULE={DRIVER}", f"BUILD_DIR={build}"], check=True,
                       stdout=subprocess.DEVNULL)
        out = build / "stress"
        files = {"native/kedr_stress.ko": out / "kedr_stress.ko",
                 "patched/kedr_stress.ko": out / "patched" / "kedr_stress.ko",
                 f"{REPL}.ko": out / REPL / f"{REPL}.ko"}
        result = run_guest(kernel, GuestJob(script=_SCRIPT.format(ops=args.ops, repl=REPL),
                                            files=files), Path(tmp) / "vm", timeout=1200)
    if not result.ok:
        print(f"bench: VM run failed: {result.reason()}\n{result.output}", file=sys.stderr)
        return 1
    ns = {(m.group(1), int(m.group(2))): int(m.group(3))
          for m in re.finditer(r"^RESULT (\w+) (\d) (\d+)\s*$", result.output, re.M)}
    cpus = re.search(r"^CPUS (\d+)", result.output, re.M)
    print(f"{args.ops} pairs per thread, guest CPUs: {cpus.group(1) if cpus else '?'} (TCG)")
    for name in ("native", "leaks", "leaks_site"):
        rate = {t: t * args.ops / (ns[(name, t)] / 1e9) for t in (1, 2) if (name, t) in ns}
        if len(rate) == 2:
            print(f"  {name:10} 1 thread {rate[1]:12,.0f} pairs/s   2 threads {rate[2]:12,.0f} "
                  f"pairs/s   scaling {rate[2] / rate[1]:.2f}x")
    totals = re.search(r"^totals .*$", result.output, re.M)
    if totals:
        print(f"leak payload after its runs: {totals.group(0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
