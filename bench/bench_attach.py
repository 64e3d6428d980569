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
  ftrace     hot patching mechanism (b): bench/drivers/kedr_ftrace_hook, an ftrace_ops
             with IPMODIFY on kfree and the allocator that sends a call to a
             pass-through replacement when its return address is in the target's .text

and the cost imposed on an unrelated caller (kedr_bench_other: the same loop in
another module, never patched nor attached to) while the target is attached:

  other_native   nothing attached
  other_hot      the target attached by (a): only its call sites are probed
  other_ftrace   (b) loaded: every kfree/kmalloc in the system enters its callback

Also attach.sh and detach.sh wall time, and (b)'s insmod/rmmod (guest /proc/uptime,
10 ms resolution). Absolute ns are TCG's, not a real CPU's; the ratios compare
configurations of the same run.

    ./kedr-env python bench/bench_attach.py [--pairs 20000] [--rounds 9] [--kernel debian-6.12]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.intercept.attach import AttachRequest, prepare  # noqa: E402
from kedr_build.kernel import provision  # noqa: E402
from kedr_build.kernel.descriptions import ProvisionedKernel  # noqa: E402
from kedr_build.ko.container import read_module  # noqa: E402
from kedr_build.ko.elf import ElfRel  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402

DRIVER = REPO / "bench" / "drivers" / "kedr_bench"
HOOK = REPO / "bench" / "drivers" / "kedr_ftrace_hook"
REPL = "kedr_repl_kedr_bench"

_SCRIPT = """
set -e
T=/sys/kernel/tracing
P=/sys/module/kedr_bench/parameters
O=/sys/module/kedr_bench_other/parameters
D=/sys/kernel/debug/kedr_build/{repl}
up() {{ cut -d' ' -f1 /proc/uptime; }}
one() {{ echo {pairs} > $P/run; echo "RESULT $1 $(cat $P/last_ns)"; }}
other() {{ echo {pairs} > $O/run; echo "RESULT $1 $(cat $O/last_ns)"; }}
measure() {{ for i in $(seq {rounds}); do one $1; done; }}
timed() {{ n=$1; shift; t0=$(up); "$@" >/dev/null; t1=$(up); echo "TIME $n $t0 $t1"; }}
payloads() {{ for f in $D/functions/*; do echo $1 > $f/trace; [ ! -f $f/leaks ] || echo 0 > $f/leaks; done; }}
echo 8192 > $T/buffer_size_kb

insmod native/kedr_bench.ko
insmod other/kedr_bench_other.ko
# Warm up (the first runs fill the slab caches): not measured.
echo {pairs} > $P/run; echo {pairs} > $O/run
insmod hot/{repl}/{repl}.ko enabled=0
# Interleaved, a round each: nothing, (a) attached, (b) loaded. TCG's speed drifts
# with the host's load; a round's three states see the same drift.
# After each change of kernel text (kprobes armed or disarmed, ftrace sites
# patched) TCG retranslates what it had cached: a warm-up run of each loop, not
# measured, keeps that cost out of the state measured next.
warm() {{ one warm; other warm; }}
for i in $(seq {rounds}); do
  warm; one native; other other_native
  timed attach sh hot/attach.sh
  warm; one hot_off; other other_hot
  timed detach sh hot/detach.sh
  timed ftrace_insmod insmod ftrace/kedr_ftrace_hook.ko text_start=$(cat /sys/module/kedr_bench/sections/.text) text_size={text_size}
  warm; one ftrace; other other_ftrace
  echo "REDIRECTED $(cat /sys/module/kedr_ftrace_hook/parameters/redirected)"
  timed ftrace_rmmod rmmod kedr_ftrace_hook
done
sh hot/attach.sh >/dev/null
payloads 1; echo 1 > $T/events/{repl}/enable; echo 1 > $D/enabled
one warm; measure hot_trace
echo 0 > $D/enabled; echo 0 > $T/events/{repl}/enable
sh hot/detach.sh --unload >/dev/null
one warm; measure detached
rmmod kedr_bench kedr_bench_other

insmod cold/{repl}.ko enabled=0
insmod cold/kedr_bench.ko
one warm; measure cold_off
payloads 1; echo 1 > $T/events/{repl}/enable; echo 1 > $D/enabled
measure cold_trace
rmmod kedr_bench
rmmod {repl}
echo BENCH-END
"""

ORDER = ("native", "cold_off", "cold_trace", "hot_off", "hot_trace", "detached", "ftrace")
OTHER = ("other_native", "other_hot", "other_ftrace")


def _plain(src: Path, name: str, kernel: ProvisionedKernel, tmp: Path) -> Path:
    """Build ``src`` with plain kbuild under the module name ``name``."""
    out = tmp / name
    shutil.copytree(src, out)
    if src.name != name:
        (out / f"{src.name}.c").rename(out / f"{name}.c")
        (out / "Kbuild").write_text(f"obj-m := {name}.o\n")
    subprocess.run(["make", "-C", str(kernel.kdir), f"M={out}", "modules"], check=True,
                   stdout=subprocess.DEVNULL)
    return out / f"{name}.ko"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
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
        native = out / "kedr_bench.ko"
        text = ElfRel(read_module(native).elf, str(native)).section(".text")
        assert text is not None
        files = {
            "native/kedr_bench.ko": native,
            "other/kedr_bench_other.ko": _plain(DRIVER, "kedr_bench_other", kernel, Path(tmp)),
            "ftrace/kedr_ftrace_hook.ko": _plain(HOOK, "kedr_ftrace_hook", kernel, Path(tmp)),
            "cold/kedr_bench.ko": out / "patched" / "kedr_bench.ko",
            f"cold/{REPL}.ko": out / REPL / f"{REPL}.ko",
            **hot.guest_files("hot"),
        }
        script = _SCRIPT.format(pairs=args.pairs, rounds=args.rounds, repl=REPL,
                                text_size=text.size)
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
    for k in OTHER:
        print(f"  {k:12} {ns[k]:9.1f} ns/call  ({ns[k] / ns['other_native']:.2f}x "
              "other_native)")
    redirected = sorted(set(re.findall(r"^REDIRECTED (\d+)$", result.output, re.M)))
    print(f"  ftrace redirected {'/'.join(redirected)} calls a round (the target's, warm-up "
          f"and measured: {2 * calls})")
    took: dict[str, list[float]] = {}
    for m in re.finditer(r"^TIME (\w+) ([0-9.]+) ([0-9.]+)$", result.output, re.M):
        took.setdefault(m.group(1), []).append(float(m.group(3)) - float(m.group(2)))
    print("  median wall time: " + ", ".join(f"{k} {statistics.median(v):.2f} s"
                                              for k, v in took.items()))
    over = {k: ns[k] - ns["native"] for k in ORDER}
    print("  overhead per call over native: " + ", ".join(
        f"{k} {over[k]:+.0f} ns" for k in ("cold_off", "hot_off", "ftrace", "cold_trace",
                                            "hot_trace")))
    # The interleaved states, paired round by round (the same drift): median of the
    # per-round differences.
    def paired(state: str, base: str) -> float:
        return float(statistics.median([a - b for a, b in zip(times[state], times[base])])) / int(calls)
    print("  paired by round, per call: target hot_off {:+.0f} ns, ftrace {:+.0f} ns over "
          "native; unrelated caller other_hot {:+.0f} ns, other_ftrace {:+.0f} ns over "
          "other_native".format(paired("hot_off", "native"), paired("ftrace", "native"),
                                paired("other_hot", "other_native"),
                                paired("other_ftrace", "other_native")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
