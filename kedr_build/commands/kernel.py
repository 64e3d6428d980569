"""``kernel``: provision a pinned kernel and print where it lives."""

from __future__ import annotations

import argparse
import json

from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, available


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("kernel", help="provision a pinned kernel (download on first use)")
    p.add_argument("name", nargs="?", default=DEFAULT_KERNEL, choices=available())
    p.add_argument("--json", action="store_true", help="print paths as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    k = provision.ensure(args.name)
    info = {"name": args.name, "release": k.release, "kdir": str(k.kdir),
            "vmlinuz": str(k.vmlinuz), "modules_dir": str(k.modules_dir)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:12} {value}")
    return 0
