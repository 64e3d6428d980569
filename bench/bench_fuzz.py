"""The guest fuzzer's syscall rate on examples/chardev: the unpatched driver against
the patched one with every payload on (trace events enabled, leak tracking and API
rules on, each fault point given a scenario that is evaluated on every call and
never fails), in one boot, alternating (native, patched) --rounds times. The goal
(issue 20): patched >= 1/3 of native.

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

DRIVER = REPO / "examples" / "chardev"
REPL = "kedr_repl_chardev"

_SCRIPT = """
set -e
T=/sys/kernel/tracing
D=/sys/kernel/debug/kedr_build/{repl}
fuzz() {{
  echo "RESULT $1 $(./kfuzz -s $2 -n {count} -j 2 -r /tmp/rec /dev/kedr_chardev | sed -n 's/.* rate=//p')"
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
  insmod native/kedr_chardev.ko; fuzz native $r; rmmod kedr_chardev
  insmod patched/kedr_chardev.ko; fuzz patched $r; rmmod kedr_chardev
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
        out = build / "chardev"
        files = {"native/kedr_chardev.ko": out / "kedr_chardev.ko",
                 "patched/kedr_chardev.ko": out / "patched" / "kedr_chardev.ko",
                 f"{REPL}.ko": out / REPL / f"{REPL}.ko", "kfuzz": fuzzer.build()}
        script = _SCRIPT.format(repl=REPL, count=args.count, rounds=args.rounds)
        result = run_guest(kernel, GuestJob(script=script, files=files), Path(tmp) / "vm",
                           timeout=1200)
    if not result.ok:
        print(f"bench: VM run failed: {result.reason()}\n{result.output}", file=sys.stderr)
        return 1
    rates: dict[str, list[int]] = {"native": [], "patched": []}
    for m in re.finditer(r"^RESULT (native|patched) (\d+)\s*$", result.output, re.M):
        rates[m.group(1)].append(int(m.group(2)))
    if not rates["native"] or not rates["patched"]:
        print(f"bench: no rates in the guest's output:\n{result.output}", file=sys.stderr)
        return 1
    native, patched = statistics.median(rates["native"]), statistics.median(rates["patched"])
    points = re.search(r"^POINTS (\d+)", result.output, re.M)
    calls = re.search(r"^CALLS (\d+)", result.output, re.M)
    print(f"kfuzz, {args.count} operations x 2 threads on /dev/kedr_chardev, {args.rounds} "
          f"rounds, {kernel.release} (TCG)")
    print(f"  native   {native:10,.0f} syscalls/s  (each round: {rates['native']})")
    print(f"  patched  {patched:10,.0f} syscalls/s  (each round: {rates['patched']}; trace, "
          f"leaks, rules on; {points.group(1) if points else '?'} fault points evaluated; "
          f"{calls.group(1) if calls else '?'} calls intercepted)")
    print(f"  patched / native = {patched / native:.2f} (goal >= 0.33)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
