"""Boot the tests/drivers/stress guest N times and count oopses/hangs.

  ./kedr-env python tools/stress_repeat.py KERNEL N [--mode kedr|builtin]
      [--accel tcg,thread=single] [--ops 25000]

mode kedr: the test's setup (patched driver + replacement module, toggling
its trace events). mode builtin: the UNPATCHED driver, no kedr module at all,
toggling the kernel's own kmem events (kmalloc/kfree/kmem_cache_*) instead.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedr_build.intercept.pipeline import InterceptRequest, intercept  # noqa: E402
from kedr_build.kernel import kbuild, provision  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "drivers" / "stress"
REPL = "kedr_repl_stress"

BUILTIN_SCRIPT = """
T=/sys/kernel/tracing
echo "== cpus"; grep -c ^processor /proc/cpuinfo
insmod ./kedr_stress.ko threads={threads} ops={ops} &
pid=$!
i=0
while kill -0 $pid 2>/dev/null; do
  v=$((i % 2))
  for e in kmalloc kfree kmem_cache_alloc kmem_cache_free; do echo $v > $T/events/kmem/$e/enable; done
  i=$((i + 1))
done
wait $pid
echo "== insmod"; echo "rc=$? toggles=$i"
echo 0 > $T/events/kmem/enable
rmmod kedr_stress || exit 1
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("n", type=int)
    ap.add_argument("--mode", default="kedr", choices=["kedr", "builtin"])
    ap.add_argument("--accel", default=None)
    ap.add_argument("--ops", type=int, default=25000)
    ap.add_argument("--work", default="/tmp/stressrep")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    k = provision.ensure(a.kernel)
    work = Path(a.work) / f"{a.kernel}-{a.mode}"
    if work.exists():
        shutil.rmtree(work)
    src = work / "src"
    shutil.copytree(DRIVER, src)
    specs = kbuild.discover(src, k.kdir)
    driver_ko = kbuild.build(kbuild.BuildRequest(driver=src, kdir=k.kdir, outdir=work / "driver",
                                                 modules=tuple(specs)))[0]
    if a.mode == "kedr":
        sys.path.insert(0, str(REPO / "tests"))
        t = importlib.import_module("test_stress_vm")  # the test's guest script, as it runs
        script = str(t.guest_script(k, a.ops))
        chain = intercept(InterceptRequest(modules=(driver_ko,), kernel=k, outdir=work / "out",
                                           replacement_module=REPL))
        files = {"kedr_stress.ko": chain.patched[0], f"{REPL}.ko": chain.replacement}
    else:
        script = BUILTIN_SCRIPT.format(threads=4, ops=a.ops)
        files = {"kedr_stress.ko": driver_ko}
    counts: dict[str, int] = {}
    for i in range(a.n):
        t0 = time.monotonic()
        vm = run_guest(k, GuestJob(script=script, files=files), work / f"vm{i}",
                       timeout=a.timeout, accel=a.accel)
        int3 = "int3" in vm.console
        verdict = "PASS" if vm.ok else ("OOPS-INT3" if int3 else vm.verdict.value)
        counts[verdict] = counts.get(verdict, 0) + 1
        tog = [ln for ln in vm.output.splitlines() if "toggles=" in ln]
        print(f"run {i}: {verdict} {time.monotonic() - t0:.0f}s {tog} {vm.reason()}", flush=True)
    print(f"SUMMARY {a.kernel} mode={a.mode} accel={a.accel or k.qemu.accel} "
          f"n={a.n}: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
