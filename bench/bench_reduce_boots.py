"""Boots a hang or taint reduction takes, by strategy, next to one VM boot.

    ./kedr-env python bench/bench_reduce_boots.py [--kernel debian-6.1] [--seeds 3,5,11]

A hang or a taint-only failure needs a fresh kernel to judge each failing attempt
(kedr_build/vm/reboots.py). For each seed, kfuzz records 3000 operations of 2 threads
on /dev/null and /dev/zero on the host, and ``kfuzz -M`` reduces them, resumed run
after run as the reduction's boots are, with an oracle that fails as
tests/drivers/fztaint does (an ioctl with _IOC_NR 11 on a file its thread opened) and
exits 4 ("this kernel can judge no more"). Printed per seed: the attempts and runs
of plain ddmin (the oracle does not say where it failed) and of the located
reduction (it says at which op: the ops after it are dropped, and that op with the
open of its file is tried first). A boot per attempt costs ``attempts`` boots; a
boot per failing attempt (what reboots.py does), ``runs``. Then one VM boot to
power-off of the pinned kernel (the floor of each reduction boot), so the boots
read as seconds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.vm import fuzzer  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402
from test_fundamentals import across_boots  # type: ignore[import-not-found]  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--seeds", default="3,5,11")
    args = ap.parse_args()
    kfuzz = fuzzer.build()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"{'seed':>5} {'strategy':12} {'attempts':>8} {'runs':>5} {'ops':>4}")
        located: list[tuple[int, int]] = []
        plain: list[tuple[int, int]] = []
        for seed in args.seeds.split(","):
            rec, start = work / "r.rec", work / "all.seq"
            subprocess.run([str(kfuzz), "-s", seed, "-n", "3000", "-j", "2", "-r", str(rec),
                            "/dev/null", "/dev/zero"], capture_output=True, check=True)
            subprocess.run([str(kfuzz), "-E", str(rec), "-o", str(start)], check=True)
            for name, env, into in (("plain ddmin", {"NOAT": "1"}, plain),
                                    ("located", {}, located)):
                runs, out = across_boots(kfuzz, work, start, env)
                m = re.search(r"^KFUZZ reduced ops=(\d+) attempts=(\d+)", out, re.M)
                assert m, out
                into.append((int(m.group(2)), runs))
                print(f"{seed:>5} {name:12} {m.group(2):>8} {runs:5} {m.group(1):>4}")
        kernel = provision.ensure(args.kernel) if args.kernel else provision.ensure()
        boots = []
        for i in range(3):
            t = time.perf_counter()
            vm = run_guest(kernel, GuestJob(script="true\n"), work / f"boot{i}", timeout=120)
            boots.append(time.perf_counter() - t)
            assert vm.ok, vm.reason()
    boot = statistics.median(boots)
    print(f"kernel {kernel.release}: one VM boot to power-off: median {boot:.2f} s of 3")
    for name, got in (("plain ddmin", plain), ("located", located)):
        a = statistics.median(x for x, _ in got)
        r = statistics.median(x for _, x in got)
        print(f"{name:12}: a boot per attempt ~{a * boot:.0f} s; a boot per failing "
              f"attempt ~{r * boot:.0f} s (median of {len(got)} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
