"""``python -m kedr_build COMMAND``: one module per command in kedr_build.commands.

Each command module has ``register(sub)`` (adds its argparse sub-parser and
sets ``func``) and its func returns an exit status. A :class:`KedrError`
becomes one line on stderr and exit status 1 — never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kedr_build.errors import KedrError

COMMANDS = ("kernel", "inspect", "patch", "parse", "attach")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kedr_build",
                                     description="Cold-patch kernel modules' imports.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"kedr_build.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
        return status
    except KedrError as e:
        print(f"kedr-build: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kedr-build: interrupted", file=sys.stderr)
        return 130
