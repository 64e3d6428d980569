"""``inspect FILE [--json]``: what a built module imports and what the loader will check.

Prints the module's name, compression, signature, every import with its number of
call sites (relocations) and ``__versions`` CRC, extended modversions when present,
and ``.modinfo``. ``--json`` prints :meth:`ModuleInfo.to_json` instead.
"""

from __future__ import annotations

import argparse
import json

from kedr_build.ko.imports import inspect_module


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("inspect", help="list a module's imports, __versions and .modinfo")
    p.add_argument("file", help="a .ko, .ko.xz, .ko.zst or .ko.gz")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = inspect_module(args.file)
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    crc = {v.name: v.crc for v in info.versions or ()}
    print(f"module       {info.name}")
    print(f"file         {info.path}")
    print(f"compression  {info.compression.value[1:] or 'none'}")
    print(f"signature    {f'{info.signature_bytes} bytes' if info.signed else 'none'}")
    print(f"__versions   {'none' if info.versions is None else f'{len(info.versions)} entries'}")
    if info.ext_versions is not None:
        print(f"ext versions {len(info.ext_versions)} entries")
    print(f"imports      {len(info.imports)}")
    for imp in sorted(info.imports, key=lambda i: i.name):
        c = f"0x{crc[imp.name]:08x}" if imp.name in crc else "-"
        weak = " weak" if imp.weak else ""
        print(f"  {imp.name:40} {imp.call_sites:6} refs  crc {c}{weak}")
    print("modinfo")
    for m in info.modinfo:
        print(f"  {m.key}={m.value}")
    return 0
