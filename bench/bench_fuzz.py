"""The guest fuzzer's syscall rate on bench/drivers/kedr_fzbench (a misc device whose
every file operation takes a mutex and allocates and frees: each syscall reaches
intercepted calls): the unpatched driver against the patched one with every payload
on (trace events enabled, leak tracking and API rules on, each fault point given a
scenario that is evaluated on every call and never fails), in one boot, alternating
(native, patched) --rounds times, round r with seed r for both. The goal (issue 20):
patched >= 1/3 of native. It prints the intercepted calls per patched syscall, so a
ratio near 1 cannot come from syscalls that reach no intercepted call (examples/
chardev's ioctl, read and write call none: 1.03 there measured nothing).

    ./kedr-env python bench/bench_fuzz.py [--count 20000] [--rounds 3]
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
insmod {repl}.ko
echo 16384 > $T/buffer_size_kb
echo 1 > $T/events/{repl}/enable
for f in $D/functions/*/trace $D/functions/*/leaks $D/functions/*/rules $D/functions/*/faults; do
  [ -w $f ] && echo 1 > $f
done
for p in $D/faults/*; do
  case ${{p##*/}} in sites) ;; *) echo 'prob=0 seed=1' > $p ;; esac
done
echo "POINTS $(ls $D/faults | grep -vc '^sites$')"
r=1
while [ $r -le {rounds} ]; do
  insmod native/{name}.ko; fuzz native $r; rmmod {name}
  insmod patched/{name}.ko; fuzz patched $r; rmmod {name}
  r=$((r + 1))
done
echo "CALLS $(cat $D/functions/*/calls | awk '{{s += $1}} END {{print s}}')"
grep ^totals $D/leaks
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
        script = _SCRIPT.format(repl=REPL, name=NAME, count=args.count, rounds=args.rounds)
        result = run_guest(kernel, GuestJob(script=script, files=files), Path(tmp) / "vm",
                           timeout=1200)
    if not result.ok:
        print(f"bench: VM run failed: {result.reason()}\n{result.output}", file=sys.stderr)
        return 1
    rates: dict[str, list[int]] = {"native": [], "patched": []}
    syscalls: dict[str, int] = {"native": 0, "patched": 0}
    for m in re.finditer(r"^RESULT (native|patched) KFUZZ done ops=\d+ syscalls=(\d+) "
                         r"elapsed_ms=\d+ rate=(\d+)\s*$", result.output, re.M):
        rates[m.group(1)].append(int(m.group(3)))
        syscalls[m.group(1)] += int(m.group(2))
    if not rates["native"] or not rates["patched"]:
        print(f"bench: no rates in the guest's output:\n{result.output}", file=sys.stderr)
        return 1
    native, patched = statistics.median(rates["native"]), statistics.median(rates["patched"])
    points = re.search(r"^POINTS (\d+)", result.output, re.M)
    calls = re.search(r"^CALLS (\d+)", result.output, re.M)
    per = int(calls.group(1)) / syscalls["patched"] if calls and syscalls["patched"] else 0.0
    print(f"kfuzz, {args.count} operations x 2 threads on /dev/{NAME}, {args.rounds} "
          f"rounds (seed r in round r, both drivers), {kernel.release} (TCG)")
    print(f"  native   {native:10,.0f} syscalls/s  (each round: {rates['native']})")
    print(f"  patched  {patched:10,.0f} syscalls/s  (each round: {rates['patched']}; trace, "
          f"leaks, rules on; {points.group(1) if points else '?'} fault points evaluated; "
          f"{calls.group(1) if calls else '?'} calls intercepted, {per:.2f} per syscall)")
    print(f"  patched / native = {patched / native:.2f} (goal >= 0.33)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
