"""The ``basic`` pack end to end on a small driver, beside one VM boot alone.

Times, on the pinned kernel (TCG), each --rounds times (median):

  boot         one VM boot that runs ``true`` and powers off (run_guest)
  cold check   ``scons MODULE=<copy of examples/chardev> check PACK=basic`` from an
               empty build directory: kbuild, generate and build the replacement
               module, patch, then the pack (2 tests: 2 boots, 9 checks)
  warm check   the same again, the build up to date: the pack alone

Goal (issue 12): basic on a small driver <= 30 s end to end.

With ``--batch N`` (default 10) it also checks a batch of N copies of examples/chardev
(``DRIVERS=``, one session, 2 boots a driver) and prints:

  batch cold   build + patch + pack, one VM at a time (JOBS=1)
  batch warm   the pack alone, JOBS=1 then JOBS=2: the throughput of 2 parallel VMs
               against 1 (goal: >= 1.6x on 2 cores)
  N machines   an estimate from the shard design (SHARD=k/N deals the session's
               (driver, test) groups round-robin; every shard builds the whole batch):
               build + warm pack / N

    ./kedr-env python bench/bench_pack.py [--rounds 3] [--batch 10] [--vm-cpus 1]
    (--rounds 0: the batch only)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402


def _boot(work: Path) -> float:
    kernel = provision.ensure()
    start = time.monotonic()
    result = run_guest(kernel, GuestJob(script="true\n"), work, timeout=120)
    if not result.ok:
        raise SystemExit(f"boot failed: {result.reason()}")
    return time.monotonic() - start


def _check(src: Path | str, build: Path, *extra: str) -> float:
    start = time.monotonic()
    what = str(src) if str(src).startswith("DRIVERS=") else f"MODULE={src}"
    proc = subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
                           what, f"BUILD_DIR={build}", "check", "PACK=basic", *extra],
                          capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"check failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=10, help="drivers in the batch (0: none)")
    ap.add_argument("--vm-cpus", type=int, default=0,
                    help="VM_CPUS= for the batch (0: the kernel description's)")
    args = ap.parse_args()
    if args.rounds < 1:
        _batch(args.batch, args.vm_cpus)
        return
    boots: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        for r in range(args.rounds):
            work = Path(tmp, f"r{r}")
            src = work / "chardev"
            shutil.copytree(REPO / "examples" / "chardev", src)
            boots.append(_boot(work / "boot"))
            cold.append(_check(src, work / "build"))
            warm.append(_check(src, work / "build"))
    med = statistics.median
    print(f"rounds: {args.rounds} (median; min-max)")
    for name, xs in (("one VM boot", boots), ("basic, cold (build+patch+pack)", cold),
                     ("basic, warm (pack only)", warm)):
        print(f"  {name:32s} {med(xs):6.1f} s  ({min(xs):.1f}-{max(xs):.1f})")
    print(f"  warm check / boot: {med(warm) / med(boots):.1f}x  (the pack boots twice)")
    if args.batch:
        _batch(args.batch, args.vm_cpus)


def _batch(n: int, vm_cpus: int) -> None:
    cpus = (f"VM_CPUS={vm_cpus}",) if vm_cpus else ()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        srcs = []
        for i in range(n):
            srcs.append(Path(tmp, "src", f"chardev{i}"))
            shutil.copytree(REPO / "examples" / "chardev", srcs[-1])
        drivers = "DRIVERS=" + ",".join(map(str, srcs))
        build = Path(tmp, "build")
        cold = _check(drivers, build, *cpus)
        one = _check(drivers, build, "JOBS=1", *cpus)
        two = _check(drivers, build, "JOBS=2", *cpus)
    boots = 2 * n
    print(f"batch of {n} drivers ({boots} boots, {9 * n} checks{', ' if cpus else ''}"
          f"{' '.join(cpus)}):")
    print(f"  cold, 1 VM at a time           {cold:6.1f} s  (build+patch {cold - one:.1f} s)")
    print(f"  warm, 1 VM  (JOBS=1)           {one:6.1f} s  {60 * boots / one:5.1f} boots/min")
    print(f"  warm, 2 VMs (JOBS=2)           {two:6.1f} s  {60 * boots / two:5.1f} boots/min")
    print(f"  throughput 2 VMs / 1 VM:       {one / two:.2f}x  (goal >= 1.6x)")
    build_s = cold - one
    for machines in (2, 5, 10):
        print(f"  estimate on {machines:2d} machines (SHARD=k/{machines}, 1 VM each): "
              f"{build_s + one / machines:6.1f} s")


if __name__ == "__main__":
    main()
