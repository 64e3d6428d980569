"""``kernel [NAME] [--json] | kernel --list``: provision a pinned kernel and print
where it lives, or list the pinned kernels (kedr_build/kernel/pinned/*.toml)."""

from __future__ import annotations

import argparse
import json

from kedr_build.kernel import provision
from kedr_build.kernel.descriptions import DEFAULT_KERNEL, available, describe


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("kernel", help="provision a pinned kernel (download on first use), "
                                      "or --list them")
    p.add_argument("name", nargs="?", default=DEFAULT_KERNEL, metavar="NAME",
                   help=f"one of: {', '.join(available())} (default {DEFAULT_KERNEL})")
    p.add_argument("--list", action="store_true",
                   help="list the pinned kernels (nothing is downloaded)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.json)
    k = provision.ensure(args.name)
    info = {"name": args.name, "release": k.release, "kdir": str(k.kdir),
            "vmlinuz": str(k.vmlinuz), "boots": str(k.boot_image),
            "modules_dir": str(k.modules_dir)}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:12} {value}")
    return 0


def _list(as_json: bool) -> int:
    rows = []
    for name in available():
        desc = describe(name)
        rows.append({"name": name, "release": desc.release, "summary": desc.summary,
                     "default": name == DEFAULT_KERNEL,
                     "provisioned": provision.is_provisioned(desc)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(str(r["name"])) for r in rows)
    for r in rows:
        marks = ", ".join(m for m, on in (("default", r["default"]),
                                           ("provisioned", r["provisioned"])) if on)
        print(f"{r['name']:{width}}  {r['release']:24}  {r['summary']}"
              + (f"  [{marks}]" if marks else ""))
    return 0
