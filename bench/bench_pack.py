"""The ``basic`` pack end to end on a small driver, beside one VM boot alone.

Times, on the pinned kernel (TCG), each --rounds times (median):

  boot         one VM boot that runs ``true`` and powers off (run_guest)
  cold check   ``scons MODULE=<copy of examples/chardev> check PACK=basic`` from an
               empty build directory: kbuild, generate and build the replacement
               module, patch, then the pack (2 tests: 2 boots, 9 checks)
  warm check   the same again, the build up to date: the pack alone

Goal (issue 12): basic on a small driver <= 30 s end to end.

    ./kedr-env python bench/bench_pack.py [--rounds 3]
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


def _check(src: Path, build: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
                           f"MODULE={src}", f"BUILD_DIR={build}", "check", "PACK=basic"],
                          capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"check failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
