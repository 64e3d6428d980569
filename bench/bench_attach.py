"""Hot patching vs cold patching, per call, in the pinned kernel's VM, one boot.

bench/drivers/kedr_bench does N kmalloc(64)/kfree pairs when asked and times them
with ktime_get_ns(). Configurations, each --rounds times (median):

  native     the unpatched module
  cold_off   cold-patched, the replacement module's payloads off (enabled=0)
  cold_trace cold-patched, tracing on (the tracefs event enabled), leaks off
  hot_off    the unpatched module attached to (a kprobe on each call site, the
             pre-handler emulating the call into the replacement), payloads off
  hot_trace  attached, tracing on, leaks off
  detached   the same module after detach: back to native

Also attach.sh and detach.sh wall time (guest /proc/uptime, 10 ms resolution).
Callers outside the target pay nothing while it is attached: only the target's
call sites are probed. Absolute ns are TCG's, not a real CPU's; the ratios compare
configurations of the same run.

    ./kedr-env python bench/bench_attach.py [--pairs 20000] [--rounds 5] [--kernel debian-6.12]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.intercept.attach import AttachRequest, prepare  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402

DRIVER = REPO / "bench" / "drivers" / "kedr_bench"
REPL = "kedr_repl_kedr_bench"

_SCRIPT = """
set -e
T=/sys/kernel/tracing
P=/sys/module/kedr_bench/parameters
D=/sys/kernel/debug/kedr_build/{repl}
up() {{ cut -d' ' -f1 /proc/uptime; }}
measure() {{
  for i in $(seq {rounds}); do
    echo {pairs} > $P/run
    echo "RESULT $1 $(cat $P/last_ns)"
  done
}}
payloads() {{ for f in $D/functions/*; do echo $1 > $f/trace; [ ! -f $f/leaks ] || echo 0 > $f/leaks; done; }}
echo 8192 > $T/buffer_size_kb

insmod native/kedr_bench.ko
measure native

insmod hot/{repl}/{repl}.ko enabled=0
t0=$(up); sh hot/attach.sh >/dev/null; t1=$(up)
echo "TIME attach $t0 $t1"
measure hot_off
payloads 1; echo 1 > $T/events/{repl}/enable; echo 1 > $D/enabled
measure hot_trace
echo 0 > $D/enabled; echo 0 > $T/events/{repl}/enable
t0=$(up); sh hot/detach.sh --unload >/dev/null; t1=$(up)
echo "TIME detach $t0 $t1"
measure detached
rmmod kedr_bench

insmod cold/{repl}.ko enabled=0
insmod cold/kedr_bench.ko
measure cold_off
payloads 1; echo 1 > $T/events/{repl}/enable; echo 1 > $D/enabled
measure cold_trace
rmmod kedr_bench
rmmod {repl}
echo BENCH-END
"""

ORDER = ("native", "cold_off", "cold_trace", "hot_off", "hot_trace", "detached")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernel", default=None)
    args = parser.parse_args()
    kernel = provision.ensure(args.kernel) if args.kernel else provision.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "build"
        subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
                        f"MODULE={DRIVER}", f"BUILD_DIR={build}"]
                       + ([f"KERNEL={args.kernel}"] if args.kernel else []), check=True,
                       stdout=subprocess.DEVNULL)
        out = next(build.rglob("kedr_bench/kedr_bench.ko")).parent
        hot = prepare(AttachRequest(ko=out / "kedr_bench.ko", kernel=kernel,
                                    outdir=Path(tmp) / "hot", replacement_module=REPL))
        files = {
            "native/kedr_bench.ko": out / "kedr_bench.ko",
            "cold/kedr_bench.ko": out / "patched" / "kedr_bench.ko",
            f"cold/{REPL}.ko": out / REPL / f"{REPL}.ko",
            **hot.guest_files("hot"),
        }
        script = _SCRIPT.format(pairs=args.pairs, rounds=args.rounds, repl=REPL)
        result = run_guest(kernel, GuestJob(script=script, files=files), Path(tmp) / "vm",
                           timeout=1800)
    if "BENCH-END" not in result.output:
        print(f"bench: VM run failed:\n{result.output}", file=sys.stderr)
        return 1
    times: dict[str, list[int]] = {}
    for m in re.finditer(r"^RESULT (\w+) (\d+)$", result.output, re.M):
        times.setdefault(m.group(1), []).append(int(m.group(2)))
    calls = 2 * args.pairs
    ns = {k: statistics.median(v) / calls for k, v in times.items()}
    print(f"{kernel.release}: {args.pairs} kmalloc/kfree pairs x {args.rounds} rounds, "
          f"median ns per call (TCG guest), {len(hot.sites.sites)} sites attached:")
    for k in ORDER:
        print(f"  {k:10} {ns[k]:9.1f} ns/call  ({ns[k] / ns['native']:.2f}x native)")
    for m in re.finditer(r"^TIME (\w+) ([0-9.]+) ([0-9.]+)$", result.output, re.M):
        print(f"  {m.group(1)}.sh: {float(m.group(3)) - float(m.group(2)):.2f} s")
    over = {k: ns[k] - ns["native"] for k in ORDER}
    print("  overhead per call over native: " + ", ".join(
        f"{k} {over[k]:+.0f} ns" for k in ("cold_off", "hot_off", "cold_trace", "hot_trace")))
    print("  callers outside the target: no cost (only the target's call sites are probed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
