"""``patch IN.ko -o OUT.ko``: rename a module's imports so it calls replacement functions.

Usage::

    python -m kedr_build patch IN.ko -o OUT.ko
        [--plan PLAN.toml|PLAN.json]         functions, naming, explicit renames (see plan.py)
        [--functions kfree,__kmalloc]        functions to rename (added to the plan's)
        [--rename OLD=NEW ...]               explicit replacement names (repeatable)
        [--naming same-length|prefix:kedr_]  default: the plan's, else same-length
        [--symvers REPL/Module.symvers|REPL.ko]  replacement CRCs (needed for __versions)
        [--kernel-symvers KDIR/Module.symvers]   target kernel exports: collision checks
        [--depends NAME | --no-depends]      module added to depends= (default: the plan's
                                             replacement_module, else the module that the
                                             --symvers file says exports the replacements)
        [--manifest OUT.json | --no-manifest]    default: OUT.ko.json
        [--compress same|none|xz|gz|zst]     default: same as the input
        [--xz-preset 0..9]                   default 6, as the kernel's modules_install
        [--sign-key KEY --sign-cert CERT --kdir KDIR [--sign-hash sha256]]
        [--dry-run]                          plan and verify, write nothing
        [--json]                             print the manifest on stdout

The input is never modified: OUT and the manifest must differ from IN and from
each other, and they are written together or not at all. A compressed OUT must be
named for its compression (OUT.ko.xz). Any problem (not an x86_64 ET_REL ELF, not
a kernel module, truncated, no .symtab, unknown replacement CRC, a name
collision, a replacement the kernel itself exports, an already patched module:
one whose depends= names a kedr_repl_* module or the plan's replacement module)
is one line ``kedr-build: FILE: cause`` on stderr, exit status 1, and no output
file. Warnings go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.ko.container import XZ_PRESET, Compression
from kedr_build.ko.names import NAME_MAX, is_module_name
from kedr_build.ko.patch import SignRequest, patch_elf, patch_module
from kedr_build.ko.plan import Naming, RenamePlan, build_plan, load_plan
from kedr_build.ko.symvers import load_crcs, read_symvers


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("patch", help="rename a module's imports to replacement functions",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="the module to patch (.ko, .ko.xz, .ko.zst, .ko.gz)")
    p.add_argument("-o", "--output", required=True, help="where to write the patched module")
    p.add_argument("--plan", help="plan file (TOML or JSON)")
    p.add_argument("--functions", default="", help="comma-separated functions to rename")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="explicit replacement name (repeatable)")
    p.add_argument("--naming", help="same-length (default) or prefix:PREFIX")
    p.add_argument("--symvers", help="replacement module's Module.symvers or .ko (CRCs)")
    p.add_argument("--kernel-symvers", help="target kernel's Module.symvers (collision checks)")
    dep = p.add_mutually_exclusive_group()
    dep.add_argument("--depends", help="replacement module name to add to depends=")
    dep.add_argument("--no-depends", action="store_true", help="leave depends= alone")
    man = p.add_mutually_exclusive_group()
    man.add_argument("--manifest", help="manifest path (default OUT.json)")
    man.add_argument("--no-manifest", action="store_true", help="write no manifest")
    p.add_argument("--compress", default="same", help="same (default), none, xz, gz or zst")
    p.add_argument("--xz-preset", type=int, default=XZ_PRESET, metavar="N",
                   help=f"xz compression preset 0..9 (default {XZ_PRESET}, as modules_install; "
                        "1 is ~7x faster, ~8%% larger)")
    p.add_argument("--sign-key", help="private key for scripts/sign-file")
    p.add_argument("--sign-cert", help="certificate for scripts/sign-file")
    p.add_argument("--sign-hash", default="sha256", help="hash for sign-file (sha256)")
    p.add_argument("--kdir", help="kernel build tree holding scripts/sign-file")
    p.add_argument("--dry-run", action="store_true", help="check and verify, write nothing")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run)


def _plan(args: argparse.Namespace) -> RenamePlan:
    exports = read_symvers(args.kernel_symvers) if args.kernel_symvers else None
    naming = Naming.parse(args.naming) if args.naming else None
    functions = [f for f in args.functions.split(",") if f]
    explicit: dict[str, str] = {}
    for item in args.rename:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise KedrError(f"--rename {item!r}: expected OLD=NEW")
        explicit[old] = new
    if args.plan:
        base = load_plan(args.plan, naming, exports)
        if not functions and not explicit:
            return base
        explicit = {**base.mapping(), **explicit}
        return build_plan(functions, naming or Naming.parse("same-length"), explicit, exports,
                          base.replacement_module, where=args.plan)
    if not functions and not explicit:
        raise KedrError("patch: nothing to rename; give --plan, --functions or --rename")
    return build_plan(functions, naming or Naming.parse("same-length"), explicit, exports,
                      where="command line")


def _depends(args: argparse.Namespace, plan: RenamePlan) -> str | None:
    if args.no_depends:
        return None
    if args.depends is not None:
        dep = str(args.depends)
        if not is_module_name(dep):
            raise KedrError(f"--depends {dep!r}: not a module name (letters, digits, _ and -, "
                            f"at most {NAME_MAX} characters; one module)")
        return dep
    if plan.replacement_module:
        return plan.replacement_module
    if args.symvers and ".ko" in Path(args.symvers).name:
        from kedr_build.ko.imports import inspect_module
        return inspect_module(args.symvers).name
    if args.symvers:
        entries = read_symvers(args.symvers)
        mods = {Path(entries[r.new].module).name for r in plan.renames if r.new in entries}
        if len(mods) == 1:
            return mods.pop()
    return None


def _check_replacements(args: argparse.Namespace, plan: RenamePlan) -> None:
    """A replacement exported by the kernel itself (vmlinux in a Module.symvers) is not
    a replacement: the module would call that kernel function instead of the original."""
    if not args.symvers or ".ko" in Path(args.symvers).name:
        return
    entries = read_symvers(args.symvers)
    kernel = sorted(r.new for r in plan.renames
                    if r.new in entries and Path(entries[r.new].module).name == "vmlinux")
    if kernel:
        raise KedrError(f"{args.symvers}: {', '.join(kernel)} is exported by the kernel "
                        "(vmlinux), not by a replacement module: a replacement must be a "
                        "function the replacement module exports")


def _sign(args: argparse.Namespace) -> SignRequest | None:
    given = [args.sign_key, args.sign_cert, args.kdir]
    if not any(given[:2]):
        return None
    if not all(given):
        raise KedrError("signing needs --sign-key, --sign-cert and --kdir together")
    return SignRequest(Path(args.sign_key), Path(args.sign_cert), Path(args.kdir),
                       args.sign_hash)


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    for w in plan.warnings:
        print(f"kedr-build: warning: {w}", file=sys.stderr)
    _check_replacements(args, plan)
    crcs = load_crcs(args.symvers) if args.symvers else None
    depends = _depends(args, plan)
    compression = None if args.compress == "same" else Compression.from_name(args.compress)
    if args.dry_run:
        from kedr_build.ko.elf import ElfRel
        from kedr_build.ko.container import read_module
        from kedr_build.ko.verify import verify_patch
        mod = read_module(args.input)
        elf = ElfRel(mod.elf, args.input)
        img = patch_elf(elf, plan.mapping(), crcs, depends)
        if img.renames:
            verify_patch(elf, img.elf, img.expectation)
        for r in img.renames:
            print(f"{args.input}: would rename {r.old} -> {r.new} ({r.call_sites} refs)")
        return 0
    manifest: str | bool = False if args.no_manifest else (args.manifest or True)
    result = patch_module(args.input, args.output, plan, crcs, depends=depends,
                          compression=compression, manifest=manifest, sign=_sign(args),
                          xz_preset=args.xz_preset)
    for w in result.warnings:
        print(f"kedr-build: warning: {args.input}: {w}", file=sys.stderr)
    if result.skipped:
        print(f"kedr-build: warning: {args.input}: does not import "
              f"{', '.join(result.skipped)}; skipped", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        for r in result.renames:
            print(f"{r.old} -> {r.new}: {r.call_sites} refs, .strtab {r.strtab}"
                  + (f", CRC 0x{r.crc_new:08x}" if r.crc_new is not None else ""))
        print(f"wrote {result.output}" + (f" and {result.manifest}" if result.manifest else ""))
    return 0
