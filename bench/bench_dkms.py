"""Speed of `scons DKMS=` on Debian's DKMS packages, against the packages' own recipe.

    ./kedr-env python bench/bench_dkms.py [--packages gost-crypto-dkms,vpoll-dkms,...]

Per package, same run: a clean build by Debian's `dkms build` (the package's own
recipe) against `scons DKMS=… build` (the build step alone); then the null build:
`scons DKMS=… build` with nothing changed against kbuild's own null build, i.e.
the package's make run again in DKMS's already built tree. Goals (issue 8): clean
<= 1.3x the recipe, null <= 0.5x kbuild's null build.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import dkms_corpus  # type: ignore[import-not-found]  # noqa: E402  (tests/)
from kedr_build.kernel import dkms, provision  # noqa: E402

DEFAULT = "gost-crypto-dkms,vpoll-dkms,v4l2loopback-dkms,dm-writeboost-dkms,acpi-call-dkms"


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packages", default=DEFAULT)
    args = ap.parse_args()
    kernel = provision.ensure()
    corpus = dkms_corpus.provision()
    scons = [sys.executable, "-m", "SCons", "-C", str(REPO), "-Q"]
    print(f"{'package':24} {'dkms build':>10} {'scons':>7} {'ratio':>6}   "
          f"{'kbuild null':>11} {'scons null':>10} {'ratio':>6}")
    for name in args.packages.split(","):
        pkg = corpus[name]
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            oracle = dkms_corpus.dkms_build(pkg, kernel, Path(tmp) / "oracle")
            recipe = time.perf_counter() - start
            if not oracle.ok:
                print(f"{name:24} dkms build fails: skipped")
                continue
            cmd = [*scons, f"DKMS={pkg.source}", f"BUILD_DIR={tmp}/build", "build"]
            clean = timed(cmd)
            null = timed(cmd)
            conf = dkms.read_conf(pkg.source, kernel.release, kernel.kdir,
                                  Path(tmp) / "build" / pkg.source.name / "dkms")
            build_dir = conf.build_dir(Path(tmp) / "build" / pkg.source.name / "dkms")
            make = dkms.make_command(conf, Path(tmp) / "build" / pkg.source.name / "dkms",
                                     kernel.release, kernel.kdir, 1)
            kbuild_null = timed(dkms.with_lib_modules(kernel.release, kernel.kdir,
                                                      ["bash", "-c", make]), cwd=build_dir)
        print(f"{name:24} {recipe:9.2f}s {clean:6.2f}s {clean / recipe:5.2f}x   "
              f"{kbuild_null:10.2f}s {null:9.2f}s {null / kbuild_null:5.2f}x")
    print("goals: clean <= 1.30x dkms build, null <= 0.50x kbuild's null build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
