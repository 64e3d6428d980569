"""The guest fuzzer's syscall rate on bench/drivers/kedr_fzbench (a misc device whose
every file operation takes a mutex and allocates and frees: each syscall reaches
intercepted calls): the unpatched driver against the patched one with every payload
on (trace events enabled, leak tracking and API rules on, each fault point given a
scenario that is evaluated on every call and never fails), in one boot, alternating
(native, patched) --rounds times, round r with seed r for both, the replacement
module loaded afresh for each patched run. The goal (issue 20): patched >= 1/3 of
native. It prints the intercepted calls per patched syscall, so a ratio near 1
cannot come from syscalls that reach no intercepted call (examples/chardev's ioctl,
read and write call none: 1.03 there measured nothing), and the leak payload's
allocations, frees and stacks unwound (its cost) per syscall, which, unlike the
rates, do not move with the host's load.

    ./kedr-env python bench/bench_fuzz.py [--count 20000] [--rounds 3] [--attribute]
                                          [--baseline CHECKOUT]

--attribute adds, in the same boot and rounds, the patched driver with one
thing changed at a time (a payload switched off for every function, or a
module parameter of the replacement module), to tell where the cost is:
each variant's rate over the same round's native one, the median of those
(the host's load moves the rates of one round together).

--baseline CHECKOUT (another kedr-build tree, e.g. `git worktree add /tmp/base
main`) also builds the patched driver with that tree's generator and runtime and
runs it in every round too: a change to the runtime is measured against the
one before it in the same boot and rounds, not across boots whose host load
differs (on this shared machine the ratio of main alone moved 0.29-0.37 from
one run to the next).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kedr_build.kernel import provision  # noqa: E402
from kedr_build.vm import fuzzer  # noqa: E402
from kedr_build.vm.qemu import GuestJob, run_guest  # noqa: E402

DRIVER = REPO / "bench" / "drivers" / "kedr_fzbench"
NAME = "kedr_fzbench"
REPL = f"kedr_repl_{NAME}"

_SCRIPT = """
set -e
T=/sys/kernel/tracing
D=/sys/kernel/debug/kedr_build/{repl}
fuzz() {{
  echo "RESULT $1 $(./kfuzz -s $2 -n {count} -j 2 -r /tmp/rec /dev/{name} | grep '^KFUZZ done')"
}}
# load_repl DIR PARAMS OFF: DIR's replacement module with every payload on but
# OFF (trace, leaks, rules, faults or none); loaded and switched while no driver
# runs its replacements (toggling events while they run: runtime/README.md).
load_repl() {{
  insmod $1/{repl}.ko $2
  shift
  echo 16384 > $T/buffer_size_kb
  [ $2 = trace ] || echo 1 > $T/events/{repl}/enable
  for f in $D/functions/*/trace $D/functions/*/leaks $D/functions/*/rules $D/functions/*/faults; do
    case $f in */$2) echo 0 > $f ;; *) [ -w $f ] && echo 1 > $f ;; esac
  done
  for p in $D/faults/*; do
    case ${{p##*/}} in sites) ;; *) echo 'prob=0 seed=1' > $p ;; esac
  done
}}
load_repl . "" none
echo "POINTS $(ls $D/faults | grep -vc '^sites$')"
rmmod {repl}
r=1
while [ $r -le {rounds} ]; do
  insmod native/{name}.ko; fuzz native $r; rmmod {name}
  # The patched driver and the variants, each round in another order (none always
  # runs first), each with its replacement module loaded afresh.
  for v in $(echo {configs} | tr ' ' '\n' | awk -v r=$r '{{print (NR + r) % {nconfigs}, $0}}' | sort -n | cut -d' ' -f2); do
    case $v in
      patched:) load_repl . "" none; insmod patched/{name}.ko; label=patched ;;
      baseline:) load_repl baseline "" none; insmod baseline/patched/{name}.ko; label="variant $v" ;;
      *) load_repl . "$(echo ${{v#*:}} | tr , ' ')" ${{v%%:*}}; insmod patched/{name}.ko; label="variant $v" ;;
    esac
    fuzz "$label" $r; rmmod {name}
    if [ $v = patched: ] && [ $r = 1 ]; then
      echo "CALLS $(cat $D/functions/*/calls | awk '{{s += $1}} END {{print s}}')"
      grep ^totals $D/leaks
    fi
    rmmod {repl}
  done
  r=$((r + 1))
done
"""

# What --attribute varies, one at a time: OFF:PARAMS (OFF a payload switched
# off for every function, or none; PARAMS the replacement module's, comma-separated).
_VARIANTS = ["leaks:", "trace:", "rules:", "faults:", "none:stack_depth=1",
             "none:free_stacks=0"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attribute", action="store_true",
                        help="also the patched driver with one payload or parameter changed")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also the patched driver built by another kedr-build tree")
    args = parser.parse_args()
    if args.baseline and not (args.baseline / "kedr_build").is_dir():
        print(f"bench: --baseline {args.baseline}: not a kedr-build tree (no kedr_build/)",
              file=sys.stderr)
        return 2
    variants = (["baseline:"] if args.baseline else []) + (_VARIANTS if args.attribute else [])
    kernel = provision.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "build"
        subprocess.run([sys.executable, "-m", "SCons", "-C", str(REPO), "-Q",
                        f"MODULE={DRIVER}", f"BUILD_DIR={build}"], check=True,
                       stdout=subprocess.DEVNULL)
        out = build / NAME
        files = {f"native/{NAME}.ko": out / f"{NAME}.ko",
                 f"patched/{NAME}.ko": out / "patched" / f"{NAME}.ko",
                 f"{REPL}.ko": out / REPL / f"{REPL}.ko", "kfuzz": fuzzer.build()}
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run([sys.executable, "-m", "SCons", "-C", str(args.baseline), "-Q",
                            f"MODULE={DRIVER}", f"BUILD_DIR={base}"], check=True,
                           stdout=subprocess.DEVNULL,
                           env={**os.environ, "PYTHONPATH": str(args.baseline)})
            files |= {f"baseline/patched/{NAME}.ko": base / NAME / "patched" / f"{NAME}.ko",
                      f"baseline/{REPL}.ko": base / NAME / REPL / f"{REPL}.ko"}
        configs = ["patched:"] + variants
        script = _SCRIPT.format(repl=REPL, name=NAME, count=args.count, rounds=args.rounds,
                                configs=" ".join(configs), nconfigs=len(configs))
        result = run_guest(kernel, GuestJob(script=script, files=files), Path(tmp) / "vm",
                           timeout=1200)
    if not result.ok:
        print(f"bench: VM run failed: {result.reason()}\n{result.output}", file=sys.stderr)
        return 1
    rates: dict[str, list[int]] = {"native": [], "patched": []}
    syscalls: dict[str, list[int]] = {"native": [], "patched": []}
    for m in re.finditer(r"^RESULT (native|patched|variant \S+) KFUZZ done ops=\d+ "
                         r"syscalls=(\d+) elapsed_ms=\d+ rate=(\d+)\s*$", result.output, re.M):
        rates.setdefault(m.group(1), []).append(int(m.group(3)))
        syscalls.setdefault(m.group(1), []).append(int(m.group(2)))
    if not rates["native"] or not rates["patched"]:
        print(f"bench: no rates in the guest's output:\n{result.output}", file=sys.stderr)
        return 1
    native, patched = statistics.median(rates["native"]), statistics.median(rates["patched"])
    points = re.search(r"^POINTS (\d+)", result.output, re.M)
    calls = re.search(r"^CALLS (\d+)", result.output, re.M)
    # The calls are read after round 1 (each round loads the module afresh).
    counted = syscalls["patched"][0]
    per = int(calls.group(1)) / counted if calls and counted else 0.0
    print(f"kfuzz, {args.count} operations x 2 threads on /dev/{NAME}, {args.rounds} "
          f"rounds (seed r in round r, both drivers), {kernel.release} (TCG)")
    print(f"  native   {native:10,.0f} syscalls/s  (each round: {rates['native']})")
    print(f"  patched  {patched:10,.0f} syscalls/s  (each round: {rates['patched']}; trace, "
          f"leaks, rules on; {points.group(1) if points else '?'} fault points evaluated; "
          f"{calls.group(1) if calls else '?'} calls intercepted, {per:.2f} per syscall)")
    print(f"  patched / native = {patched / native:.2f} (goal >= 0.33)")
    totals = re.search(r"^totals .*$", result.output, re.M)
    if totals and syscalls["patched"][0]:
        n = syscalls["patched"][0]
        fields = dict(f.split("=", 1) for f in totals.group(0).split()[1:] if "=" in f)

        def each(key: str) -> str:
            return f"{int(fields[key]) / n:.2f}" if fields.get(key, "").isdigit() else "?"
        print(f"  leak payload, round 1, per patched syscall: {each('allocs')} allocations and "
              f"{each('frees')} frees tracked, {each('unwinds')} stacks unwound "
              f"({each('full_unwinds')} of them through the replacement module's frames)")
    if args.baseline:
        base_rates = rates["variant baseline:"]
        ratios = [p / b for p, b in zip(rates["patched"], base_rates)]
        print(f"  baseline {statistics.median(base_rates):10,.0f} syscalls/s  (the patched "
              f"driver built by {args.baseline}; each round: {base_rates})")
        print(f"  baseline / native = {statistics.median(base_rates) / native:.2f}; patched / "
              f"baseline, median over the rounds = {statistics.median(ratios):.2f} (each "
              f"round: {' '.join(f'{r:.2f}' for r in ratios)})")
    if args.attribute:
        print("  attribution, median over the rounds of (rate / that round's native rate):")
        for name in ["patched"] + [n for n in rates if n.startswith("variant ") and
                                   n != "variant baseline:"]:
            off, params = name.split()[1].split(":", 1) if name != "patched" else ("none", "")
            what = ", ".join([f"{off} off"] * (off != "none") + params.split(",") * bool(params))
            ratios = [v / n for v, n in zip(rates[name], rates["native"])]
            print(f"    {what or 'everything on':24} {statistics.median(ratios):.2f}  "
                  f"(each round: {' '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
