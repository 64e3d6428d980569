"""Seconds per fault site of the systematic sweep, next to one VM boot.

    ./kedr-env python bench/bench_sweep.py [--kernel debian-6.1] [--repeat 3]

Boots the pinned kernel with a job that does nothing (boot to power-off, the
floor of every VM run), then sweeps tests/drivers/faulty (init and
tests/workloads/faulty.sh) and tests/drivers/leaker (mode=clean: many sites in
its init). Per sweep: sites, boots, the first boot up to the first site
(discovery included), then seconds per site (module reloads, the failed run,
the leak report). Goal (issue 11): <= 1 s per site under TCG for a small driver.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from kedr_build.faults.sweep import sweep  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
from kedr_build.kernel.descriptions import ProvisionedKernel  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402
from test_faults_vm import build_faulty  # type: ignore[import-not-found]  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    kernel = provision.ensure(args.kernel) if args.kernel else provision.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        boots = []
        for i in range(args.repeat):
            start = time.perf_counter()
            vm = run_guest(kernel, GuestJob(script="true\n"), work / f"boot{i}", timeout=120)
            boots.append(time.perf_counter() - start)
            assert vm.ok, vm.reason()
        print(f"kernel {kernel.release}: one VM boot to power-off: "
              f"median {statistics.median(boots):.2f} s of {args.repeat}")
        print(f"{'driver':22} {'sites':>5} {'boots':>5} {'to 1st site':>11} {'per site':>9}")
        cases = [("faulty", ["faulty"], (), REPO / "tests" / "workloads" / "faulty.sh"),
                 ("leaker mode=clean", ["leaker"], ("mode=clean",), None)]
        for label, (name,), margs, workload in cases:
            d = work / name
            d.mkdir()
            if name == "leaker":
                repl, patched = _build_leaker(kernel, d)
            else:
                repl, patched, _ = build_faulty(kernel, d)
            per_site = []
            for i in range(args.repeat):
                r = sweep(kernel, repl, patched, d / f"sweep{i}", workload=workload,
                          module_args=margs)
                per_site.append(r.seconds_per_site)
            print(f"{label:22} {len(r.results):5} {r.boots:5} {r.discovery_seconds:10.2f}s "
                  f"{statistics.median(per_site):8.2f}s")
    return 0


def _build_leaker(kernel: ProvisionedKernel, work: Path) -> tuple[Path, Path]:
    from kedr_build.intercept.pipeline import InterceptRequest, intercept
    from kedr_build.kernel import kbuild

    src = work / "src"
    shutil.copytree(REPO / "tests" / "drivers" / "leaker", src)
    specs = kbuild.discover(src, kernel.kdir)
    built = kbuild.build(kbuild.BuildRequest(driver=src, kdir=kernel.kdir,
                                             outdir=work / "driver", modules=tuple(specs)))
    chain = intercept(InterceptRequest(modules=(built[0],), kernel=kernel, outdir=work / "out",
                                       replacement_module="kedr_repl_leaker",
                                       driver="kedr_leaker"))
    return chain.replacement, chain.patched[0]


if __name__ == "__main__":
    sys.exit(main())
