"""Boot one step of the device pack N times on an in-tree driver and count hangs.

  ./kedr-env python tools/device_repeat.py KERNEL N [--ko e1000] [--devices e1000]
      [--step suspend] [--stock] [--accel tcg,thread=single] [--toggle]

Default: the driver patched, with its replacement module (as `check PACK=device`
runs it). --stock: the UNPATCHED in-tree module, no kedr module at all. --toggle
(after the step, both modes): switch the kernel's own sched_switch and sched_wakeup
events on and off 200 times while
processes are forked over and over in the background. The unload's `echo 0 > events/kedr_repl_*/enable`
patches the same sites: disabling the last event stops the cmdline recording, which
unregisters its sched_switch/sched_wakeup probes (tracing_stop_cmdline_record), so
text_poke_bp rewrites __schedule's tracepoint while the other vCPU runs it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kedr_build.devices import catalog  # noqa: E402
from kedr_build.devices.attach import attach  # noqa: E402
from kedr_build.intercept.pipeline import InterceptRequest, intercept  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
from kedr_build.ko.names import module_name  # noqa: E402
from kedr_build.packs import devkind  # noqa: E402
from kedr_build.vm.runner import run_modules  # noqa: E402

TOGGLE = """
T=/sys/kernel/tracing
# The other vCPU in the scheduler meanwhile: processes forked over and over.
rm -f /tmp/toggle-stop
( while [ ! -e /tmp/toggle-stop ]; do sh -c : ; done ) &
i=0
while [ $i -lt 200 ]; do
  for e in sched_switch sched_wakeup; do echo $((i % 2 == 0)) > $T/events/sched/$e/enable; done
  i=$((i + 1))
done
echo 0 > $T/events/sched/enable
touch /tmp/toggle-stop; wait
echo "toggled sched events $i times"
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("n", type=int)
    ap.add_argument("--ko", default="e1000")
    ap.add_argument("--devices", default="e1000")
    ap.add_argument("--step", default="suspend", choices=devkind.STEPS)
    ap.add_argument("--cycles", type=int, default=1)
    ap.add_argument("--stock", action="store_true")
    ap.add_argument("--toggle", action="store_true")
    ap.add_argument("--accel", default=None)
    ap.add_argument("--work", default="/tmp/devrep")
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()
    if a.accel:
        os.environ["KEDR_ACCEL"] = a.accel     # qemu_command: the environment wins
    k = provision.ensure(a.kernel)
    assert k.modules_dir is not None
    stock = next(p for p in sorted(k.modules_dir.rglob("*.ko*"))
                 if module_name(p) == a.ko.replace("-", "_"))
    mode = "stock" if a.stock else "kedr"
    work = Path(a.work) / f"{a.kernel}-{a.ko}-{a.step}-{mode}-{(a.accel or 'tcg').replace(',', '_')}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    repl = f"kedr_repl_{a.ko.replace('-', '_')}"
    providers: tuple[str, ...] = ()
    if a.stock:
        modules = [stock]
    else:
        chain = intercept(InterceptRequest(modules=(stock,), kernel=k, outdir=work / "out",
                                           replacement_module=repl))
        modules, providers = [chain.replacement, *chain.patched], (repl,)
    devices = attach(catalog.lookup(a.devices), k)
    script = work / f"device-{a.step}.sh"
    body = devkind.step_script(a.step, devices, [a.ko], a.cycles)
    script.write_text(body + (TOGGLE if a.toggle else ""))
    counts: dict[str, int] = {}
    for i in range(a.n):
        t0 = time.monotonic()
        rep = run_modules(k, list(modules), work / f"vm{i}", workload=script,
                          timeout=a.timeout, trace_providers=providers, devices=devices)
        console = (work / f"vm{i}" / "console.log").read_text(errors="replace")
        lockup = "soft lockup" in console
        verdict = "PASS" if rep.ok else ("SOFT-LOCKUP" if lockup else rep.verdict.value)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"run {i}: {verdict} {time.monotonic() - t0:.0f}s {rep.reason[:160]}", flush=True)
    print(f"SUMMARY {a.kernel} {a.ko} step={a.step} mode={mode} toggle={a.toggle} "
          f"accel={a.accel or k.qemu.accel} n={a.n}: {counts}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
