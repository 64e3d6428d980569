"""Speed of `scons MODULE=dir` against plain kbuild on the same driver, same run.

Goals (issue 2): clean scons <= 1.3x kbuild's clean build; null scons <= 0.5x
kbuild's null build. "scons build" is the kbuild step alone (the `build`
alias), which is what those goals compare; "scons all" is the default target,
which also generates and builds the replacement module and patches the
driver, shown for what the whole pipeline costs. Drivers: examples/chardev
(small, two objects), examples/multi and a generated directory of 42 one-file
modules. Each figure is the median of --repeat runs; every run starts afresh.

    ./kedr-env python bench/bench_kbuild.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.kernel import provision  # noqa: E402


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def quiet(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_many(dest: Path, count: int) -> None:
    dest.mkdir(parents=True)
    names = [f"bench_mod{i:02d}" for i in range(count)]
    (dest / "Kbuild").write_text("obj-m := " + " ".join(f"{n}.o" for n in names) + "\n")
    for n in names:
        (dest / f"{n}.c").write_text(
            "#include <linux/module.h>\n#include <linux/slab.h>\n"
            "static int __init i(void) { kfree(kmalloc(8, GFP_KERNEL)); return 0; }\n"
            "module_init(i);\nMODULE_LICENSE(\"GPL\");\n")


def measure(driver: Path, kdir: Path, repeat: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {k: [] for k in
                                    ("kbuild_clean", "kbuild_null", "scons_clean", "scons_null",
                                     "all_clean", "all_null")}
    scons = [sys.executable, "-m", "SCons", "-C", str(REPO), "-Q"]
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            # kbuild builds in the driver's directory, kedr-build too: each side
            # starts from its own fresh copy of the sources.
            copies = {}
            for side in ("kbuild", "scons", "all"):
                copies[side] = Path(tmp) / side / driver.name
                shutil.copytree(driver, copies[side])
            make = ["make", "-C", str(kdir), f"M={copies['kbuild']}", "-j1", "modules"]
            runs["kbuild_clean"].append(timed(lambda: quiet(make)))
            runs["kbuild_null"].append(timed(lambda: quiet(make)))
            args = [*scons, f"MODULE={copies['scons']}", f"BUILD_DIR={Path(tmp) / 'build'}",
                    "build"]
            runs["scons_clean"].append(timed(lambda: quiet(args)))
            runs["scons_null"].append(timed(lambda: quiet(args)))
            full = [*scons, f"MODULE={copies['all']}", f"BUILD_DIR={Path(tmp) / 'full'}"]
            runs["all_clean"].append(timed(lambda: quiet(full)))
            runs["all_null"].append(timed(lambda: quiet(full)))
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drivers", default="chardev,multi,many42",
                        help="which of chardev, multi, many42 (default: all)")
    args = parser.parse_args()
    kernel = provision.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "many42"
        make_many(many, 42)
        known = {"chardev": REPO / "examples" / "chardev", "multi": REPO / "examples" / "multi",
                 "many42": many}
        drivers = [known[name] for name in args.drivers.split(",")]
        print(f"{'driver':10} {'kbuild clean':>12} {'scons build':>12} {'ratio':>6}   "
              f"{'kbuild null':>11} {'scons build':>11} {'ratio':>6}   "
              f"{'scons all: clean':>16} {'null':>6}")
        for driver in drivers:
            m = measure(driver, kernel.kdir, args.repeat)
            clean = m["scons_clean"] / m["kbuild_clean"]
            null = m["scons_null"] / m["kbuild_null"]
            print(f"{driver.name:10} {m['kbuild_clean']:11.2f}s {m['scons_clean']:11.2f}s "
                  f"{clean:5.2f}x   {m['kbuild_null']:10.2f}s {m['scons_null']:10.2f}s "
                  f"{null:5.2f}x   {m['all_clean']:15.2f}s {m['all_null']:5.2f}s")
    print("goals: clean <= 1.30x, null <= 0.50x (kbuild = make -C KDIR M=dir modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
