"""``parse LOGDIR``: judge a saved VM run again from its logs, without booting.

LOGDIR is a run directory (``build/<name>/run``): console.log, output.log and
status.log are re-read, the console re-parsed, and the verdict printed as the
run printed it. Exit status 0 when the run passed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.vm.printer import format_report
from kedr_build.vm.runner import interpret
from kedr_build.vm.qemu import result_from_logs


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("parse", help="re-judge a saved VM run from its logs")
    p.add_argument("logdir", type=Path, help="a run directory, e.g. build/chardev/run")
    p.add_argument("--suppress", type=Path, metavar="FILE",
                   help="suppressions file (kedr_build/checks/suppress.py)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logdir: Path = args.logdir
    console_log = logdir / "console.log"
    if not console_log.is_file():
        raise KedrError(f"{logdir}: not a run directory (no console.log)")
    # The patched modules beside the run name the targets' code (init code included).
    modules = {ko.stem: ko for ko in sorted((logdir.parent / "patched").glob("*.ko"))}
    from kedr_build.checks import suppress
    rules = suppress.load(args.suppress) if args.suppress else ()
    report = interpret(result_from_logs(logdir), modules, rules)
    print(format_report(report, logdir.parent.name))
    return 0 if report.ok and report.checks_ok else 1
